//! A plain, sequential model of the store's semantics (`docs/semantics.md`)
//! and a differential runner that drives a real store and the model with the
//! same operations and panics on the first divergence.
//!
//! Shared by the `ops` fuzz target (`fuzz/fuzz_targets/ops.rs`, which
//! includes this file by path) and by `tests/fuzz_regressions.rs`, which
//! replays the sequences the fuzzer found. The model is written from the
//! rules, not from the code: a map from key to record, each key's last
//! fencing token and the flights duplicates joined. It also tracks the physical entry count
//! (expired entries stay until swept or replaced) and what the completed
//! entries weigh, so `len()` and every `Stats` field are compared too.
//!
//! Time is a `ManualClock` counted in whole seconds; the background sweeper
//! is off, so nothing happens between operations.

#![allow(dead_code)] // Each includer uses its own part.

pub mod linear;
pub mod threads;

use std::collections::{BTreeMap, HashMap};
use std::future::{Future, IntoFuture};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use idemstore::{
    Claim, ClaimError, CompleteError, ExecuteError, Fingerprint, ManualClock, Outcome, Pending,
    Stats, Store, Ticket, WaitError,
};

/// Keys are `u8`; the runner folds them into this many so that operations
/// meet on the same keys, while still exceeding one shard's initial buckets
/// (16), which makes the table grow.
pub const KEYS: u8 = 40;

/// A value that counts its live instances, so a run can check that the store
/// dropped every value it stored, cloned or handed to waiters.
#[derive(Debug)]
pub struct Counted {
    pub value: u32,
    live: Arc<AtomicIsize>,
}

impl Counted {
    pub fn new(value: u32, live: &Arc<AtomicIsize>) -> Self {
        live.fetch_add(1, Ordering::Relaxed);
        Counted {
            value,
            live: live.clone(),
        }
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        Counted::new(self.value, &self.live)
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::Relaxed);
    }
}

impl PartialEq for Counted {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

/// The store's settings for one run, as the fuzzer picks them; `normalize`
/// maps them onto valid ones.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub struct Setup {
    pub lease: u8,
    pub ttl: u8,
    pub max_entries: u8,
    pub shards_log2: u8,
    pub max_bytes: u8,
}

/// Valid settings in seconds: `1 <= lease <= ttl`.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub lease: u64,
    pub ttl: u64,
    pub max_entries: Option<usize>,
    /// Every run counts bytes with [`weigh`]; some bound them too.
    pub max_bytes: Option<usize>,
    pub shards: usize,
}

impl Setup {
    pub fn normalize(self) -> Settings {
        let lease = 1 + u64::from(self.lease % 8);
        let ttl = lease + u64::from(self.ttl % 24);
        // A third of the runs are bounded, so `Full` and the sweep-to-make-
        // room path are reached.
        let max_entries = match self.max_entries % 3 {
            0 => Some(1 + usize::from(self.max_entries / 3 % 24)),
            _ => None,
        };
        // A third of the runs bound the bytes, independently of the
        // entries: a bound of 1 to 40 is a few entries' weight.
        let max_bytes = match self.max_bytes % 3 {
            0 => Some(1 + usize::from(self.max_bytes / 3 % 40)),
            _ => None,
        };
        Settings {
            lease,
            ttl,
            max_entries,
            max_bytes,
            shards: 1 << (self.shards_log2 % 3),
        }
    }
}

/// One step of a differential run. Tickets and pendings are picked by index
/// (modulo how many are live); a step that names none is skipped.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(fuzzing, derive(arbitrary::Arbitrary))]
pub enum Op {
    Claim {
        key: u8,
    },
    ClaimWith {
        key: u8,
        fingerprint: u8,
    },
    Complete {
        ticket: u8,
        value: u16,
    },
    CompleteWithTtl {
        ticket: u8,
        value: u16,
        ttl: u8,
    },
    Abandon {
        ticket: u8,
    },
    Renew {
        ticket: u8,
    },
    Get {
        key: u8,
    },
    /// `get_many` of `count` consecutive keys from `first` (wrapping), so a
    /// batch may name a key twice.
    GetMany {
        first: u8,
        count: u8,
    },
    /// `get_or_wait` with a zero timeout (a sequential run cannot wait).
    GetOrWait {
        key: u8,
    },
    /// `Pending::wait_timeout` with a zero timeout.
    WaitPending {
        pending: u8,
    },
    /// `pending.into_future()` polled once with a no-op waker, then dropped
    /// (a cancelled async waiter).
    PollPending {
        pending: u8,
    },
    /// Drops a pending handle without waiting.
    DropPending {
        pending: u8,
    },
    Remove {
        key: u8,
    },
    Advance {
        secs: u8,
    },
    Sweep,
    /// `execute`, run only when the model says the key is not in flight
    /// (otherwise it would block a sequential run forever).
    Execute {
        key: u8,
        fail: bool,
        value: u16,
    },
}

