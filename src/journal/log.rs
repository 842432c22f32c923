//! The journal file and its group commit.
//!
//! # Protocol
//!
//! * Committers append their encoded records to `State::buf` under the
//!   `state` lock; the records in `buf` form the batch numbered `next`.
//! * Leader-follower: a committer whose batch is still in `buf` and finds no
//!   leader becomes the leader. It takes `buf` (numbering the next batch
//!   `next + 1`), releases the lock, writes the batch with one `write(2)`,
//!   fsyncs it under [`Fsync::Always`], retakes the lock, marks the batch
//!   finished and wakes everyone. Whoever finds its batch finished returns;
//!   whoever finds its batch taken by a leader waits; the next committer
//!   whose batch is still in `buf` leads next. One thread commits alone at
//!   the cost of one write; many share each write and each fsync.
//! * Batches finish in order, one leader at a time, so the file is always
//!   the header followed by whole batches. A batch whose write or fsync
//!   failed is cut off again (`set_len`) before the next one starts, and its
//!   committers get the error; if the cut fails too, or an fsync fails (the
//!   kernel may have dropped the pages: a later fsync would not say so),
//!   the log is failed for good and every later commit is refused.
//! * Compaction takes the leader role, so no batch is written while it
//!   swaps files; while its snapshot is taken, every batch written is also
//!   kept in `capture`, to be appended to the new file (Redis's AOF rewrite
//!   buffer).

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::{Fsync, JournalError};

pub(crate) struct Log {
    path: PathBuf,
    fsync: Fsync,
    state: Mutex<State>,
    finished: Condvar,
}

struct State {
    file: Arc<File>,
    /// Records waiting for the next batch, and how many commits they hold.
    buf: Vec<u8>,
    /// The last batch's buffer, emptied, for the next one.
    spare: Vec<u8>,
    buf_commits: usize,
    /// The number the batch in `buf` will have.
    next: u64,
    /// The last batch finished (written, or failed).
    done: u64,
    /// Failed batches not yet seen by all their committers: the error and
    /// how many have yet to see it.
    failures: HashMap<u64, (JournalError, usize)>,
    leader: bool,
    /// Threads waiting on `finished`.
    waiting: usize,
    /// Bytes in the file: header and whole batches.
    len: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// Set when the log cannot go on.
    failed: Option<JournalError>,
    /// Batches written while a compaction's snapshot is taken.
    capture: Option<Vec<u8>>,
    /// Records in the file, for the compaction trigger.
    records: u64,
}

/// A lock on the log that excludes every writer, for compaction's swap.
pub(crate) struct Exclusive<'a> {
    log: &'a Log,
    state: MutexGuard<'a, State>,
}

