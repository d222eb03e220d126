//! `ha-agent ctl`: `patronictl`'s commands against our cluster.
//!
//! The same command names, options, tables and messages as Patroni 3.0.2's `patronictl`
//! (`list`, `topology`, `switchover`, `failover`, `pause`, `resume`, `show-config`,
//! `edit-config`, `history`, `restart`, `reload`, `reinit`, `flush`, `remove`, `version`,
//! `dsn`, `query`), so that a Patroni user needs nothing new. It reads the same
//! configuration files: a member's Patroni YAML, or patronictl's short
//! `~/.config/patroni/patronictl.yaml` with `scope`, the DCS section and an optional
//! `ctl.authentication`.
//!
//! # What ctl touches
//!
//! ctl reads the cluster with one [`Dcs::cluster`] snapshot per step. It never takes the
//! leader lock and never publishes a member key. It writes only:
//!
//! * the `config` key, for `edit-config`, with compare-and-set on the version it read;
//! * the `failover` key, for `switchover`/`failover` when the leader's REST API cannot
//!   be reached, and for `flush switchover` when no member's can (patronictl's
//!   fallbacks), also compared with the version it read;
//! * every key of the scope, deleted by `remove` after three typed confirmations.
//!
//! Everything else goes to the members' REST APIs (`api_url` in their member keys) with
//! `ctl.authentication`, else `restapi.authentication`; `query` connects to a member's
//! PostgreSQL at its `conn_url`, with libpq's defaults for the rest of the login.
//!
//! # Differences from patronictl 3.0.2
//!
//! * The `list` title shows the system identifier (`Cluster: batman (7268…)`), as
//!   patronictl before and after 3.0.2 does; 3.0.2 alone left it out.
//! * Prompts are confirmations only (`y/N` on a terminal); what patronictl would ask
//!   for (candidate, schedule, version) comes from the options or takes its default.
//!   Without a terminal, a command that needs confirmation refuses unless `--force`.
//!   `remove`'s typed confirmations and `query --password` read stdin, terminal or not.
//! * A failed action exits with code 1 (patronictl prints `Failed: ...` and exits 0);
//!   so does a `query` whose SQL or connection failed, after printing patronictl's
//!   `ERROR, SQLSTATE: ...` row; usage errors exit with 2.
//! * `version` prints `ha-agent ctl version <ours> (Patroni-compatible <version>)` where
//!   patronictl prints `patronictl version <version>`.
//! * `query` prints booleans, integers, floats and NULL as psycopg converts them, other
//!   values as PostgreSQL's text (`2024-01-01 10:00:00+00`, not Python's
//!   `2024-01-01 10:00:00+00:00`); several statements print as text alone. `--format` is
//!   checked (patronictl prints nothing for an unknown one).
//! * A time without an offset (`--scheduled 2030-01-01T10:00`) is accepted only when
//!   the local zone is UTC; printed timestamps are UTC.
//! * `edit-config` prints its diff without a pager; `-f yaml` output follows `PyYAML`'s
//!   quoting closely but not in every corner.
//! * Not implemented: Citus `--group`, TLS to the REST API and to PostgreSQL.

mod args;
mod edit;
mod flush;
mod listing;
mod load;
mod output;
mod query;
mod remove;
mod time;
mod version;