/// What an entry weighs, in the store (its weigher) and in the model: 1 to 7,
/// so that a few entries reach a byte bound.
pub fn weigh(key: u8, value: u32) -> usize {
    1 + usize::from(key % 3) + (value % 5) as usize
}

/// What a waiter on a flight has been told, if anything yet.
type FlightResult = Option<Result<u32, WaitError>>;

/// One key's record in the model.
#[derive(Debug, Clone)]
struct Record {
    token: u64,
    fingerprint: Option<u8>,
    /// `Some` once completed.
    value: Option<u32>,
    /// The lease deadline while in flight, the retention deadline once
    /// completed.
    deadline: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum View {
    InFlight,
    Completed(u32),
    Expired,
}

impl Record {
    fn view(&self, now: u64) -> View {
        if now >= self.deadline {
            View::Expired
        } else {
            match self.value {
                Some(v) => View::Completed(v),
                None => View::InFlight,
            }
        }
    }
}

/// The model's counters, named as in `Stats`.
#[derive(Debug, Default, Clone, PartialEq)]
struct Counters {
    claims: u64,
    replays: u64,
    waits: u64,
    abandons: u64,
    takeovers: u64,
    expirations: u64,
    mismatches: u64,
    refusals: u64,
}

/// What the model says a claim returns.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClaimAnswer {
    /// The caller owns the key, under a token larger than `above`, the
    /// key's last one (rule 10 orders a key's tokens, not the store's: the
    /// model does not predict the value). The runner reports the token the
    /// store gave with [`Model::granted`].
    Owner {
        above: u64,
    },
    Completed(u32),
    /// In flight: the token whose flight the pending handle joined.
    InFlight(u64),
    Mismatch,
    Full,
}

/// The sequential specification.
#[derive(Debug)]
pub struct Model {
    settings: Settings,
    now: u64,
    records: BTreeMap<u8, Record>,
    /// Each key's last token; kept when its record goes, since a key's
    /// tokens grow across expiry, removal and re-claims.
    last_tokens: BTreeMap<u8, u64>,
    /// Flights by key and token: created when the first duplicate joins,
    /// resolved once when the in-flight claim ends.
    flights: HashMap<(u8, u64), FlightResult>,
    counters: Counters,
    /// Clock time (ns) of the last sweep a full store made to find room.
    last_full_sweep: Option<u64>,
}

impl Model {
    pub fn new(settings: Settings) -> Self {
        Model {
            settings,
            now: 0,
            records: BTreeMap::new(),
            last_tokens: BTreeMap::new(),
            flights: HashMap::new(),
            counters: Counters::default(),
            last_full_sweep: None,
        }
    }

    fn agree(stored: Option<u8>, given: Option<u8>) -> bool {
        match (stored, given) {
            (Some(s), Some(g)) => s == g,
            _ => true,
        }
    }

    /// Ends `key`'s in-flight claim `token` for its waiters, if any joined.
    fn resolve(&mut self, key: u8, token: u64, result: Result<u32, WaitError>) {
        if let Some(slot @ None) = self.flights.get_mut(&(key, token)) {
            *slot = Some(result);
        }
    }

    /// Drops `key`'s record; an in-flight one's waiters get `why`.
    fn unlink(&mut self, key: u8, why: WaitError) {
        if let Some(record) = self.records.remove(&key) {
            if record.value.is_none() {
                self.resolve(key, record.token, Err(why));
            }
        }
    }

    fn join(&mut self, key: u8, token: u64) -> u64 {
        self.counters.waits += 1;
        self.flights.entry((key, token)).or_insert(None);
        token
    }

    pub fn view(&self, key: u8) -> Option<View> {
        self.records.get(&key).map(|r| r.view(self.now))
    }

