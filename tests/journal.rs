//! The journal (feature `journal`): what comes back after a restart, torn
//! tails and damage, refused files, the lock, write errors, compaction and
//! the fsync modes. Time is a `ManualClock` whose wall time goes on across
//! restarts; each test has a directory of its own, removed at its end.
//!
//! Some tests run a scenario in a child process (this test binary, started
//! again on one test with [`CHILD`] set): another process holding or taking
//! the lock, a process that dies with claims in flight, and one whose
//! writes fail for real under a file size limit.
#![cfg(feature = "journal")]

mod common;
mod journal_bytes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::{manual_builder, wait_until, LEASE};
use idemstore::{
    Builder, Claim, ClaimError, Codec, CompleteError, ConfigError, ExecuteError, Fingerprint,
    Fsync, JournalError, ManualClock, Recovery, Store,
};
use journal_bytes::{crc32c, frame, header, header_len, open_arbitrary, records, FRAME};

// ---------------------------------------------------------------- helpers

/// A directory of the test's own under the system's temp dir, removed when
/// the test ends (passing or not).
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("idemstore-journal-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the test's temp dir");
        TempDir(dir)
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test's journal: the test's own directory, the journal's path in it,
/// and a manual clock starting at [`t0`], for every store of the test.
fn setup(test: &str) -> (TempDir, PathBuf, ManualClock) {
    let dir = TempDir::new(test);
    let path = dir.file("j");
    (dir, path, ManualClock::with_wall(t0()))
}

/// A wall time to start the manual clocks at: fixed, so runs agree.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A journaled store's settings on `clock`: the common manual settings
/// (TTL 100 s, lease 10 s, no sweeper), `Fsync::Never` unless a test
/// says otherwise.
fn journaled<K, V>(path: &Path, clock: &ManualClock) -> Builder<K, V>
where
    K: Codec + std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Codec + Clone + Send + Sync + 'static,
{
    manual_builder(clock).journal(path).fsync(Fsync::Never)
}

/// Builds the store `make` describes on a journal that a store just
/// dropped: retries while the journal is still locked.
///
/// A dropped store's background threads may hold it for a moment (the
/// journal thread reads two counters each tick; a compaction holds it for
/// one step of its snapshot, or through its swap) and release the lock a
/// little after `drop` returned. Only `Locked` is retried, for at most ten
/// seconds; any other error is returned at once.
fn reopen<K, V>(make: impl Fn() -> Builder<K, V>) -> Result<Store<K, V>, ConfigError>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match make().build() {
            Err(ConfigError::Journal(JournalError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::yield_now();
            }
            other => return other,
        }
    }
}

/// Claims `key` (with `fingerprint`, if any) as its owner and completes it.
fn put<K, V>(store: &Store<K, V>, key: K, value: V, fingerprint: Option<Fingerprint>) -> u64
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static,
    V: Clone + Send + Sync + std::fmt::Debug + 'static,
{
    let claim = match fingerprint {
        Some(fp) => store.claim_with(key.clone(), fp),
        None => store.claim(key.clone()),
    };
    let Ok(Claim::Owner(ticket)) = claim else {
        panic!("{key:?} is not free to claim: {claim:?}");
    };
    let token = ticket.token();
    ticket.complete(value).expect("complete");
    token
}

/// Claims `key`, which must be free, and returns the ticket.
fn owner<K, V>(store: &Store<K, V>, key: K) -> idemstore::Ticket<K, V>
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + std::fmt::Debug + 'static,
    V: Clone + Send + Sync + std::fmt::Debug + 'static,
{
    match store.claim(key.clone()) {
        Ok(Claim::Owner(ticket)) => ticket,
        other => panic!("{key:?} is not free to claim: {other:?}"),
    }
}

/// Deterministic bytes of every value 0..=255, `len` of them, seeded.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The environment variable that makes a test the child of another.
const CHILD: &str = "IDEMSTORE_JOURNAL_CHILD";

/// The role a test plays when it runs as a child process, and the journal
/// it works on.
fn child_role() -> Option<(String, PathBuf)> {
    let value = std::env::var(CHILD).ok()?;
    let (role, path) = value.split_once(':')?;
    Some((role.to_string(), PathBuf::from(path)))
}

/// Runs the test `test` of this binary alone in a child process as
/// `role` on `path`, its command line prefixed by `sh -c script` if given
/// (the script ends in `exec "$0" "$@"`).
fn run_child(test: &str, role: &str, path: &Path, script: Option<&str>) -> Output {
    let exe = std::env::current_exe().expect("the test binary");
    let args = [test, "--exact", "--nocapture", "--test-threads=1"];
    let mut command = match script {
        Some(script) => {
            let mut sh = Command::new("sh");
            sh.arg("-c").arg(script).arg(&exe).args(args);
            sh
        }
        None => {
            let mut direct = Command::new(&exe);
            direct.args(args);
            direct
        }
    };
    command
        .env(CHILD, format!("{role}:{}", path.display()))
        .output()
        .expect("start the child process")
}

/// What the child printed after `marker` on the line that has it; fails
/// the test if the child failed or printed no such line. (The harness
/// prints the test's name on the same line, before.)
fn child_said(output: &Output, marker: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let said = stdout.lines().find_map(|line| {
        line.split_once(marker)
            .map(|(_, rest)| rest.trim().to_string())
    });
    match said {
        Some(rest) if output.status.success() => rest,
        _ => panic!(
            "child failed ({}) or did not say {marker:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            output.status
        ),
    }
}

