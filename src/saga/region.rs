//! Regions and region orders (API.md "Regions, routing and transfers").
//!
//! A region is a named list of stores, kept in `regions.json` in the data directory
//! (written whole, synced, then renamed over the old one: a region change is rare and
//! small). A region order is routed by `domain::region::route`, then run as a saga: a hold
//! in each chosen store; then, once every hold is in place, the decision to commit is
//! logged and each hold becomes that store's order (the store notes the order under the
//! hold's id, so a resent step finds it).
//! Any refusal before the decision releases every hold; a refusal after it (a hold that ran
//! out while the process was down, and the stock went meanwhile) cancels the orders
//! already placed. Resumed, a saga that had not decided goes back; one that had, forward.

use super::steps::{Step, StepAnswer};
use super::{Phase, Plan, Saga, SagaError, Sagas, fresh_id, now};
use crate::actor::now_ms;
use crate::domain::region::{Candidate, REGION_STORES_MAX, distance_m, route};
use crate::domain::{
    Customer, DraftItem, Location, OrderId, PaymentMethod, ProductId, ReservationId,
    ReservationLine, StoreId, TimeMs,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::RwLock;

/// Most regions one process keeps (the file is rewritten whole on each change).
pub const REGIONS_MAX: usize = 1_000;
/// How long a region order's holds last: far longer than the saga takes to commit them
/// (milliseconds); if the process dies in between, what is left is released by then.
pub const HOLD_TTL_MS: i64 = 10 * 60 * 1000;
const REGIONS_FILE: &str = "regions.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub region_id: StoreId,
    pub name: Box<str>,
    pub store_ids: Vec<StoreId>,
    pub updated_ms: TimeMs,
}

/// The regions of this process, read at start-up, written through on every change.
pub struct Regions {
    path: PathBuf,
    map: RwLock<BTreeMap<StoreId, Region>>,
    /// Serialises writers of the file.
    write: tokio::sync::Mutex<()>,
}

impl Regions {
    /// Reads `regions.json` in `dir` (none yet: no regions).
    pub fn load(dir: &std::path::Path) -> std::io::Result<Regions> {
        let path = dir.join(REGIONS_FILE);
        let map = match std::fs::read(&path) {
            Ok(bytes) => {
                let list: Vec<Region> = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::other(format!("{}: {e}", path.display())))?;
                list.into_iter().map(|r| (r.region_id.clone(), r)).collect()
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        Ok(Regions {
            path,
            map: RwLock::new(map),
            write: tokio::sync::Mutex::new(()),
        })
    }

    pub fn get(&self, id: &StoreId) -> Option<Region> {
        self.map
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }

    /// Creates or replaces a region; returns once it is on stable storage.
    pub async fn put(&self, region: Region) -> Result<Region, SagaError> {
        if region.store_ids.is_empty() || region.store_ids.len() > REGION_STORES_MAX {
            return Err(SagaError::InvalidRegion("1 to 1,000 store ids".into()));
        }
        let mut seen = std::collections::HashSet::new();
        if !region.store_ids.iter().all(|s| seen.insert(s)) {
            return Err(SagaError::InvalidRegion("a store is listed twice".into()));
        }
        let _writer = self.write.lock().await;
        let mut next = self.map.read().unwrap_or_else(|e| e.into_inner()).clone();
        if !next.contains_key(&region.region_id) && next.len() >= REGIONS_MAX {
            return Err(SagaError::InvalidRegion("too many regions".into()));
        }
        next.insert(region.region_id.clone(), region.clone());
        let list: Vec<&Region> = next.values().collect();
        let bytes = serde_json::to_vec_pretty(&list).expect("regions serialise");
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || write_synced(&path, &bytes))
            .await
            .map_err(|e| SagaError::Storage(e.to_string()))?
            .map_err(|e| SagaError::Storage(format!("writing regions: {e}")))?;
        *self.map.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(region)
    }
}

