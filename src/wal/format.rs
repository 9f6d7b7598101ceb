//! The on-disk format: every value godown writes, into the log's segments or into sled, is a
//! frame `[format version: u8][crc32 of payload: u32 LE][payload: bincode]`.
//!
//! The log (see `segments`) is the only source of truth. sled holds caches of it (snapshots,
//! the order archive, the ledger, idempotency entries); we assume of sled only that each
//! `apply_batch` is atomic within its tree and that its recovery gives a consistent state,
//! and we make its files durable ourselves at each checkpoint (sled's `flush` is no fsync).

use super::views::ViewWrite;
use crate::domain::layout::{Layout, decode_as};
use crate::domain::state::{StoreStateBeforeEvents, StoreStateBeforeTokens};
use crate::domain::{Event, Movement, OrderId, ReturnId, StoreId, StoreState, TimeMs};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The format version this build writes: 3 since stores, products and states carry what
/// analytics needs (2: orders carry returns; 1: the first).
pub const FORMAT_VERSION: u8 = 3;
/// The older format versions, still read, and the domain layout each holds.
const FORMAT_VERSIONS_READ: [(u8, Layout); 2] =
    [(1, Layout::BeforeReturns), (2, Layout::BeforeAnalytics)];
const HEADER_LEN: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    #[error("record {what} has format version {version}, newer than this godown reads")]
    UnknownVersion { what: String, version: u8 },
    #[error("{what} is corrupt: {why}")]
    Corrupt { what: String, why: String },
    #[error("the write-ahead log stopped: {0}")]
    Stopped(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

impl WalError {
    /// Whether the disk is full (the operator's remedy differs from other failures).
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            WalError::Io { source, .. } => Some(source),
            WalError::Sled(sled::Error::Io(e)) => Some(e),
            _ => None,
        };
        io.is_some_and(|e| e.raw_os_error() == Some(28)) // ENOSPC
    }
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `value` into a checksummed, versioned frame.
pub fn encode_frame<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![FORMAT_VERSION, 0, 0, 0, 0];
    bincode::serde::encode_into_std_write(value, &mut out, config())
        .expect("writing to a Vec cannot fail");
    let crc = crc32fast::hash(&out[HEADER_LEN..]);
    out[1..HEADER_LEN].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a frame written by [`encode_frame`], of this format or an older one; `what`
/// names it in errors.
pub fn decode_frame<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &dyn Fn() -> String,
) -> Result<T, WalError> {
    for (version, layout) in FORMAT_VERSIONS_READ {
        if bytes.first() == Some(&version) {
            return decode_as(layout, || decode_versioned(bytes, what, version));
        }
    }
    decode_versioned(bytes, what, FORMAT_VERSION)
}

/// Decodes a frame of format `version`.
fn decode_versioned<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    what: &dyn Fn() -> String,
    version: u8,
) -> Result<T, WalError> {
    if bytes.len() < HEADER_LEN {
        return Err(WalError::Corrupt {
            what: what(),
            why: format!("only {} bytes", bytes.len()),
        });
    }
    if bytes[0] != version {
        return Err(WalError::UnknownVersion {
            what: what(),
            version: bytes[0],
        });
    }
    let crc = u32::from_le_bytes(bytes[1..HEADER_LEN].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[HEADER_LEN..]) != crc {
        return Err(WalError::Corrupt {
            what: what(),
            why: "checksum mismatch".into(),
        });
    }
    let (value, len) =
        bincode::serde::decode_from_slice(&bytes[HEADER_LEN..], config()).map_err(|e| {
            WalError::Corrupt {
                what: what(),
                why: e.to_string(),
            }
        })?;
    if HEADER_LEN + len != bytes.len() {
        return Err(WalError::Corrupt {
            what: what(),
            why: "trailing bytes".into(),
        });
    }
    Ok(value)
}

/// What an idempotent request is remembered by.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdemTag {
    pub key: Box<str>,
    /// SHA-256 (first 16 bytes) of the request body's canonical JSON.
    pub body_hash: [u8; 16],
    pub at_ms: TimeMs,
}

/// One entry of the idempotency table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum IdemAnswer {
    /// The request created this order; its first answer is the order as it was created.
    Order(OrderId),
    /// Written by versions before answers became opaque (an HTTP status and body); read,
    /// never written. Its place in the enum is its encoding: keep it second.
    LegacyRefused { status: u16, body: Vec<u8> },
    /// Any other first answer, as the layer above encoded it; opaque to the log.
    Answer(Vec<u8>),
    /// The request took this return of this order; its answer is the return.
    Return {
        order_id: OrderId,
        return_id: ReturnId,
    },
    /// The request ran this saga; its answer is the saga as it ended (see [`SagaEntry`]).
    Saga(Box<str>),
    /// The request placed this batch: each order's outcome, in order.
    Batch(Vec<Result<OrderId, crate::domain::DomainError>>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IdemEntry {
    pub body_hash: [u8; 16],
    pub at_ms: TimeMs,
    pub answer: IdemAnswer,
}

/// One WAL record: the events of one command of one store, in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WalRecord {
    pub store_id: StoreId,
    pub events: Vec<Event>,
    /// Set when the command was an order placed with an `Idempotency-Key`.
    pub idem: Option<IdemTag>,
    /// The id of the first public event its facts give (`domain::events`); 0 in records
    /// of format version 1, written before events, which give none.
    pub first_event_id: u64,
    /// For a batch of orders: each order's outcome, in the batch's order (the answer an
    /// `Idempotency-Key` gets again). Absent in records before batches.
    #[serde(deserialize_with = "batch_since_batches")]
    pub batch: Option<Vec<Result<OrderId, crate::domain::DomainError>>>,
}