fn journal_error<T: std::fmt::Debug>(built: Result<T, ConfigError>) -> JournalError {
    match built {
        Err(ConfigError::Journal(e)) => e,
        other => panic!("expected a journal error, got {other:?}"),
    }
}

// ------------------------------------------------------------ round trips

#[test]
fn completions_and_their_fingerprints_come_back_after_a_restart() {
    let (_dir, path, clock) = setup("round-trip");
    let keys: Vec<String> = (0..20).map(|i| format!("ключ-🔑-{i}-\u{0}-ß")).collect();
    let value = |i: usize| match i {
        0 => Vec::new(),
        1 => (0..=255).collect(),
        _ => noise(i as u64, 1 + i * 37),
    };
    let fingerprint = |i: usize| Fingerprint::of_bytes(format!("payload {i}").as_bytes());
    {
        let store: Store<String, Vec<u8>> = journaled(&path, &clock).build().unwrap();
        for (i, key) in keys.iter().enumerate() {
            // Every third completion without a fingerprint.
            let fp = (i % 3 != 0).then(|| fingerprint(i));
            put(&store, key.clone(), value(i), fp);
        }
    }
    let store: Store<String, Vec<u8>> = reopen(|| journaled(&path, &clock)).unwrap();
    let report = store.journal_report().unwrap();
    assert_eq!((report.restored, report.expired), (keys.len(), 0));
    assert_eq!((report.torn_tail, report.truncated), (None, None));
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(store.get(key.as_str()), Some(value(i)), "{key}");
        let same = store.claim_with(key.clone(), fingerprint(i));
        let other = store.claim_with(key.clone(), Fingerprint::of_bytes(b"another payload"));
        if i % 3 == 0 {
            // Recorded without a fingerprint: nothing to disagree with.
            assert!(matches!(same, Ok(Claim::Completed(v)) if v == value(i)));
            assert!(matches!(other, Ok(Claim::Completed(_))));
        } else {
            assert!(
                matches!(same, Ok(Claim::Completed(v)) if v == value(i)),
                "{key}"
            );
            assert_eq!(other.err(), Some(ClaimError::Mismatch), "{key}");
        }
    }
    assert_eq!(store.get("never stored"), None);
}

#[test]
fn tuple_keys_and_values_come_back_after_a_restart() {
    let (_dir, path, clock) = setup("tuples");
    type Key = (String, u64, Vec<u8>);
    type Value = (u32, bool, String);
    let key = |i: u64| -> Key { (format!("tenant-{i}-ü"), i * 1_000_003, noise(i, i as usize)) };
    let value = |i: u64| -> Value { (i as u32, i.is_multiple_of(2), "ok ✓".repeat(i as usize)) };
    {
        let store: Store<Key, Value> = journaled(&path, &clock).build().unwrap();
        for i in 0..10 {
            put(&store, key(i), value(i), Some(Fingerprint::of(&i)));
        }
    }
    let store: Store<Key, Value> = reopen(|| journaled(&path, &clock)).unwrap();
    assert_eq!(store.journal_report().unwrap().restored, 10);
    for i in 0..10 {
        assert_eq!(store.get(&key(i)), Some(value(i)));
        assert_eq!(
            store.claim_with(key(i), Fingerprint::of(&(i + 1))).err(),
            Some(ClaimError::Mismatch)
        );
    }
}

#[test]
fn each_fsync_mode_round_trips_through_a_restart() {
    let dir = TempDir::new("fsync-modes");
    let clock = ManualClock::with_wall(t0());
    let modes = [
        Fsync::Always,
        Fsync::Interval(Duration::from_millis(5)),
        Fsync::Never,
    ];
    for (m, mode) in modes.into_iter().enumerate() {
        let path = dir.file(&format!("j{m}"));
        let make = || journaled::<u64, String>(&path, &clock).fsync(mode);
        {
            let store = make().build().unwrap();
            for i in 0..50 {
                put(&store, i, format!("{mode:?} {i}"), None);
            }
            assert!(store.remove(&7));
        }
        let store = reopen(make).unwrap();
        assert_eq!(store.journal_report().unwrap().restored, 49, "{mode:?}");
        for i in 0..50 {
            let expected = (i != 7).then(|| format!("{mode:?} {i}"));
            assert_eq!(store.get(&i), expected, "{mode:?}");
        }
    }
}

// ----------------------------------------------------------------- expiry

