//! Opening a journal: the lock, the header, the replay of its records.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use super::format::{self, FormatError, Record};
use super::{JournalError, Log, Options, Recovery, ReplayReport, Tokens, TOKEN_BLOCK};
use crate::codec::Codec;
use crate::fingerprint::Fingerprint;

/// A journal opened and read: what the store is built from.
pub(crate) struct Opened<K, V> {
    pub(crate) log: Arc<Log>,
    pub(crate) tokens: Arc<Tokens>,
    pub(crate) lock: File,
    /// The live completions: key, value, fingerprint, wall-time expiry.
    pub(crate) entries: Vec<(K, V, Option<Fingerprint>, u64)>,
    /// Every token the journal knows of is at most this.
    pub(crate) tokens_seen: u64,
    pub(crate) report: ReplayReport,
}

/// The codec tag of a journal of `K -> V`.
pub(crate) fn tag<K: Codec, V: Codec>() -> String {
    format!("{}->{}", K::tag(), V::tag())
}

/// Opens (or creates) the journal of `options`, replaying it as of the wall
/// time `now_wall` (ns since the Unix epoch).
pub(crate) fn open<K: Codec, V: Codec>(
    options: &Options,
    now_wall: u64,
) -> Result<Opened<K, V>, JournalError> {
    let started = Instant::now();
    let path = options.path.as_path();
    let io = |op| move |e: std::io::Error| JournalError::io(path, op, &e);
    let lock = lock(path)?;
    let tag = tag::<K, V>();
    let header = format::header(&tag);
    let empty = std::fs::metadata(path).map_or(true, |m| m.len() == 0);
    if empty {
        create(path, &header)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io("open"))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io("read"))?;
    let mut report = ReplayReport::default();
    // Sized for a journal of small records, hashed with the store's fast
    // hasher: replay is most of the time a reopen takes.
    let mut live: HashMap<&[u8], Live<'_>, ahash::RandomState> =
        HashMap::with_capacity_and_hasher(bytes.len() / 64, ahash::RandomState::new());
    let mut tokens_seen = 0;
    let valid_len = if bytes == header {
        header.len() as u64
    } else {
        let scanned = scan(&bytes, &tag, options.recovery, |offset, record| {
            report.records += 1;
            tokens_seen = tokens_seen.max(apply(&mut live, (offset, record)));
        });
        let end = match scanned {
            Ok(end) => end,
            Err(e) => return Err(format_error(path, e, &tag)),
        };
        if end.valid_len < bytes.len() as u64 {
            let cut = (end.valid_len, bytes.len() as u64 - end.valid_len);
            if end.damaged {
                report.truncated = Some(cut);
                // Tokens handed out after the damage were reserved in the
                // records cut off: stay above every token they name, and a
                // block beyond, for a reservation inside the damage itself.
                let after = format::tokens_after(&bytes, end.valid_len as usize);
                tokens_seen = tokens_seen.max(after).saturating_add(2 * TOKEN_BLOCK);
            } else {
                report.torn_tail = Some(cut);
            }
            #[cfg(feature = "tracing")]
            tracing::warn!(
                path = %path.display(),
                offset = cut.0,
                bytes = cut.1,
                damaged = end.damaged,
                "journal: cut an unreadable tail"
            );
            file.set_len(end.valid_len).map_err(io("truncate"))?;
            file.sync_all().map_err(io("fsync"))?;
        }
        end.valid_len
    };
    if tokens_seen > u64::MAX / 2 {
        // Half of all tokens used: a journal that says so is damaged (at a
        // billion claims a second, honest use takes 290 years).
        return Err(JournalError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            reason: format!(
                "it names fencing token {tokens_seen}, beyond what this store hands out"
            ),
        });
    }
    let mut entries = Vec::with_capacity(live.len());
    for (key, state) in live {
        let Live::Completed {
            token: _,
            offset,
            expires_at,
            fingerprint,
            value,
        } = state
        else {
            continue;
        };
        if expires_at <= now_wall {
            report.expired += 1;
            continue;
        }
        let decoded = K::decode(key).and_then(|k| Ok((k, V::decode(value)?)));
        let (k, v) = decoded.map_err(|e| JournalError::Corrupt {
            path: path.to_path_buf(),
            offset,
            reason: format!("a record whose key or value does not decode: {e}"),
        })?;
        entries.push((k, v, fingerprint, expires_at));
    }
    report.restored = entries.len();
    drop(bytes);
    // Appends go to the end, wherever a failed write was cut back to.
    let appender = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io("open"))?;
    let log = Arc::new(Log::new(
        path.to_path_buf(),
        options.fsync,
        appender,
        valid_len,
        report.records,
    ));
    // The first block, on disk before any token is handed out.
    let tokens = Arc::new(Tokens::new(log.clone(), tokens_seen));
    tokens.reserve_past(tokens_seen)?;
    log.sync_if_dirty();
    report.elapsed = started.elapsed();
    Ok(Opened {
        log,
        tokens,
        lock,
        entries,
        tokens_seen,
        report,
    })
}

