//! The write-ahead log's files: segments of checksummed batch frames, one `fdatasync` per
//! group commit.
//!
//! # What we assume of the disk
//! - A write is durable only once an `fdatasync`/`fsync` of its file has returned `Ok`;
//!   until then it may be lost, wholly or in part (a torn write), at a power cut.
//! - A failed `fdatasync` may already have dropped the dirty pages: it is never retried,
//!   the process stops (see `writer`).
//! - A file created, renamed or deleted is durable only once its directory is fsynced.
//! - Overwriting blocks a file already has needs no metadata commit, so `fdatasync` of a
//!   zero-filled segment writes data blocks only (the reason for preallocation).
//!
//! # Layout
//! `DIR/wal/<first seq, 20 digits>.log`, named by the sequence number of its first entry.
//! A segment is zero-filled to its size before use (by a helper thread, ahead of need) and
//! holds batch frames back to back:
//!
//! `[len: u32 LE][crc32: u32 LE][first seq: u64 LE][entries]`, `len` = 8 + entries' bytes,
//! the crc over the first seq and the entries. The entries are `format`'s batch entries.
//!
//! A zero `len` ends a segment's frames. A frame that does not check in the newest segment is
//! a write cut short by a crash (the tail is dropped with a warning); anywhere else it is
//! damage and recovery stops. Consecutive frames continue each other's sequence numbers, so
//! a lost segment is found too.

use super::format::WalError;
use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Default size of a segment. Large enough that creating, preallocating and deleting
/// segments is rare (one per ~200,000 orders), small enough that truncation frees space
/// in useful steps.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
/// The smallest segment size accepted (tests use small segments to exercise rotation).
pub const SEGMENT_BYTES_MIN: u64 = 64 << 10;
/// Frame header: length, crc32, first sequence number.
const FRAME_HEADER: usize = 16;
/// A frame's `len` field counts the first sequence number too.
const SEQ_LEN: usize = 8;
/// The largest frame recovery accepts (a batch of `BATCH_LEN_MAX` records of the largest
/// size the HTTP layer admits fits well inside it); a larger `len` is damage.
pub const FRAME_BYTES_MAX: usize = 1 << 30;
/// Zeros are written in chunks of this size when a segment is prepared.
const ZERO_CHUNK: usize = 1 << 20;
/// The file a segment is prepared in…
const SPARE_TMP: &str = "spare.tmp";
/// …and its name once it is zero-filled and synced (so a restart can use it at once).
const SPARE_NAME: &str = "spare.ready";

/// The directory of the log inside a data directory.
pub fn log_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("wal")
}

fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.log")
}

/// The first sequence numbers of the segments in `dir`, oldest first. Files that are not
/// segments are ignored (a spare being prepared, a checkpoint).
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(seqs),
        Err(e) => return Err(io_error("listing the log", dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| io_error("listing the log", dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".log")) else {
            continue;
        };
        if stem.len() == 20
            && let Ok(seq) = stem.parse::<u64>()
        {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

pub fn io_error(doing: &str, path: &Path, e: std::io::Error) -> WalError {
    WalError::Io {
        what: format!("{doing} ({})", path.display()),
        source: e,
    }
}

/// fsyncs a directory, so that files created, renamed or deleted in it stay so.
pub fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("syncing a directory", dir, e))
}

/// Encodes one batch frame.
pub fn encode_frame(first_seq: u64, entries: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let len = u32::try_from(SEQ_LEN + entries.len()).expect("a batch is far below 4 GiB");
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&first_seq.to_le_bytes());
    out.extend_from_slice(entries);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
}

/// One frame found in a segment.
pub struct Frame<'a> {
    /// Where the frame starts in its segment.
    pub offset: u64,
    pub first_seq: u64,
    pub entries: &'a [u8],
}

/// What reading one segment's bytes found.
pub struct SegmentScan<'a> {
    pub frames: Vec<Frame<'a>>,
    /// Where the valid frames end.
    pub end: u64,
    /// Why reading stopped before the zero fill or the end of the file, if it did.
    pub damage: Option<String>,
    /// Whether a frame that checks lies after the damage: then it is not a torn last write
    /// (nothing is written after the last) but damage to acknowledged data.
    pub frames_after_damage: bool,
}

