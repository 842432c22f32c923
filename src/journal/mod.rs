//! Feature `journal`: completed results that survive kill -9 and restarts.
//!
//! # What each mode promises
//!
//! When [`Ticket::complete`](crate::Ticket::complete) (or `execute`) returns
//! `Ok`, the completion's record is in the journal, as far as the mode says:
//!
//! | [`Fsync`] | when `complete` returns | survives |
//! |---|---|---|
//! | `Always` | written and fsynced (`fdatasync`) | kill -9, an OS crash, power loss |
//! | `Interval(d)` (default, 1 s) | written to the OS (`write(2)` returned); fsynced within `d` | kill -9; an OS crash loses at most the last `d` |
//! | `Never` | written to the OS; never fsynced by the store | kill -9 |
//!
//! A waiter or a replay sees a value only after its record's promise holds:
//! the entry stays in flight while its record is written. If the record
//! cannot be written (a full disk, an I/O error), `complete` returns
//! [`CompleteError::Journal`](crate::CompleteError::Journal) with the value,
//! the key is released, and the store keeps serving reads.
//!
//! # What comes back after a restart
//!
//! [`Builder::journal`](crate::Builder::journal) replays the file: every
//! acknowledged completion that has not expired comes back as a completed
//! entry with its fingerprint, and removed keys stay removed. Expiry is kept
//! as wall time, as the monotonic clock does not survive a restart. An
//! operation that was **in flight** at the crash has no record: a retry after
//! the restart claims the key and runs the operation again (at-least-once
//! for operations interrupted by a crash, as with any store that records
//! results, not intentions). Fencing tokens never go backwards across a
//! restart: blocks of tokens are reserved in the journal, and fsynced in
//! every mode, before any of them is handed out.
//!
//! Two edges, both of operations that did run: a completion refused as
//! superseded (its lease passed and the key was taken over while its record
//! was written) is revoked by a second record, and a crash between the two
//! brings it back; a removal whose record cannot be written is logged (with
//! feature `tracing`) and comes back after a restart.
//!
//! # Records
//!
//! The file is a header (magic, format version, the key and value codecs'
//! tags) followed by records `[len][crc32c of len][crc32c][kind][fields]`
//! (see `format.rs`; the length's own checksum lets a reader trust a length
//! before it has the body, so damage is told from a torn tail in linear
//! time):
//! completions (key, value, fingerprint, wall-time expiry, token), removals
//! (key, and the newest token they cover) and token reservations. Replay
//! keeps, per key, the completion of the highest token not covered by a
//! later removal, so records may land in any order relative to one another:
//!
//! * `complete` writes its record *before* the entry becomes completed in
//!   memory, and a completion the store then refuses (its claim was taken
//!   over meanwhile) is revoked by a removal covering tokens up to its own,
//!   which leaves the new owner's (larger) token alone.
//! * `remove` reads the token counter under the shard lock that removes the
//!   entry: every token of the removed entry is at most that, and every
//!   later claim of the key gets a larger one.
//! * A compaction's snapshot labels each entry with the counter read after
//!   it began capturing the batches written meanwhile, which follow the
//!   snapshot in the new file (see `compact.rs`).
//!
//! A torn tail (a batch cut short by a crash) is cut at the last whole
//! record and reported in [`Store::journal_report`](crate::Store::journal_report);
//! damage with whole records after it is an error naming the file and the
//! offset, unless the store is built with
//! [`Recovery::TruncateAtDamage`]. A second process opening the same
//! journal is refused (a lock on `<path>.lock`).

mod compact;
pub(crate) mod format;
mod log;
mod open;
mod setup;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub(crate) use compact::{compact, spawn};
pub(crate) use log::Log;
pub(crate) use setup::Setup;

/// When the journal fsyncs; see the [module docs](crate::journal) for
/// what each mode promises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Every batch of completions is fsynced before they return.
    Always,
    /// Completions return once written to the OS; a background thread
    /// fsyncs at this interval.
    Interval(Duration),
    /// Completions return once written to the OS; the store never fsyncs
    /// them (the OS writes them back in its own time).
    Never,
}

impl Default for Fsync {
    fn default() -> Self {
        Fsync::Interval(Duration::from_secs(1))
    }
}

/// What to do with damage inside the journal (not a torn tail, which is
/// always cut and reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Recovery {
    /// Refuse to open: [`JournalError::Corrupt`] names the offset. Nothing is
    /// dropped without the caller's say.
    #[default]
    Strict,
    /// Cut the journal at the damaged record and go on: the records from
    /// there on are lost, and [`ReplayReport::truncated`] says how many bytes.
    TruncateAtDamage,
}

