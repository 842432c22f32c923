//! kill -9 in the middle of a storm, again and again: no acknowledged
//! completion is lost, and none runs twice.
//!
//! ```text
//! cargo run --release --example crash --features journal
//! cargo run --release --example crash --features journal -- --kills 50 --fsync always --seed 7
//! ```
//!
//! The example runs itself as a child: a storm of `execute` calls from many
//! threads over duplicate keys, on a store with a journal. Each round the
//! parent lets a child run for a random while, kills it with SIGKILL
//! (`Child::kill`), then reopens the journal and checks it. Every round's
//! child continues on the same journal, with fresh keys and retries of
//! earlier rounds' keys, so the journal accumulates across kills (and the
//! child compacts it now and then, so some kills land mid-compaction).
//!
//! An *acknowledged* completion is a whole line `E <key> <round> <nonce>`
//! that the child printed after `execute` returned `Outcome::Executed`; a
//! line the kill cut short acknowledges nothing, and an operation in flight
//! at the kill may rightly run again. After each kill the parent reopens the
//! journal and, for every key acknowledged so far, counts:
//!
//! * **lost**: `get` returns nothing, or not the acknowledged value;
//! * **re-executed**: `execute` runs the operation instead of replaying
//!   (and any later child's `E` line for an acknowledged key);
//! * **replayed**: `execute` replays the acknowledged value.
//!
//! It exits non-zero if anything was lost or re-executed, or if nothing was
//! acknowledged at all. `tests/crash.rs` runs this same harness.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use idemstore::{ConfigError, Fsync, JournalError, Outcome, ReplayReport, Store};

/// Keys are numbers; a value is the round that ran the operation and a
/// nonce unique to that run, so a second run of a key shows in its value.
type CrashStore = Store<u64, (u32, u64)>;

/// The child's settings (`round seed fsync start threads compact_ms`).
const CHILD_ENV: &str = "IDEMSTORE_CRASH_CHILD";
/// The journal the child opens.
const JOURNAL_ENV: &str = "IDEMSTORE_CRASH_JOURNAL";
/// Consecutive requests for one fresh key: the duplicates of a storm.
const DUPLICATES: u64 = 4;
/// One request in this many retries a key of an earlier round.
const RETRY_ONE_IN: u64 = 4;
/// A child the parent forgot exits by itself after this.
const CHILD_DEADLINE: Duration = Duration::from_secs(60);
/// How long a child waits for the parent's check to let go of the journal.
const LOCKED_WAIT: Duration = Duration::from_secs(5);
/// How long the parent waits for a child's `ready` line.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// One run of the harness.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Rounds: each starts a child and kills it.
    pub kills: u32,
    /// The journal's fsync mode, for the children and the parent's checks.
    pub fsync: Fsync,
    /// Seeds the kill moments and the children's key choices.
    pub seed: u64,
    /// Storm threads in each child.
    pub threads: usize,
    /// A child is killed this long (uniformly drawn, in ms) after it is ready.
    pub run_ms: (u64, u64),
    /// How often a child compacts its journal (zero: never).
    pub compact_every: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            kills: 10,
            fsync: Fsync::default(),
            seed: 42,
            threads: 16,
            run_ms: (50, 400),
            compact_every: Duration::from_millis(150),
        }
    }
}

/// What one round found.
#[derive(Debug, Clone, Default)]
pub struct Round {
    /// Completions the child acknowledged this round (whole `E` lines).
    pub acknowledged: u64,
    /// Acknowledged keys (of all rounds so far) replayed after the restart.
    pub replayed: u64,
    /// Runs of the operation for a key already acknowledged.
    pub re_executed: u64,
    /// Acknowledged keys missing, or holding another value, after the restart.
    pub lost: u64,
    /// How long the child ran, from `ready` to the kill.
    pub killed_after: Duration,
    /// How long the parent's `build()` of the journaled store took.
    pub reopen: Duration,
    /// What the parent's reopen replayed.
    pub replay: ReplayReport,
    /// The first few keys lost or run again, with what was found.
    pub failures: Vec<String>,
}

impl Round {
    fn note(&mut self, failure: String) {
        if self.failures.len() < 5 {
            self.failures.push(failure);
        }
    }
}

/// All rounds of one run.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// Each round, in order.
    pub rounds: Vec<Round>,
}