/// A key's state while replaying.
enum Live<'a> {
    Completed {
        token: u64,
        offset: u64,
        expires_at: u64,
        fingerprint: Option<Fingerprint>,
        value: &'a [u8],
    },
    /// Removed: completions of tokens up to this are void.
    Removed { upto: u64 },
}

impl Live<'_> {
    /// The newest token this state stands for.
    fn token(&self) -> u64 {
        match self {
            Live::Completed { token, .. } => *token,
            Live::Removed { upto } => *upto,
        }
    }
}

/// Applies one record; returns the largest token it names.
fn apply<'a>(
    live: &mut HashMap<&'a [u8], Live<'a>, ahash::RandomState>,
    (offset, record): (u64, Record<'a>),
) -> u64 {
    match record {
        Record::Complete {
            token,
            expires_at,
            fingerprint,
            key,
            value,
        } => {
            let newer = live.get(key).is_none_or(|state| token > state.token());
            if newer {
                live.insert(
                    key,
                    Live::Completed {
                        token,
                        offset,
                        expires_at,
                        fingerprint,
                        value,
                    },
                );
            }
            token
        }
        Record::Remove { upto, key } => {
            let covers = live.get(key).is_none_or(|state| upto >= state.token());
            if covers {
                live.insert(key, Live::Removed { upto });
            }
            upto
        }
        Record::Reserve { upto } => upto,
    }
}

/// Where a scan ended, and whether the cut is damage (under
/// [`Recovery::TruncateAtDamage`]) rather than a torn tail.
struct End {
    valid_len: u64,
    damaged: bool,
}

/// [`format::scan`], applying each record as it is read; under
/// [`Recovery::TruncateAtDamage`], damage ends the scan like a torn tail
/// (the records before it were applied already).
fn scan<'a>(
    bytes: &'a [u8],
    tag: &str,
    recovery: Recovery,
    each: impl FnMut(u64, Record<'a>),
) -> Result<End, FormatError> {
    match (format::scan(bytes, tag, each), recovery) {
        (Ok(end), _) => Ok(End {
            valid_len: end.valid_len,
            damaged: false,
        }),
        (Err(FormatError::Corrupt { offset, .. }), Recovery::TruncateAtDamage) => Ok(End {
            valid_len: offset,
            damaged: true,
        }),
        (Err(e), _) => Err(e),
    }
}

fn format_error(path: &Path, error: FormatError, tag: &str) -> JournalError {
    let path = path.to_path_buf();
    match error {
        FormatError::NotAJournal => JournalError::NotAJournal { path },
        FormatError::Version(found) => JournalError::Version { path, found },
        FormatError::Codec { found } => JournalError::Codec {
            path,
            found,
            expected: tag.to_string(),
        },
        FormatError::Corrupt { offset, why } => JournalError::Corrupt {
            path,
            offset,
            reason: why.to_string(),
        },
    }
}

/// Creates the journal at `path` holding only `header`: written to
/// `<path>.new`, fsynced and renamed into place, so a crash never leaves a
/// journal with half a header.
fn create(path: &Path, header: &[u8]) -> Result<(), JournalError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let new = std::path::PathBuf::from(name);
    let new = new.as_path();
    let io = |op| move |e: std::io::Error| JournalError::io(new, op, &e);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(new)
        .map_err(io("open"))?;
    file.write_all(header).map_err(io("write"))?;
    file.sync_all().map_err(io("fsync"))?;
    std::fs::rename(new, path).map_err(|e| JournalError::io(path, "rename", &e))?;
    sync_dir(path)
}

/// Takes `<path>.lock`, which the OS releases when the process dies.
fn lock(path: &Path) -> Result<File, JournalError> {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock_path = std::path::PathBuf::from(name);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| JournalError::io(&lock_path, "open", &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: path.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(JournalError::io(&lock_path, "lock", &e)),
    }
}

/// Fsyncs the directory holding `path`, so a file created or renamed there
/// is found after a crash.
pub(crate) fn sync_dir(path: &Path) -> Result<(), JournalError> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| JournalError::io(dir, "fsync", &e))
}