type BatchOutcome = Option<Vec<Result<OrderId, crate::domain::DomainError>>>;

fn batch_since_batches<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BatchOutcome, D::Error> {
    crate::domain::layout::added_after(Layout::BeforeTransfers, None, d)
}

/// The format version of record frames: 5 since batches (4: analytics; 3: orders carry
/// returns; 2: records carry `first_event_id`; 1: the first).
pub const RECORD_VERSION: u8 = 5;
/// Record versions with `first_event_id`, still read, and the domain layout each holds.
const RECORD_VERSIONS_READ: [(u8, Layout); 3] = [
    (2, Layout::BeforeReturns),
    (3, Layout::BeforeAnalytics),
    (4, Layout::BeforeTransfers),
];

/// A record as format version 1 wrote it.
#[derive(Deserialize)]
struct WalRecordV1 {
    store_id: StoreId,
    events: Vec<Event>,
    idem: Option<IdemTag>,
}

/// Encodes a record into a checksummed frame of [`RECORD_VERSION`].
pub fn encode_record(record: &WalRecord) -> Vec<u8> {
    let mut frame = encode_frame(record);
    frame[0] = RECORD_VERSION;
    frame
}

/// Decodes a record frame of any version.
pub fn decode_record(bytes: &[u8], what: &dyn Fn() -> String) -> Result<WalRecord, WalError> {
    if bytes.first() == Some(&1) {
        let old: WalRecordV1 =
            decode_as(Layout::BeforeReturns, || decode_versioned(bytes, what, 1))?;
        return Ok(WalRecord {
            store_id: old.store_id,
            events: old.events,
            idem: old.idem,
            first_event_id: 0,
            batch: None,
        });
    }
    for (version, layout) in RECORD_VERSIONS_READ {
        if bytes.first() == Some(&version) {
            return decode_as(layout, || decode_versioned(bytes, what, version));
        }
    }
    decode_versioned(bytes, what, RECORD_VERSION)
}

/// A store's whole state as of WAL sequence `seq` (it covers every record before `seq`).
/// `state` is a bincode-encoded [`StoreState`], encoded by the store's actor.
#[derive(Serialize, Deserialize)]
pub struct SnapshotFrame {
    pub seq: u64,
    pub state: Vec<u8>,
}

/// Longest part of a snapshot in sled. sled keeps up to 16 values in a leaf and writes a
/// page over 128 KiB as a separate blob file; whole snapshots (~70 KB for 1,000 products)
/// put several in a leaf and made every snapshot round stall the log.
pub const SNAPSHOT_PART_LEN: usize = 4096;

/// The key of part `part` of `store`'s snapshot as of `seq`:
/// `store \0 seq (u64 BE) part (u32 BE)`. Each snapshot has keys of its own, so writing a
/// new one never touches the last (which is deleted only once the new one is durable): a
/// snapshot torn by a crash leaves the one before it whole.
pub fn snapshot_key(store: &StoreId, seq: u64, part: u32) -> Vec<u8> {
    let mut key = Vec::with_capacity(store.as_str().len() + 13);
    key.extend_from_slice(store.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&seq.to_be_bytes());
    key.extend_from_slice(&part.to_be_bytes());
    key
}

/// The sled writes for one store's snapshot frame as of `seq`: parts keyed by
/// [`snapshot_key`], part 0 starting with the number of parts (u32 LE). One `apply_batch`
/// writes all of them.
pub fn snapshot_parts(store: &StoreId, seq: u64, frame: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let chunks: Vec<&[u8]> = frame.chunks(SNAPSHOT_PART_LEN).collect();
    let count = chunks.len().max(1) as u32;
    let mut parts = Vec::with_capacity(count as usize);
    for i in 0..count {
        let chunk = chunks.get(i as usize).copied().unwrap_or(&[]);
        let mut value = Vec::with_capacity(chunk.len() + 4);
        if i == 0 {
            value.extend_from_slice(&count.to_le_bytes());
        }
        value.extend_from_slice(chunk);
        parts.push((snapshot_key(store, seq, i), value));
    }
    parts
}

/// One stored snapshot of a store, reassembled from its parts; `frame` says what is wrong
/// if it is incomplete.
pub struct StoredSnapshot {
    /// The version in its keys (0 for layouts before versioned keys).
    pub version: u64,
    pub frame: Result<Vec<u8>, String>,
}

