//! The `bulkhead` CLI run as a child process, its status, stdout and stderr
//! captured. Tests build on [`operator`] or [`offline`] with the arguments they
//! need and run the command with [`run`]; [`describe`] turns the result into a
//! failure message.

use std::ffi::OsStr;
use std::process::{Command, Output};

use crate::process::ADMIN_TOKEN;

/// An address where nothing listens, for commands that must work offline.
pub const NOWHERE: &str = "http://127.0.0.1:9";

/// `bin` as the operator's CLI against the server at `base_url`: the server
/// address and the admin token set, and no tenant key inherited from the
/// developer's environment.
pub fn operator(bin: impl AsRef<OsStr>, base_url: &str) -> Command {
    let mut command = Command::new(bin);
    command
        .env("BULKHEAD_SERVER", base_url)
        .env("BULKHEAD_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("BULKHEAD_API_KEY");
    command
}

/// `bin` with a server address where nothing listens ([`NOWHERE`]) and no tenant
/// key: what an offline check runs as.
pub fn offline(bin: impl AsRef<OsStr>) -> Command {
    let mut command = Command::new(bin);
    command
        .env("BULKHEAD_SERVER", NOWHERE)
        .env_remove("BULKHEAD_API_KEY");
    command
}

/// Runs `command` to the end and returns its status and output.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|error| panic!("run {}: {error}", command.get_program().to_string_lossy()))
}

/// Exit status, stdout and stderr as one text, for failure messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}