use std::io::{IsTerminal as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use dcs_core::model::{ClusterConfig, Failover, Role};
use dcs_core::{ClusterState, Dcs, DcsExt as _, Member, Precondition};
use serde_json::{Map, Value, json};

use crate::config::Credentials;
use crate::http::{self, HttpResponse};
use args::{Command, Global, Invocation, RoleFilter};
use flush::FlushRequest;
use load::CtlConfig;
use output::Format;

/// Deadline of requests that act (switchover, restart, reinitialize): Patroni answers
/// them once the action is done or has failed.
const ACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// Deadline of quick requests (`PATCH /config`, `POST /reload`, `GET /patroni`).
const QUICK_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `ha-agent ctl <args>` and returns the process's exit code.
pub async fn run(args: Vec<String>) -> ExitCode {
    match args::parse(&args) {
        Ok(Invocation::Help(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(Invocation::Run(global, command)) => match execute(global, command).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(message) => {
                eprintln!("Error: {message}");
                ExitCode::FAILURE
            }
        },
        Err(error) => {
            eprintln!("{error}");
            ExitCode::from(2)
        }
    }
}

/// A command's outcome: its error is the message printed after `Error: ` (exit code 1).
type Result<T, E = String> = std::result::Result<T, E>;

/// What every command works from: the loaded configuration and the environment.
struct Context {
    config: CtlConfig,
    vars: Vec<(String, String)>,
}

/// One cluster opened for reading (and the two writes ctl does).
struct Opened {
    name: String,
    dcs: Arc<dyn Dcs>,
    auth: Option<Credentials>,
}

impl Context {
    async fn open(&self, cluster: Option<&str>) -> Result<Opened> {
        let (config, auth) = self.config.for_cluster(cluster, &self.vars)?;
        let dcs = crate::connect::connect(&config)
            .await
            .map_err(|e| format!("cannot connect to the DCS: {e}"))?;
        Ok(Opened {
            name: config.scope.clone(),
            dcs,
            auth,
        })
    }
}

impl Opened {
    async fn read(&self) -> Result<ClusterState> {
        self.dcs
            .cluster()
            .await
            .map_err(|e| format!("cannot read cluster {}: {e}", self.name))
    }

    /// `method` on `endpoint` of `member`'s REST API.
    async fn request(
        &self,
        member: &Member,
        method: &str,
        endpoint: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> Result<HttpResponse, String> {
        let api_url = member
            .data
            .api_url
            .as_deref()
            .ok_or_else(|| format!("member {} publishes no api_url", member.name))?;
        let url = endpoint_url(api_url, endpoint);
        let body = body.map(Value::to_string);
        http::request(method, &url, body.as_deref(), self.auth.as_ref(), timeout)
            .await
            .map_err(|e| e.to_string())
    }
}

/// The member's API URL with its path replaced by `/<endpoint>`, as patronictl builds it.
fn endpoint_url(api_url: &str, endpoint: &str) -> String {
    let after_scheme = api_url.find("://").map_or(0, |at| at + 3);
    let base = match api_url[after_scheme..].find('/') {
        Some(at) => &api_url[..after_scheme + at],
        None => api_url,
    };
    format!("{base}/{endpoint}")
}

#[allow(
    clippy::too_many_lines,
    reason = "one arm per command, each unpacking its options"
)]
async fn execute(global: Global, command: Command) -> Result<()> {
    let vars: Vec<(String, String)> = std::env::vars().collect();
    let from_env = vars
        .iter()
        .find(|(k, v)| k == "PATRONICTL_CONFIG_FILE" && !v.is_empty())
        .map(|(_, v)| PathBuf::from(v));
    let explicit = global.config_file.clone().or(from_env);
    let file = explicit
        .clone()
        .or_else(|| load::default_config_file(&vars));
    let dcs_url = global.dcs_url.clone().or_else(|| {
        vars.iter()
            .find(|(k, v)| k == "DCS_URL" && !v.is_empty())
            .map(|(_, v)| v.clone())
    });
    let config = CtlConfig::load(
        file.as_deref(),
        explicit.is_some(),
        dcs_url.as_deref(),
        &vars,
    )?;
    let ctx = Context { config, vars };
    match command {
        Command::List {
            clusters,
            extended,
            timestamp,
            format,
            watch,
        } => list(&ctx, &clusters, extended, timestamp, format, watch).await,
        Command::Switchover {
            cluster,
            leader,
            candidate,
            scheduled,
            force,
            as_failover,
        } => {
            let action = if as_failover {
                "failover"
            } else {
                "switchover"
            };
            let request = SwitchoverRequest {
                action,
                leader,
                candidate,
                scheduled,
                force,
            };
            switchover(&ctx, cluster.as_deref(), request).await
        }
        Command::Pause {
            cluster,
            pause,
            wait,
        } => toggle_pause(&ctx, cluster.as_deref(), pause, wait).await,
        Command::ShowConfig { cluster } => {
            let opened = ctx.open(cluster.as_deref()).await?;
            let state = opened.read().await?;
            let config = state.config.ok_or_else(|| {
                format!("cluster {} has no configuration in the DCS", opened.name)
            })?;
            // click.echo adds a newline after PyYAML's own: a blank line follows.
            println!("{}", output::yaml(&Value::Object(config.value.data), false));
            Ok(())
        }
        Command::EditConfig {
            cluster,
            quiet,
            set,
            pg,
            apply,
            replace,
            force,
        } => {
            let edits = Edits {
                set,
                pg,
                apply,
                replace,
            };
            edit_config(&ctx, cluster.as_deref(), edits, quiet, force).await
        }
        Command::History { cluster, format } => {
            let opened = ctx.open(cluster.as_deref()).await?;
            let state = opened.read().await?;
            println!("{}", listing::history(&state, format));
            Ok(())
        }
        Command::Restart {
            cluster,
            members,
            role,
            any,
            scheduled,
            pg_version,
            pending,
            timeout,
            force,
        } => {
            let request = RestartRequest {
                role,
                any,
                scheduled,
                pg_version,
                pending,
                timeout,
                force,
            };
            restart(&ctx, &cluster, &members, request).await
        }
        Command::Reload {
            cluster,
            members,
            role,
            force,
        } => reload(&ctx, &cluster, &members, role, force).await,
        Command::Reinit {
            cluster,
            members,
            force,
            wait,
        } => reinit(&ctx, &cluster, &members, force, wait).await,
        Command::Flush {
            cluster,
            members,
            target,
            role,
            force,
        } => {
            let request = FlushRequest {
                cluster: &cluster,
                names: &members,
                target,
                role,
                force,
            };
            flush::flush(&ctx, request).await
        }
        Command::Remove { cluster, format } => remove::remove(&ctx, &cluster, format).await,
        Command::Version { cluster, members } => {
            version::version(&ctx, cluster.as_deref(), &members).await
        }
        Command::Dsn {
            cluster,
            role,
            member,
        } => query::dsn(&ctx, cluster.as_deref(), role, member).await,
        Command::Query(request) => query::query(&ctx, *request).await,
    }
}

fn print_members(state: &ClusterState, name: &str) {
    let listing = listing::listing(state, name, false, false);
    println!("{}", listing::render(&listing, Format::Pretty));
}

async fn list(
    ctx: &Context,
    clusters: &[String],
    extended: bool,
    timestamp: bool,
    format: Format,
    watch: Option<f64>,
) -> Result<()> {
    let names: Vec<Option<&str>> = if clusters.is_empty() {
        vec![None]
    } else {
        clusters.iter().map(|c| Some(c.as_str())).collect()
    };
    let mut opened = Vec::new();
    for name in names {
        opened.push(ctx.open(name).await?);
    }
    loop {
        if watch.is_some() {
            // click.clear(): clear the screen and home the cursor.
            print!("\x1b[2J\x1b[1;1H");
        }
        if timestamp {
            println!("{}", time::timestamp(SystemTime::now(), false));
        }
        for cluster in &opened {
            let state = cluster.read().await?;
            let listing =
                listing::listing(&state, &cluster.name, extended, format == Format::Topology);
            println!("{}", listing::render(&listing, format));
        }
        let Some(seconds) = watch else {
            return Ok(());
        };
        std::io::stdout().flush().ok();
        tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    }
}

/// Asks `question` on a terminal; `--force` answers yes, and without a terminal the
/// command refuses rather than guessing.
async fn confirm(question: &str, force: bool) -> Result<bool> {
    if force {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        return Err(format!(
            "{question} needs an answer, but stdin is not a terminal; use --force"
        ));
    }
    print!("{question} [y/N]: ");
    std::io::stdout().flush().ok();
    let answer = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map(|_| line)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| e.to_string())?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Asks `question` and reads the answer from stdin, as click's `prompt` does: with or
/// without a terminal, asking again after an empty line, aborting at the end of input.
/// `hidden`: the answer is not echoed on a terminal (a password).
async fn prompt(question: &str, hidden: bool) -> Result<String> {
    let hide = hidden && std::io::stdin().is_terminal();
    loop {
        print!("{question}: ");
        std::io::stdout().flush().ok();
        if hide {
            set_echo(false).await;
        }
        let line = tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map(|_| line)
        })
        .await
        .map_err(|e| e.to_string())?;
        if hide {
            set_echo(true).await;
            println!();
        }
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        if line.is_empty() {
            println!();
            return Err("Aborted!".into());
        }
        let answer = line.strip_suffix('\n').unwrap_or(&line);
        let answer = answer.strip_suffix('\r').unwrap_or(answer);
        if !answer.is_empty() {
            return Ok(answer.to_owned());
        }
    }
}