/// Replaces `path` with `bytes`, durably: a temporary file, synced, renamed over it, and
/// the directory synced (the rename itself is then durable).
pub(crate) fn write_synced(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir)?.sync_all()
}

/// A region order as the client asked for it.
#[derive(Clone, Debug)]
pub struct RegionRequest {
    pub customer: Customer,
    pub items: Vec<DraftItem>,
    pub payment_method: PaymentMethod,
    pub delivery_location: Location,
    pub allow_split: bool,
}

/// One store's share of a region order: its hold's id, drawn before it ran (the order
/// placed for the hold is found by it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedPart {
    pub store_id: StoreId,
    pub hold_id: ReservationId,
    pub lines: Vec<ReservationLine>,
    /// The prices the client saw, per line (checked when the order is placed).
    pub unit_prices: Vec<Option<crate::domain::Paise>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RegionOrder {
    pub region_id: StoreId,
    pub customer: Customer,
    pub payment_method: PaymentMethod,
    pub parts: Vec<PlannedPart>,
    /// The orders placed, one per part, once it completed.
    pub orders: Vec<OrderId>,
}

impl Sagas {
    /// The stores of `region` that can take part, with their distance and stock.
    async fn candidates(
        &self,
        region: &Region,
        products: &[ProductId],
        to: &Location,
    ) -> Vec<Candidate> {
        let mut out = Vec::new();
        for store in &region.store_ids {
            let step = Step::Stock {
                products: products.to_vec(),
            };
            let Ok(StepAnswer::Stock(Some(location), available)) = self.run(store, step).await
            else {
                continue; // not in the region's processes, unreachable, or without a location
            };
            out.push(Candidate {
                store_id: store.clone(),
                distance_m: distance_m(&location, to),
                available,
            });
        }
        out
    }

    /// Routes a region order: which stores, what each ships, and the id of each hold.
    async fn plan(
        &self,
        region_id: &StoreId,
        req: RegionRequest,
    ) -> Result<RegionOrder, SagaError> {
        let region = self
            .regions
            .get(region_id)
            .ok_or(SagaError::RegionNotFound)?;
        let products: Vec<ProductId> = req.items.iter().map(|i| i.product_id.clone()).collect();
        let to = &req.delivery_location;
        let candidates = self.candidates(&region, &products, to).await;
        let lines: Vec<(ProductId, crate::domain::Qty)> = req
            .items
            .iter()
            .map(|i| (i.product_id.clone(), i.quantity))
            .collect();
        let routed = route(&lines, &candidates, req.allow_split).map_err(SagaError::RegionShort)?;
        let price_of = |id: &ProductId| req.items.iter().find(|i| &i.product_id == id)?.unit_price;
        let mut parts = Vec::with_capacity(routed.len());
        for part in routed {
            let hold = fresh_id("RSV")?;
            parts.push(PlannedPart {
                store_id: part.store_id,
                hold_id: ReservationId::parse(&hold).expect("RSV + hex is valid"),
                unit_prices: part.lines.iter().map(|(id, _)| price_of(id)).collect(),
                lines: part
                    .lines
                    .into_iter()
                    .map(|(product_id, quantity)| ReservationLine {
                        product_id,
                        quantity,
                    })
                    .collect(),
            });
        }
        Ok(RegionOrder {
            region_id: region_id.clone(),
            customer: req.customer,
            payment_method: req.payment_method,
            parts,
            orders: Vec::new(),
        })
    }