/// What opening the journal found, from [`Store::journal_report`](crate::Store::journal_report).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplayReport {
    /// Records read.
    pub records: u64,
    /// Completed entries restored.
    pub restored: usize,
    /// Completions that had expired by the time of the restart.
    pub expired: usize,
    /// A torn tail cut off: its offset and length in bytes.
    pub torn_tail: Option<(u64, u64)>,
    /// Damage cut off under [`Recovery::TruncateAtDamage`]: its offset and
    /// the bytes dropped from there on.
    pub truncated: Option<(u64, u64)>,
    /// How long the replay took.
    pub elapsed: Duration,
}

/// Why the journal could not be opened, read or written.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JournalError {
    /// A system call on the journal failed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done: "open", "read", "write", "fsync", ...
        op: &'static str,
        /// The error's kind.
        kind: std::io::ErrorKind,
        /// The error as the OS put it.
        message: String,
    },
    /// Another store (in this process or another) has the journal open.
    Locked {
        /// The journal.
        path: PathBuf,
    },
    /// The file is not an idemstore journal.
    NotAJournal {
        /// The file.
        path: PathBuf,
    },
    /// The journal is of a format version this build does not read.
    Version {
        /// The journal.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// The journal's keys or values were written with other codecs.
    Codec {
        /// The journal.
        path: PathBuf,
        /// The codecs it was written with.
        found: String,
        /// The codecs of this store's key and value types.
        expected: String,
    },
    /// A damaged record with whole records after it (not a torn tail).
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// Where the damaged record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// A record larger than the journal's limit (1 GiB).
    TooLarge {
        /// The record's size.
        bytes: usize,
    },
    /// A key or value its [`Codec`](crate::Codec) could not encode.
    Encode {
        /// What the codec said.
        reason: String,
    },
    /// More live entries in the journal than the store's `max_entries`.
    Capacity {
        /// The journal.
        path: PathBuf,
        /// The bound.
        max_entries: usize,
    },
    /// The journal stopped accepting records after an error it cannot
    /// recover from (an fsync failed, or a failed write could not be cut).
    /// Reads go on; restart to recover from the file.
    Failed {
        /// The journal.
        path: PathBuf,
        /// The error that stopped it.
        cause: String,
    },
}