    /// A claim. One that the bounds refuse first sweeps expired entries to
    /// make room (rule 14 never evicts a live one), and tries once more.
    pub fn claim(&mut self, key: u8, fingerprint: Option<u8>) -> ClaimAnswer {
        if let Some(answer) = self.try_claim(key, fingerprint) {
            return answer;
        }
        if self.sweep_when_full() > 0 {
            if let Some(answer) = self.try_claim(key, fingerprint) {
                return answer;
            }
        }
        self.counters.refusals += 1;
        ClaimAnswer::Full
    }

    /// What the completed entries weigh, expired ones not yet swept too.
    pub fn bytes(&self) -> usize {
        self.records
            .iter()
            .filter_map(|(&key, r)| r.value.map(|value| weigh(key, value)))
            .sum()
    }

    /// Whether the byte bound refuses a claim that would link an entry.
    fn over_bytes(&self) -> bool {
        self.bytes() >= self.settings.max_bytes.unwrap_or(usize::MAX)
    }

    /// A claim as one locked step decides it; `None` if the bounds refuse
    /// it.
    fn try_claim(&mut self, key: u8, fingerprint: Option<u8>) -> Option<ClaimAnswer> {
        let answer = match self
            .records
            .get(&key)
            .map(|r| (r.view(self.now), r.clone()))
        {
            Some((View::Completed(v), r)) => {
                if Self::agree(r.fingerprint, fingerprint) {
                    self.counters.replays += 1;
                    ClaimAnswer::Completed(v)
                } else {
                    self.counters.mismatches += 1;
                    ClaimAnswer::Mismatch
                }
            }
            Some((View::InFlight, r)) => {
                if Self::agree(r.fingerprint, fingerprint) {
                    ClaimAnswer::InFlight(self.join(key, r.token))
                } else {
                    self.counters.mismatches += 1;
                    ClaimAnswer::Mismatch
                }
            }
            Some((View::Expired, r)) => {
                // A claim on an expired key is a first request (rule 12);
                // an expired lease is taken over (rule 9). It links a new
                // entry, so the byte bound applies (the entry's slot passes
                // on to it).
                if self.over_bytes() {
                    return None;
                }
                if r.value.is_some() {
                    self.counters.expirations += 1;
                } else {
                    self.counters.takeovers += 1;
                }
                self.unlink(key, WaitError::LeaseExpired);
                self.insert(key, fingerprint)
            }
            None => {
                if self.records.len() >= self.settings.max_entries.unwrap_or(usize::MAX)
                    || self.over_bytes()
                {
                    return None;
                }
                self.insert(key, fingerprint)
            }
        };
        Some(answer)
    }

    fn insert(&mut self, key: u8, fingerprint: Option<u8>) -> ClaimAnswer {
        let above = self.last_tokens.get(&key).copied().unwrap_or(0);
        self.counters.claims += 1;
        // Until the runner reports the store's token, the least one it may
        // have given: a claim the runner cannot see (inside `execute`)
        // keeps it, and later claims of the key must still exceed it.
        let token = above + 1;
        self.last_tokens.insert(key, token);
        self.records.insert(
            key,
            Record {
                token,
                fingerprint,
                value: None,
                deadline: self.now + self.settings.lease,
            },
        );
        ClaimAnswer::Owner { above }
    }

    /// The store gave `token` to the claim of `key` the model just answered
    /// with [`ClaimAnswer::Owner`]; the runner checked it is above the
    /// key's last token.
    pub fn granted(&mut self, key: u8, token: u64) {
        let record = self.records.get_mut(&key).expect("just claimed");
        assert!(token >= record.token, "a token at or below the key's last");
        record.token = token;
        self.last_tokens.insert(key, token);
    }

    /// The token of `key`'s in-flight claim.
    pub fn current_token(&self, key: u8) -> Option<u64> {
        self.records
            .get(&key)
            .filter(|r| r.value.is_none())
            .map(|r| r.token)
    }

    /// Whether `token` is still `key`'s current, uncompleted claim (the
    /// fencing check of rule 10; a passed lease not yet taken over still
    /// counts).
    fn current(&self, key: u8, token: u64) -> bool {
        self.records
            .get(&key)
            .is_some_and(|r| r.token == token && r.value.is_none())
    }

    pub fn complete(&mut self, key: u8, token: u64, value: u32, ttl: Option<u64>) -> bool {
        if !self.current(key, token) {
            return false;
        }
        let ttl = ttl.unwrap_or(self.settings.ttl);
        let now = self.now;
        let record = self.records.get_mut(&key).expect("current");
        record.value = Some(value);
        record.deadline = now + ttl;
        self.resolve(key, token, Ok(value));
        true
    }