/// Every store's stored snapshots, newest first, keyed by the store's name. Layouts of
/// earlier versions are read too: a whole frame under the store's name, and parts keyed
/// `store \0 part (u32 BE)` (both version 0). Only a sled error fails the whole read.
pub fn read_snapshots(
    tree: &sled::Tree,
) -> Result<BTreeMap<String, Vec<StoredSnapshot>>, WalError> {
    // store → version → parts in key order
    let mut found: BTreeMap<String, BTreeMap<u64, Vec<(u32, sled::IVec)>>> = BTreeMap::new();
    for entry in tree.iter() {
        let (key, value) = entry?;
        let Some(zero) = key.iter().position(|&b| b == 0) else {
            let store = String::from_utf8_lossy(&key).into_owned();
            let mut whole = Vec::with_capacity(value.len() + 4);
            whole.extend_from_slice(&1u32.to_le_bytes());
            whole.extend_from_slice(&value);
            found
                .entry(store)
                .or_default()
                .entry(0)
                .or_default()
                .push((0, whole.into()));
            continue;
        };
        let store = String::from_utf8_lossy(&key[..zero]).into_owned();
        let rest = &key[zero + 1..];
        let (version, part) = match rest.len() {
            12 => (
                u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")),
                u32::from_be_bytes(rest[8..].try_into().expect("4 bytes")),
            ),
            4 => (0, u32::from_be_bytes(rest.try_into().expect("4 bytes"))),
            _ => continue, // not a snapshot key of any layout: ignored
        };
        found
            .entry(store)
            .or_default()
            .entry(version)
            .or_default()
            .push((part, value));
    }
    Ok(found
        .into_iter()
        .map(|(store, versions)| {
            let newest_first = versions
                .into_iter()
                .rev()
                .map(|(version, parts)| StoredSnapshot {
                    version,
                    frame: assemble(&parts),
                })
                .collect();
            (store, newest_first)
        })
        .collect())
}

/// A snapshot frame from its parts: part 0 says how many there are; parts past that number
/// are stale leftovers of a larger snapshot of the layout before versioned keys.
fn assemble(parts: &[(u32, sled::IVec)]) -> Result<Vec<u8>, String> {
    let Some((0, first)) = parts.first() else {
        return Err("part 0 is missing".into());
    };
    if first.len() < 4 {
        return Err("part 0 is cut short".into());
    }
    let count = u32::from_le_bytes(first[..4].try_into().expect("4 bytes"));
    let mut frame = first[4..].to_vec();
    for i in 1..count {
        match parts.get(i as usize) {
            Some((part, value)) if *part == i => frame.extend_from_slice(value),
            _ => return Err(format!("part {i} of {count} is missing")),
        }
    }
    Ok(frame)
}

/// The keys of `store`'s snapshots older than `version`, of every layout (for deletion once
/// the snapshot of `version` is durable).
pub fn snapshot_keys_before(
    tree: &sled::Tree,
    store: &StoreId,
    version: u64,
) -> Result<Vec<sled::IVec>, WalError> {
    let mut keys = Vec::new();
    if tree.contains_key(store.as_str().as_bytes())? {
        keys.push(store.as_str().as_bytes().into());
    }
    let mut prefix = store.as_str().as_bytes().to_vec();
    prefix.push(0);
    for entry in tree.scan_prefix(&prefix) {
        let (key, _) = entry?;
        let rest = &key[prefix.len()..];
        let old = match rest.len() {
            12 => u64::from_be_bytes(rest[..8].try_into().expect("8 bytes")) < version,
            4 => true,
            _ => false,
        };
        if old {
            keys.push(key);
        }
    }
    Ok(keys)
}

/// Marks a snapshot state of a versioned layout: `[STATE_TAG][layout u8][bincode]`. The
/// layouts before it began with a store id's length (1 to 128), never with this byte.
const STATE_TAG: u8 = 0xFF;
/// The layout of `StoreState` this build writes (6: with transfer receipts; 5: with
/// analytics; 4: orders with returns; 3: with events and webhooks).
const STATE_LAYOUT: u8 = 6;
/// Older tagged layouts, still read, and the domain layout each holds.
const STATE_LAYOUTS_READ: [(u8, Layout); 3] = [
    (3, Layout::BeforeReturns),
    (4, Layout::BeforeAnalytics),
    (5, Layout::BeforeTransfers),
];

pub fn encode_state(state: &StoreState) -> Vec<u8> {
    let mut out = vec![STATE_TAG, STATE_LAYOUT];
    bincode::serde::encode_into_std_write(state, &mut out, config())
        .expect("writing to a Vec cannot fail");
    out
}

/// Decodes a store's state from a snapshot, of this layout or an earlier one (untagged:
/// before tokens, or with tokens and before events; the one whose bytes it is decodes
/// whole, the others do not).
pub fn decode_state(bytes: &[u8], what: &dyn Fn() -> String) -> Result<StoreState, WalError> {
    fn whole<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, String> {
        match bincode::serde::decode_from_slice::<T, _>(bytes, config()) {
            Ok((value, len)) if len == bytes.len() => Ok(value),
            Ok(_) => Err("trailing bytes".into()),
            Err(e) => Err(e.to_string()),
        }
    }
    let decoded = match bytes {
        [STATE_TAG, STATE_LAYOUT, rest @ ..] => whole::<StoreState>(rest),
        [STATE_TAG, tag, rest @ ..] => match STATE_LAYOUTS_READ.iter().find(|(t, _)| t == tag) {
            Some(&(_, layout)) => decode_as(layout, || whole::<StoreState>(rest)),
            None => Err(format!("unknown state layout {tag}")),
        },
        _ => decode_as(Layout::BeforeReturns, || {
            whole::<StoreStateBeforeEvents>(bytes)
                .map(StoreState::from)
                .or_else(|why| {
                    whole::<StoreStateBeforeTokens>(bytes)
                        .map(StoreState::from)
                        .map_err(|_| why)
                })
        }),
    };
    let mut state = decoded.map_err(|why| WalError::Corrupt { what: what(), why })?;
    state.rebuild_indexes();
    Ok(state)
}