    /// Routes and places a region order; the saga as it ended.
    pub async fn region_order(
        &self,
        region_id: &StoreId,
        req: RegionRequest,
        idem: Option<crate::wal::IdemTag>,
    ) -> Result<Saga, SagaError> {
        if self.regions.get(region_id).is_none() {
            return Err(SagaError::RegionNotFound);
        }
        if let Some(done) = self.again(idem.as_ref()).await? {
            return Ok(done);
        }
        let order = self.plan(region_id, req).await?;
        let id = fresh_id("RGN")?;
        let Some(_running) = self.start_running(&id) else {
            return Err(SagaError::Storage("saga id drawn twice".into()));
        };
        let mut saga = Saga {
            id,
            created_ms: now(),
            plan: Plan::Region(order.clone()),
            phase: Phase::Started,
            idem,
        };
        self.record(&saga).await?;
        self.fault_point("region:started");
        for (i, part) in order.parts.iter().enumerate() {
            let hold = Step::Hold {
                hold_id: part.hold_id.clone(),
                lines: part.lines.clone(),
                ttl_ms: HOLD_TTL_MS,
            };
            if let Err(e) = self.run(&part.store_id, hold).await {
                self.release(&order.parts[..i]).await?;
                saga.phase = Phase::Failed(e.to_string().into());
                self.record(&saga).await?;
                return Err(e);
            }
        }
        self.fault_point("region:held");
        saga.phase = Phase::Committing;
        self.record(&saga).await?;
        self.fault_point("region:committing");
        self.commit(saga).await
    }

    /// Releases the holds of `parts` (a hold already gone is fine).
    async fn release(&self, parts: &[PlannedPart]) -> Result<(), SagaError> {
        for part in parts {
            let release = Step::Release {
                hold_id: part.hold_id.clone(),
            };
            self.run(&part.store_id, release).await?;
        }
        Ok(())
    }

    /// Places each part's order (from its hold, or without it if it ran out); an order
    /// already placed is left. A refusal cancels the orders placed and releases the rest.
    async fn commit(&self, mut saga: Saga) -> Result<Saga, SagaError> {
        let Plan::Region(mut order) = saga.plan.clone() else {
            unreachable!("called for region orders only")
        };
        let mut placed = Vec::with_capacity(order.parts.len());
        for (i, part) in order.parts.iter().enumerate() {
            let place = Step::Place {
                hold_id: part.hold_id.clone(),
                customer: order.customer.clone(),
                payment_method: order.payment_method,
                lines: part.lines.clone(),
                unit_prices: part.unit_prices.clone(),
            };
            match self.run(&part.store_id, place).await {
                Ok(StepAnswer::Placed(id)) => placed.push((part.store_id.clone(), id)),
                Ok(other) => return Err(SagaError::Storage(format!("unexpected {other:?}"))),
                Err(e) if e.is_passing() => return Err(e),
                Err(e) => {
                    self.undo(&placed).await?;
                    self.release(&order.parts[i..]).await?;
                    saga.phase = Phase::Failed(e.to_string().into());
                    self.record(&saga).await?;
                    return Err(e);
                }
            }
            if i == 0 {
                self.fault_point("region:placed");
            }
        }
        order.orders = placed.into_iter().map(|(_, id)| id).collect();
        saga.plan = Plan::Region(order);
        saga.phase = Phase::Completed;
        self.record(&saga).await?;
        Ok(saga)
    }

    /// Cancels the orders placed (a region order that could not complete).
    async fn undo(&self, placed: &[(StoreId, OrderId)]) -> Result<(), SagaError> {
        for (store, order_id) in placed {
            let cancel = Step::Cancel {
                order_id: *order_id,
                reason: "region order could not complete".into(),
            };
            match self.run(store, cancel).await {
                Ok(_) => {}
                // Already cancelled (or expired) by someone else: nothing left to undo.
                Err(SagaError::Domain { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub(super) async fn resume_region(&self, mut saga: Saga) -> Result<Saga, SagaError> {
        let Plan::Region(order) = saga.plan.clone() else {
            unreachable!("called for region orders only")
        };
        if saga.phase == Phase::Committing {
            return self.commit(saga).await;
        }
        self.release(&order.parts).await?;
        saga.phase = Phase::Failed("interrupted before every hold was placed".into());
        self.record(&saga).await?;
        Ok(saga)
    }
}

/// A region named now.
pub fn stamp(region_id: StoreId, name: Box<str>, store_ids: Vec<StoreId>) -> Region {
    Region {
        region_id,
        name,
        store_ids,
        updated_ms: now_ms(),
    }
}