    pub fn abandon(&mut self, key: u8, token: u64) {
        if self.current(key, token) {
            self.counters.abandons += 1;
            self.unlink(key, WaitError::Abandoned);
        }
    }

    pub fn renew(&mut self, key: u8, token: u64) -> bool {
        if !self.current(key, token) {
            return false;
        }
        let deadline = self.now + self.settings.lease;
        self.records.get_mut(&key).expect("current").deadline = deadline;
        true
    }

    pub fn get(&self, key: u8) -> Option<u32> {
        match self.view(key) {
            Some(View::Completed(v)) => Some(v),
            _ => None,
        }
    }

    /// `get_or_wait` with a zero timeout.
    pub fn get_or_wait(&mut self, key: u8) -> Result<Option<u32>, WaitError> {
        match self.records.get(&key).map(|r| (r.view(self.now), r.token)) {
            Some((View::Completed(v), _)) => Ok(Some(v)),
            Some((View::InFlight, token)) => {
                self.join(key, token);
                Err(WaitError::Timeout)
            }
            Some((View::Expired, _)) | None => Ok(None),
        }
    }

    /// What a waiter on `key`'s flight under `token` gets now: the result,
    /// or `None` while the claim is still in flight.
    pub fn flight(&self, key: u8, token: u64) -> FlightResult {
        *self
            .flights
            .get(&(key, token))
            .expect("a pending handle joined a flight")
    }

    pub fn remove(&mut self, key: u8) -> bool {
        let live = match self.view(key) {
            None => return false,
            Some(view) => view != View::Expired,
        };
        self.unlink(key, WaitError::Abandoned);
        live
    }

    pub fn sweep(&mut self) -> usize {
        let now = self.now;
        let expired: Vec<u8> = self
            .records
            .iter()
            .filter(|(_, r)| r.view(now) == View::Expired)
            .map(|(k, _)| *k)
            .collect();
        for key in &expired {
            self.unlink(*key, WaitError::LeaseExpired);
        }
        self.counters.expirations += expired.len() as u64;
        expired.len()
    }

    /// A full store sweeps to make room at most once per millisecond of
    /// clock time (a store that keeps refusing does not rescan for each
    /// claim); the model's time is whole seconds, so that is once per
    /// distinct `now`, and at 0 only once.
    fn sweep_when_full(&mut self) -> usize {
        let now = self.now * 1_000_000_000;
        let due = match self.last_full_sweep {
            None => true,
            Some(last) => now >= last + 1_000_000,
        };
        if !due {
            return 0;
        }
        self.last_full_sweep = Some(now.max(1));
        self.sweep()
    }