/// The first byte of an age entry in the idempotency tree. Clients' keys are printable
/// ASCII, so this byte never starts one.
pub const IDEM_AGE_TAG: u8 = 0;

/// The age entry of idempotency key `key`, first answered at `at_ms`:
/// `\0 at_ms (u64 BE) key → ()`. Written with the entry in one batch, these list the
/// remembered keys oldest first, for eviction by age and by count.
pub fn idem_age_key(at_ms: TimeMs, key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + key.len());
    out.push(IDEM_AGE_TAG);
    out.extend_from_slice(&(at_ms.max(0) as u64).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The time and key of an age entry made by [`idem_age_key`].
pub fn split_idem_age_key(bytes: &[u8]) -> Option<(TimeMs, &[u8])> {
    let at = bytes.get(1..9)?;
    let at = u64::from_be_bytes(at.try_into().ok()?);
    Some((at as TimeMs, &bytes[9..]))
}

/// The trees derived from the WAL (caches, rebuilt by replay when needed).
/// The key of an order in the archive of godown before order blocks (see `views`).
pub fn order_key(id: OrderId) -> [u8; 4] {
    // That archive holds only orders of the 32-bit era.
    u32::try_from(id.seq()).unwrap_or(u32::MAX).to_be_bytes()
}

/// What a log entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A [`WalRecord`] frame: the events of one command of one store.
    Record = 1,
    /// A [`Remembered`] frame: an idempotent request's answer that changed no store.
    Remembered = 2,
    /// A [`StoreId`] frame: that store's snapshot in sled is as of this sequence number.
    Snapshot = 3,
    /// A [`SagaEntry`] frame: a step of a saga.
    Saga = 4,
    /// A `moving::HistoryEntry` frame: part of the history of a store moved in from
    /// another process (views only; its state comes as a snapshot).
    History = 5,
}

impl EntryKind {
    fn from_u8(b: u8) -> Option<EntryKind> {
        match b {
            1 => Some(EntryKind::Record),
            2 => Some(EntryKind::Remembered),
            3 => Some(EntryKind::Snapshot),
            4 => Some(EntryKind::Saga),
            5 => Some(EntryKind::History),
            _ => None,
        }
    }
}

/// An idempotency key's answer that is not an order (a refusal), kept in the log so that a
/// retry after a crash gets it again. The answer is opaque here: the HTTP layer encodes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Remembered {
    pub key: Box<str>,
    pub entry: IdemEntry,
}

/// A step of a saga (a change across stores, `crate::saga`): the saga's whole record after
/// the step, as the layer above encoded it (opaque here), and whether it is still open.
/// Recovery hands the open ones back to be resumed. A saga that ends answering an
/// `Idempotency-Key` names the key: the key's answer is then the saga.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SagaEntry {
    pub id: Box<str>,
    pub body: Vec<u8>,
    pub open: bool,
    pub idem: Option<IdemTag>,
}

/// The first byte of a saga's record in the answers (idempotency) tree: `\x01 id → body`.
pub const SAGA_TAG: u8 = 1;
/// The first byte of an open saga's marker there: `\x02 id → ()`, removed when it ends.
pub const OPEN_SAGA_TAG: u8 = 2;

pub fn saga_key(tag: u8, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(tag);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The view writes of a saga step: its record, its open marker, and its key's answer.
pub fn saga_views(entry: &SagaEntry) -> Vec<ViewWrite> {
    let mut writes = vec![
        ViewWrite::Answer {
            key: saga_key(SAGA_TAG, &entry.id),
            value: Some(entry.body.clone()),
        },
        ViewWrite::Answer {
            key: saga_key(OPEN_SAGA_TAG, &entry.id),
            value: entry.open.then(Vec::new),
        },
    ];
    if let (false, Some(tag)) = (entry.open, &entry.idem) {
        let answer = IdemEntry {
            body_hash: tag.body_hash,
            at_ms: tag.at_ms,
            answer: IdemAnswer::Saga(entry.id.clone()),
        };
        writes.push(ViewWrite::Idem {
            key: tag.key.as_bytes().to_vec(),
            value: encode_frame(&answer),
            at_ms: tag.at_ms,
        });
    }
    writes
}

/// One entry of a batch, as read back.
pub struct BatchEntry<'a> {
    pub seq: u64,
    pub kind: EntryKind,
    pub frame: &'a [u8],
}

/// Bytes before an entry's frame: sequence number, kind, frame length.
const ENTRY_HEADER: usize = 13;

/// Appends one entry to a batch: `[seq: u64 LE][kind: u8][len: u32 LE][frame]`.
pub fn push_batch_entry(out: &mut Vec<u8>, seq: u64, kind: EntryKind, frame: &[u8]) {
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
    out.extend_from_slice(frame);
}