impl JournalError {
    pub(crate) fn io(path: &Path, op: &'static str, error: &std::io::Error) -> Self {
        JournalError::Io {
            path: path.to_path_buf(),
            op,
            kind: error.kind(),
            message: error.to_string(),
        }
    }
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io {
                path, op, message, ..
            } => write!(f, "journal {}: {op} failed: {message}", path.display()),
            JournalError::Locked { path } => write!(
                f,
                "journal {} is open in another store (locked through {}.lock)",
                path.display(),
                path.display()
            ),
            JournalError::NotAJournal { path } => {
                write!(f, "{} is not an idemstore journal", path.display())
            }
            JournalError::Version { path, found } => write!(
                f,
                "journal {} has format version {found}; this build reads version {}",
                path.display(),
                format::VERSION
            ),
            JournalError::Codec {
                path,
                found,
                expected,
            } => write!(
                f,
                "journal {} holds keys and values encoded as {found:?}, this store's are {expected:?}",
                path.display()
            ),
            JournalError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "journal {} is damaged at byte offset {offset}: {reason} (open with Recovery::TruncateAtDamage to cut it there)",
                path.display()
            ),
            JournalError::Encode { reason } => write!(f, "a journal record did not encode: {reason}"),
            JournalError::TooLarge { bytes } => {
                write!(f, "a journal record of {bytes} bytes is over the 1 GiB limit")
            }
            JournalError::Capacity { path, max_entries } => write!(
                f,
                "journal {} holds more live entries than max_entries ({max_entries})",
                path.display()
            ),
            JournalError::Failed { path, cause } => write!(
                f,
                "journal {} stopped accepting records after: {cause}",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

impl From<format::Unwritable> for JournalError {
    fn from(e: format::Unwritable) -> Self {
        match e {
            format::Unwritable::TooLarge(bytes) => JournalError::TooLarge { bytes },
            format::Unwritable::Codec(e) => JournalError::Encode {
                reason: e.to_string(),
            },
        }
    }
}

/// Tokens reserved ahead, so none is handed out before its reservation is
/// in the journal (rule: tokens never go backwards across a restart).
pub(crate) struct Tokens {
    /// Tokens up to this may be handed out. Acquire/Release: a claim that
    /// reads a limit sees it only after its reservation's commit returned.
    limit: AtomicU64,
    /// Set once a claim passed half of the block: the journal thread
    /// reserves the next one.
    asked: AtomicBool,
    /// One reservation at a time.
    reserving: Mutex<()>,
    log: Arc<Log>,
}

/// Tokens a reservation covers: at most 2^40 restarts fit in a u64.
pub(crate) const TOKEN_BLOCK: u64 = 1 << 24;

impl Tokens {
    pub(crate) fn new(log: Arc<Log>, limit: u64) -> Self {
        Tokens {
            limit: AtomicU64::new(limit),
            asked: AtomicBool::new(false),
            reserving: Mutex::new(()),
            log,
        }
    }

    /// Tokens up to this may be handed out, read with no reservation under
    /// way: a compaction that began capturing before this call either sees
    /// a reservation's limit here or has its record in the capture.
    pub(crate) fn settled_limit(&self) -> u64 {
        let _one = self.reserving.lock().unwrap_or_else(|p| p.into_inner());
        // Acquire: pairs with `reserve_past`'s Release store.
        self.limit.load(Ordering::Acquire)
    }

    /// Whether the journal thread should reserve the next block.
    pub(crate) fn wanted(&self) -> bool {
        self.asked.swap(false, Ordering::Relaxed)
    }

    /// Reserves tokens beyond `token`: a block past the current limit.
    pub(crate) fn reserve_past(&self, token: u64) -> Result<(), JournalError> {
        let _one = self.reserving.lock().unwrap_or_else(|p| p.into_inner());
        // Acquire: pairs with the Release store below, of another reserver.
        let limit = self.limit.load(Ordering::Acquire);
        if token < limit.saturating_sub(TOKEN_BLOCK / 2) {
            return Ok(());
        }
        let upto = limit.max(token).saturating_add(TOKEN_BLOCK);
        let mut record = Vec::new();
        format::reserve(&mut record, upto);
        self.log.commit(&record, 1)?;
        // On disk in every mode: a token must never be handed out twice,
        // even after an OS crash (once per 2^24 tokens, so cheap).
        self.log.sync_now()?;
        // Release: a claim that reads this limit comes after the commit.
        self.limit.store(upto, Ordering::Release);
        Ok(())
    }
}

impl crate::table::TokenGate for Arc<Tokens> {
    fn admit(&self, token: u64) -> bool {
        // Acquire: pairs with `reserve_past`'s Release store.
        let limit = self.limit.load(Ordering::Acquire);
        if token <= limit {
            // Read first: claims in the upper half would otherwise all
            // write the line the limit is read from.
            if token > limit - TOKEN_BLOCK / 2 && !self.asked.load(Ordering::Relaxed) {
                self.asked.store(true, Ordering::Relaxed);
            }
            return true;
        }
        // The journal thread fell a whole half block behind: reserve here.
        self.reserve_past(token).is_ok()
    }
}

/// What orders compactions against completions and one another.
#[derive(Default)]
pub(crate) struct Gates {
    /// Held shared by a completion from before its record is written until
    /// its entry is completed; a compaction takes it exclusively once, to
    /// wait for the completions recorded before it began capturing.
    pub(crate) applying: std::sync::RwLock<()>,
    /// One compaction at a time.
    pub(crate) compacting: Mutex<()>,
    /// A background compaction is under way.
    pub(crate) running: AtomicBool,
}

/// Appends a key's or value's encoding.
pub(crate) type Encoder<T> = fn(&T, &mut Vec<u8>) -> Result<(), crate::codec::CodecError>;

/// The journal as a store holds it: the log, and its key and value
/// encoders, made where the types' `Codec` bounds hold.
pub(crate) struct Journal<K, V> {
    pub(crate) log: Arc<Log>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) gates: Arc<Gates>,
    pub(crate) encode_key: Encoder<K>,
    pub(crate) encode_value: Encoder<V>,
    pub(crate) report: ReplayReport,
    /// The header's codec tag.
    pub(crate) tag: String,
    /// Compact once the file holds more than this many bytes and more dead
    /// records than live ones.
    pub(crate) compact_above: u64,
    /// Held while the store lives: a second opener is refused.
    pub(crate) _lock: std::fs::File,
}

/// The options [`Builder::journal`](crate::Builder::journal) and its
/// neighbours collect.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) path: PathBuf,
    pub(crate) fsync: Fsync,
    pub(crate) recovery: Recovery,
    pub(crate) compact_above: u64,
}

/// Compact no journal smaller than this by default.
pub(crate) const DEFAULT_COMPACT_ABOVE: u64 = 64 << 20;