/// Splits a segment's bytes into frames, up to the zero fill, the end, or the first frame
/// that does not check.
pub fn scan_segment(bytes: &[u8]) -> SegmentScan<'_> {
    let mut frames = Vec::new();
    let mut at = 0usize;
    let damage = loop {
        let rest = &bytes[at..];
        if rest.len() < FRAME_HEADER {
            break rest
                .iter()
                .any(|&b| b != 0)
                .then(|| format!("{} stray bytes at offset {at}", rest.len()));
        }
        let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break None;
        }
        if !(SEQ_LEN..=FRAME_BYTES_MAX).contains(&len) || rest.len() < 8 + len {
            break Some(format!(
                "a frame of {len} bytes at offset {at} is cut short"
            ));
        }
        let crc = u32::from_le_bytes(rest[4..8].try_into().expect("4 bytes"));
        let body = &rest[8..8 + len];
        if crc32fast::hash(body) != crc {
            break Some(format!("checksum mismatch at offset {at}"));
        }
        frames.push(Frame {
            offset: at as u64,
            first_seq: u64::from_le_bytes(body[..SEQ_LEN].try_into().expect("8 bytes")),
            entries: &body[SEQ_LEN..],
        });
        at += 8 + len;
    };
    let after_seq = frames.last().map_or(0, |f| f.first_seq);
    let frames_after_damage = damage.is_some() && frame_after(bytes, at + 1, after_seq);
    SegmentScan {
        frames,
        end: at as u64,
        damage,
        frames_after_damage,
    }
}

/// How far past the last valid frame's first sequence number a later frame may start and
/// still be looked for (far more entries than a segment holds).
const SEQ_WINDOW: u64 = 1 << 40;

/// Whether a frame that checks starts anywhere at or after `from`, with a first sequence
/// number after `after_seq` (a byte-by-byte search, run only when a segment is damaged).
/// The sequence number is tested before the checksum, so garbage rarely costs a crc over
/// megabytes: the search stays linear in the segment's size.
fn frame_after(bytes: &[u8], from: usize, after_seq: u64) -> bool {
    (from..bytes.len().saturating_sub(FRAME_HEADER)).any(|at| {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        let seq = u64::from_le_bytes(bytes[at + 8..at + 16].try_into().expect("8 bytes"));
        (SEQ_LEN..=FRAME_BYTES_MAX).contains(&len)
            && at + 8 + len <= bytes.len()
            && seq > after_seq
            && seq - after_seq < SEQ_WINDOW
            && crc32fast::hash(&bytes[at + 8..at + 8 + len])
                == u32::from_le_bytes(bytes[at + 4..at + 8].try_into().expect("4 bytes"))
    })
}

/// Reads a whole segment file.
pub fn read_segment(dir: &Path, first_seq: u64) -> Result<Vec<u8>, WalError> {
    let path = dir.join(segment_name(first_seq));
    let mut bytes = Vec::new();
    File::open(&path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(|e| io_error("reading a log segment", &path, e))?;
    Ok(bytes)
}

/// Cuts the newest segment after its last valid frame (a torn tail), durably, so that it
/// ends cleanly before the writer starts a new segment after it.
pub fn cut_segment(dir: &Path, first_seq: u64, end: u64) -> Result<(), WalError> {
    let path = dir.join(segment_name(first_seq));
    let file = OpenOptions::new()
        .write(true)
        .open(&path)
        .map_err(|e| io_error("opening a log segment", &path, e))?;
    file.set_len(end)
        .and_then(|_| file.sync_all())
        .map_err(|e| io_error("cutting a torn log segment", &path, e))
}

/// Deletes the segments wholly below `below` (a segment may go once the next one starts at
/// or below it; the newest is never deleted), oldest first, each deletion made durable
/// before the next so that no gap can ever appear in what is left. Returns how many.
pub fn delete_below(dir: &Path, below: u64) -> Result<usize, WalError> {
    let seqs = list_segments(dir)?;
    let mut deleted = 0;
    for pair in seqs.windows(2) {
        if pair[1] > below {
            break;
        }
        let path = dir.join(segment_name(pair[0]));
        std::fs::remove_file(&path).map_err(|e| io_error("deleting a log segment", &path, e))?;
        sync_dir(dir)?;
        deleted += 1;
    }
    Ok(deleted)
}

/// The checkpoint file: recovery rebuilds the views of the records from its point on.
const CHECKPOINT_NAME: &str = "checkpoint";

/// Records durably that the views of every record before `views_from` are in sled (written
/// whole to a temporary file, synced, renamed over the old one, directory synced).
pub fn write_checkpoint(dir: &Path, views_from: u64) -> Result<(), WalError> {
    let tmp = dir.join("checkpoint.tmp");
    let frame = super::format::encode_frame(&views_from);
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(&frame)?;
        file.sync_all()
    };
    write().map_err(|e| io_error("writing the checkpoint", &tmp, e))?;
    let path = dir.join(CHECKPOINT_NAME);
    std::fs::rename(&tmp, &path).map_err(|e| io_error("renaming the checkpoint", &path, e))?;
    sync_dir(dir)
}