impl Totals {
    fn sum(&self, field: fn(&Round) -> u64) -> u64 {
        self.rounds.iter().map(field).sum()
    }
    /// Completions acknowledged over all rounds.
    pub fn acknowledged(&self) -> u64 {
        self.sum(|r| r.acknowledged)
    }
    /// Acknowledged keys replayed after the restarts, over all rounds.
    pub fn replayed(&self) -> u64 {
        self.sum(|r| r.replayed)
    }
    /// Runs of the operation for an acknowledged key (must be 0).
    pub fn re_executed(&self) -> u64 {
        self.sum(|r| r.re_executed)
    }
    /// Acknowledged keys lost (must be 0).
    pub fn lost(&self) -> u64 {
        self.sum(|r| r.lost)
    }
    /// The slowest reopen.
    pub fn slowest_reopen(&self) -> Duration {
        self.rounds
            .iter()
            .map(|r| r.reopen)
            .max()
            .unwrap_or_default()
    }
    /// Whether the run passed: something acknowledged, replayed after a
    /// restart, and nothing lost or run twice.
    pub fn passed(&self) -> bool {
        self.acknowledged() > 0
            && self.replayed() > 0
            && self.lost() == 0
            && self.re_executed() == 0
    }
}

/// Parses `always`, `interval` (the default, 1 s) or `never`.
pub fn parse_fsync(text: &str) -> Option<Fsync> {
    match text {
        "always" => Some(Fsync::Always),
        "interval" => Some(Fsync::default()),
        "never" => Some(Fsync::Never),
        _ => None,
    }
}

fn fsync_name(fsync: Fsync) -> String {
    match fsync {
        Fsync::Always => "always".into(),
        Fsync::Interval(d) => format!("interval ({} ms)", d.as_millis()),
        Fsync::Never => "never".into(),
    }
}

/// The child's end: when this process was started as a crash child, runs
/// the storm until killed and never returns; otherwise returns at once.
pub fn serve_if_child() {
    let (Ok(job), Ok(journal)) = (std::env::var(CHILD_ENV), std::env::var(JOURNAL_ENV)) else {
        return;
    };
    let job = Job::parse(&job).unwrap_or_else(|| {
        eprintln!("crash child: bad {CHILD_ENV}={job:?}");
        std::process::exit(2)
    });
    storm(job, Path::new(&journal))
}

/// A child's settings, as the parent passes them.
struct Job {
    round: u32,
    seed: u64,
    fsync: Fsync,
    /// Fresh keys start here; retries draw from below it.
    start: u64,
    threads: usize,
    compact_every: Duration,
}

impl Job {
    fn encode(&self) -> String {
        let fsync = match self.fsync {
            Fsync::Always => "always".to_string(),
            Fsync::Interval(d) => format!("interval:{}", d.as_millis()),
            Fsync::Never => "never".to_string(),
        };
        format!(
            "{} {} {fsync} {} {} {}",
            self.round,
            self.seed,
            self.start,
            self.threads,
            self.compact_every.as_millis()
        )
    }

    fn parse(text: &str) -> Option<Job> {
        let mut parts = text.split(' ');
        let mut next = || parts.next();
        let round = next()?.parse().ok()?;
        let seed = next()?.parse().ok()?;
        let fsync = match next()? {
            "always" => Fsync::Always,
            "never" => Fsync::Never,
            other => Fsync::Interval(Duration::from_millis(
                other.strip_prefix("interval:")?.parse().ok()?,
            )),
        };
        Some(Job {
            round,
            seed,
            fsync,
            start: next()?.parse().ok()?,
            threads: next()?.parse().ok()?,
            compact_every: Duration::from_millis(next()?.parse().ok()?),
        })
    }
}

/// A small seeded generator (splitmix64): the same seed, the same draws.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }
}

/// Writes one whole line to stdout, flushed: an acknowledgement. The parent
/// gone (a broken pipe) ends the child.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    if out
        .write_all(line.as_bytes())
        .and_then(|()| out.flush())
        .is_err()
    {
        std::process::exit(0);
    }
}

/// Opens the journal, waiting a little while it is still locked: the
/// parent's check has dropped its store, but that store's background thread
/// may hold it a moment longer.
fn open_as_child(journal: &Path, fsync: Fsync) -> CrashStore {
    let began = Instant::now();
    loop {
        match Store::builder().journal(journal).fsync(fsync).build() {
            Ok(store) => return store,
            Err(ConfigError::Journal(JournalError::Locked { .. }))
                if began.elapsed() < LOCKED_WAIT =>
            {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("crash child: cannot open {}: {e}", journal.display());
                std::process::exit(2)
            }
        }
    }
}

