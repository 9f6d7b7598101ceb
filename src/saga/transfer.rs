//! A transfer of stock between two stores (API.md "Regions, routing and transfers"):
//! hold the units at the source, add them at the target (`transfer_in`), then send them
//! out of the source (`transfer_out`, the hold consumed). Both or neither.
//!
//! The hold's id is the transfer's id, and each store notes the transfers that moved its
//! stock, so a resumed transfer sees which steps are done: sent out → completed; hold still
//! open → add (a no-op if already added) and send; no hold and nothing sent → nothing
//! happened (the hold was never placed, or was released): failed.

use super::steps::Step;
use super::{Phase, Plan, Saga, SagaError, Sagas, fresh_id, now};
use crate::domain::{ReservationId, ReservationLine, StoreId};
use serde::{Deserialize, Serialize};

/// A transfer's hold never runs out: only the transfer ends it. (A hold's deadline is
/// required; a hundred years is never.)
pub const HOLD_TTL_MS: i64 = 100 * 365 * 24 * 3600 * 1000;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transfer {
    pub from_store: StoreId,
    pub to_store: StoreId,
    pub lines: Vec<ReservationLine>,
    pub reference: Option<Box<str>>,
}

/// The source's hold for transfer `id` (transfer ids are valid reservation ids).
fn hold_id(id: &str) -> ReservationId {
    ReservationId::parse(id).expect("TRF + 16 hex digits is a valid id")
}

impl Sagas {
    /// Moves `t.lines` from one store to the other; the saga as it ended.
    pub async fn transfer(
        &self,
        t: Transfer,
        idem: Option<crate::wal::IdemTag>,
    ) -> Result<Saga, SagaError> {
        if t.from_store == t.to_store {
            return Err(SagaError::SameStore);
        }
        if let Some(done) = self.again(idem.as_ref()).await? {
            return Ok(done);
        }
        // Both stores have every product, in units each can count (before anything moves).
        for store in [&t.from_store, &t.to_store] {
            let lines = t.lines.clone();
            self.run(store, Step::Check { lines }).await?;
        }
        let id = fresh_id("TRF")?;
        let Some(_running) = self.start_running(&id) else {
            return Err(SagaError::Storage("transfer id drawn twice".into()));
        };
        let mut saga = Saga {
            id: id.clone(),
            created_ms: now(),
            plan: Plan::Transfer(t.clone()),
            phase: Phase::Started,
            idem,
        };
        self.record(&saga).await?;
        self.fault_point("transfer:started");
        let hold = Step::Hold {
            hold_id: hold_id(&id),
            lines: t.lines.clone(),
            ttl_ms: HOLD_TTL_MS,
        };
        if let Err(e) = self.run(&t.from_store, hold).await {
            if !e.is_passing() {
                saga.phase = Phase::Failed(e.to_string().into());
                self.record(&saga).await?;
            }
            return Err(e);
        }
        self.fault_point("transfer:held");
        self.add_and_send(saga, &t).await
    }

    /// With the hold in place: adds at the target (once), then sends from the source. A
    /// refusal at the target releases the hold.
    async fn add_and_send(&self, mut saga: Saga, t: &Transfer) -> Result<Saga, SagaError> {
        let add = Step::TransferIn {
            transfer_id: saga.id.clone(),
            lines: t.lines.clone(),
        };
        if let Err(e) = self.run(&t.to_store, add).await {
            if e.is_passing() {
                return Err(e);
            }
            let release = Step::Release {
                hold_id: hold_id(&saga.id),
            };
            self.run(&t.from_store, release).await?;
            saga.phase = Phase::Failed(e.to_string().into());
            self.record(&saga).await?;
            return Err(e);
        }
        self.fault_point("transfer:added");
        let send = Step::TransferOut {
            hold_id: hold_id(&saga.id),
            transfer_id: saga.id.clone(),
        };
        self.run(&t.from_store, send).await?;
        self.fault_point("transfer:sent");
        saga.phase = Phase::Completed;
        self.record(&saga).await?;
        Ok(saga)
    }

    pub(super) async fn resume_transfer(&self, mut saga: Saga) -> Result<Saga, SagaError> {
        let Plan::Transfer(t) = saga.plan.clone() else {
            unreachable!("called for transfers only")
        };
        let hold = hold_id(&saga.id);
        let source = self
            .marks(&t.from_store, Some(&hold), Some(&saga.id))
            .await?;
        if source.transferred {
            saga.phase = Phase::Completed;
        } else if source.hold_open {
            return self.add_and_send(saga, &t).await;
        } else {
            saga.phase = Phase::Failed("interrupted before its hold was placed".into());
        }
        self.record(&saga).await?;
        Ok(saga)
    }
}