/// Splits a batch into its entries; stops at the first malformed one, with the entries
/// before it and what was wrong.
pub fn split_batch(value: &[u8]) -> (Vec<BatchEntry<'_>>, Option<String>) {
    let mut entries = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        if rest.len() < ENTRY_HEADER {
            return (entries, Some(format!("{} stray bytes", rest.len())));
        }
        let seq = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let Some(kind) = EntryKind::from_u8(rest[8]) else {
            return (
                entries,
                Some(format!("entry {seq} has unknown kind {}", rest[8])),
            );
        };
        let len = u32::from_le_bytes(rest[9..13].try_into().expect("4 bytes")) as usize;
        if rest.len() < ENTRY_HEADER + len {
            return (entries, Some(format!("entry {seq} is cut short")));
        }
        entries.push(BatchEntry {
            seq,
            kind,
            frame: &rest[ENTRY_HEADER..ENTRY_HEADER + len],
        });
        rest = &rest[ENTRY_HEADER + len..];
    }
    (entries, None)
}

/// Splits a batch of the log kept in sled before segment files (`[seq][len][frame]`, every
/// entry a record) into `(seq, frame)`, for the one-time move into segments.
pub fn split_legacy_batch(value: &[u8]) -> Result<Vec<(u64, &[u8])>, String> {
    let mut entries = Vec::new();
    let mut rest = value;
    while !rest.is_empty() {
        if rest.len() < 12 {
            return Err(format!("{} stray bytes", rest.len()));
        }
        let seq = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(rest[8..12].try_into().expect("4 bytes")) as usize;
        if rest.len() < 12 + len {
            return Err(format!("record {seq} is cut short"));
        }
        entries.push((seq, &rest[12..12 + len]));
        rest = &rest[12 + len..];
    }
    Ok(entries)
}

/// `store \0 movement_id (BE)`: the key of a ledger chunk, named by its first movement.
/// Each store's ledger is appended in id order (cheap for sled); a product's history is
/// read by following `prev_movement_id` from its head.
pub fn movement_key(store: &StoreId, movement_id: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(store.as_str().len() + 9);
    key.extend_from_slice(store.as_str().as_bytes());
    key.push(0);
    key.extend_from_slice(&movement_id.to_be_bytes());
    key
}

/// Reads the ledger run that would hold `movement_id` (empty if none). A store's ledger is
/// stored in runs of consecutive ids, one sled value each, keyed by the first of them, so
/// the run holding `movement_id` is the last one whose key is at or below its key.
pub fn read_ledger_run(
    ledger: &sled::Tree,
    store: &StoreId,
    movement_id: u64,
) -> Result<Vec<Movement>, WalError> {
    let range = movement_key(store, 0)..=movement_key(store, movement_id);
    let Some(entry) = ledger.range(range).next_back() else {
        return Ok(Vec::new());
    };
    let (_, value) = entry?;
    decode_frame(&value, &|| format!("ledger chunk of store {store}"))
}