/// Turns the terminal's echo on or off with `stty`, which acts on the terminal it is
/// given as stdin. Best effort: without `stty` the answer shows.
async fn set_echo(on: bool) {
    let _ = tokio::process::Command::new("stty")
        .arg(if on { "echo" } else { "-echo" })
        .stdin(std::process::Stdio::inherit())
        .status()
        .await;
}

/// `--scheduled` as patronictl's `parse_scheduled`: absent or `now` is immediate.
fn parse_scheduled(scheduled: Option<&str>) -> Result<Option<time::Scheduled>> {
    match scheduled {
        None | Some("now") => Ok(None),
        Some(text) => time::Scheduled::parse(text, time::local_offset_if_utc()).map(Some),
    }
}

struct SwitchoverRequest {
    action: &'static str,
    leader: Option<String>,
    candidate: Option<String>,
    scheduled: Option<String>,
    force: bool,
}

/// The checks of patronictl's `_do_failover_or_switchover`, in its order, on one
/// snapshot. Returns the leader to name and the candidate.
fn check_switchover(
    state: &ClusterState,
    name: &str,
    request: &SwitchoverRequest,
) -> Result<(Option<String>, Option<String>)> {
    let action = request.action;
    let holder = state
        .leader
        .as_ref()
        .map(|l| l.name.clone())
        .filter(|n| !n.is_empty());
    if action == "switchover" && holder.is_none() {
        return Err("This cluster has no leader".into());
    }
    let leader = request.leader.clone().or_else(|| holder.clone());
    if let (Some(leader), Some(holder)) = (&leader, &holder) {
        if leader != holder {
            return Err(format!(
                "Member {leader} is not the leader of cluster {name}"
            ));
        }
    }
    let mut candidates: Vec<&str> = state
        .members
        .iter()
        .filter(|m| Some(&m.name) != leader.as_ref() && !m.data.nofailover())
        .map(|m| m.name.as_str())
        .collect();
    candidates.sort_unstable();
    if candidates.is_empty() {
        return Err(format!("No candidates found to {action} to"));
    }
    let candidate = request.candidate.clone().filter(|c| !c.is_empty());
    if action == "failover" && candidate.is_none() {
        return Err("Failover could be performed only to a specific candidate".into());
    }
    if candidate.is_some() && candidate == leader {
        let title = if action == "failover" {
            "Failover"
        } else {
            "Switchover"
        };
        return Err(format!("{title} target and source are the same."));
    }
    if let Some(candidate) = &candidate {
        if !candidates.contains(&candidate.as_str()) {
            return Err(format!(
                "Member {candidate} does not exist in cluster {name}"
            ));
        }
    }
    Ok((leader, candidate))
}