#[test]
fn entries_past_their_ttl_stay_expired_across_a_restart() {
    let dir = TempDir::new("expiry");
    let path = dir.file("j");
    // One clock for every store: its wall time goes on across restarts.
    let clock = ManualClock::with_wall(t0());
    let make = || journaled::<String, u32>(&path, &clock);
    {
        let store = make().build().unwrap();
        put(&store, "default".to_string(), 1, None); // TTL 100 s
        for (key, ttl) in [("short", 5), ("long", 1000)] {
            let ticket = owner(&store, key.to_string());
            ticket
                .complete_with_ttl(2, Duration::from_secs(ttl))
                .unwrap();
        }
    }
    clock.advance(Duration::from_secs(10));
    {
        let store = reopen(make).unwrap();
        let report = store.journal_report().unwrap();
        assert_eq!((report.restored, report.expired), (2, 1));
        assert_eq!(store.get("short"), None);
        assert_eq!(store.get("default"), Some(1));
        assert_eq!(store.get("long"), Some(2));
        // The short one's key is free again.
        drop(owner(&store, "short".to_string()));
    }
    clock.advance(Duration::from_secs(90)); // 100 s: the default TTL passes
    let store = reopen(make).unwrap();
    let report = store.journal_report().unwrap();
    assert_eq!((report.restored, report.expired), (1, 2));
    assert_eq!(store.get("default"), None);
    // The restored entry keeps its own deadline, to the nanosecond.
    clock.advance(Duration::from_secs(899) + Duration::from_nanos(999_999_999));
    assert_eq!(store.get("long"), Some(2));
    clock.advance(Duration::from_nanos(1));
    assert_eq!(store.get("long"), None);
}

// ----------------------------------------------------------------- tokens

#[test]
fn tokens_never_go_backwards_across_restarts() {
    let (_dir, path, clock) = setup("tokens");
    let make = || journaled::<String, u32>(&path, &clock);
    let mut newest = 0;
    for round in 0..6 {
        let store = reopen(make).unwrap();
        // "k" is claimed every round and never completed: the ticket is
        // still in flight when the store goes.
        let in_flight = owner(&store, "k".to_string());
        assert!(in_flight.token() > newest, "round {round}");
        newest = in_flight.token();
        // A completed key and a removed one: their tokens too.
        let done = format!("done-{round}");
        newest = newest.max(put(&store, done.clone(), round, None));
        if round % 2 == 0 {
            assert!(store.remove(done.as_str()));
        }
        // A takeover after the lease passed, within the round.
        let stale = owner(&store, "lease".to_string());
        clock.advance(LEASE);
        let fresh = owner(&store, "lease".to_string());
        assert!(fresh.token() > stale.token());
        newest = newest.max(fresh.token());
        drop(store); // the tickets hold the store until the end of the round
    }
    let store = reopen(make).unwrap();
    for key in ["k", "lease", "done-1", "fresh"] {
        match store.claim(key.to_string()) {
            Ok(Claim::Owner(t)) => assert!(t.token() > newest, "{key}: {} <= {newest}", t.token()),
            Ok(Claim::Completed(_)) => assert_eq!(key, "done-1"),
            other => panic!("{key}: {other:?}"),
        }
    }
}

#[test]
fn tokens_of_claims_in_flight_at_a_crash_are_not_handed_out_again() {
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "crash");
        let clock = ManualClock::with_wall(t0());
        let store: Store<String, u32> = reopen(|| journaled(&path, &clock)).unwrap();
        let tickets: Vec<_> = (0..3).map(|i| owner(&store, format!("k{i}"))).collect();
        let newest = tickets.iter().map(|t| t.token()).max().unwrap();
        println!("token={newest}");
        // Dies with the claims in flight: no destructor runs.
        std::process::exit(0);
    }
    let (_dir, path, clock) = setup("crash-tokens");
    let mut newest = 0;
    for _ in 0..3 {
        let out = run_child(
            "tokens_of_claims_in_flight_at_a_crash_are_not_handed_out_again",
            "crash",
            &path,
            None,
        );
        let token: u64 = child_said(&out, "token=").parse().unwrap();
        assert!(token > newest, "a crashed child reused token {token}");
        newest = token;
    }
    let store: Store<String, u32> = reopen(|| journaled(&path, &clock)).unwrap();
    for i in 0..3 {
        let ticket = owner(&store, format!("k{i}"));
        assert!(ticket.token() > newest);
    }
}

/// A replay counts the bytes of the entries it restores, and restores every
/// one even past a smaller byte bound: each was an acknowledged result. The
/// store then refuses new claims until entries go.
#[test]
fn a_replay_counts_the_bytes_it_restores_even_past_the_bound() {
    let (_dir, path, clock) = setup("bytes");
    let weighed = |max: usize| {
        journaled::<u64, Vec<u8>>(&path, &clock)
            .max_bytes(max)
            .weigher(|_, value| value.len())
    };
    {
        let store = weighed(1000).build().unwrap();
        for key in 0..10 {
            put(&store, key, vec![7; 50], None);
        }
        assert!(store.remove(&9));
        assert_eq!(store.stats().bytes, 450);
    }
    let store = reopen(|| weighed(1000)).unwrap();
    assert_eq!(store.journal_report().unwrap().restored, 9);
    assert_eq!(store.stats().bytes, 450);
    drop(store);

    let store = reopen(|| weighed(100)).unwrap();
    let stats = store.stats();
    assert_eq!((stats.entries, stats.bytes), (9, 450), "all restored");
    assert_eq!(store.claim(20).err(), Some(ClaimError::Full));
    assert_eq!(store.get(&3), Some(vec![7; 50]));
    for key in 0..8 {
        assert!(store.remove(&key));
    }
    assert_eq!(store.stats().bytes, 50);
    assert!(matches!(store.claim(20), Ok(Claim::Owner(_))));
}

// ---------------------------------------------------------------- removal

