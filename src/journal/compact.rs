//! Compaction, and the journal's background thread.
//!
//! A compaction writes a snapshot of the live entries to `<path>.compact`,
//! fsyncs it, appends what was written to the old file meanwhile, and renames
//! it over the journal, then fsyncs the directory. One runs at a time.
//!
//! * It starts capturing every batch written, then waits until every
//!   completion whose record was written before that has reached memory
//!   (the `applying` gate: a completion holds it shared from before its
//!   record is written until its entry is completed). So each completion is
//!   in the snapshot or in the capture, or both.
//! * The snapshot labels every entry with the last token handed out, read
//!   after capture began, and carries the token limit read with no
//!   reservation under way; see the module docs for why replay then keeps
//!   the right record of each key.
//! * Reads and claims never wait for it. Completions wait for the drain
//!   (at most one batch) and for the final swap (an fsync and a rename).
//! * A crash at any point leaves the old file or the new one, whole: the
//!   rename is atomic, and a leftover `.compact` file is replaced by the next
//!   compaction. After the rename, the log appends to the new file, which it
//!   opened before renaming; a failed directory fsync then stops the log.
//! * It holds the store only for one step of the snapshot at a time, then
//!   for the swap: dropping the last handle during the snapshot ends the
//!   compaction (the old file stays) and frees the store, and its journal's
//!   lock, within a step; during the swap, once the swap is done.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hash};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::format;
use super::open::sync_dir;
use super::{Encoder, Gates, Journal, JournalError, Log, Tokens};
use crate::store::Inner;

/// Buckets a snapshot reads per shard-lock hold.
const SNAPSHOT_BUDGET: usize = 256;

/// The longest the background thread sleeps between checks.
const TICK: Duration = Duration::from_millis(50);

/// Snapshot bytes buffered before a write.
const WRITE_CHUNK: usize = 1 << 20;

/// Whether the journal holds enough dead records to be worth compacting:
/// over its size threshold, and more records than twice the entries held.
pub(crate) fn due<K, V>(journal: &Journal<K, V>, entries: usize) -> bool {
    let (records, bytes) = journal.log.size();
    bytes > journal.compact_above && records > 2 * entries as u64 + 1
}

/// What a compaction needs of the journal, without holding the store.
struct Parts<K, V> {
    log: Arc<Log>,
    tokens: Arc<Tokens>,
    gates: Arc<Gates>,
    encode_key: Encoder<K>,
    encode_value: Encoder<V>,
    tag: String,
}

/// Rewrites the journal of the store behind `store` as a snapshot of its
/// live entries. Does nothing without a journal. An error before the rename
/// leaves the old file in use, as it was.
pub(crate) fn compact<K, V, S>(store: &Weak<Inner<K, V, S>>) -> Result<(), JournalError>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let parts = {
        let Some(inner) = store.upgrade() else {
            return Ok(());
        };
        let Some(journal) = &inner.journal else {
            return Ok(());
        };
        Parts {
            log: journal.log.clone(),
            tokens: journal.tokens.clone(),
            gates: journal.gates.clone(),
            encode_key: journal.encode_key,
            encode_value: journal.encode_value,
            tag: journal.tag.clone(),
        }
    };
    let _one = parts
        .gates
        .compacting
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let path = parts.log.path().to_path_buf();
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".compact");
    let tmp = PathBuf::from(tmp);
    let mut capture = Capture::start(&parts.log);
    let result = write_and_swap(store, &parts, &tmp, &mut capture);
    if result.is_err() && !capture.swapped {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Capture of the batches written during a compaction; stops on drop, so
/// neither an error nor a panic leaves it on.
struct Capture<'a> {
    log: &'a Log,
    swapped: bool,
}

impl<'a> Capture<'a> {
    fn start(log: &'a Log) -> Self {
        log.start_capture();
        Capture {
            log,
            swapped: false,
        }
    }
}

impl Drop for Capture<'_> {
    fn drop(&mut self) {
        self.log.stop_capture();
    }
}