/// The view writes that a record implies (it is consumed: its movements move into the
/// ledger's write). Used live by the actor and again by recovery.
pub fn view_writes(record: WalRecord) -> Vec<ViewWrite> {
    let mut writes = Vec::with_capacity(4);
    if record.first_event_id > 0 {
        let events = crate::domain::events::derive(&record.events, record.first_event_id);
        if !events.is_empty() {
            writes.push(ViewWrite::Events {
                store: record.store_id.clone(),
                events: events.into_iter().map(std::sync::Arc::new).collect(),
            });
        }
    }
    let mut answer = record.batch.map(IdemAnswer::Batch);
    let mut moved: Vec<Movement> = Vec::new();
    for event in record.events {
        if let Event::Moved(m) = event {
            moved.push(m);
            continue;
        }
        let Some(order) = event.order() else {
            continue;
        };
        answer.get_or_insert_with(|| match (&event, order.returns.last()) {
            (Event::OrderReturned(_), Some(r)) => IdemAnswer::Return {
                order_id: order.order_id,
                return_id: r.return_id.clone(),
            },
            _ => IdemAnswer::Order(order.order_id),
        });
        writes.push(ViewWrite::Order {
            seq: order.order_id.seq(),
            store: record.store_id.clone(),
            frame: encode_frame(&**order),
        });
    }
    if !moved.is_empty() {
        debug_assert!(
            moved
                .windows(2)
                .all(|w| w[1].movement_id == w[0].movement_id + 1),
            "a record's movements have consecutive ids"
        );
        writes.push(ViewWrite::Movements {
            store: record.store_id,
            movements: moved,
        });
    }
    if let (Some(tag), Some(answer)) = (&record.idem, answer) {
        let entry = IdemEntry {
            body_hash: tag.body_hash,
            at_ms: tag.at_ms,
            answer,
        };
        writes.push(ViewWrite::Idem {
            key: tag.key.as_bytes().to_vec(),
            value: encode_frame(&entry),
            at_ms: tag.at_ms,
        });
    }
    writes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sled tree in a temporary directory (removed when the guard drops).
    fn temp_tree(name: &str) -> (tempfile::TempDir, sled::Tree) {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::Config::new().path(dir.path()).open().unwrap();
        let tree = db.open_tree(name).unwrap();
        (dir, tree)
    }

    #[test]
    fn frames_round_trip_and_detect_damage() {
        // Goal: a frame decodes to what was encoded; a flipped bit or a new version is caught.
        let value = (42u64, String::from("maggi"));
        let mut frame = encode_frame(&value);
        let what = || "test".to_string();
        assert_eq!(decode_frame::<(u64, String)>(&frame, &what).unwrap(), value);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(matches!(
            decode_frame::<(u64, String)>(&frame, &what),
            Err(WalError::Corrupt { .. })
        ));
        frame[last] ^= 1;
        frame[0] = 9;
        assert!(matches!(
            decode_frame::<(u64, String)>(&frame, &what),
            Err(WalError::UnknownVersion { version: 9, .. })
        ));
        assert!(decode_frame::<(u64, String)>(&frame[..3], &what).is_err());
    }

    #[test]
    fn a_movement_is_found_inside_its_chunk_and_stores_do_not_mix() {
        // Goal: the ledger stores one chunk per record (consecutive ids) and finds every
        // movement in it, first, middle or last; ids past the end, before the start or of
        // another store (one whose id extends this one's) are not found.
        use crate::domain::{MovementKind, ProductId, Qty};
        let (_dir, ledger) = temp_tree("movements");
        let movement = |id: u64| Movement {
            movement_id: id,
            prev_movement_id: 0,
            product_id: ProductId::parse(&format!("P{id}")).unwrap(),
            kind: MovementKind::Sale,
            on_hand_change: -1000,
            reserved_change: 0,
            on_hand_after: Qty(0),
            reserved_after: Qty(0),
            reference: "ORD".into(),
            at_ms: 0,
        };
        let (a, ab) = (StoreId::parse("A").unwrap(), StoreId::parse("AB").unwrap());
        let write = |store: &StoreId, ids: std::ops::RangeInclusive<u64>| {
            let record = WalRecord {
                store_id: store.clone(),
                events: ids.map(|i| Event::Moved(movement(i))).collect(),
                idem: None,
                first_event_id: 0,
                batch: None,
            };
            for w in view_writes(record) {
                let ViewWrite::Movements { store, movements } = w else {
                    panic!("only movements");
                };
                let key = movement_key(&store, movements[0].movement_id);
                ledger.insert(key, encode_frame(&movements)).unwrap();
            }
        };
        let read_movement = |store: &StoreId, id: u64| -> Result<Option<Movement>, WalError> {
            let run = read_ledger_run(&ledger, store, id)?;
            Ok(run.into_iter().find(|m| m.movement_id == id))
        };
        write(&a, 1..=3);
        write(&a, 4..=4);
        write(&a, 5..=9);
        write(&ab, 1..=2);
        assert_eq!(ledger.len(), 4, "one chunk per record");
        for id in 1..=9 {
            let m = read_movement(&a, id).unwrap().unwrap();
            assert_eq!(m.movement_id, id);
        }
        assert!(read_movement(&a, 0).unwrap().is_none());
        assert!(read_movement(&a, 10).unwrap().is_none());
        assert!(read_movement(&ab, 3).unwrap().is_none());
        assert_eq!(read_movement(&ab, 2).unwrap().unwrap().movement_id, 2);
        assert!(
            read_movement(&StoreId::parse("B").unwrap(), 1)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn snapshots_are_versioned_split_into_parts_and_a_torn_one_leaves_the_last() {
        // Goal: a snapshot frame of any size comes back whole from its parts; each version has
        // keys of its own, newest first; one with a part missing (torn) is reported as such
        // while the version before it still reads whole; the layouts of earlier versions (a
        // whole frame, unversioned parts with stale leftovers) are read; the keys older than
        // a version are found for deletion, and only those.
        let (_dir, tree) = temp_tree("snapshots");
        let write = |store: &str, seq: u64, frame: &[u8]| {
            let store = StoreId::parse(store).unwrap();
            let mut batch = sled::Batch::default();
            for (k, v) in snapshot_parts(&store, seq, frame) {
                assert!(v.len() <= SNAPSHOT_PART_LEN + 4);
                batch.insert(k, v);
            }
            tree.apply_batch(batch).unwrap();
        };
        let big: Vec<u8> = (0..3 * SNAPSHOT_PART_LEN + 17).map(|i| i as u8).collect();
        let small: Vec<u8> = (0..SNAPSHOT_PART_LEN + 1).map(|i| (i * 7) as u8).collect();
        tree.insert("OLD", &b"legacy frame"[..]).unwrap();
        let legacy_part = |part: u32, value: &[u8]| {
            let mut key = b"LEG\0".to_vec();
            key.extend_from_slice(&part.to_be_bytes());
            tree.insert(key, value).unwrap();
        };
        let mut part0 = 1u32.to_le_bytes().to_vec();
        part0.extend_from_slice(b"one part");
        legacy_part(0, &part0);
        legacy_part(1, b"stale part of a larger, older snapshot");
        write("A", 7, &big);
        write("AB", 3, &[]);
        write("B", 5, &big);
        write("B", 9, &small);
        let all = read_snapshots(&tree).unwrap();
        let names: Vec<&str> = all.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["A", "AB", "B", "LEG", "OLD"]);
        assert_eq!(all["A"][0].frame.as_ref().unwrap(), &big);
        assert!(all["AB"][0].frame.as_ref().unwrap().is_empty());
        let versions: Vec<u64> = all["B"].iter().map(|v| v.version).collect();
        assert_eq!(versions, [9, 5], "newest first");
        assert_eq!(all["B"][0].frame.as_ref().unwrap(), &small);
        assert_eq!(all["B"][1].frame.as_ref().unwrap(), &big);
        assert_eq!(all["LEG"][0].frame.as_ref().unwrap(), b"one part");
        assert_eq!(all["OLD"][0].frame.as_ref().unwrap(), b"legacy frame");

        let b = StoreId::parse("B").unwrap();
        tree.remove(snapshot_key(&b, 9, 1)).unwrap();
        let all = read_snapshots(&tree).unwrap();
        assert!(all["B"][0].frame.as_ref().unwrap_err().contains("part 1"));
        assert_eq!(
            all["B"][1].frame.as_ref().unwrap(),
            &big,
            "the last one is whole"
        );

        let old = snapshot_keys_before(&tree, &b, 9).unwrap();
        assert_eq!(old.len(), 4, "the four parts of version 5");
        let leg = snapshot_keys_before(&tree, &StoreId::parse("LEG").unwrap(), 1).unwrap();
        assert_eq!(leg.len(), 2);
        let o = snapshot_keys_before(&tree, &StoreId::parse("OLD").unwrap(), 1).unwrap();
        assert_eq!(o.len(), 1);
        assert!(
            snapshot_keys_before(&tree, &StoreId::parse("A").unwrap(), 7)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn snapshots_of_every_earlier_layout_still_decode() {
        // Goal: a state written before tokens (the same layout without the trailing token
        // map) decodes, with no tokens; a state with tokens round-trips; a cut is caught.
        use crate::domain::{Command, Paise, StoreConfig, TokenId};
        let config = StoreConfig {
            store_id: StoreId::parse("S").unwrap(),
            name: "s".into(),
            tax_rate_bp: 500,
            delivery_fee: Paise(2000),
            free_delivery_above: None,
            location: None,
            updated_ms: 7,
            utc_offset_minutes: 330,
        };
        let what = || "test".to_string();
        let state = StoreState::new(config);
        let bytes = encode_state(&state);
        // Tag and layout, …, then an empty token map, next_event_id 1 and no webhooks: one
        // byte each, then the empty sales. Without what analytics added, the tag and the
        // last two, the layout with tokens and before events; without the last three too,
        // the layout before tokens.
        let untagged = without_added(&bytes[2..], &state.config, &STORE_ADDED);
        let untagged = &untagged[..untagged.len() - STATE_ADDED.len() - RECEIPTS_ADDED.len()];
        assert_eq!(&untagged[untagged.len() - 3..], [0, 1, 0]);
        for old in [
            &untagged[..untagged.len() - 2],
            &untagged[..untagged.len() - 3],
        ] {
            let decoded = decode_state(old, &what).unwrap();
            assert_eq!(encode_state(&decoded), bytes);
            assert!(decoded.tokens().is_empty());
        }
        let mut unknown = bytes.clone();
        unknown[1] = 9;
        assert!(matches!(
            decode_state(&unknown, &what),
            Err(WalError::Corrupt { .. })
        ));

        let mut state = state;
        let token_id = TokenId::from_number(9);
        let issue = Command::IssueToken {
            token_id: token_id.clone(),
            digest: [7; 32],
        };
        state.execute(issue, 1).unwrap();
        let bytes = encode_state(&state);
        let decoded = decode_state(&bytes, &what).unwrap();
        assert_eq!(decoded.tokens().get(&token_id).unwrap().digest, [7; 32]);
        assert!(matches!(
            decode_state(&bytes[..bytes.len() - 3], &what),
            Err(WalError::Corrupt { .. })
        ));
    }

    /// `bytes` without the last `added` bytes of the one encoding of `value` in them: the
    /// fields `value`'s type gained since an older layout, which that layout did not write.
    fn without_added<T: Serialize>(bytes: &[u8], value: &T, added: &[u8]) -> Vec<u8> {
        let mut own = Vec::new();
        bincode::serde::encode_into_std_write(value, &mut own, config()).unwrap();
        assert!(own.ends_with(added), "the added fields encode as expected");
        let at = bytes
            .windows(own.len())
            .position(|w| w == own)
            .expect("the value is in the bytes");
        let end = at + own.len();
        [&bytes[..end - added.len()], &bytes[end..]].concat()
    }

    /// What an order gained with returns (`tax_rate_bp: None`, `returns: []`,
    /// `refunded_total: 0`), a store with analytics (`utc_offset_minutes: 330`, a zigzag
    /// varint), a product (lead 2, safety 1 days) and a state (empty sales: two empty maps;
    /// then, with transfers, no receipts: one empty map).
    const ORDER_ADDED: [u8; 3] = [0, 0, 0];
    const STORE_ADDED: [u8; 3] = [251, 0x94, 0x02];
    const PRODUCT_ADDED: [u8; 2] = [2, 1];
    const STATE_ADDED: [u8; 2] = [0, 0];
    const RECEIPTS_ADDED: [u8; 1] = [0];
    /// What a record gained with batches: no batch outcome (`None`, one byte).
    const BATCH_ADDED: [u8; 1] = [0];

    fn before_returns(bytes: &[u8], order: &crate::domain::Order) -> Vec<u8> {
        without_added(bytes, order, &ORDER_ADDED)
    }

    /// A frame's payload re-framed as `version`, with a fresh checksum.
    fn reframe(version: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![version];
        out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn values_written_before_returns_and_before_analytics_still_decode() {
        // Goal: a record (format 2), an archive frame (format 1) and a snapshot (layout 3)
        // holding an order in the layout before returns, and a snapshot (layout 4) and a
        // record (format 3) before analytics, decode into the same values with the new
        // fields' defaults; read as the current layout, the same bytes are refused (so the
        // test sees the difference it relies on).
        use crate::domain::state::{DraftItem, OrderDraft};
        use crate::domain::*;
        use std::sync::Arc;
        let what = || "test".to_string();
        let config = StoreConfig {
            store_id: StoreId::parse("S").unwrap(),
            name: "s".into(),
            tax_rate_bp: 500,
            delivery_fee: Paise(2000),
            free_delivery_above: None,
            location: None,
            updated_ms: 0,
            utc_offset_minutes: 330,
        };
        let mut state = StoreState::new(config);
        let info = ProductInfo {
            product_id: ProductId::parse("P").unwrap(),
            name: "p".into(),
            unit: Unit::Kg,
            unit_price: Paise(4750),
            low_stock_threshold: Qty::ZERO,
            category: None,
            lead_time_days: 2,
            safety_stock_days: 1,
        };
        let stock = Some(Qty::from_units(10));
        state
            .execute(Command::SetProduct { info, stock }, 1)
            .unwrap();
        let draft = OrderDraft {
            order_id: OrderId::from_seq(1),
            customer: Customer {
                phone: "1".into(),
                name: "c".into(),
                delivery_address: "a".into(),
            },
            items: vec![DraftItem {
                product_id: ProductId::parse("P").unwrap(),
                quantity: Qty(333),
                unit_price: None,
            }],
            payment_method: PaymentMethod::Upi,
            reservation_id: None,
            payment_ttl_ms: 1000,
            allow_partial: false,
            saga_key: None,
        };
        let (_, events) = state
            .execute(Command::PlaceOrder(Box::new(draft)), 2)
            .unwrap();
        let mut order = Order::clone(events.iter().find_map(Event::order).unwrap());
        assert_eq!(order.tax_rate_bp, Some(500));
        order.tax_rate_bp = None; // what an order before returns reads as

        let record = WalRecord {
            store_id: StoreId::parse("S").unwrap(),
            events: vec![Event::OrderSet(Arc::new(order.clone()))],
            idem: None,
            first_event_id: 5,
            batch: None,
        };
        let payload = &encode_record(&record)[HEADER_LEN..];
        let payload = &payload[..payload.len() - BATCH_ADDED.len()];
        let old = reframe(2, &before_returns(payload, &order));
        assert_eq!(decode_record(&old, &what).unwrap(), record);
        assert!(decode_versioned::<WalRecord>(&old, &what, 2).is_err());

        let old = reframe(
            1,
            &before_returns(&encode_frame(&order)[HEADER_LEN..], &order),
        );
        assert_eq!(decode_frame::<Order>(&old, &what).unwrap(), order);
        assert!(decode_versioned::<Order>(&old, &what, 1).is_err());

        // A snapshot keeps the pending order in memory. Layout 5 lacks the transfer
        // receipts; layout 4 also what analytics added (store, product, state); layout 3
        // also what returns added (order).
        state.apply_event(&Event::OrderSet(Arc::new(order.clone())));
        let bytes = encode_state(&state);
        let product = state.product(&ProductId::parse("P").unwrap()).unwrap();
        let layout4 = without_added(&bytes, &state.config, &STORE_ADDED);
        let layout4 = without_added(&layout4, &product.info, &PRODUCT_ADDED);
        let mut layout5 = bytes[..bytes.len() - RECEIPTS_ADDED.len()].to_vec();
        let end = layout4.len() - STATE_ADDED.len() - RECEIPTS_ADDED.len();
        let mut layout4 = layout4[..end].to_vec();
        let mut layout3 = before_returns(&layout4, &order);
        layout3[1] = 3;
        layout4[1] = 4;
        layout5[1] = 5;
        for old in [&mut layout3, &mut layout4, &mut layout5] {
            let decoded = decode_state(old, &what).unwrap();
            assert_eq!(
                encode_state(&decoded),
                bytes,
                "the same state, defaults filled in"
            );
            old[1] = STATE_LAYOUT;
            assert!(decode_state(old, &what).is_err());
        }

        // A record of format 3 (before analytics) setting a store and a product.
        let info = product.info.clone();
        let record = WalRecord {
            store_id: StoreId::parse("S").unwrap(),
            events: vec![
                Event::StoreSet(state.config.clone()),
                Event::ProductSet {
                    info: info.clone(),
                    at_ms: 9,
                },
            ],
            idem: None,
            first_event_id: 0,
            batch: None,
        };
        let payload = &encode_record(&record)[HEADER_LEN..];
        let payload = &payload[..payload.len() - BATCH_ADDED.len()];
        let v4 = reframe(4, payload);
        assert_eq!(
            decode_record(&v4, &what).unwrap(),
            record,
            "version 4: no batch"
        );
        assert!(decode_versioned::<WalRecord>(&v4, &what, RECORD_VERSION).is_err());
        let old = without_added(payload, &state.config, &STORE_ADDED);
        let old = reframe(3, &without_added(&old, &info, &PRODUCT_ADDED));
        assert_eq!(decode_record(&old, &what).unwrap(), record);
        assert!(decode_versioned::<WalRecord>(&old, &what, 3).is_err());
    }
}
