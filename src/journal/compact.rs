//! Compaction, and the journal's background thread.
//!
//! A compaction writes a snapshot of the live entries to `<path>.compact`,
//! fsyncs it, appends what was written to the old file meanwhile, and renames
//! it over the journal, then fsyncs the directory. Reads and claims never
//! wait for it; completions wait only for the final swap (an fsync and a
//! rename). A crash at any point leaves either the old file or the new one,
//! whole: the rename is atomic, and a leftover `.compact` file is replaced
//! by the next compaction.

use std::fs::{File, OpenOptions};
use std::hash::{BuildHasher, Hash};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::format;
use super::open::sync_dir;
use super::{Journal, JournalError};
use crate::store::{Inner, Store};

/// Buckets a snapshot reads per shard-lock hold.
const SNAPSHOT_BUDGET: usize = 256;

/// The longest the background thread sleeps between checks.
const TICK: Duration = Duration::from_millis(50);

/// Whether the journal holds enough dead records to be worth compacting:
/// over its size threshold, and more records than twice the entries held.
pub(crate) fn due<K, V>(journal: &Journal<K, V>, entries: usize) -> bool {
    let (records, bytes) = journal.log.size();
    bytes > journal.compact_above && records > 2 * entries as u64 + 1
}

/// Rewrites the journal as a snapshot of `store`'s live entries.
pub(crate) fn compact<K, V, S>(store: &Store<K, V, S>) -> Result<(), JournalError>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let Some(journal) = &store.inner.journal else {
        return Ok(());
    };
    let log = &journal.log;
    let path = log.path().to_path_buf();
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".compact");
    let tmp = PathBuf::from(tmp_name);
    log.start_capture();
    let result = write_and_swap(store, journal, &tmp);
    if result.is_err() {
        log.stop_capture();
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_and_swap<K, V, S>(
    store: &Store<K, V, S>,
    journal: &Journal<K, V>,
    tmp: &std::path::Path,
) -> Result<(), JournalError>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let io = |op| move |e: std::io::Error| JournalError::io(tmp, op, &e);
    let inner = &store.inner;
    // Read after capture began: every claim after this has a larger token
    // and its records are in the capture.
    let label = inner.table.last_token();
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)
        .map_err(io("open"))?;
    let mut bytes = format::header(&journal.tag);
    format::reserve(&mut bytes, journal.tokens.limit());
    let mut records = 1;
    let mut failed = None;
    inner
        .table
        .for_each_completed(inner.clock.now(), SNAPSHOT_BUDGET, |batch| {
            for (key, value, fingerprint, expires_at) in batch.drain(..) {
                let wall = inner.clock.wall_at(expires_at);
                // Every entry here was recorded once, so it encodes again.
                let written = format::complete(
                    &mut bytes,
                    label,
                    wall,
                    fingerprint,
                    |out| (journal.encode_key)(&key, out),
                    |out| (journal.encode_value)(&value, out),
                );
                records += u64::from(written.is_ok());
            }
            if bytes.len() >= 1 << 20 && failed.is_none() {
                if let Err(e) = file.write_all(&bytes) {
                    failed = Some(e);
                }
                bytes.clear();
            }
        });
    if let Some(e) = failed {
        return Err(io("write")(e));
    }
    bytes.extend_from_slice(&journal.log.take_capture());
    file.write_all(&bytes).map_err(io("write"))?;
    file.sync_data().map_err(io("fsync"))?;
    // The swap: no batch is written until it is done.
    let mut exclusive = journal.log.exclusive();
    let rest = exclusive.finish_capture();
    file.write_all(&rest).map_err(io("write"))?;
    file.sync_data().map_err(io("fsync"))?;
    let len = file.metadata().map_err(io("stat"))?.len();
    let path = journal.log.path();
    std::fs::rename(tmp, path).map_err(|e| JournalError::io(path, "rename", &e))?;
    sync_dir(path)?;
    let appender: File = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| JournalError::io(path, "open", &e))?;
    exclusive.replace_file(appender, len, records);
    Ok(())
}

/// Starts the journal's thread: fsyncs under `Fsync::Interval`, reserves
/// fencing tokens ahead of the claims, and compacts when due. It holds only
/// a `Weak`, and ends when the store drops.
pub(crate) fn spawn<K, V, S>(inner: &Arc<Inner<K, V, S>>) -> std::io::Result<std::thread::Thread>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    S: BuildHasher + Send + Sync + 'static,
{
    let weak: Weak<Inner<K, V, S>> = Arc::downgrade(inner);
    let interval = inner.journal.as_ref().and_then(|j| j.log.interval());
    let tick = interval.map_or(TICK, |every| every.min(TICK));
    let handle = std::thread::Builder::new()
        .name("idemstore-journal".into())
        .spawn(move || {
            let mut last_sync = Instant::now();
            loop {
                std::thread::park_timeout(tick);
                let Some(inner) = weak.upgrade() else { return };
                let store = Store { inner };
                let Some(journal) = &store.inner.journal else {
                    return;
                };
                if interval.is_some_and(|every| last_sync.elapsed() >= every) {
                    journal.log.sync_if_dirty();
                    last_sync = Instant::now();
                }
                if journal.tokens.wanted() {
                    let _ = journal.tokens.reserve_past(store.inner.table.last_token());
                }
                if due(journal, store.inner.table.len()) {
                    if let Err(_error) = compact(&store) {
                        #[cfg(feature = "tracing")]
                        tracing::warn!(%_error, "journal compaction failed; the journal keeps growing until one succeeds");
                    }
                }
            }
        })?;
    Ok(handle.thread().clone())
}
