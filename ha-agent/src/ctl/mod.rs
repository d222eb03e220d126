//! `ha-agent ctl`: `patronictl`'s commands against our cluster.

use std::process::ExitCode;

/// Runs `ha-agent ctl <args>` and returns the process's exit code.
pub async fn run(args: Vec<String>) -> ExitCode {
    let _ = args;
    eprintln!("ha-agent ctl: not implemented yet");
    ExitCode::FAILURE
}
