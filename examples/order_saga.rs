//! A multi-step order, killed with SIGKILL in the middle and resumed.
//!
//! ```text
//! cargo run --example order_saga --features steps
//! ```
//!
//! The example runs itself as a child process on a journaled steps store:
//! the child reserves stock, charges the card, and is killed (kill -9)
//! while it creates the shipment. The parent then opens the same journal
//! and runs the same order code: the reserve and the charge replay their
//! recorded results (the card is not charged twice), the shipment runs,
//! and the order finishes; a duplicate replays the receipt. A second order
//! whose shipment fails for good is given up: the charge is refunded and
//! the stock released, in reverse order, each once.

use std::io::{BufRead, BufReader, Error};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use idemstore::steps::{RunError, StepError, StepStore};
use idemstore::{ConfigError, Fsync, JournalError, Store};

/// The child's journal, in its environment.
const CHILD_ENV: &str = "ORDER_SAGA_CHILD";

/// Opens the journal, waiting for a killed child's lock to go.
fn open(path: &Path) -> Result<StepStore<String>, ConfigError> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let built = Store::builder()
            .journal(path)
            .fsync(Fsync::Always)
            .lease(Duration::from_secs(30))
            .build();
        match built {
            Err(ConfigError::Journal(JournalError::Locked { .. })) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

/// The order: the same code in the child, after the restart, and for a
/// duplicate. `ship` decides how the shipment goes.
fn place_order(
    store: &StepStore<String>,
    order: &str,
    ship: impl FnOnce() -> Result<String, Error>,
) -> Result<String, StepError<Error>> {
    let mut steps = store.steps(order.to_string());
    let run = (|| {
        let hold: u64 = steps.run_with_undo(
            "reserve",
            || {
                println!("  reserve: 2 x widget held (1999 cents)");
                Ok(1999)
            },
            |cents: u64| {
                println!("  undo reserve: stock released ({cents} cents of widgets)");
                Ok::<_, Error>(())
            },
        )?;
        let charge: String = steps.run_with_undo(
            "charge",
            || {
                println!("  charge: card charged {hold} cents");
                Ok(format!("ch_{hold}"))
            },
            |charge: String| {
                println!("  undo charge: {charge} refunded");
                Ok::<_, Error>(())
            },
        )?;
        let label: String = steps.run("ship", ship)?;
        Ok(steps
            .finish(format!("{order}: {charge}, {label}"))?
            .into_inner())
    })();
    match run {
        // Out of stock for good: give the order up, compensating what ran.
        Err(StepError::Failed(e)) if e.kind() == std::io::ErrorKind::NotFound => {
            println!("  ship failed for good ({e}): giving the order up");
            steps.give_up()?;
            Err(StepError::Run(RunError::GivenUp))
        }
        other => other,
    }
}

/// The child: places the order and is killed inside the shipment.
fn child(path: &Path) -> ! {
    let store = open(path).expect("the child opens the journal");
    let _ = place_order(&store, "order-1", || {
        println!("  ship: creating the shipment... (killed here)");
        // Blocks until the parent kills this process.
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        std::process::exit(1)
    });
    unreachable!("the shipment never returns")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(path) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&path));
    }
    let dir = std::env::temp_dir().join(format!("idemstore-order-saga-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path: PathBuf = dir.join("orders.journal");

    println!("process 1: placing order-1");
    let mut kid = Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, &path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let out = BufReader::new(kid.stdout.take().expect("piped"));
    for line in out.lines() {
        let line = line?;
        println!("{line}");
        if line.contains("killed here") {
            break;
        }
    }
    kid.kill()?; // SIGKILL: no destructor, no flush, no goodbye
    println!("process 1: killed ({})", kid.wait()?);

    println!("\nprocess 2: the same journal, the same order code (reserve and charge replay)");
    let store = open(&path)?;
    let receipt = place_order(&store, "order-1", || {
        println!("  ship: shipment created");
        Ok("label_77".to_string())
    })?;
    println!("  finished: {receipt}");

    println!("\na duplicate of order-1: nothing runs");
    let again = place_order(&store, "order-1", || unreachable!("replayed"))?;
    println!("  replayed: {again}");

    println!("\norder-2: the shipment fails for good");
    let given_up = place_order(&store, "order-2", || {
        Err(Error::new(std::io::ErrorKind::NotFound, "out of stock"))
    });
    assert!(matches!(given_up, Err(StepError::Run(RunError::GivenUp))));
    println!("  order-2 given up; a retry runs nothing:");
    let retry = place_order(&store, "order-2", || unreachable!("given up"));
    println!("  {}", retry.unwrap_err());

    drop(store);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