/// The point of the last checkpoint, if there was one.
pub fn read_checkpoint(dir: &Path) -> Result<Option<u64>, WalError> {
    let path = dir.join(CHECKPOINT_NAME);
    match std::fs::read(&path) {
        Ok(bytes) => {
            super::format::decode_frame(&bytes, &|| "the checkpoint file".into()).map(Some)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("reading the checkpoint", &path, e)),
    }
}

/// The appending side of the log, owned by the WAL writer thread.
pub struct LogFiles {
    dir: PathBuf,
    segment_bytes: u64,
    current: Option<File>,
    /// Where the next frame goes in `current`.
    write_at: u64,
    /// First sequence numbers of the segments this writer created, newest last (for stats).
    created: VecDeque<u64>,
    /// A zero-filled spare, or the error that stopped its preparation.
    spare_rx: mpsc::Receiver<Result<(), WalError>>,
    spare_tx: mpsc::Sender<()>,
    /// Whether a spare was asked for and not taken yet.
    spare_asked: bool,
    frame: Vec<u8>,
}

impl LogFiles {
    /// Opens the log for appending. The writer always begins a new segment at its first
    /// batch (a segment that ended in a torn write was cut by recovery).
    pub fn open(data_dir: &Path, segment_bytes: u64) -> Result<LogFiles, WalError> {
        let dir = log_dir(data_dir);
        std::fs::create_dir_all(&dir).map_err(|e| io_error("creating the log", &dir, e))?;
        sync_dir(&dir)?;
        if let Some(parent) = dir.parent() {
            sync_dir(parent)?;
        }
        let segment_bytes = segment_bytes.max(SEGMENT_BYTES_MIN);
        let (spare_tx, spare_rx) = start_preparer(dir.clone(), segment_bytes);
        let mut files = LogFiles {
            dir,
            segment_bytes,
            current: None,
            write_at: 0,
            created: VecDeque::new(),
            spare_rx,
            spare_tx,
            spare_asked: false,
            frame: Vec::new(),
        };
        files.ask_spare();
        Ok(files)
    }

    fn ask_spare(&mut self) {
        if !self.spare_asked {
            self.spare_asked = self.spare_tx.send(()).is_ok();
        }
    }

    /// Appends one batch frame and, with `sync`, makes it durable before returning.
    pub fn append(&mut self, first_seq: u64, entries: &[u8], sync: bool) -> Result<(), WalError> {
        let mut frame = std::mem::take(&mut self.frame);
        encode_frame(first_seq, entries, &mut frame);
        let full = self.write_at + frame.len() as u64 > self.segment_bytes && self.write_at > 0;
        if self.current.is_none() || full {
            self.start_segment(first_seq)?;
        }
        let file = self.current.as_ref().expect("a segment is open");
        let path = || self.dir.join("current segment");
        file.write_all_at(&frame, self.write_at)
            .map_err(|e| io_error("writing the log", &path(), e))?;
        if sync {
            file.sync_data()
                .map_err(|e| io_error("fdatasync of the log", &path(), e))?;
        }
        self.write_at += frame.len() as u64;
        self.frame = frame;
        Ok(())
    }