/// The child: a storm on the journaled store, until killed.
fn storm(job: Job, journal: &Path) -> ! {
    let store = open_as_child(journal, job.fsync);
    say("ready\n");
    let deadline = Instant::now() + CHILD_DEADLINE;
    let job = Arc::new(job);
    let requests = Arc::new(AtomicU64::new(0));
    if !job.compact_every.is_zero() {
        let (store, every) = (store.clone(), job.compact_every);
        thread::spawn(move || loop {
            thread::sleep(every);
            if let Err(e) = store.compact_journal() {
                eprintln!("crash child: compaction failed: {e}");
            }
        });
    }
    for t in 0..job.threads {
        let (store, job, requests) = (store.clone(), job.clone(), requests.clone());
        thread::spawn(move || {
            let mut rng = Rng(job.seed ^ (u64::from(job.round) << 32) ^ t as u64);
            for i in 0u64.. {
                if i % 1024 == 0 && Instant::now() > deadline {
                    std::process::exit(3);
                }
                let key = if job.start > 0 && rng.below(RETRY_ONE_IN) == 0 {
                    rng.below(job.start)
                } else {
                    job.start + requests.fetch_add(1, Ordering::Relaxed) / DUPLICATES
                };
                let nonce = (t as u64) << 40 | i;
                // The operation: tiny, so the storm is all claims and records.
                match store.execute(key, || Ok::<_, Infallible>((job.round, nonce))) {
                    Ok(Outcome::Executed((round, nonce))) => {
                        say(&format!("E {key} {round} {nonce}\n"));
                    }
                    Ok(Outcome::Replayed(_)) => {}
                    Err(e) => eprintln!("crash child: execute({key}) failed: {e}"),
                }
            }
        });
    }
    loop {
        thread::park();
    }
}

/// A child that is killed if the parent unwinds before killing it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(seed: u64) -> std::io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "idemstore-crash-{}-{seed}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `settings.kills` rounds. `child` makes the command that starts this
/// program as a child (the harness adds the environment that makes it one,
/// and pipes its stdout); each round's progress is printed as it ends.
pub fn run(settings: &Settings, child: &dyn Fn() -> Command) -> Result<Totals, String> {
    let dir = TempDir::new(settings.seed).map_err(|e| format!("temp dir: {e}"))?;
    let journal = dir.0.join("crash.journal");
    println!(
        "crash: {} kills, fsync {}, {} threads, seed {}, journal {}",
        settings.kills,
        fsync_name(settings.fsync),
        settings.threads,
        settings.seed,
        journal.display()
    );
    let mut rng = Rng(settings.seed);
    let mut acked: HashMap<u64, (u32, u64)> = HashMap::new();
    let mut totals = Totals::default();
    for round in 1..=settings.kills {
        let job = Job {
            round,
            seed: settings.seed,
            fsync: settings.fsync,
            start: acked.keys().max().map_or(0, |k| k + 1),
            threads: settings.threads,
            compact_every: settings.compact_every,
        };
        let (min, max) = settings.run_ms;
        let run_for = Duration::from_millis(min + rng.below(max.saturating_sub(min) + 1));
        let (lines, killed_after) = kill_one(child(), &job, &journal, run_for)?;
        let mut result = Round {
            killed_after,
            ..Round::default()
        };
        for line in &lines {
            let Some((key, value)) = parse_ack(line) else {
                continue;
            };
            result.acknowledged += 1;
            if let Some(earlier) = acked.insert(key, value) {
                result.re_executed += 1;
                result.note(format!(
                    "key {key}: acknowledged as {earlier:?}, then ran again in round {round} as {value:?}"
                ));
            }
        }
        check(settings.fsync, &journal, &mut acked, &mut result)?;
        print_round(round, &result);
        totals.rounds.push(result);
    }
    Ok(totals)
}

/// Starts a child on `journal`, kills it `run_for` after it is ready, and
/// returns the whole lines it printed and how long it ran.
fn kill_one(
    mut command: Command,
    job: &Job,
    journal: &Path,
    run_for: Duration,
) -> Result<(Vec<String>, Duration), String> {
    command
        .env(CHILD_ENV, job.encode())
        .env(JOURNAL_ENV, journal)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = Running(command.spawn().map_err(|e| format!("spawn: {e}"))?);
    let stdout = child.0.stdout.take().ok_or("no stdout pipe")?;
    let (ready_tx, ready_rx) = mpsc::channel();
    let reader = thread::spawn(move || {
        let mut lines = Vec::new();
        let mut stdout = BufReader::new(stdout);
        let mut line = Vec::new();
        loop {
            line.clear();
            match stdout.read_until(b'\n', &mut line) {
                // A line without its '\n' was cut by the kill: not an
                // acknowledgement.
                Ok(0) | Err(_) => break,
                Ok(_) if line.last() != Some(&b'\n') => break,
                Ok(_) => {}
            }
            let text = String::from_utf8_lossy(&line).trim_end().to_string();
            if text == "ready" {
                let _ = ready_tx.send(());
            } else {
                lines.push(text);
            }
        }
        lines
    });
    ready_rx.recv_timeout(READY_TIMEOUT).map_err(|_| {
        format!(
            "round {}: the child did not open the journal within {READY_TIMEOUT:?}",
            job.round
        )
    })?;
    let ready = Instant::now();
    thread::sleep(run_for);
    child.0.kill().map_err(|e| format!("kill: {e}"))?;
    let killed_after = ready.elapsed();
    child.0.wait().map_err(|e| format!("wait: {e}"))?;
    let lines = reader.join().map_err(|_| "the reader thread panicked")?;
    Ok((lines, killed_after))
}

