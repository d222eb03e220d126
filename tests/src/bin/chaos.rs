//! `chaos`: one real-cluster chaos run (see `dcs_tests::chaos`).
//!
//! ```text
//! cargo run --release -p dcs-tests --bin chaos -- --dcs etcd|zookeeper --duration SECONDS
//!     --seed N --out DIR [--faults LIST] [--negative-control] [--agent PATH]
//!     [--ttl S --loop-wait S --retry-timeout S]
//! ```
//!
//! Writes `DIR/summary.json` and `DIR/history.jsonl`, prints a summary, and exits 1 when the
//! single-writer checker found a violation, 2 when the run could not be done, 3 when the
//! healed cluster did not recover. Ctrl-C tears everything down.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use dcs_tests::chaos::nemesis::FaultKind;
use dcs_tests::chaos::{ChaosOptions, Dcs, run, save};

const USAGE: &str = "usage: chaos --dcs etcd|zookeeper --duration SECONDS --seed N --out DIR \
                     [--faults all|LIST] [--negative-control] [--agent PATH] \
                     [--ttl S] [--loop-wait S] [--retry-timeout S]";

struct Args {
    options: ChaosOptions,
    out: PathBuf,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut dcs = None;
    let mut duration = 60;
    let mut seed = None;
    let mut out = None;
    let mut faults = FaultKind::ALL.to_vec();
    let mut negative = false;
    let mut agent = None;
    let (mut ttl, mut loop_wait, mut retry_timeout) = (10, 2, 4);
    let number = |flag: &str, value: Option<String>| -> Result<u64, String> {
        let value = value.ok_or_else(|| format!("{flag} needs a value"))?;
        value
            .parse()
            .map_err(|_| format!("{flag}: not a whole number: {value:?}"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dcs" => {
                let name = args.next().ok_or("--dcs needs a value")?;
                dcs = Some(
                    Dcs::from_name(&name)
                        .ok_or_else(|| format!("--dcs: {name:?} is not etcd or zookeeper"))?,
                );
            }
            "--duration" => duration = number("--duration", args.next())?,
            "--seed" => seed = Some(number("--seed", args.next())?),
            "--out" => out = Some(PathBuf::from(args.next().ok_or("--out needs a value")?)),
            "--faults" => {
                faults = FaultKind::parse_list(&args.next().ok_or("--faults needs a value")?)?;
            }
            "--negative-control" => negative = true,
            "--agent" => agent = Some(PathBuf::from(args.next().ok_or("--agent needs a value")?)),
            "--ttl" => ttl = number("--ttl", args.next())?,
            "--loop-wait" => loop_wait = number("--loop-wait", args.next())?,
            "--retry-timeout" => retry_timeout = number("--retry-timeout", args.next())?,
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let dcs = dcs.ok_or_else(|| format!("--dcs is required\n{USAGE}"))?;
    let out = out.ok_or_else(|| format!("--out is required\n{USAGE}"))?;
    let seed = seed.ok_or_else(|| format!("--seed is required\n{USAGE}"))?;
    if duration == 0 || ttl == 0 || loop_wait == 0 {
        return Err("--duration, --ttl and --loop-wait must be positive".to_owned());
    }
    let agent = match agent {
        Some(agent) => agent,
        None => find_agent()?,
    };
    let options = ChaosOptions::new(dcs, agent)
        .with_duration(Duration::from_secs(duration))
        .with_seed(seed)
        .with_faults(faults)
        .with_negative_control(negative)
        .with_timing(ttl, loop_wait, retry_timeout)
        .with_logs(out.join("logs"));
    Ok(Args { options, out })
}

/// `ha-agent` next to this binary; built with `$CARGO` (same profile) when missing and run
/// through cargo.
fn find_agent() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let dir = me.parent().unwrap_or(Path::new("."));
    let agent = dir.join("ha-agent");
    if agent.is_file() {
        return Ok(agent);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        return Err(format!(
            "{} does not exist: build it (`cargo build --release -p ha-agent`) or pass --agent",
            agent.display()
        ));
    };
    let release = dir.file_name().is_some_and(|name| name == "release");
    let mut command = std::process::Command::new(cargo);
    command.args(["build", "-p", "ha-agent"]);
    if release {
        command.arg("--release");
    }
    eprintln!(
        "chaos: building ha-agent ({})",
        if release { "release" } else { "debug" }
    );
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo build -p ha-agent: {e}"))?;
    if !status.success() || !agent.is_file() {
        return Err(format!(
            "cargo build -p ha-agent did not produce {} ({status})",
            agent.display()
        ));
    }
    Ok(agent)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("chaos: {message}");
            return ExitCode::from(2);
        }
    };
    let result = tokio::select! {
        result = run(&args.options) => result,
        _ = tokio::signal::ctrl_c() => {
            // Dropping the run's future above tore everything down.
            eprintln!("chaos: interrupted; cleaned up");
            return ExitCode::from(130);
        }
    };
    let (summary, history) = match result {
        Ok(done) => done,
        Err(e) => {
            eprintln!("chaos: {e}");
            return ExitCode::from(2);
        }
    };
    print!("{summary}");
    if let Err(e) = save(&args.out, &summary, &history) {
        eprintln!("chaos: {e}");
        return ExitCode::from(2);
    }
    println!(
        "  wrote {}/summary.json and history.jsonl",
        args.out.display()
    );
    if !summary.is_safe() {
        ExitCode::from(1)
    } else if !summary.recovered {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    }
}