#[test]
fn removals_survive_a_restart_and_a_reclaim_keeps_its_new_value() {
    let (_dir, path, clock) = setup("removal");
    let make = || journaled::<String, String>(&path, &clock);
    {
        let store = make().build().unwrap();
        for key in ["a", "b", "c"] {
            put(&store, key.to_string(), format!("{key}1"), None);
        }
        assert!(store.remove("b"));
        // Removed while in flight: the owner's completion is refused, and
        // its record is revoked.
        let ticket = owner(&store, "d".to_string());
        assert!(store.remove("d"));
        assert!(matches!(
            ticket.complete("d1".to_string()),
            Err(CompleteError::Superseded(v)) if v == "d1"
        ));
    }
    {
        let store = reopen(make).unwrap();
        assert_eq!(store.journal_report().unwrap().restored, 2);
        assert_eq!(store.get("a"), Some("a1".to_string()));
        assert_eq!(store.get("b"), None);
        assert_eq!(store.get("d"), None);
        assert_eq!(store.get("c"), Some("c1".to_string()));
        assert!(store.remove("c"));
        put(&store, "c".to_string(), "c2".to_string(), None);
        // Removed again and left so.
        assert!(store.remove("a"));
    }
    for _ in 0..2 {
        let store = reopen(make).unwrap();
        assert_eq!(store.get("c"), Some("c2".to_string()));
        assert_eq!(store.get("a"), None);
        assert_eq!(store.get("b"), None);
        assert_eq!(store.journal_report().unwrap().restored, 1);
    }
}

// ------------------------------------------------------------- compaction

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).expect("the journal").len()
}

#[test]
fn compaction_shrinks_the_journal_and_keeps_every_live_entry() {
    let (_dir, path, clock) = setup("compact");
    let make = || journaled::<String, Vec<u8>>(&path, &clock);
    let mut live = BTreeMap::new();
    let newest;
    {
        let store = make().build().unwrap();
        let mut top = 0;
        for round in 0..20_u64 {
            for k in 0..30_u64 {
                let key = format!("key-{k}");
                if live.remove(&key).is_some() {
                    assert!(store.remove(key.as_str()));
                }
                let value = noise(round * 100 + k, 40);
                top = top.max(put(&store, key.clone(), value.clone(), None));
                live.insert(key, value);
            }
        }
        // Removed for good, and expired.
        for k in 0..5 {
            let key = format!("key-{k}");
            assert!(store.remove(key.as_str()));
            live.remove(&key);
        }
        for k in 0..5 {
            let ticket = owner(&store, format!("brief-{k}"));
            top = top.max(ticket.token());
            ticket
                .complete_with_ttl(vec![k], Duration::from_secs(1))
                .unwrap();
        }
        clock.advance(Duration::from_secs(2));
        let before = file_len(&path);
        store.compact_journal().unwrap();
        let after = file_len(&path);
        assert!(after * 4 < before, "compacted {before} -> {after} bytes");
        // Writes after the compaction land in the new file.
        top = top.max(put(&store, "late".to_string(), b"late".to_vec(), None));
        live.insert("late".to_string(), b"late".to_vec());
        newest = top;
    }
    let store = reopen(make).unwrap();
    let report = store.journal_report().unwrap();
    assert_eq!((report.restored, report.torn_tail), (live.len(), None));
    for (key, value) in &live {
        assert_eq!(store.get(key.as_str()).as_ref(), Some(value), "{key}");
    }
    for k in 0..5 {
        assert_eq!(store.get(format!("key-{k}").as_str()), None);
        assert_eq!(store.get(format!("brief-{k}").as_str()), None);
    }
    let ticket = owner(&store, "key-0".to_string());
    assert!(ticket.token() > newest);
}

#[test]
fn the_background_thread_compacts_a_journal_over_its_threshold() {
    let (_dir, path, clock) = setup("compact-background");
    let make = || journaled::<u64, Vec<u8>>(&path, &clock).compact_above(16 << 10);
    {
        let store = make().build().unwrap();
        // 3 live keys, rewritten until the file has been far over the
        // threshold (the thread may compact it meanwhile).
        let mut peak = 0;
        for round in 0..400_u64 {
            let key = round % 3;
            if round >= 3 {
                assert!(store.remove(&key));
            }
            put(&store, key, noise(round, 100), None);
            peak = peak.max(file_len(&path));
        }
        assert!(peak > 32 << 10, "the journal grew to {peak} bytes");
        // The background thread checks every 50 ms; ten seconds is ample.
        wait_until("the background thread compacts", || {
            file_len(&path) < 16 << 10
        });
        put(&store, 3, b"after".to_vec(), None);
    }
    let store = reopen(make).unwrap();
    assert_eq!(store.journal_report().unwrap().restored, 4);
    for key in 0..3_u64 {
        let last_round = (397..400).find(|round| round % 3 == key).unwrap();
        assert_eq!(store.get(&key), Some(noise(last_round, 100)));
    }
    assert_eq!(store.get(&3), Some(b"after".to_vec()));
}

// ------------------------------------------------------------- torn tails