async fn switchover(
    ctx: &Context,
    cluster: Option<&str>,
    request: SwitchoverRequest,
) -> Result<()> {
    let opened = ctx.open(cluster).await?;
    let name = opened.name.clone();
    let state = opened.read().await?;
    println!("Current cluster topology");
    print_members(&state, &name);

    let action = request.action;
    let (leader, candidate) = check_switchover(&state, &name, &request)?;
    let scheduled_at = if action == "switchover" {
        let scheduled = parse_scheduled(request.scheduled.as_deref())?;
        if scheduled.is_some() && state.config.as_ref().is_some_and(|c| c.value.pause()) {
            return Err("Can't schedule switchover in the paused state".into());
        }
        scheduled.map(|s| s.iso())
    } else {
        None
    };

    let demote = leader
        .as_ref()
        .map(|l| format!(", demoting current leader {l}"))
        .unwrap_or_default();
    let (question, refusal) = match &scheduled_at {
        Some(at) => (
            format!(
                "Are you sure you want to schedule {action} of cluster {name} at {at}{demote}?"
            ),
            format!("Aborting scheduled {action}"),
        ),
        None => (
            format!("Are you sure you want to {action} cluster {name}{demote}?"),
            format!("Aborting {action}"),
        ),
    };
    if !confirm(&question, request.force).await? {
        return Err(refusal);
    }

    let body = json!({"leader": leader, "candidate": candidate, "scheduled_at": scheduled_at});
    // The leader takes the request; without one, the candidate does (a failover).
    let target = match &state.leader {
        Some(holder) => state.member(&holder.name),
        None => candidate.as_deref().and_then(|c| state.member(c)),
    };
    let answer = match target {
        Some(member) => {
            opened
                .request(member, "POST", action, Some(&body), ACTION_TIMEOUT)
                .await
        }
        None => Err("no member to send the request to".to_owned()),
    };
    match answer {
        Ok(response) if matches!(response.status, 200 | 202) => {
            println!(
                "{} {}",
                time::timestamp(SystemTime::now(), true),
                response.body
            );
            let state = opened.read().await?;
            print_members(&state, &name);
            Ok(())
        }
        Ok(response) => {
            let title = if action == "failover" {
                "Failover"
            } else {
                "Switchover"
            };
            Err(format!(
                "{title} failed, details: {}, {}",
                response.status, response.body
            ))
        }
        Err(error) => {
            eprintln!("Could not reach the REST API: {error}");
            println!(
                "{} Could not {action} using Patroni api, falling back to DCS",
                time::timestamp(SystemTime::now(), true)
            );
            let failover = Failover {
                leader,
                candidate,
                scheduled_at,
            };
            let expected = Precondition::from_snapshot(state.failover.as_ref().map(|f| &f.version));
            opened
                .dcs
                .set_failover(&failover, expected)
                .await
                .map_err(|e| format!("writing the failover key failed: {e}"))?;
            print_members(&state, &name);
            Ok(())
        }
    }
}

/// The members with an `api_url`, the leader first (patronictl's
/// `get_all_members_leader_first`).
fn members_leader_first(state: &ClusterState) -> Vec<&Member> {
    let leader = state.leader_member().filter(|m| m.data.api_url.is_some());
    leader
        .into_iter()
        .chain(
            state
                .members
                .iter()
                .filter(|m| m.data.api_url.is_some() && Some(&m.name) != leader.map(|l| &l.name)),
        )
        .collect()
}