fn write_and_swap<K, V, S>(
    store: &Weak<Inner<K, V, S>>,
    parts: &Parts<K, V>,
    tmp: &Path,
    capture: &mut Capture<'_>,
) -> Result<(), JournalError>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let io = |op| move |e: std::io::Error| JournalError::io(tmp, op, &e);
    let gone = || JournalError::Failed {
        path: parts.log.path().to_path_buf(),
        cause: "the store was dropped during a compaction".into(),
    };
    // Every completion recorded before capture began is in memory once this
    // returns: the drain.
    drop(
        parts
            .gates
            .applying
            .write()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let (label, now) = {
        let inner = store.upgrade().ok_or_else(gone)?;
        // Read after capture began: every claim after this has a larger
        // token, and its records are in the capture.
        (inner.table.last_token(), inner.clock.now())
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io("open"))?;
    let mut bytes = format::header(&parts.tag);
    format::reserve(&mut bytes, parts.tokens.settled_limit());
    let mut records = 1;
    let mut cursor = (0, 0);
    let mut batch = Vec::new();
    loop {
        let more = {
            let inner = store.upgrade().ok_or_else(gone)?;
            let more = inner
                .table
                .snapshot_step(now, &mut cursor, SNAPSHOT_BUDGET, &mut batch);
            for (key, value, fingerprint, expires_at) in batch.drain(..) {
                let wall = inner.clock.wall_at(expires_at);
                format::complete(
                    &mut bytes,
                    label,
                    wall,
                    fingerprint,
                    |out| (parts.encode_key)(&key, out),
                    |out| (parts.encode_value)(&value, out),
                )?;
                records += 1;
            }
            more
        };
        if bytes.len() >= WRITE_CHUNK || !more {
            file.write_all(&bytes).map_err(io("write"))?;
            bytes.clear();
        }
        if !more {
            break;
        }
    }
    // From here to the end the store is held: the journal's lock must not
    // pass to another store before the rename is done.
    let _held = store.upgrade().ok_or_else(gone)?;
    file.write_all(&parts.log.take_capture())
        .map_err(io("write"))?;
    file.sync_data().map_err(io("fsync"))?;
    // The appender, opened before the rename: it follows the file.
    let appender: File = OpenOptions::new()
        .append(true)
        .open(tmp)
        .map_err(io("open"))?;
    // The swap: no batch is written until it is done.
    let mut exclusive = parts.log.exclusive();
    let rest = exclusive.finish_capture();
    file.write_all(&rest).map_err(io("write"))?;
    file.sync_data().map_err(io("fsync"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    let path = parts.log.path();
    std::fs::rename(tmp, path).map_err(|e| JournalError::io(path, "rename", &e))?;
    capture.swapped = true;
    exclusive.replace_file(appender, len, records);
    drop(exclusive);
    if let Err(e) = sync_dir(path) {
        // The rename may not survive a crash, and the old file lacks what
        // is appended from now on: stop recording rather than lose it.
        parts.log.fail(&e);
        return Err(e);
    }
    Ok(())
}

/// Starts the journal's thread: fsyncs under `Fsync::Interval`, reserves
/// fencing tokens ahead of the claims, and starts a compaction (on a thread
/// of its own) when one is due. It holds only a `Weak`, and ends when the
/// store drops.
pub(crate) fn spawn<K, V, S>(inner: &Arc<Inner<K, V, S>>) -> std::io::Result<std::thread::Thread>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let weak: Weak<Inner<K, V, S>> = Arc::downgrade(inner);
    let Some(journal) = &inner.journal else {
        return Ok(std::thread::current());
    };
    let (log, tokens, gates) = (
        journal.log.clone(),
        journal.tokens.clone(),
        journal.gates.clone(),
    );
    let interval = log.interval();
    let tick = interval.map_or(TICK, |every| every.min(TICK));
    let handle = std::thread::Builder::new()
        .name("idemstore-journal".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            loop {
                std::thread::park_timeout(tick);
                // The store only for a moment: dropping its last handle
                // frees it (and the journal's lock) from the user's thread.
                let Some((last_token, due)) = weak.upgrade().map(|inner| {
                    let due = inner
                        .journal
                        .as_ref()
                        .is_some_and(|journal| due(journal, inner.table.len()));
                    (inner.table.last_token(), due)
                }) else {
                    return;
                };
                if interval.is_some_and(|every| last_sync.elapsed() >= every) {
                    log.sync_if_dirty();
                    last_sync = Instant::now();
                }
                if tokens.wanted() {
                    let _ = tokens.reserve_past(last_token);
                }
                if due && !gates.running.swap(true, Ordering::AcqRel) {
                    compact_in_background(weak.clone(), gates.clone());
                }
            }
        })?;
    Ok(handle.thread().clone())
}

/// Runs one compaction on a thread of its own, so that interval fsyncs and
/// token reservations go on meanwhile.
fn compact_in_background<K, V, S>(store: Weak<Inner<K, V, S>>, gates: Arc<Gates>)
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    /// Clears `running` however the compaction ends.
    struct Running(Arc<Gates>);
    impl Drop for Running {
        fn drop(&mut self) {
            self.0.running.store(false, Ordering::Release);
        }
    }
    let running = Running(gates);
    let spawned = std::thread::Builder::new()
        .name("idemstore-compact".into())
        .spawn(move || {
            let _running = running;
            if let Err(_error) = compact(&store) {
                #[cfg(feature = "tracing")]
                tracing::warn!(%_error, "journal compaction failed; the journal keeps growing until one succeeds");
            }
        });
    // Not spawned: `running` was dropped with the closure, and the next
    // tick tries again.
    drop(spawned);
}