/// `E <key> <round> <nonce>`: a completion the child acknowledged.
fn parse_ack(line: &str) -> Option<(u64, (u32, u64))> {
    let mut parts = line.strip_prefix("E ")?.split(' ');
    let key = parts.next()?.parse().ok()?;
    let round = parts.next()?.parse().ok()?;
    let nonce = parts.next()?.parse().ok()?;
    Some((key, (round, nonce)))
}

/// Reopens the journal and checks every acknowledged key: its value is
/// there and the same, and `execute` replays it. A key that ran again keeps
/// its new value in `acked`, so it is counted once.
fn check(
    fsync: Fsync,
    journal: &Path,
    acked: &mut HashMap<u64, (u32, u64)>,
    round: &mut Round,
) -> Result<(), String> {
    let began = Instant::now();
    let store: CrashStore = Store::builder()
        .journal(journal)
        .fsync(fsync)
        .build()
        .map_err(|e| format!("reopen: {e}"))?;
    round.reopen = began.elapsed();
    round.replay = store.journal_report().ok_or("no journal report")?;
    for (&key, value) in acked.iter_mut() {
        let found = store.get(&key);
        if found != Some(*value) {
            round.lost += 1;
            round.note(format!(
                "key {key}: acknowledged as {value:?}, found {found:?} after reopen"
            ));
        }
        let rerun = (u32::MAX, key);
        match store.execute(key, || Ok::<_, Infallible>(rerun)) {
            Ok(Outcome::Replayed(_)) => round.replayed += 1,
            Ok(Outcome::Executed(v)) => {
                round.re_executed += 1;
                round.note(format!("key {key}: execute ran the operation after reopen"));
                *value = v;
            }
            Err(e) => return Err(format!("execute({key}) after reopen: {e}")),
        }
    }
    Ok(())
}

fn print_round(n: u32, r: &Round) {
    let torn = r.replay.torn_tail.map_or(String::new(), |(_, len)| {
        format!(", torn tail of {len} B cut")
    });
    println!(
        "round {n:>3}: killed after {:>3} ms | acknowledged {:>6} | replayed after restart {:>7} | re-executed {} | lost {} | reopen {:.1} ms ({} records{torn})",
        r.killed_after.as_millis(),
        r.acknowledged,
        r.replayed,
        r.re_executed,
        r.lost,
        r.reopen.as_secs_f64() * 1e3,
        r.replay.records,
    );
    for failure in &r.failures {
        println!("    {failure}");
    }
}

/// Prints the totals line and the verdict.
pub fn print_totals(totals: &Totals) {
    println!(
        "total: acknowledged {}, replayed after restart {}, re-executed {}, lost {}, slowest reopen {:.1} ms",
        totals.acknowledged(),
        totals.replayed(),
        totals.re_executed(),
        totals.lost(),
        totals.slowest_reopen().as_secs_f64() * 1e3
    );
    if totals.passed() {
        println!("ok: every acknowledged completion came back after kill -9, and none ran twice.");
    } else if totals.acknowledged() == 0 || totals.replayed() == 0 {
        println!("FAILED: nothing was acknowledged and replayed; the run tested nothing.");
    } else {
        println!(
            "FAILED: {} acknowledged completions lost, {} run again.",
            totals.lost(),
            totals.re_executed()
        );
    }
}

fn parse_args() -> Result<Settings, String> {
    let mut settings = Settings::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--kills" => settings.kills = value()?.parse().map_err(|e| format!("--kills: {e}"))?,
            "--seed" => settings.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--threads" => {
                settings.threads = value()?.parse().map_err(|e| format!("--threads: {e}"))?
            }
            "--compact-ms" => {
                let ms = value()?.parse().map_err(|e| format!("--compact-ms: {e}"))?;
                settings.compact_every = Duration::from_millis(ms);
            }
            "--fsync" => {
                let text = value()?;
                settings.fsync = parse_fsync(&text)
                    .ok_or(format!("--fsync {text}: use always, interval or never"))?;
            }
            other => {
                return Err(format!(
                    "unknown argument {other}; use --kills N, --fsync always|interval|never, --seed N, --threads N, --compact-ms N (0: never)"
                ))
            }
        }
    }
    Ok(settings)
}

fn main() -> ExitCode {
    serve_if_child();
    let settings = match parse_args() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("crash: {e}");
            return ExitCode::from(2);
        }
    };
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            eprintln!("crash: cannot find this program: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&settings, &|| Command::new(&exe)) {
        Ok(totals) => {
            print_totals(&totals);
            if totals.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("crash: {e}");
            ExitCode::FAILURE
        }
    }
}
