//! Running the `sluice` command-line client as a user does, for the CLI tests: one process per
//! command against a broker address, and its exit code, stdout and stderr checked the way a script
//! would read them (0 and output; 1 and one `sluice: ...` line; 2 and clap's usage error).

use std::io::Write;
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use crate::sluice_bin;

/// The outcome of one `sluice` run.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn from_output(out: Output) -> Run {
        Run {
            code: out.status.code().expect("sluice was killed by a signal"),
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        }
    }

    /// Asserts success and returns stdout.
    pub fn ok(self) -> String {
        assert_eq!(self.code, 0, "sluice failed: {self:?}");
        self.stdout
    }

    /// Asserts success and parses stdout as one JSON value.
    pub fn json(self) -> Value {
        let out = self.ok();
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Asserts a user error (exit code 1, a `sluice: ` line last on stderr, nothing on stdout)
    /// and returns the message.
    pub fn user_error(self) -> String {
        assert_eq!(self.code, 1, "expected exit code 1: {self:?}");
        assert!(self.stdout.is_empty(), "{self:?}");
        assert_no_panic(&self.stderr);
        let last = self.stderr.lines().last().expect("no message on stderr");
        last.strip_prefix("sluice: ")
            .unwrap_or_else(|| panic!("message without the sluice: prefix: {:?}", self.stderr))
            .to_string()
    }

    /// Asserts a usage error (exit code 2, from clap).
    pub fn usage_error(self) {
        assert_eq!(self.code, 2, "expected exit code 2: {self:?}");
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        assert_no_panic(&self.stderr);
    }
}

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("RUST_BACKTRACE"), "{stderr}");
}

/// A `sluice` command for `addr`: `--broker ADDR` appended to `args`, no stray environment.
pub fn command(addr: impl std::fmt::Display, args: &[&str]) -> Command {
    let mut c = Command::new(sluice_bin());
    c.args(args)
        .arg("--broker")
        .arg(addr.to_string())
        .env_remove("SLUICE_BROKER")
        .env_remove("SLUICE_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs `sluice ARGS --broker ADDR` with `stdin` as its input (`None`: no input at all).
pub fn sluice(addr: impl std::fmt::Display, args: &[&str], stdin: Option<&str>) -> Run {
    let mut c = command(addr, args);
    let Some(input) = stdin else {
        return Run::from_output(c.stdin(Stdio::null()).output().expect("sluice runs"));
    };
    let mut child = c.stdin(Stdio::piped()).spawn().expect("sluice starts");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    let bytes = input.as_bytes().to_vec();
    // Written from a thread: the child may exit (or fill its stdout) before reading all of it.
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&bytes);
    });
    let out = child.wait_with_output().expect("sluice runs");
    let _ = writer.join();
    Run::from_output(out)
}
