//! A small linearizability checker (Wing & Gong search with memoisation) for
//! one key's concurrent history of claim, complete, abandon, get and remove.
//!
//! Each operation carries invoke and return stamps from one global counter,
//! so "returned before the other was invoked" is real-time order. The
//! history is linearizable if some order of the operations that respects
//! real-time order, applied to the sequential model below, gives every
//! operation the result it actually returned.
//!
//! The model is the key's state with no time passing (the histories come
//! from a store whose TTL and lease are far longer than the run): absent, in
//! flight under a token, or completed with a value. Only a key's own tokens
//! are ordered, and they need not be consecutive: the model accepts any
//! token larger than the key's previous one.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

/// A stamp source shared by every recording thread.
pub static CLOCK: AtomicU64 = AtomicU64::new(0);

pub fn stamp() -> u64 {
    // SeqCst: stamps must order operations the way real time does across
    // threads.
    CLOCK.fetch_add(1, Ordering::SeqCst)
}

/// What was called, with what it returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    /// `claim`: `Owner(token)`, `Completed(value)` or in flight.
    ClaimOwner(u64),
    ClaimCompleted(u32),
    ClaimInFlight,
    /// `complete(token, value)` and whether it was accepted.
    Complete {
        token: u64,
        value: u32,
        ok: bool,
    },
    /// Dropping the ticket of `token`; returns nothing.
    Abandon(u64),
    Get(Option<u32>),
    /// `remove` and whether a live entry was there.
    Remove(bool),
}

#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub invoke: u64,
    pub ret: u64,
    pub call: Call,
}

/// The sequential state of one key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum State {
    Absent,
    InFlight(u64),
    Completed(u32),
}

/// The key's state and the last token it was claimed under.
type Spec = (State, u64);

/// The state after `call` from `spec`, if `call`'s result is what the
/// sequential store would have returned.
fn apply((state, last): Spec, call: Call) -> Option<Spec> {
    match (call, state) {
        (Call::ClaimOwner(token), State::Absent) => {
            (token > last).then_some((State::InFlight(token), token))
        }
        (Call::ClaimCompleted(v), State::Completed(w)) => (v == w).then_some((state, last)),
        (Call::ClaimInFlight, State::InFlight(_)) => Some((state, last)),
        (Call::Complete { token, value, ok }, _) => {
            let current = state == State::InFlight(token);
            match (ok, current) {
                (true, true) => Some((State::Completed(value), last)),
                (false, false) => Some((state, last)),
                _ => None,
            }
        }
        (Call::Abandon(token), State::InFlight(t)) if t == token => Some((State::Absent, last)),
        (Call::Abandon(_), _) => Some((state, last)),
        (Call::Get(got), _) => {
            let want = match state {
                State::Completed(v) => Some(v),
                _ => None,
            };
            (got == want).then_some((state, last))
        }
        (Call::Remove(live), _) => {
            (live == (state != State::Absent)).then_some((State::Absent, last))
        }
        _ => None,
    }
}

/// Whether `history` (one key's, at most 128 operations) is linearizable.
pub fn linearizable(history: &[Event]) -> bool {
    assert!(history.len() <= 128, "history too long for the checker");
    let all = if history.len() == 128 {
        u128::MAX
    } else {
        (1u128 << history.len()) - 1
    };
    let mut failed = HashSet::new();
    search(history, all, 0, (State::Absent, 0), &mut failed)
}

fn search(
    history: &[Event],
    all: u128,
    done: u128,
    spec: Spec,
    failed: &mut HashSet<(u128, Spec)>,
) -> bool {
    if done == all {
        return true;
    }
    if failed.contains(&(done, spec)) {
        return false;
    }
    let pending = || (0..history.len()).filter(move |i| done & (1 << i) == 0);
    // An operation may go next only if it was invoked before every other
    // remaining operation returned.
    let first_return = pending().map(|i| history[i].ret).min().unwrap_or(u64::MAX);
    for i in pending() {
        let event = history[i];
        if event.invoke > first_return {
            continue;
        }
        if let Some(next) = apply(spec, event.call) {
            if search(history, all, done | 1 << i, next, failed) {
                return true;
            }
        }
    }
    failed.insert((done, spec));
    false
}
