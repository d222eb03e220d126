//! `ha-agent`: the PostgreSQL HA agent, run like `patroni`.
//!
//! ```text
//! ha-agent <config.yml>                    run the agent
//! ha-agent --validate-config <config.yml>  check the configuration and exit
//! ha-agent ctl [options] <command> ...     patronictl's commands
//! ha-agent --version
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

use ha_agent::config::Config;

const USAGE: &str = "\
usage: ha-agent <config.yml>
       ha-agent --validate-config <config.yml>
       ha-agent ctl [-c config.yml] <command> ...   (ha-agent ctl --help)
       ha-agent --version

Runs the PostgreSQL HA agent with a Patroni configuration file; PATRONI_* environment
variables override its keys. Without a file, the configuration comes from the environment
(PATRONI_CONFIGURATION or the PATRONI_* variables).";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("ctl") => runtime().block_on(ha_agent::ctl::run(args[1..].to_vec())),
        // Internal: the dead-man guardian the agent starts for itself.
        Some("--dead-man") => match args.get(1..) {
            Some([data_dir]) => {
                ha_agent::log::init(tracing::Level::INFO);
                ha_agent::agent::run_guardian(PathBuf::from(data_dir))
            }
            _ => usage_error("--dead-man takes the data directory"),
        },
        Some("--version" | "-V") => {
            println!("ha-agent {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some("--help" | "-h") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some("--validate-config") => match args.get(1..) {
            Some([path]) => validate(&PathBuf::from(path)),
            _ => usage_error("--validate-config takes one configuration file"),
        },
        Some(flag) if flag.starts_with('-') => usage_error(&format!("unknown option {flag}")),
        Some(_) if args.len() > 1 => usage_error("one configuration file, please"),
        path => run_agent(path.map(PathBuf::from)),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("ha-agent: {message}\n\n{USAGE}");
    ExitCode::from(2)
}

fn runtime() -> tokio::runtime::Runtime {
    // Two workers: the HA loop and the REST API stay responsive while one worker is
    // inside a slow call; blocking work goes to tokio's blocking pool.
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("the runtime needs only threads and an epoll instance")
}

fn load(path: Option<&PathBuf>) -> Result<Config, ExitCode> {
    let loaded = match path {
        Some(path) => Config::load_with_env(path, std::env::vars()),
        None => Config::from_env(std::env::vars()),
    };
    match loaded {
        Ok((config, warnings)) => {
            for warning in warnings {
                tracing::warn!("{warning}");
            }
            Ok(config)
        }
        Err(error) => {
            let source =
                path.map_or_else(|| "the environment".to_owned(), |p| p.display().to_string());
            eprintln!("ha-agent: invalid configuration in {source}: {error}");
            Err(ExitCode::FAILURE)
        }
    }
}

fn validate(path: &PathBuf) -> ExitCode {
    ha_agent::log::init(tracing::Level::INFO);
    let config = match load(Some(path)) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match ha_agent::agent::check_environment(&config) {
        Ok(()) => {
            println!("{}: the configuration is valid", path.display());
            ExitCode::SUCCESS
        }
        Err(problems) => {
            for problem in problems {
                eprintln!("ha-agent: {problem}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run_agent(path: Option<PathBuf>) -> ExitCode {
    if nix::unistd::geteuid().is_root() {
        eprintln!(
            "ha-agent: refusing to run as root: PostgreSQL cannot run as root. Run the agent \
             as the operating system user that owns the data directory (usually postgres)."
        );
        return ExitCode::FAILURE;
    }
    if path.is_none() && !std::env::vars().any(|(key, _)| key.starts_with("PATRONI_")) {
        return usage_error("no configuration file and no PATRONI_* variables");
    }
    let level = std::env::var("RUST_LOG")
        .ok()
        .and_then(|text| ha_agent::log::parse_level(&text))
        .unwrap_or(tracing::Level::INFO);
    ha_agent::log::init(level);
    let config = match load(path.as_ref()) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match runtime().block_on(ha_agent::agent::run(config, path)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            eprintln!("ha-agent: {error}");
            ExitCode::FAILURE
        }
    }
}