    pub fn advance(&mut self, secs: u64) {
        self.now += secs;
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    fn check_stats(&self, stats: Stats, step: usize) {
        let c = &self.counters;
        let in_flight = self.records.values().filter(|r| r.value.is_none()).count();
        let got = (
            (stats.entries, stats.in_flight),
            (stats.bytes, stats.max_bytes, stats.max_entries),
            stats.claims,
            stats.replays,
            stats.waits,
            stats.abandons,
            stats.takeovers,
            stats.expirations,
            stats.mismatches,
            stats.refusals,
        );
        let want = (
            (self.records.len(), in_flight),
            (
                self.bytes(),
                self.settings.max_bytes,
                self.settings.max_entries,
            ),
            c.claims,
            c.replays,
            c.waits,
            c.abandons,
            c.takeovers,
            c.expirations,
            c.mismatches,
            c.refusals,
        );
        assert_eq!(
            got, want,
            "step {step}: stats ((entries, in_flight), (bytes, max_bytes, max_entries), claims, \
             replays, waits, abandons, takeovers, expirations, mismatches, refusals) diverge"
        );
    }
}

type TestStore = Store<u8, Counted>;

/// A live ticket and what the model knows of it.
struct LiveTicket {
    ticket: Ticket<u8, Counted>,
    token: u64,
}

/// A live pending handle and the token whose flight it joined.
struct LivePending {
    pending: Pending<u8, Counted>,
    token: u64,
}

fn pick<T>(items: &[T], index: u8) -> Option<usize> {
    (!items.is_empty()).then(|| usize::from(index) % items.len())
}

fn fingerprint(byte: u8) -> Fingerprint {
    Fingerprint::of_bytes(&[byte])
}

fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut future = std::pin::pin!(future);
    future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

/// Runs `ops` against a fresh store and the model; panics, naming the step,
/// at the first divergence. At the end everything is released, expired and
/// swept, and the store must be empty and every value dropped.
pub fn run_ops(setup: Setup, ops: &[Op]) {
    let settings = setup.normalize();
    let live = Arc::new(AtomicIsize::new(0));
    let clock = ManualClock::new();
    let mut builder = Store::builder()
        .lease(Duration::from_secs(settings.lease))
        .ttl(Duration::from_secs(settings.ttl))
        .shards(settings.shards)
        .background_sweeper(false)
        .clock(clock.clone())
        .weigher(|key: &u8, value: &Counted| weigh(*key, value.value));
    if let Some(max) = settings.max_entries {
        builder = builder.max_entries(max);
    }
    if let Some(max) = settings.max_bytes {
        builder = builder.max_bytes(max);
    }
    let store: TestStore = builder.build().expect("valid settings");
    let mut model = Model::new(settings);
    let mut tickets: Vec<LiveTicket> = Vec::new();
    let mut pendings: Vec<LivePending> = Vec::new();
    let val = |v: u16| Counted::new(u32::from(v), &live);

    for (step, op) in ops.iter().enumerate() {
        match *op {
            Op::Claim { key } | Op::ClaimWith { key, .. } => {
                let key = key % KEYS;
                let (got, want) = match *op {
                    Op::ClaimWith {
                        fingerprint: fp, ..
                    } => (
                        store.claim_with(key, fingerprint(fp)),
                        model.claim(key, Some(fp)),
                    ),
                    _ => (store.claim(key), model.claim(key, None)),
                };
                match (got, want) {
                    (Ok(Claim::Owner(ticket)), ClaimAnswer::Owner { above }) => {
                        let token = ticket.token();
                        assert!(
                            token > above,
                            "step {step}: token {token} not above the key's last {above}"
                        );
                        assert_eq!(*ticket.key(), key, "step {step}: ticket key");
                        model.granted(key, token);
                        tickets.push(LiveTicket { ticket, token });
                    }
                    (Ok(Claim::Completed(v)), ClaimAnswer::Completed(w)) => {
                        assert_eq!(v.value, w, "step {step}: replayed value");
                    }
                    (Ok(Claim::InFlight(pending)), ClaimAnswer::InFlight(token)) => {
                        assert_eq!(*pending.key(), key, "step {step}: pending key");
                        pendings.push(LivePending { pending, token });
                    }
                    (Err(ClaimError::Mismatch), ClaimAnswer::Mismatch)
                    | (Err(ClaimError::Full), ClaimAnswer::Full) => {}
                    (got, want) => {
                        panic!("step {step}: {op:?}: store {got:?}, model {want:?}")
                    }
                }
            }
            Op::Complete { ticket, value } | Op::CompleteWithTtl { ticket, value, .. } => {
                let Some(i) = pick(&tickets, ticket) else {
                    continue;
                };
                let LiveTicket { ticket, token } = tickets.swap_remove(i);
                let key = *ticket.key();
                let (got, ttl) = match *op {
                    Op::CompleteWithTtl { ttl, .. } => {
                        let ttl = u64::from(ttl % 24);
                        (
                            ticket.complete_with_ttl(val(value), Duration::from_secs(ttl)),
                            Some(ttl),
                        )
                    }
                    _ => (ticket.complete(val(value)), None),
                };
                let want = model.complete(key, token, u32::from(value), ttl);
                match got {
                    Ok(()) => assert!(want, "step {step}: {op:?}: store accepted a stale owner"),
                    Err(CompleteError::Superseded(v)) => {
                        assert!(
                            !want,
                            "step {step}: {op:?}: store refused the current owner"
                        );
                        assert_eq!(v.value, u32::from(value), "step {step}: value handed back");
                    }
                    Err(other) => panic!("step {step}: {op:?}: unexpected {other:?}"),
                }
            }
            Op::Abandon { ticket } => {
                let Some(i) = pick(&tickets, ticket) else {
                    continue;
                };
                let LiveTicket { ticket, token } = tickets.swap_remove(i);
                let key = *ticket.key();
                ticket.abandon();
                model.abandon(key, token);
            }
            Op::Renew { ticket } => {
                let Some(i) = pick(&tickets, ticket) else {
                    continue;
                };
                let LiveTicket { ticket, token } = &tickets[i];
                let want = model.renew(*ticket.key(), *token);
                assert_eq!(ticket.renew().is_ok(), want, "step {step}: {op:?}");
            }
            Op::Get { key } => {
                let key = key % KEYS;
                let got = store.get(&key).map(|v| v.value);
                assert_eq!(got, model.get(key), "step {step}: {op:?}");
            }
            Op::GetMany { first, count } => {
                let keys: Vec<u8> = (0..count % 40)
                    .map(|i| first.wrapping_add(i) % KEYS)
                    .collect();
                let got: Vec<_> = store
                    .get_many(&keys)
                    .into_iter()
                    .map(|v| v.map(|v| v.value))
                    .collect();
                let want: Vec<_> = keys.iter().map(|&key| model.get(key)).collect();
                assert_eq!(got, want, "step {step}: {op:?}");
            }
            Op::GetOrWait { key } => {
                let key = key % KEYS;
                let got = store
                    .get_or_wait(&key, Duration::ZERO)
                    .map(|v| v.map(|v| v.value));
                assert_eq!(got, model.get_or_wait(key), "step {step}: {op:?}");
            }
            Op::WaitPending { pending } => {
                let Some(i) = pick(&pendings, pending) else {
                    continue;
                };
                let LivePending { pending, token } = &pendings[i];
                let got = pending.wait_timeout(Duration::ZERO).map(|v| v.value);
                let want = model
                    .flight(*pending.key(), *token)
                    .unwrap_or(Err(WaitError::Timeout));
                assert_eq!(got, want, "step {step}: {op:?}");
            }
            Op::PollPending { pending } => {
                let Some(i) = pick(&pendings, pending) else {
                    continue;
                };
                let LivePending { pending, token } = pendings.swap_remove(i);
                let want = model.flight(*pending.key(), token);
                let got = match poll_once(pending.into_future()) {
                    Poll::Ready(r) => Some(r.map(|v| v.value)),
                    Poll::Pending => None,
                };
                assert_eq!(got, want, "step {step}: {op:?}");
            }
            Op::DropPending { pending } => {
                if let Some(i) = pick(&pendings, pending) {
                    pendings.swap_remove(i);
                }
            }
            Op::Remove { key } => {
                let key = key % KEYS;
                assert_eq!(store.remove(&key), model.remove(key), "step {step}: {op:?}");
            }
            Op::Advance { secs } => {
                let secs = u64::from(secs % 32);
                clock.advance(Duration::from_secs(secs));
                model.advance(secs);
            }
            Op::Sweep => {
                assert_eq!(store.sweep(), model.sweep(), "step {step}: {op:?}");
            }
            Op::Execute { key, fail, value } => {
                let key = key % KEYS;
                if model.view(key) == Some(View::InFlight) {
                    continue;
                }
                let got = store.execute(key, || if fail { Err(()) } else { Ok(val(value)) });
                let got = got.map(|o| match o {
                    Outcome::Executed(v) => (true, v.value),
                    Outcome::Replayed(v) => (false, v.value),
                });
                let want = match model.claim(key, None) {
                    ClaimAnswer::Owner { .. } if fail => {
                        let token = model.current_token(key).expect("just claimed");
                        model.abandon(key, token);
                        Err(ExecuteError::Failed(()))
                    }
                    ClaimAnswer::Owner { .. } => {
                        let token = model.current_token(key).expect("just claimed");
                        assert!(model.complete(key, token, u32::from(value), None));
                        Ok((true, u32::from(value)))
                    }
                    ClaimAnswer::Completed(v) => Ok((false, v)),
                    ClaimAnswer::Full => Err(ExecuteError::Claim(ClaimError::Full)),
                    other => unreachable!("execute on a key not in flight: {other:?}"),
                };
                assert_eq!(got, want, "step {step}: {op:?}");
            }
        }
        assert_eq!(store.len(), model.len(), "step {step}: {op:?}: len");
        model.check_stats(store.stats(), step);
    }

    // Release everything, let every deadline pass, sweep: nothing may stay.
    drop(tickets);
    drop(pendings);
    clock.advance(Duration::from_secs(3600));
    store.sweep();
    assert_eq!(
        store.len(),
        0,
        "entries left after everything expired and was swept"
    );
    assert_eq!(store.stats().bytes, 0, "bytes left in an empty store");
    drop(store);
    assert_eq!(
        live.load(Ordering::Relaxed),
        0,
        "values leaked after the store dropped"
    );
}