async fn toggle_pause(ctx: &Context, cluster: Option<&str>, pause: bool, wait: bool) -> Result<()> {
    let opened = ctx.open(cluster).await?;
    let state = opened.read().await?;
    let paused = state.config.as_ref().is_some_and(|c| c.value.pause());
    if paused == pause {
        return Err(format!(
            "Cluster is {} paused",
            if pause { "already" } else { "not" }
        ));
    }
    let (verb, done) = if pause {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    let body = json!({"pause": if pause { Value::Bool(true) } else { Value::Null }});
    for member in members_leader_first(&state) {
        let response = match opened
            .request(member, "PATCH", "config", Some(&body), QUICK_TIMEOUT)
            .await
        {
            Ok(response) => response,
            Err(error) => {
                eprintln!("{error}");
                eprintln!("Member {} is not accessible", member.name);
                continue;
            }
        };
        if response.status != 200 {
            return Err(format!(
                "Failed: {verb} cluster management status code={}, ({})",
                response.status, response.body
            ));
        }
        if wait {
            wait_for_pause(&opened, &state, pause, verb).await?;
        } else {
            println!("Success: cluster management is {done}");
        }
        return Ok(());
    }
    Err("Can not find accessible cluster member".into())
}

/// Polls until every member that had an API reports the new pause state, for at most
/// `loop_wait + 1` seconds.
async fn wait_for_pause(
    opened: &Opened,
    before: &ClusterState,
    pause: bool,
    verb: &str,
) -> Result<()> {
    println!("'{verb}' request sent, waiting until it is recognized by all nodes");
    let watched: Vec<(&str, &dcs_core::Version)> = before
        .members
        .iter()
        .filter(|m| m.data.api_url.is_some())
        .map(|m| (m.name.as_str(), &m.version))
        .collect();
    let loop_wait = before.config.as_ref().map_or(10, |c| c.value.loop_wait());
    let reports = |m: &Member| m.data.extra.get("pause").is_some_and(listing::truthy) == pause;
    let mut last = None;
    for _ in 0..=loop_wait {
        let state = opened.read().await?;
        let all = state
            .members
            .iter()
            .filter(|m| watched.iter().any(|(name, _)| *name == m.name))
            .all(reports);
        if all {
            println!(
                "Success: cluster management is {}",
                if pause { "paused" } else { "resumed" }
            );
            return Ok(());
        }
        last = Some(state);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let state = last.unwrap_or_default();
    // Members that did not publish anything since the request are not blamed.
    let remaining: Vec<&str> = state
        .members
        .iter()
        .filter(|m| {
            !reports(m)
                && watched
                    .iter()
                    .any(|(name, version)| *name == m.name && **version != m.version)
        })
        .map(|m| m.name.as_str())
        .collect();
    if remaining.is_empty() {
        println!(
            "Success: cluster management is {}",
            if pause { "paused" } else { "resumed" }
        );
        Ok(())
    } else {
        Err(format!(
            "{} members didn't recognized pause state after {loop_wait} seconds",
            remaining.join(", ")
        ))
    }
}

/// The changes `edit-config` was asked to make, applied in patronictl's order.
struct Edits {
    set: Vec<String>,
    pg: Vec<String>,
    apply: Option<String>,
    replace: Option<String>,
}

async fn read_yaml_source(source: &str) -> Result<Map<String, Value>> {
    let text = if source == "-" {
        tokio::task::spawn_blocking(|| std::io::read_to_string(std::io::stdin()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("reading stdin: {e}"))?
    } else {
        tokio::fs::read_to_string(source)
            .await
            .map_err(|e| format!("{source}: {e}"))?
    };
    match edit::yaml_value(&text).map_err(|e| format!("{source}: {e}"))? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err(format!("{source}: not a mapping of configuration keys")),
    }
}

async fn edit_config(
    ctx: &Context,
    cluster: Option<&str>,
    edits: Edits,
    quiet: bool,
    force: bool,
) -> Result<()> {
    let opened = ctx.open(cluster).await?;
    let state = opened.read().await?;
    let before_data = state
        .config
        .as_ref()
        .map(|c| c.value.data.clone())
        .unwrap_or_default();
    let before = output::yaml(&Value::Object(before_data.clone()), false);

    let mut changed = before_data.clone();
    let mut edited = false;
    if let Some(source) = &edits.replace {
        changed = Map::new();
        edit::patch(&mut changed, &read_yaml_source(source).await?);
        edited = true;
    }
    if let Some(source) = &edits.apply {
        edit::patch(&mut changed, &read_yaml_source(source).await?);
        edited = true;
    }
    if !edits.set.is_empty() || !edits.pg.is_empty() {
        let pairs: Vec<String> = edits
            .set
            .iter()
            .cloned()
            .chain(
                edits
                    .pg
                    .iter()
                    .map(|p| format!("postgresql.parameters.{}", p.trim_start())),
            )
            .collect();
        edit::apply_pairs(&mut changed, &pairs)?;
        edited = true;
    }
    if !edited {
        changed = run_editor(&before, &opened.name).await?;
    }

    if changed == before_data {
        if !quiet {
            println!("Not changed");
        }
        return Ok(());
    }
    if !quiet {
        let after = output::yaml(&Value::Object(changed.clone()), false);
        print!("{}", edit::unified_diff(&before, &after));
    }
    let sync = |data: &Map<String, Value>| {
        ClusterConfig {
            data: data.clone(),
            valid: true,
        }
        .synchronous_mode()
    };
    if sync(&changed) && !sync(&before_data) {
        // The agents cannot honour it; written anyway, it would promise durability.
        return Err(
            "synchronous_mode is not supported by ha-agent: synchronous replication \
                    is not implemented; nothing was changed"
                .into(),
        );
    }
    let from_stdin = edits.apply.as_deref() == Some("-") || edits.replace.as_deref() == Some("-");
    if from_stdin && !force {
        return Err("Use --force option to apply changes".into());
    }
    if !confirm("Apply these changes?", force).await? {
        return Ok(());
    }
    let config = ClusterConfig {
        data: changed,
        valid: true,
    };
    let expected = Precondition::from_snapshot(state.config.as_ref().map(|c| &c.version));
    match opened.dcs.set_config(&config, expected).await {
        Ok(_) => {
            println!("Configuration changed");
            Ok(())
        }
        Err(dcs_core::Error::Conflict { .. }) => {
            Err("Config modification aborted due to concurrent changes".into())
        }
        Err(error) => Err(format!("writing the configuration failed: {error}")),
    }
}

/// Opens `$EDITOR` (else `editor`, else `vi`) on the configuration as YAML and reads the
/// result back.
async fn run_editor(before: &str, cluster: &str) -> Result<Map<String, Value>> {
    if !std::io::stdin().is_terminal() {
        return Err(
            "nothing to change: give --set, --pg, --apply or --replace (an editor needs a \
             terminal)"
                .into(),
        );
    }
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| "vi".to_owned());
    let path = std::env::temp_dir().join(format!("{cluster}-config-{}.yaml", std::process::id()));
    tokio::fs::write(&path, before)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let status = tokio::process::Command::new(&editor)
        .arg(&path)
        .status()
        .await
        .map_err(|e| format!("cannot run the editor {editor}: {e}"));
    let text = tokio::fs::read_to_string(&path).await;
    tokio::fs::remove_file(&path).await.ok();
    let status = status?;
    if !status.success() {
        return Err(format!("Editor exited with {status}"));
    }
    let text = text.map_err(|e| format!("{}: {e}", path.display()))?;
    match edit::yaml_value(&text)? {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        _ => Err("the edited configuration is not a mapping".into()),
    }
}

/// The members a role filter selects (patronictl's `get_all_members`).
fn members_with_role(state: &ClusterState, role: RoleFilter) -> Vec<&Member> {
    let leader = state
        .leader
        .as_ref()
        .map(|l| l.name.as_str())
        .filter(|n| !n.is_empty());
    match role {
        RoleFilter::Leader | RoleFilter::Primary | RoleFilter::StandbyLeader => state
            .leader_member()
            .filter(|m| match role {
                RoleFilter::Primary => m.data.role != Role::StandbyLeader,
                RoleFilter::StandbyLeader => m.data.role != Role::Primary,
                _ => true,
            })
            .into_iter()
            .collect(),
        RoleFilter::Replica => state
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != leader)
            .collect(),
        RoleFilter::Any => state.members.iter().collect(),
    }
}