impl Log {
    /// A log appending to `file`, which holds `len` valid bytes and
    /// `records` records.
    pub(crate) fn new(path: PathBuf, fsync: Fsync, file: File, len: u64, records: u64) -> Self {
        Log {
            path,
            fsync,
            state: Mutex::new(State {
                file: Arc::new(file),
                buf: Vec::new(),
                spare: Vec::new(),
                buf_commits: 0,
                next: 1,
                done: 0,
                failures: HashMap::new(),
                leader: false,
                waiting: 0,
                len,
                dirty: false,
                failed: None,
                capture: None,
                records,
            }),
            finished: Condvar::new(),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No user code runs under this lock and every change to `State` is
        // made whole before it is released, so a poisoned lock holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `records` (`count` of them, whole) and returns once their
    /// promise holds: written to the OS, and fsynced under `Always`.
    pub(crate) fn commit(&self, records: &[u8], count: u64) -> Result<(), JournalError> {
        let mut st = self.lock();
        if let Some(e) = &st.failed {
            return Err(e.clone());
        }
        st.buf.extend_from_slice(records);
        st.buf_commits += 1;
        st.records += count;
        let mine = st.next;
        loop {
            if st.done >= mine {
                return match st.failures.get_mut(&mine) {
                    None => Ok(()),
                    Some((error, left)) => {
                        let error = error.clone();
                        *left -= 1;
                        if *left == 0 {
                            st.failures.remove(&mine);
                        }
                        Err(error)
                    }
                };
            }
            if st.next == mine {
                if let Some(e) = &st.failed {
                    // The log failed while this batch waited: it is never written.
                    return Err(e.clone());
                }
            }
            if st.next == mine && !st.leader {
                st = self.lead(st);
            } else {
                st.waiting += 1;
                st = self.finished.wait(st).unwrap_or_else(|p| p.into_inner());
                st.waiting -= 1;
            }
        }
    }

    /// Writes the batch in `buf` as its leader.
    fn lead<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        st.leader = true;
        let spare = std::mem::take(&mut st.spare);
        let batch = std::mem::replace(&mut st.buf, spare);
        let commits = std::mem::take(&mut st.buf_commits);
        let id = st.next;
        st.next += 1;
        let file = st.file.clone();
        let at = st.len;
        drop(st);
        let written = self.write_batch(&file, at, &batch);
        let mut st = self.lock();
        st.leader = false;
        st.done = id;
        let mut batch = batch;
        match written {
            Ok(()) => {
                st.len = at + batch.len() as u64;
                st.dirty = true;
                if let Some(capture) = &mut st.capture {
                    capture.extend_from_slice(&batch);
                }
            }
            Err((error, fatal)) => {
                if fatal {
                    st.failed = Some(self.failed_for_good(&error));
                }
                st.failures.insert(id, (error, commits));
            }
        }
        // Keep the allocation for the batch after next.
        batch.clear();
        st.spare = batch;
        // A wake is a system call: only when someone waits (a committer
        // alone pays for its write and nothing else).
        if st.waiting > 0 {
            self.finished.notify_all();
        }
        st
    }

    /// One batch's write (and fsync): an error, and whether the log must
    /// stop.
    fn write_batch(&self, file: &File, at: u64, batch: &[u8]) -> Result<(), (JournalError, bool)> {
        let mut writer = file;
        if let Err(e) = writer.write_all(batch) {
            let error = JournalError::io(&self.path, "write", &e);
            // Cut the part of the batch that got in, so the next batch
            // follows whole records.
            let fatal = file.set_len(at).is_err();
            return Err((error, fatal));
        }
        if self.fsync == Fsync::Always {
            if let Err(e) = file.sync_data() {
                // Its committers are told it failed: cut it, so it does not
                // come back after a restart either (best effort: the log
                // stops here anyway).
                let _ = file.set_len(at);
                return Err((JournalError::io(&self.path, "fsync", &e), true));
            }
        }
        Ok(())
    }

    fn failed_for_good(&self, cause: &JournalError) -> JournalError {
        JournalError::Failed {
            path: self.path.clone(),
            cause: cause.to_string(),
        }
    }

    /// Fsyncs the file now, whatever the mode (a token reservation).
    pub(crate) fn sync_now(&self) -> Result<(), JournalError> {
        let file = self.lock().file.clone();
        file.sync_data().map_err(|e| {
            let error = JournalError::io(&self.path, "fsync", &e);
            self.lock().failed = Some(self.failed_for_good(&error));
            error
        })
    }

    /// Marks the log failed for good: every later commit is refused.
    pub(crate) fn fail(&self, cause: &JournalError) {
        self.lock().failed = Some(self.failed_for_good(cause));
    }

    /// Fsyncs what was written since the last fsync (`Interval`'s tick).
    pub(crate) fn sync_if_dirty(&self) {
        let mut st = self.lock();
        if !st.dirty || st.failed.is_some() {
            return;
        }
        st.dirty = false;
        let file = st.file.clone();
        drop(st);
        if let Err(e) = file.sync_data() {
            let error = JournalError::io(&self.path, "fsync", &e);
            #[cfg(feature = "tracing")]
            tracing::error!(path = %self.path.display(), %error, "journal fsync failed; completions are refused from now on");
            let mut st = self.lock();
            st.failed = Some(self.failed_for_good(&error));
        }
    }

    /// The fsync interval, if the log has one.
    pub(crate) fn interval(&self) -> Option<Duration> {
        match self.fsync {
            Fsync::Interval(every) => Some(every),
            _ => None,
        }
    }

    /// Records and bytes in the file now.
    pub(crate) fn size(&self) -> (u64, u64) {
        let st = self.lock();
        (st.records, st.len)
    }

    /// Starts keeping a copy of every batch written from now on.
    pub(crate) fn start_capture(&self) {
        self.lock().capture = Some(Vec::new());
    }

    /// Stops keeping copies (a compaction that failed).
    pub(crate) fn stop_capture(&self) {
        self.lock().capture = None;
    }

    /// Takes what was captured so far, leaving capture on.
    pub(crate) fn take_capture(&self) -> Vec<u8> {
        self.lock()
            .capture
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Waits until no batch is being written, then holds off every writer
    /// until the returned guard drops.
    pub(crate) fn exclusive(&self) -> Exclusive<'_> {
        let mut st = self.lock();
        while st.leader {
            st.waiting += 1;
            st = self.finished.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
        st.leader = true;
        Exclusive {
            log: self,
            state: st,
        }
    }
}

impl Exclusive<'_> {
    /// What was captured and not yet taken; capture stops.
    pub(crate) fn finish_capture(&mut self) -> Vec<u8> {
        self.state.capture.take().unwrap_or_default()
    }

    /// Makes `file` (of `len` bytes and `records` records) the log's file.
    pub(crate) fn replace_file(&mut self, file: File, len: u64, records: u64) {
        let st = &mut *self.state;
        st.file = Arc::new(file);
        st.len = len;
        st.records = records;
        st.dirty = false;
    }
}

impl Drop for Exclusive<'_> {
    fn drop(&mut self) {
        // Woken under the lock: they run once the guard drops, just after.
        self.state.leader = false;
        if self.state.waiting > 0 {
            self.log.finished.notify_all();
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A clean shutdown leaves nothing for the OS to lose (`Never` leaves
        // it to the OS, as it says).
        if self.fsync != Fsync::Never {
            self.sync_if_dirty();
        }
    }
}