/// The operations behind the last records of the torn-tail journal.
#[derive(Clone, Debug)]
enum Op {
    Put(&'static str, Vec<u8>),
    Remove(&'static str),
}

#[test]
fn a_cut_at_every_byte_of_the_last_records_is_a_torn_tail() {
    let (_dir, path, clock) = setup("torn");
    let make = || journaled::<String, Vec<u8>>(&path, &clock);
    let ops = vec![
        Op::Put("a", noise(1, 10)),
        Op::Put("b", noise(2, 50)),
        Op::Put("c", noise(3, 3)),
        // The last three records:
        Op::Put("d", noise(4, 21)),
        Op::Remove("b"),
        Op::Put("e", Vec::new()),
    ];
    {
        let store = make().build().unwrap();
        for op in &ops {
            match op {
                Op::Put(key, value) => {
                    put(
                        &store,
                        key.to_string(),
                        value.clone(),
                        Some(Fingerprint::of(key)),
                    );
                }
                Op::Remove(key) => assert!(store.remove(*key)),
            }
        }
    }
    let whole = std::fs::read(&path).unwrap();
    let recs = records(&whole);
    // A reservation, then one record per operation, ending at the file's end.
    assert_eq!(recs.len(), 1 + ops.len());
    let (last_start, last_len) = *recs.last().unwrap();
    assert_eq!(last_start + last_len, whole.len());
    let first_cut = recs[recs.len() - 3].0;
    for cut in first_cut..whole.len() {
        // Whole records before the cut, and the start of the cut one.
        let kept = recs.iter().filter(|(at, len)| at + len <= cut).count();
        let boundary = recs.get(kept).map_or(whole.len(), |r| r.0);
        let mut expected = BTreeMap::new();
        for op in &ops[..kept - 1] {
            match op {
                Op::Put(key, value) => expected.insert(*key, value.clone()),
                Op::Remove(key) => expected.remove(key),
            };
        }
        std::fs::write(&path, &whole[..cut]).unwrap();
        {
            let store = reopen(make).unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
            let report = store.journal_report().unwrap();
            let torn = (cut > boundary).then(|| (boundary as u64, (cut - boundary) as u64));
            assert_eq!(report.torn_tail, torn, "cut at {cut}");
            assert_eq!(report.truncated, None, "cut at {cut}");
            assert_eq!(report.records, kept as u64, "cut at {cut}");
            assert_eq!(report.restored, expected.len(), "cut at {cut}");
            for key in ["a", "b", "c", "d", "e"] {
                assert_eq!(
                    store.get(key),
                    expected.get(key).cloned(),
                    "{key}, cut at {cut}"
                );
            }
            // Cut back to the whole records: the new ones follow them.
            let now = std::fs::read(&path).unwrap();
            assert_eq!(&now[..boundary], &whole[..boundary], "cut at {cut}");
            let after = records(&now);
            assert_eq!(after.last().map(|(at, len)| at + len), Some(now.len()));
            put(&store, "after".to_string(), b"after".to_vec(), None);
        }
        let store = reopen(make).unwrap();
        let report = store.journal_report().unwrap();
        assert_eq!(report.torn_tail, None, "cut at {cut}");
        assert_eq!(report.restored, expected.len() + 1, "cut at {cut}");
        assert_eq!(store.get("after"), Some(b"after".to_vec()));
    }
}

// ----------------------------------------------------------------- damage

/// A journal of `n` completions of `u64 -> Vec<u8>` at `path`.
fn write_journal(path: &Path, clock: &ManualClock, n: u64) {
    let store: Store<u64, Vec<u8>> = journaled(path, clock).build().unwrap();
    for i in 0..n {
        put(&store, i, noise(i, 30), None);
    }
}

#[test]
fn a_flipped_bit_inside_the_journal_is_refused_naming_the_offset() {
    let (_dir, path, clock) = setup("flipped");
    write_journal(&path, &clock, 6);
    let whole = std::fs::read(&path).unwrap();
    let recs = records(&whole);
    // Record 3 is the completion of key 2; records of 3, 4 and 5 follow it.
    let (damaged, len) = recs[3];
    let make = |recovery| journaled::<u64, Vec<u8>>(&path, &clock).journal_recovery(recovery);
    // A bit of its length, of its checksum, of its key, of its value.
    for bit_at in [
        damaged,
        damaged + 5,
        FRAME + damaged + 25,
        damaged + len - 1,
    ] {
        let mut bytes = whole.clone();
        bytes[bit_at] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        let error = journal_error(reopen(|| make(Recovery::Strict)));
        let JournalError::Corrupt {
            path: p, offset, ..
        } = &error
        else {
            panic!("flip at {bit_at}: {error:?}");
        };
        assert_eq!((p, *offset), (&path, damaged as u64), "flip at {bit_at}");
        let text = error.to_string();
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains(&damaged.to_string()), "{text}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "a refused journal is left as it was"
        );

        let store = reopen(|| make(Recovery::TruncateAtDamage)).unwrap();
        let report = store.journal_report().unwrap();
        let dropped = (whole.len() - damaged) as u64;
        assert_eq!(
            report.truncated,
            Some((damaged as u64, dropped)),
            "flip at {bit_at}"
        );
        assert_eq!((report.torn_tail, report.restored), (None, 2));
        for i in 0..6 {
            assert_eq!(
                store.get(&i),
                (i < 2).then(|| noise(i, 30)),
                "flip at {bit_at}"
            );
        }
        assert_eq!(&std::fs::read(&path).unwrap()[..damaged], &whole[..damaged]);
    }
}

#[test]
fn other_versions_codecs_and_files_are_refused_and_left_untouched() {
    let dir = TempDir::new("refused");
    let clock = ManualClock::with_wall(t0());
    let path = dir.file("strings");
    {
        let store: Store<String, String> = journaled(&path, &clock).build().unwrap();
        put(&store, "k".to_string(), "v".to_string(), None);
    }
    let strings = std::fs::read(&path).unwrap();
    let refused = |path: &Path| {
        let before = std::fs::read(path).unwrap();
        let error = journal_error(reopen(|| journaled::<u64, u64>(path, &clock)));
        assert_eq!(std::fs::read(path).unwrap(), before, "{error}");
        assert!(
            error.to_string().contains(&path.display().to_string()),
            "{error}"
        );
        error
    };

    // Another codec: a journal of String -> String read as u64 -> u64.
    let error = refused(&path);
    assert!(
        matches!(&error, JournalError::Codec { found, expected, .. }
            if found == "utf8->utf8" && expected == "u64->u64"),
        "{error:?}"
    );
    assert!(error.to_string().contains("utf8->utf8"), "{error}");

    // Another format version, with a valid header checksum.
    let v2 = dir.file("v2");
    let mut bytes = header(2, "u64->u64");
    bytes.extend_from_slice(&strings[header_len(&strings)..]);
    std::fs::write(&v2, &bytes).unwrap();
    let error = refused(&v2);
    assert!(
        matches!(error, JournalError::Version { found: 2, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("version 2"), "{error}");

    // Files that are no journal: text, a bare magic, a header whose
    // checksum is wrong, and a single byte.
    let mut bad_crc = header(1, "u64->u64");
    *bad_crc.last_mut().unwrap() ^= 1;
    let others: [&[u8]; 4] = [
        b"order-1,receipt-1\norder-2,receipt-2\n",
        b"IDEMJRNL",
        &bad_crc,
        b"\0",
    ];
    for (i, contents) in others.into_iter().enumerate() {
        let other = dir.file(&format!("other{i}"));
        std::fs::write(&other, contents).unwrap();
        let error = refused(&other);
        assert!(
            matches!(error, JournalError::NotAJournal { .. }),
            "{i}: {error:?}"
        );
        assert!(
            error.to_string().contains("not an idemstore journal"),
            "{error}"
        );
    }
}

#[test]
fn the_test_crc_is_the_journals() {
    // The forged headers and records above rely on it.
    let dir = TempDir::new("crc");
    let path = dir.file("j");
    write_journal(&path, &ManualClock::with_wall(t0()), 2);
    let bytes = std::fs::read(&path).unwrap();
    let end = header_len(&bytes) - 4;
    assert_eq!(crc32c(&bytes[..end]).to_le_bytes(), bytes[end..end + 4]);
    assert_eq!(&bytes[..end + 4], header(1, "u64->bytes").as_slice());
    for (at, len) in records(&bytes) {
        let mut again = Vec::new();
        frame(&mut again, &bytes[at + FRAME..at + len]);
        assert_eq!(again, &bytes[at..at + len]);
    }
}

// ------------------------------------------------------------------- lock

#[test]
fn a_second_store_on_the_same_journal_is_refused_while_the_first_lives() {
    let (_dir, path, clock) = setup("lock");
    let make = || journaled::<u64, u64>(&path, &clock);
    let first = make().build().unwrap();
    put(&first, 1, 1, None);
    let error = journal_error(make().build());
    assert_eq!(error, JournalError::Locked { path: path.clone() });
    assert!(error.to_string().contains(".lock"), "{error}");
    // Refused without touching the journal: the first store goes on.
    put(&first, 2, 2, None);
    drop(first);
    let second = reopen(make).unwrap();
    assert_eq!((second.get(&1), second.get(&2)), (Some(1), Some(2)));
}

#[test]
fn another_process_is_refused_while_the_store_lives() {
    const TEST: &str = "another_process_is_refused_while_the_store_lives";
    if let Some((role, path)) = child_role() {
        let clock = ManualClock::with_wall(t0());
        let make = || journaled::<u64, u64>(&path, &clock);
        // "open" comes after the parent's store dropped: see `reopen`.
        let built = if role == "open" {
            reopen(make)
        } else {
            make().build()
        };
        match built {
            Err(ConfigError::Journal(JournalError::Locked { .. })) => println!("child: locked"),
            Ok(store) => println!("child: opened, {:?}", store.get(&1)),
            Err(e) => println!("child: error {e}"),
        }
        return;
    }
    let (_dir, path, clock) = setup("lock-process");
    let store: Store<u64, u64> = journaled(&path, &clock).build().unwrap();
    put(&store, 1, 10, None);
    child_said(&run_child(TEST, "lock", &path, None), "child: locked");
    // Still this process's: it goes on writing.
    put(&store, 2, 20, None);
    drop(store);
    let said = child_said(&run_child(TEST, "open", &path, None), "child: opened, ");
    assert_eq!(said, "Some(10)");
}

// ------------------------------------------------------------ disk errors

/// The file size limit of the write-error child, in `ulimit -f` blocks:
/// 8 KiB under dash (512-byte blocks), 16 KiB where `sh` counts KiB.
const FSIZE_BLOCKS: u64 = 16;

#[test]
fn a_failed_write_is_reported_and_the_journal_goes_on() {
    const TEST: &str = "a_failed_write_is_reported_and_the_journal_goes_on";
    let small = |i: u64| format!("small value {i}").repeat(4).into_bytes();
    // Over any limit FSIZE_BLOCKS can mean.
    let big = vec![7_u8; 64 << 10];
    if let Some((role, path)) = child_role() {
        assert_eq!(role, "efbig");
        let clock = ManualClock::with_wall(t0());
        let store: Store<u64, Vec<u8>> = journaled(&path, &clock).build().unwrap();
        for i in 0..10 {
            put(&store, i, small(i), None);
        }
        let len = file_len(&path);
        let ticket = owner(&store, 100);
        match ticket.complete(big.clone()) {
            Err(CompleteError::Journal { value, error, .. }) => {
                assert_eq!(value, big, "the value comes back");
                assert!(
                    matches!(&error, JournalError::Io { op: "write", path: p, .. } if p == &path),
                    "{error:?}"
                );
            }
            other => panic!("a write over the size limit: {other:?}"),
        }
        // Nothing of the failed batch is left in the file.
        assert_eq!(file_len(&path), len);
        assert_eq!(store.get(&100), None);
        // Earlier entries are still served.
        for i in 0..10 {
            assert_eq!(store.get(&i), Some(small(i)));
        }
        // `execute` says the same.
        let executed = store.execute(101, || Ok::<_, ()>(big.clone()));
        assert!(matches!(
            executed,
            Err(ExecuteError::Journal(JournalError::Io { .. }))
        ));
        // The keys were released: a retry owns them and, with a record
        // that fits, completes.
        for key in [100, 101] {
            let retry = owner(&store, key);
            retry.complete(small(key)).expect("a record that fits");
        }
        println!("child: ok");
        return;
    }
    let dir = TempDir::new("efbig");
    let path = dir.file("j");
    let script = format!("trap '' XFSZ; ulimit -f {FSIZE_BLOCKS}; exec \"$0\" \"$@\"");
    child_said(&run_child(TEST, "efbig", &path, Some(&script)), "child: ok");
    // The file ends at whole records: every acknowledged completion comes
    // back, and there is no torn tail to cut.
    let clock = ManualClock::with_wall(t0());
    let store: Store<u64, Vec<u8>> = journaled(&path, &clock).build().unwrap();
    let report = store.journal_report().unwrap();
    assert_eq!((report.torn_tail, report.truncated), (None, None));
    assert_eq!(report.restored, 12);
    for key in (0..10).chain([100, 101]) {
        assert_eq!(store.get(&key), Some(small(key)));
    }
}

// ------------------------------------------------------------------- fuzz

#[test]
fn the_fuzz_targets_inputs_open_or_fail_cleanly() {
    // Hand-made inputs for `fuzz/fuzz_targets/journal.rs`: the first byte
    // picks raw bytes (0), a valid header and raw bytes (1), or a valid
    // header and records framed with valid checksums (2).
    let complete = |token: u64, expires: u64, key: &[u8], value: &[u8]| {
        let mut body = vec![1];
        body.extend_from_slice(&token.to_le_bytes());
        body.extend_from_slice(&expires.to_le_bytes());
        body.push(0);
        body.extend_from_slice(&(key.len() as u32).to_le_bytes());
        body.extend_from_slice(key);
        body.extend_from_slice(value);
        body
    };
    let framed = |bodies: &[Vec<u8>]| {
        let mut input = vec![2];
        for body in bodies {
            input.push(body.len() as u8);
            input.extend_from_slice(body);
        }
        input
    };
    let far = u64::MAX / 2;
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, b'I', b'D', b'E', b'M'],
        b"\0IDEMJRNL\x01\0\0\0\xff\xff\xff\xff".to_vec(),
        vec![1],
        vec![1, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1],
        vec![1, 0x00, 0x00, 0x00, 0x40, 1, 2, 3, 4],
        vec![2, 0],
        vec![2, 1, 9],
        framed(&[vec![3, 1, 0, 0, 0, 0, 0, 0, 0]]),
        framed(&[
            complete(5, far, b"k", b"v"),
            vec![2, 5, 0, 0, 0, 0, 0, 0, 0, b'k'],
        ]),
        framed(&[complete(5, far, b"k", b"v"), complete(6, far, b"k", b"w")]),
        framed(&[complete(5, 1, b"expired", b"v")]),
        framed(&[vec![1, 0, 0], vec![2], vec![9; 20]]),
        // A key length past its record.
        framed(&[{
            let mut body = complete(5, far, b"k", b"v");
            body[18] = 0xff;
            body
        }]),
        // Behind a valid header: damage between whole records, then a
        // torn last one.
        {
            let mut input = vec![1];
            for (token, key) in [(1, b"a"), (2, b"b"), (3, b"c")] {
                frame(&mut input, &complete(token, far, key, b"1"));
            }
            input[1 + FRAME + 3] ^= 1;
            input.extend_from_slice(&[40, 0, 0, 0, 1, 2, 3]);
            input
        },
    ];
    for input in &inputs {
        open_arbitrary(input);
    }
    journal_bytes::remove_scratch();
}

// ------------------------------------------------------------- edge cases

#[test]
fn a_store_dropped_during_a_compaction_releases_its_lock_and_loses_nothing() {
    let dir = TempDir::new("lock-release");
    let path = dir.file("j");
    let mut compacting = path.as_os_str().to_owned();
    compacting.push(".compact");
    let compacting = PathBuf::from(compacting);
    let clock = ManualClock::with_wall(t0());
    let make = || journaled::<u64, Vec<u8>>(&path, &clock).compact_above(1);
    let store = make().build().unwrap();
    let live = 30_000;
    for key in 0..live {
        put(&store, key, noise(key, 200), None);
    }
    // Dead records outnumber live ones only with the last of these, so the
    // background compaction starts after it, and takes a while.
    for key in 0..=live / 2 {
        assert!(store.remove(&key));
        put(&store, key, noise(key, 200), None);
    }
    wait_until("the background compaction starts", || compacting.exists());
    drop(store);
    // The compaction lets go within a step (or once its swap is done), and
    // the journal is whole either way.
    let again = reopen(make).expect("the journal is released");
    assert!(
        !compacting.exists(),
        "an abandoned compaction leaves no file"
    );
    for key in 0..live {
        assert_eq!(again.get(&key), Some(noise(key, 200)), "key {key}");
    }
}

#[test]
fn tokens_never_go_backwards_after_truncating_damage() {
    let (_dir, path, clock) = setup("truncate-tokens");
    let make = |recovery| journaled::<String, u32>(&path, &clock).journal_recovery(recovery);
    {
        let store = make(Recovery::Strict).build().unwrap();
        put(&store, "a".to_string(), 1, None);
        put(&store, "b".to_string(), 2, None);
    }
    let damaged = records(&std::fs::read(&path).unwrap())[2].0;
    // The next run hands out tokens from a block reserved after "b".
    let newest = {
        let store = reopen(|| make(Recovery::Strict)).unwrap();
        put(&store, "c".to_string(), 3, None)
    };
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[damaged + FRAME + 3] ^= 1; // "b"'s token
    std::fs::write(&path, &bytes).unwrap();
    let store = reopen(|| make(Recovery::TruncateAtDamage)).unwrap();
    assert!(store.journal_report().unwrap().truncated.is_some());
    let ticket = owner(&store, "c".to_string());
    assert!(
        ticket.token() > newest,
        "token {} handed out again after truncating damage (the last run reached {newest})",
        ticket.token()
    );
}

#[test]
fn a_torn_record_holding_record_bytes_is_still_a_torn_tail() {
    let dir = TempDir::new("torn-nested");
    let clock = ManualClock::with_wall(t0());
    // The bytes of a real record, taken from another journal.
    let inner_path = dir.file("inner");
    write_journal(&inner_path, &clock, 1);
    let inner = std::fs::read(&inner_path).unwrap();
    let (at, len) = *records(&inner).last().unwrap();
    let mut value = vec![0_u8; 10];
    value.extend_from_slice(&inner[at..at + len]);
    value.extend_from_slice(&[1; 10]);
    let path = dir.file("j");
    {
        let store: Store<u64, Vec<u8>> = journaled(&path, &clock).build().unwrap();
        put(&store, 1, b"first".to_vec(), None);
        put(&store, 2, value, None);
    }
    // A crash cuts the last record after the bytes it carries.
    let whole = std::fs::read(&path).unwrap();
    let last = records(&whole).last().unwrap().0;
    std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
    let store: Store<u64, Vec<u8>> = reopen(|| journaled(&path, &clock))
        .unwrap_or_else(|e| panic!("a torn tail refused as damage: {e}"));
    let report = store.journal_report().unwrap();
    assert_eq!(
        report.torn_tail,
        Some((last as u64, (whole.len() - 5 - last) as u64))
    );
    assert_eq!(store.get(&1), Some(b"first".to_vec()));
}

#[test]
fn a_journal_naming_the_largest_token_does_not_overflow_the_counter() {
    let (_dir, path, clock) = setup("token-overflow");
    // A valid journal (checksums and all) reserving tokens up to u64::MAX.
    let mut bytes = header(1, "u64->u64");
    let mut reserve = vec![3];
    reserve.extend_from_slice(&u64::MAX.to_le_bytes());
    frame(&mut bytes, &reserve);
    std::fs::write(&path, &bytes).unwrap();
    // Refusing the journal is fine, and so is refusing claims; a token that
    // wraps (or a panic) is not.
    if let Ok(store) = journaled::<u64, u64>(&path, &clock).build() {
        match store.claim(1) {
            Err(ClaimError::Unavailable) => {}
            Ok(Claim::Owner(t)) => {
                panic!("token {} after a journal that reached u64::MAX", t.token())
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn completions_racing_a_compaction_all_come_back() {
    let (_dir, path, clock) = setup("compact-race");
    let make = || journaled::<(u64, u64), u64>(&path, &clock);
    let threads = 48;
    let per_thread = 1000;
    for round in 0..5 {
        let store = reopen(make).unwrap();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..threads)
                .map(|t| {
                    let store = store.clone();
                    s.spawn(move || {
                        for i in 0..per_thread {
                            put(&store, (t, i), i, None);
                        }
                    })
                })
                .collect();
            s.spawn(|| {
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    store.compact_journal().unwrap();
                }
            });
            for worker in workers {
                worker.join().unwrap();
            }
            done.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        drop(store);
        let store = reopen(make).unwrap();
        let missing: Vec<_> = (0..threads)
            .flat_map(|t| (0..per_thread).map(move |i| (t, i)))
            .filter(|key| store.get(key).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} acknowledged completions lost, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        drop(store);
        std::fs::remove_file(&path).unwrap();
    }
}