/// patronictl's `get_members`: prints the cluster, then keeps the named members among
/// those with `role` (all of them when none is named).
fn select_members<'a>(
    state: &'a ClusterState,
    name: &str,
    names: &[String],
    role: RoleFilter,
) -> Result<Vec<&'a Member>> {
    let candidates = members_with_role(state, role);
    if names.is_empty() && candidates.is_empty() {
        return Err(format!("{name} cluster doesn't have any members"));
    }
    print_members(state, name);
    if names.is_empty() {
        return Ok(candidates);
    }
    let chosen: Vec<&Member> = candidates
        .into_iter()
        .filter(|m| names.contains(&m.name))
        .collect();
    if chosen.is_empty() {
        return Err(format!("No {} among provided members", role.as_str()));
    }
    Ok(chosen)
}

fn member_names(members: &[&Member]) -> String {
    members
        .iter()
        .map(|m| m.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

struct RestartRequest {
    role: RoleFilter,
    any: bool,
    scheduled: Option<String>,
    pg_version: Option<String>,
    pending: bool,
    timeout: Option<String>,
    force: bool,
}

/// patronictl's `postgres_version_to_int` check: `X.Y.Z`, or `X.Y` from 10 on.
fn check_pg_version(version: &str) -> Result<(), String> {
    let parts: Option<Vec<u32>> = version.split('.').map(|p| p.parse().ok()).collect();
    let parts = parts.ok_or_else(|| format!("Invalid PostgreSQL version: {version}"))?;
    let valid = match parts.as_slice() {
        [major, _] => *major >= 10,
        [_, _, _] => true,
        _ => false,
    };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {version}"
        ))
    }
}

