//! The builder's journal settings, and building a journaled store.

use std::hash::{BuildHasher, Hash};
use std::path::PathBuf;

use super::open::{open, tag, Opened};
use super::{Encoder, Fsync, Journal, JournalError, Options, Recovery, DEFAULT_COMPACT_ABOVE};
use crate::builder::Builder;
use crate::clock::{unix_nanos, StoreClock};
use crate::codec::Codec;
use crate::error::{ClaimError, ConfigError};
use crate::store::{Config, Store};
use crate::table::Weigher;

/// Opens a journal of `K -> V` at a wall time.
type Opener<K, V> = fn(&Options, u64) -> Result<Opened<K, V>, JournalError>;

/// What the builder collects for a journal.
pub(crate) struct Setup<K, V> {
    path: Option<PathBuf>,
    fsync: Fsync,
    recovery: Recovery,
    compact_above: u64,
    codecs: Option<Codecs<K, V>>,
}

/// The journal's functions of the key and value types, made where their
/// `Codec` bounds hold.
struct Codecs<K, V> {
    open: Opener<K, V>,
    encode_key: Encoder<K>,
    encode_value: Encoder<V>,
    tag: fn() -> String,
}

impl<K, V> Default for Setup<K, V> {
    fn default() -> Self {
        Setup {
            path: None,
            fsync: Fsync::default(),
            recovery: Recovery::default(),
            compact_above: DEFAULT_COMPACT_ABOVE,
            codecs: None,
        }
    }
}

impl<K, V, S> Builder<K, V, S>
where
    K: Codec,
    V: Codec,
{
    /// Records completed results in the journal at `path` (created if
    /// missing) and, at [`build`](Self::build), brings back every one that
    /// has not expired. See the [journal's promises](crate::journal).
    ///
    /// ```
    /// use idemstore::{Claim, Fsync, Store};
    /// let dir = std::env::temp_dir().join(format!("idemstore-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("orders.journal");
    /// # let _ = std::fs::remove_file(&path);
    /// {
    ///     let store: Store<String, String> =
    ///         Store::builder().journal(&path).fsync(Fsync::Always).build()?;
    ///     if let Ok(Claim::Owner(ticket)) = store.claim("order-1".to_string()) {
    ///         ticket.complete("receipt-1".to_string())?;
    ///     }
    /// } // the process may die here: the result is on disk
    /// let store: Store<String, String> = Store::builder().journal(&path).build()?;
    /// assert_eq!(store.get("order-1"), Some("receipt-1".to_string()));
    /// # drop(store); std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn journal(mut self, path: impl Into<PathBuf>) -> Self {
        self.journal.path = Some(path.into());
        self.journal.codecs = Some(Codecs {
            open: open::<K, V>,
            encode_key: K::encode,
            encode_value: V::encode,
            tag: tag::<K, V>,
        });
        self
    }
}

impl<K, V, S> Builder<K, V, S> {
    /// When the journal fsyncs (default `Fsync::Interval(1 s)`); see the
    /// [journal's promises](crate::journal). Only with [`journal`](Self::journal).
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.journal.fsync = fsync;
        self
    }

    /// What to do with damage inside the journal (default
    /// [`Recovery::Strict`]: refuse to open, naming the offset).
    pub fn journal_recovery(mut self, recovery: Recovery) -> Self {
        self.journal.recovery = recovery;
        self
    }

    /// Compact the journal in the background once it is over `bytes`
    /// (default 64 MiB) and holds more dead records than live ones.
    pub fn compact_above(mut self, bytes: u64) -> Self {
        self.journal.compact_above = bytes;
        self
    }
}

impl<K, V> Setup<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Opens the journal and builds the store over it, with every live
    /// entry restored.
    pub(crate) fn build<S>(
        self,
        mut config: Config,
        clock: StoreClock,
        hasher: S,
        weigher: Option<Weigher<K, V>>,
    ) -> Result<Store<K, V, S>, ConfigError>
    where
        S: BuildHasher + Send + Sync + 'static,
    {
        let (Some(path), Some(codecs)) = (self.path, self.codecs) else {
            return Ok(Store::from_parts(config, clock, hasher, weigher));
        };
        let options = Options {
            path,
            fsync: self.fsync,
            recovery: self.recovery,
            compact_above: self.compact_above,
        };
        let opened =
            (codecs.open)(&options, unix_nanos(clock.wall())).map_err(ConfigError::Journal)?;
        let Opened {
            log,
            tokens,
            lock,
            entries,
            tokens_seen,
            mut report,
        } = opened;
        config.tokens_from = tokens_seen;
        config.gate = Some(Box::new(tokens.clone()));
        let max_entries = config.max_entries;
        // Room for every entry up front: no shard grows while they go in.
        config.initial_capacity = config.initial_capacity.max(Some(entries.len()));
        // One reading of the clocks for the whole replay.
        let (now, now_wall) = (clock.now(), unix_nanos(clock.wall()));
        let entries: Vec<_> = entries
            .into_iter()
            .filter_map(|(key, value, fingerprint, wall)| {
                let expires_at = wall
                    .checked_sub(now_wall)
                    .filter(|&ahead| ahead > 0)
                    .map(|ahead| now.saturating_add(ahead));
                if expires_at.is_none() {
                    report.restored -= 1;
                    report.expired += 1;
                }
                Some((key, value, fingerprint, expires_at?))
            })
            .collect();
        let journal = Journal {
            log,
            tokens,
            gates: Default::default(),
            encode_key: codecs.encode_key,
            encode_value: codecs.encode_value,
            report,
            tag: (codecs.tag)(),
            compact_above: options.compact_above,
            _lock: lock,
        };
        let store = Store::with_journal(config, clock, hasher, weigher, Some(journal));
        for (key, value, fingerprint, expires_at) in entries {
            match store.restore(key, value, fingerprint, expires_at) {
                Ok(()) => {}
                Err(ClaimError::Full) => {
                    return Err(ConfigError::Journal(JournalError::Capacity {
                        path: options.path,
                        max_entries: max_entries.unwrap_or(usize::MAX),
                    }))
                }
                // A token reservation failed: the log says why.
                Err(_) => {
                    return Err(ConfigError::Journal(JournalError::Failed {
                        path: options.path,
                        cause: "a token reservation could not be written while restoring".into(),
                    }))
                }
            }
        }
        #[cfg(not(idemstore_loom))]
        {
            let thread =
                super::spawn(&store.inner).map_err(|e| ConfigError::Spawn(e.to_string()))?;
            let _ = store.inner.journal_thread.set(thread);
        }
        Ok(store)
    }
}
