//! `Idempotency-Key`: the same key with the same body gets the first answer again.
//!
//! The durable truth is the log (an order's record carries its key; a refusal is remembered
//! by a log entry of its own), read back through `wal::Archive`. This module adds only what
//! is in flight:
//! a concurrent duplicate finds the first request here and waits for its answer. The map is
//! guarded by a plain mutex held for a lookup or insert, never across an await, and it
//! holds only requests in progress.

use bytes::Bytes;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Longest key, in bytes.
pub const KEY_LEN_MAX: usize = 128;
const SHARDS: usize = 16;

#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Answer {
    /// The bytes the log keeps for a remembered answer (opaque to it): the status, u16
    /// big-endian, then the body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.body.len());
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Answer> {
        let status = u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?);
        Some(Answer {
            status,
            body: Bytes::copy_from_slice(&bytes[2..]),
        })
    }
}

type Slot = (
    /* body hash */ [u8; 16],
    watch::Receiver<Option<Answer>>,
);

#[derive(Default)]
pub struct IdemTable {
    shards: [Mutex<HashMap<Box<str>, Slot>>; SHARDS],
}

pub enum Begin {
    /// This request goes first; finish the guard with its answer.
    Leader(LeaderGuard),
    /// Another request with this key is running; its hash and its answer to come.
    Follower([u8; 16], watch::Receiver<Option<Answer>>),
}

pub struct LeaderGuard {
    table: Arc<IdemTable>,
    key: Box<str>,
    tx: Option<watch::Sender<Option<Answer>>>,
}

impl LeaderGuard {
    /// Publishes the answer to every waiter and forgets the key (the durable table has it).
    pub fn finish(mut self, answer: Answer) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Some(answer));
        }
    }
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let shard = &self.table.shards[shard_of(&self.key)];
        shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.key);
        // Dropping `tx` without an answer tells waiters to start over.
    }
}

fn shard_of(key: &str) -> usize {
    let h = key.bytes().fold(0usize, |h, b| {
        h.wrapping_mul(31).wrapping_add(usize::from(b))
    });
    h % SHARDS
}

impl IdemTable {
    pub fn begin(self: &Arc<Self>, key: &str, hash: [u8; 16]) -> Begin {
        let mut shard = self.shards[shard_of(key)]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((h, rx)) = shard.get(key) {
            return Begin::Follower(*h, rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        shard.insert(key.into(), (hash, rx));
        Begin::Leader(LeaderGuard {
            table: self.clone(),
            key: key.into(),
            tx: Some(tx),
        })
    }
}

/// Checks a header value: 1 to 128 printable ASCII characters.
pub fn valid_key(key: &[u8]) -> bool {
    !key.is_empty() && key.len() <= KEY_LEN_MAX && key.iter().all(|b| (0x20..=0x7e).contains(b))
}

/// A hash of the body that ignores formatting and key order ("JSON-equal" bodies match).
pub fn body_hash(body: &[u8]) -> [u8; 16] {
    let canonical = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => v.to_string().into_bytes(),
        Err(_) => body.to_vec(),
    };
    let digest = Sha256::digest(&canonical);
    digest[..16].try_into().expect("16 bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_equal_bodies_hash_alike() {
        assert_eq!(
            body_hash(br#"{"a":1,"b":[2]}"#),
            body_hash(br#"{ "b" : [2], "a":1 }"#)
        );
        assert_ne!(body_hash(br#"{"a":1}"#), body_hash(br#"{"a":2}"#));
        assert!(valid_key(b"order-123"));
        assert!(!valid_key(b""));
        assert!(!valid_key(&[b'a'; 129]));
        assert!(!valid_key(b"tab\there"));
    }

    #[tokio::test]
    async fn a_duplicate_waits_for_the_first_answer() {
        // Goal: the second request with a key in flight follows the first and gets its answer.
        let table = Arc::new(IdemTable::default());
        let Begin::Leader(guard) = table.begin("k", [1; 16]) else {
            panic!("first is leader")
        };
        let Begin::Follower(hash, mut rx) = table.begin("k", [1; 16]) else {
            panic!("second follows")
        };
        assert_eq!(hash, [1; 16]);
        guard.finish(Answer {
            status: 200,
            body: Bytes::from_static(b"{}"),
        });
        let answer = rx.wait_for(|a| a.is_some()).await.unwrap().clone().unwrap();
        assert_eq!(answer.status, 200);
        assert!(
            matches!(table.begin("k", [1; 16]), Begin::Leader(_)),
            "the key is free again"
        );
    }
}