    /// Starts the segment whose first entry is `first_seq`: the prepared spare renamed into
    /// place if it is ready, else a new file (correct, only slower to sync at first).
    fn start_segment(&mut self, first_seq: u64) -> Result<(), WalError> {
        if let Some(old) = self.current.take() {
            // Its frames are durable already; this only settles the file's metadata.
            old.sync_all()
                .map_err(|e| io_error("syncing a full log segment", &self.dir, e))?;
        }
        let path = self.dir.join(segment_name(first_seq));
        let spare = match self.spare_rx.try_recv() {
            Ok(Ok(())) => {
                self.spare_asked = false;
                true
            }
            Ok(Err(e)) => {
                self.spare_asked = false;
                tracing::warn!(error = %e, "no preallocated log segment; creating one in place");
                false
            }
            Err(_) => false,
        };
        if spare {
            std::fs::rename(self.dir.join(SPARE_NAME), &path)
                .map_err(|e| io_error("renaming a spare log segment", &path, e))?;
        } else {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .map_err(|e| io_error("creating a log segment", &path, e))?;
            file.sync_all()
                .map_err(|e| io_error("syncing a new log segment", &path, e))?;
        }
        sync_dir(&self.dir)?;
        let file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| io_error("opening a log segment", &path, e))?;
        self.current = Some(file);
        self.write_at = 0;
        self.created.push_back(first_seq);
        self.ask_spare();
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Starts the thread that prepares the next segment: `spare.tmp`, zero-filled to the
/// segment size, fsynced and renamed `spare.ready`, so that the writer only renames it
/// into place when it needs it.
fn start_preparer(
    dir: PathBuf,
    segment_bytes: u64,
) -> (mpsc::Sender<()>, mpsc::Receiver<Result<(), WalError>>) {
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (ready_tx, ready_rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("wal-preparer".into())
        .spawn(move || {
            while ask_rx.recv().is_ok() {
                let result = prepare_spare(&dir, segment_bytes);
                if ready_tx.send(result).is_err() {
                    return;
                }
            }
        })
        .expect("spawning the log segment preparer");
    (ask_tx, ready_rx)
}

fn prepare_spare(dir: &Path, segment_bytes: u64) -> Result<(), WalError> {
    let ready = dir.join(SPARE_NAME);
    if std::fs::metadata(&ready).is_ok_and(|m| m.len() == segment_bytes) {
        return Ok(()); // left ready by an earlier run
    }
    let path = dir.join(SPARE_TMP);
    let write = || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let zeros = vec![0u8; ZERO_CHUNK];
        let mut left = segment_bytes;
        while left > 0 {
            let n = left.min(ZERO_CHUNK as u64) as usize;
            file.write_all(&zeros[..n])?;
            left -= n as u64;
        }
        file.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&path);
        return Err(io_error("preparing a log segment", &path, e));
    }
    std::fs::rename(&path, &ready).map_err(|e| io_error("preparing a log segment", &ready, e))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_a_damaged_or_cut_frame_ends_the_scan() {
        // Goal: frames written back to back are read back; the zero fill ends the scan
        // cleanly; a flipped bit or a frame cut short ends it with the damage named.
        let mut bytes = Vec::new();
        let mut frame = Vec::new();
        for (seq, entries) in [(1u64, &b"abc"[..]), (4, b"de"), (6, b"fgh")] {
            encode_frame(seq, entries, &mut frame);
            bytes.extend_from_slice(&frame);
        }
        let end = bytes.len();
        bytes.extend_from_slice(&[0; 100]);
        let scan = scan_segment(&bytes);
        assert!(scan.damage.is_none());
        assert_eq!(scan.end, end as u64);
        let seqs: Vec<u64> = scan.frames.iter().map(|f| f.first_seq).collect();
        assert_eq!(seqs, [1, 4, 6]);
        assert_eq!(scan.frames[1].entries, b"de");

        let mut flipped = bytes.clone();
        flipped[FRAME_HEADER + 3 + 12] ^= 1; // inside the second frame
        let scan = scan_segment(&flipped);
        assert_eq!(scan.frames.len(), 1);
        assert!(scan.damage.unwrap().contains("checksum"));
        assert!(scan.frames_after_damage, "the third frame still checks");

        let cut = &bytes[..end - 1];
        let scan = scan_segment(cut);
        assert_eq!(scan.frames.len(), 2);
        assert!(scan.damage.unwrap().contains("cut short"));
        assert!(!scan.frames_after_damage, "a torn last write");
    }

    #[test]
    fn segments_rotate_when_full_and_deletion_keeps_the_newest() {
        // Goal: frames that would overflow a segment start a new one named by their first
        // sequence number; every frame is read back in order; deleting below a point removes
        // only segments wholly below it and never the newest.
        let dir = tempfile::tempdir().unwrap();
        let mut log = LogFiles::open(dir.path(), SEGMENT_BYTES_MIN).unwrap();
        let entries = vec![7u8; 20_000];
        for i in 0..10u64 {
            log.append(1 + i * 5, &entries, true).unwrap();
        }
        let wal = log_dir(dir.path());
        let seqs = list_segments(&wal).unwrap();
        assert_eq!(
            seqs,
            [1, 16, 31, 46],
            "three frames of 20 KB per 64 KiB segment"
        );
        let mut read = Vec::new();
        for &s in &seqs {
            let bytes = read_segment(&wal, s).unwrap();
            let scan = scan_segment(&bytes);
            assert!(scan.damage.is_none());
            read.extend(scan.frames.iter().map(|f| f.first_seq));
        }
        assert_eq!(read, (0..10).map(|i| 1 + i * 5).collect::<Vec<_>>());
        assert_eq!(
            delete_below(&wal, 30).unwrap(),
            1,
            "16 starts below 30; 31 does not"
        );
        assert_eq!(list_segments(&wal).unwrap(), [16, 31, 46]);
        assert_eq!(delete_below(&wal, u64::MAX).unwrap(), 2);
        assert_eq!(list_segments(&wal).unwrap(), [46], "the newest stays");
    }
}
