//! A child process that is this test binary running one test, and what it
//! says on stdout, line by line: for tests that kill a real process with
//! SIGKILL at a moment the child announces.
#![allow(dead_code)] // Each test binary uses a different subset.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdout, Command, Stdio};

/// A running child, and the lines it said after its marker so far.
pub struct Kid {
    child: Child,
    out: BufReader<ChildStdout>,
    says: &'static str,
    said: Vec<String>,
}

impl Kid {
    /// Runs the test `test` of this binary alone, with `env` set (how the
    /// child knows its role); lines it prints after `says` are its words.
    pub fn start(test: &str, env: (&str, String), says: &'static str) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut child = Command::new(exe)
            .args([
                test,
                "--exact",
                "--nocapture",
                "--quiet",
                "--test-threads=1",
            ])
            .env(env.0, env.1)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the child");
        let out = BufReader::new(child.stdout.take().expect("piped"));
        Kid {
            child,
            out,
            says,
            said: Vec::new(),
        }
    }

    /// Reads what the child says until it says `last` (or ends: then
    /// fails the test unless `last` is `None`).
    pub fn until(&mut self, last: Option<&str>) {
        let mut line = String::new();
        loop {
            line.clear();
            if self.out.read_line(&mut line).expect("read the child") == 0 {
                assert!(
                    last.is_none(),
                    "the child ended before saying {last:?}: {:?}",
                    self.said
                );
                return;
            }
            if let Some((_, what)) = line.trim_end().split_once(self.says) {
                self.said.push(what.to_string());
                if Some(what) == last {
                    return;
                }
            }
        }
    }

    /// SIGKILL once the child says it is blocked; what it said.
    pub fn kill_when_blocked(mut self) -> Vec<String> {
        self.until(Some("blocked"));
        self.child.kill().expect("SIGKILL the child");
        self.child.wait().expect("reap the child");
        self.said
    }

    /// What the child said, once it exited by itself (successfully).
    pub fn finish(mut self) -> Vec<String> {
        self.until(None);
        let status = self.child.wait().expect("reap the child");
        assert!(
            status.success(),
            "the child failed: {status}; said {:?}",
            self.said
        );
        self.said
    }
}

/// Every line of `said` that is `what`.
pub fn count(said: &[String], what: &str) -> usize {
    said.iter().filter(|line| *line == what).count()
}

/// The child's side: says `what` on a line of its own, after `says`.
pub fn say(says: &str, what: &str) {
    println!("{says}{what}");
}

/// The child's side: says it is blocked, then blocks until killed (or
/// until the parent is gone and its stdin closes).
pub fn block(says: &str) -> ! {
    say(says, "blocked");
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    std::process::exit(3);
}