#[allow(
    clippy::too_many_lines,
    reason = "patronictl's restart steps in their order"
)]
async fn restart(
    ctx: &Context,
    cluster: &str,
    names: &[String],
    request: RestartRequest,
) -> Result<()> {
    let opened = ctx.open(Some(cluster)).await?;
    let state = opened.read().await?;
    let mut members = select_members(&state, cluster, names, request.role)?;
    let scheduled = parse_scheduled(request.scheduled.as_deref())?.map(|s| s.iso());
    let (question, refusal) = match &scheduled {
        Some(at) => (
            format!(
                "Are you sure you want to schedule restart of members {} at {at}?",
                member_names(&members)
            ),
            "Aborted scheduled restart",
        ),
        None => (
            format!(
                "Are you sure you want to restart members {}?",
                member_names(&members)
            ),
            "Aborted restart",
        ),
    };
    if !confirm(&question, request.force).await? {
        return Err(refusal.into());
    }
    if request.any && members.len() > 1 {
        // Any one will do; the clock's nanoseconds are random enough for that.
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .subsec_nanos();
        let pick = usize::try_from(nanos).unwrap_or(0) % members.len();
        members = vec![members[pick]];
    }
    let mut content = Map::new();
    if request.pending {
        content.insert("restart_pending".to_owned(), Value::Bool(true));
    }
    if let Some(version) = &request.pg_version {
        check_pg_version(version)?;
        content.insert("postgres_version".to_owned(), Value::from(version.as_str()));
    }
    if let Some(at) = &scheduled {
        if state.config.as_ref().is_some_and(|c| c.value.pause()) {
            return Err("Can't schedule restart in the paused state".into());
        }
        content.insert("schedule".to_owned(), Value::from(at.as_str()));
    }
    if let Some(timeout) = &request.timeout {
        content.insert("timeout".to_owned(), Value::from(timeout.as_str()));
    }
    let content = Value::Object(content);

    let mut failed = false;
    for member in members {
        let name = &member.name;
        if scheduled.is_some() && request.force && flush::has_scheduled_restart(member) {
            // patronictl goes on with the restart whether or not this worked.
            flush::delete_scheduled_restart(&opened, member, true).await;
        }
        match opened
            .request(member, "POST", "restart", Some(&content), ACTION_TIMEOUT)
            .await
        {
            Ok(r) if r.status == 200 => println!("Success: restart on member {name}"),
            Ok(r) if r.status == 202 => println!("Success: restart scheduled on member {name}"),
            Ok(r) if r.status == 409 => {
                failed = true;
                println!("Failed: another restart is already scheduled on member {name}");
            }
            Ok(r) => {
                failed = true;
                println!(
                    "Failed: restart for member {name}, status code={}, ({})",
                    r.status, r.body
                );
            }
            Err(error) => {
                failed = true;
                println!("Failed: restart for member {name}: {error}");
            }
        }
    }
    if failed {
        Err("restart failed on some members".into())
    } else {
        Ok(())
    }
}

async fn reload(
    ctx: &Context,
    cluster: &str,
    names: &[String],
    role: RoleFilter,
    force: bool,
) -> Result<()> {
    let opened = ctx.open(Some(cluster)).await?;
    let state = opened.read().await?;
    let members = select_members(&state, cluster, names, role)?;
    let question = format!(
        "Are you sure you want to reload members {}?",
        member_names(&members)
    );
    if !confirm(&question, force).await? {
        return Err("Aborted reload".into());
    }
    let loop_wait = state
        .config
        .as_ref()
        .and_then(|c| c.value.data.get("loop_wait").cloned())
        .unwrap_or(Value::from(10));
    let mut failed = false;
    for member in members {
        let name = &member.name;
        match opened
            .request(member, "POST", "reload", None, QUICK_TIMEOUT)
            .await
        {
            Ok(r) if r.status == 200 => println!("No changes to apply on member {name}"),
            Ok(r) if r.status == 202 => println!(
                "Reload request received for member {name} and will be processed within \
                 {loop_wait} seconds"
            ),
            Ok(r) => {
                failed = true;
                println!(
                    "Failed: reload for member {name}, status code={}, ({})",
                    r.status, r.body
                );
            }
            Err(error) => {
                failed = true;
                println!("Failed: reload for member {name}: {error}");
            }
        }
    }
    if failed {
        Err("reload failed on some members".into())
    } else {
        Ok(())
    }
}

