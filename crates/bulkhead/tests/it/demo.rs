//! End to end: `bulkhead demo` runs the real binary's in-process server through the
//! whole story and exits 0 only when every isolation check held. The output must
//! report each step's outcome, in plain ASCII without escape codes when asked.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::BULKHEAD;

/// Far above the few seconds the demo takes, so a slow CI machine does not fail it;
/// a hung demo is killed and fails the test instead of blocking the suite.
const DEMO_TIMEOUT: Duration = Duration::from_secs(60);

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn describe(&self) -> String {
        format!(
            "exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    /// The first stdout line holding every one of `needles`.
    fn line_with(&self, needles: &[&str]) -> &str {
        self.stdout
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
            .unwrap_or_else(|| {
                panic!(
                    "expected a line with all of {needles:?}\n{}",
                    self.describe()
                )
            })
    }
}

/// Runs `bulkhead demo` with `args`, killing it after `DEMO_TIMEOUT`.
fn demo(args: &[&str]) -> Run {
    let mut child = Command::new(BULKHEAD)
        .arg("demo")
        .args(args)
        // The narration alone is under test; a developer's RUST_LOG would add the
        // server's log to stderr, which is harmless but noisy.
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the bulkhead binary");
    // Drained on threads so a full pipe can never stall the demo.
    let mut stdout = child.stdout.take().expect("stdout was configured as piped");
    let mut stderr = child.stderr.take().expect("stderr was configured as piped");
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll the demo") {
            break Some(status);
        }
        if started.elapsed() > DEMO_TIMEOUT {
            // `Child::kill` is SIGKILL on Unix; the pipes then close.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let run = Run {
        code: status.and_then(|s| s.code()),
        stdout: out.join().expect("the stdout reader"),
        stderr: err.join().expect("the stderr reader"),
    };
    assert!(
        status.is_some(),
        "the demo did not finish within {DEMO_TIMEOUT:?}\n{}",
        run.describe()
    );
    run
}

#[test]
fn demo_passes_every_check_and_says_so() {
    let run = demo(&["--no-color"]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    assert!(
        !run.stdout.contains('\x1b') && !run.stderr.contains('\x1b'),
        "--no-color output has no escape codes\n{}",
        run.describe()
    );
    assert!(
        !run.stdout.contains("[FAIL]"),
        "exit 0 means no failed check\n{}",
        run.describe()
    );

    // Each step's outcome, as the checks printed it.
    run.line_with(&["[PASS]", "Acme gets its own context back"]);
    run.line_with(&["[PASS]", "Globex asks for it", "404"]);
    run.line_with(&["[PASS]", "byte-identical"]);
    run.line_with(&["[PASS]", "Globex gets", "all from its own document"]);
    // The injection may be refused at the door or answered from Globex's own
    // context; either way the demo says which.
    assert!(
        run.stdout.lines().any(|l| l.contains("[PASS]")
            && (l.contains("400 content-refused")
                || l.contains("answered, from Globex's own context only"))),
        "the injection's outcome is reported\n{}",
        run.describe()
    );
    run.line_with(&["[PASS]", "blocked", "content_filter"]);
    run.line_with(&["[PASS]", "no Acme text and no Acme canary"]);
    run.line_with(&["[PASS]", "outcome blocked", "cross_tenant", "findings"]);
    run.line_with(&["[PASS]", "guard.leak", "Acme Corp"]);
    run.line_with(&["[PASS]", "signed checkpoint", "size", "root"]);
    run.line_with(&["[PASS]", "inclusion proof verified"]);

    // The score line agrees with the checks printed.
    let passed = run.stdout.matches("[PASS]").count();
    let verdict = run.line_with(&["checks passed"]);
    assert!(
        passed >= 15 && verdict.contains(&format!("All {passed} checks passed")),
        "{passed} [PASS] lines but the verdict says {verdict:?}"
    );

    // The temporary data directory is gone.
    let dir = run
        .line_with(&["removed "])
        .trim()
        .strip_prefix("removed ")
        .expect("the line starts with `removed`")
        .to_owned();
    assert!(
        dir.contains("bulkhead-demo-") && !std::path::Path::new(&dir).exists(),
        "the demo's data directory {dir} is removed"
    );
}

#[test]
fn keep_leaves_the_data_directory_and_says_where() {
    let run = demo(&["--no-color", "--keep"]);
    let dir = run
        .stdout
        .lines()
        .find_map(|line| line.split("data kept in ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(std::path::PathBuf::from);
    // Looked at, then removed before any assertion, so that a failing run leaves
    // nothing behind either.
    let kept = dir
        .as_ref()
        .is_some_and(|d| d.join("bulkhead.db").is_file() && d.join("admin.token").is_file());
    let removed = dir.as_ref().map(std::fs::remove_dir_all);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let dir = dir.unwrap_or_else(|| panic!("a `data kept in DIR` line\n{}", run.describe()));
    assert!(
        kept,
        "{} holds the store and the admin token",
        dir.display()
    );
    if let Some(Err(e)) = removed {
        panic!("remove the kept directory {}: {e}", dir.display());
    }
}