async fn reinit(
    ctx: &Context,
    cluster: &str,
    names: &[String],
    force: bool,
    wait: bool,
) -> Result<()> {
    let opened = ctx.open(Some(cluster)).await?;
    let state = opened.read().await?;
    let members = select_members(&state, cluster, names, RoleFilter::Replica)?;
    let question = format!(
        "Are you sure you want to reinitialize members {}?",
        member_names(&members)
    );
    if !confirm(&question, force).await? {
        return Err("Aborted reinitialize".into());
    }
    let mut failed = false;
    let mut waiting = Vec::new();
    for member in members {
        let name = &member.name;
        let mut body = json!({"force": force});
        loop {
            match opened
                .request(member, "POST", "reinitialize", Some(&body), ACTION_TIMEOUT)
                .await
            {
                Ok(r) if r.status < 400 => {
                    println!("Success: reinitialize for member {name}");
                    if wait {
                        waiting.push(member);
                    }
                }
                Ok(r) => {
                    println!(
                        "Failed: reinitialize for member {name}, status code={}, ({})",
                        r.status, r.body
                    );
                    if r.body.ends_with(" already in progress")
                        && !force
                        && std::io::stdin().is_terminal()
                        && confirm("Do you want to cancel it and reinitialize anyway?", false)
                            .await?
                    {
                        body = json!({"force": true});
                        continue;
                    }
                    failed = true;
                }
                Err(error) => {
                    failed = true;
                    println!("Failed: reinitialize for member {name}: {error}");
                }
            }
            break;
        }
    }
    if !waiting.is_empty() {
        println!(
            "Waiting for reinitialize to complete on: {}",
            member_names(&waiting)
        );
    }
    while !waiting.is_empty() {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for member in waiting {
            let state = opened
                .request(member, "GET", "patroni", None, QUICK_TIMEOUT)
                .await
                .ok()
                .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
                .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_owned));
            if state.as_deref() == Some("creating replica") || state.is_none() {
                still.push(member);
            } else {
                println!("Reinitialize is completed on: {}", member.name);
            }
        }
        waiting = still;
    }
    if failed {
        Err("reinitialize failed on some members".into())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcs_core::model::RawEntry;

    fn state(entries: &[(&str, &str)]) -> ClusterState {
        ClusterState::from_entries(entries.iter().map(|(key, value)| RawEntry {
            key: (*key).to_owned(),
            value: value.as_bytes().to_vec(),
            version: dcs_core::Version::new(1),
            owner: None,
            created: 1,
        }))
    }

    fn cluster() -> ClusterState {
        state(&[
            ("leader", "pg0"),
            (
                "members/pg0",
                r#"{"api_url":"http://h:8008/patroni","role":"primary"}"#,
            ),
            (
                "members/pg1",
                r#"{"api_url":"http://h:8009/patroni","role":"replica"}"#,
            ),
            (
                "members/pg2",
                r#"{"role":"replica","tags":{"nofailover":true}}"#,
            ),
        ])
    }

    fn request(
        action: &'static str,
        leader: Option<&str>,
        candidate: Option<&str>,
    ) -> SwitchoverRequest {
        SwitchoverRequest {
            action,
            leader: leader.map(str::to_owned),
            candidate: candidate.map(str::to_owned),
            scheduled: None,
            force: true,
        }
    }

    fn refusal(state: &ClusterState, request: &SwitchoverRequest) -> String {
        match check_switchover(state, "batman", request) {
            Err(message) => message,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn switchover_checks_say_what_patronictl_says() {
        let c = cluster();
        assert_eq!(
            check_switchover(&c, "batman", &request("switchover", None, Some("pg1"))).unwrap(),
            (Some("pg0".to_owned()), Some("pg1".to_owned()))
        );
        assert_eq!(
            check_switchover(&c, "batman", &request("switchover", None, None)).unwrap(),
            (Some("pg0".to_owned()), None)
        );
        assert_eq!(
            refusal(&c, &request("switchover", Some("pg1"), None)),
            "Member pg1 is not the leader of cluster batman"
        );
        assert_eq!(
            refusal(&c, &request("switchover", None, Some("pg2"))),
            "Member pg2 does not exist in cluster batman"
        );
        assert_eq!(
            refusal(&c, &request("failover", None, None)),
            "Failover could be performed only to a specific candidate"
        );
        assert_eq!(
            refusal(&c, &request("switchover", None, Some("pg0"))),
            "Switchover target and source are the same."
        );
        let leaderless = state(&[("members/pg1", "{}")]);
        assert_eq!(
            refusal(&leaderless, &request("switchover", None, Some("pg1"))),
            "This cluster has no leader"
        );
        assert_eq!(
            check_switchover(
                &leaderless,
                "batman",
                &request("failover", None, Some("pg1"))
            )
            .unwrap(),
            (None, Some("pg1".to_owned()))
        );
        let alone = state(&[("leader", "pg0"), ("members/pg0", "{}")]);
        assert_eq!(
            refusal(&alone, &request("switchover", None, None)),
            "No candidates found to switchover to"
        );
    }

    #[test]
    fn role_filters_pick_members_like_patronictl() {
        let c = cluster();
        let names = |role| {
            members_with_role(&c, role)
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(RoleFilter::Leader), ["pg0"]);
        assert_eq!(names(RoleFilter::Primary), ["pg0"]);
        assert!(names(RoleFilter::StandbyLeader).is_empty());
        assert_eq!(names(RoleFilter::Replica), ["pg1", "pg2"]);
        assert_eq!(names(RoleFilter::Any), ["pg0", "pg1", "pg2"]);
        let leader_first: Vec<&str> = members_leader_first(&c)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(leader_first, ["pg0", "pg1"]);
    }

    #[test]
    fn endpoints_replace_the_api_urls_path() {
        assert_eq!(
            endpoint_url("http://10.0.0.1:8008/patroni", "switchover"),
            "http://10.0.0.1:8008/switchover"
        );
        assert_eq!(
            endpoint_url("http://10.0.0.1:8008", "config"),
            "http://10.0.0.1:8008/config"
        );
    }

    #[test]
    fn postgres_versions_are_checked_like_patroni() {
        assert!(check_pg_version("9.5.2").is_ok());
        assert!(check_pg_version("15.4").is_ok());
        assert!(check_pg_version("9.6").is_err());
        assert!(check_pg_version("15").is_err());
        assert_eq!(
            check_pg_version("a.b").unwrap_err(),
            "Invalid PostgreSQL version: a.b"
        );
    }
}
