//! The servers on the hosts: per node one DCS member, one `ha-agent` (which starts its own
//! PostgreSQL), all started with `ip netns exec` inside the node's namespace, and the
//! process faults on them (kill, restart, pause, resume, wall-clock jumps).
//!
//! Every server is a [`ServerProcess`] (own process group, `setpriv --pdeathsig`); agents
//! run as the unprivileged PostgreSQL test account, their postmasters detach into their own
//! sessions (`pg_ctl`), so `Drop` stops them with `pg_ctl stop -m immediate`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

use super::net::Network;
use super::{ChaosError, ChaosOptions, Dcs};
use crate::fixtures::agents::{postmaster_pid, stop_agents};
use crate::fixtures::postgres::{bin_dir, server_user};
use crate::fixtures::process::{OsUser, ProcessSpec, ServerProcess};

/// The port every node's servers use; each node has its own address, so they never clash.
pub const PG_PORT: u16 = 5432;
/// The agents' REST API port.
pub const API_PORT: u16 = 8008;
const ETCD_CLIENT_PORT: u16 = 2379;
const ETCD_PEER_PORT: u16 = 2380;
const ZK_CLIENT_PORT: u16 = 2181;

/// libfaketime's multi-threaded build (the agent runs tokio worker threads).
pub const FAKETIME_LIB: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1";

/// The database superuser the clients write as.
pub const SUPERUSER: &str = "postgres";

/// One node's processes.
#[derive(Debug)]
struct Node {
    dir: PathBuf,
    agent_spec: ProcessSpec,
    dcs_spec: ProcessSpec,
    agent: Mutex<Option<ServerProcess>>,
    dcs: Mutex<Option<ServerProcess>>,
    /// A postmaster frozen with `SIGSTOP`, to thaw on heal.
    paused_postmaster: Mutex<Option<i32>>,
    clock_file: PathBuf,
}

/// Locks a slot that is only ever replaced whole, so a poisoned one is consistent.
fn slot<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The servers of one chaos run.
#[derive(Debug)]
pub struct Cluster {
    user: OsUser,
    bin_dir: PathBuf,
    password: String,
    nodes: Vec<Node>,
    /// Every agent process id, whose libfaketime shared memory `Drop` removes.
    agent_pids: Mutex<Vec<u32>>,
}

impl Cluster {
    /// Writes every node's files and starts the DCS members and agents in the namespaces.
    pub fn start(
        network: &Network,
        options: &ChaosOptions,
        dir: &Path,
        user: OsUser,
    ) -> Result<Self, ChaosError> {
        let bin_dir = bin_dir()?;
        let agent = dir.join("ha-agent");
        std::fs::copy(&options.agent, &agent).map_err(|source| {
            ChaosError::io(format!("copying {}", options.agent.display()), source)
        })?;
        chmod(&agent, 0o755)?;
        let password = format!("chaos-{:x}", std::process::id() ^ 0x5eed_cafe);
        let mut nodes = Vec::new();
        for i in 0..network.nodes() {
            let node_dir = dir.join(format!("node{i}"));
            mkdir(&node_dir)?;
            give(&node_dir, &user)?;
            let config = node_dir.join("agent.yml");
            let yaml = agent_yaml(network, options, i, &node_dir, &bin_dir, &password);
            write(&config, &yaml)?;
            give(&config, &user)?;
            let clock_file = node_dir.join("faketime");
            write(&clock_file, "+0\n")?;
            give(&clock_file, &user)?;
            let agent_spec = agent_spec(network, options, i, &node_dir, &agent, &config, &user);
            let dcs_spec = dcs_spec(network, options.dcs, i, &node_dir)?;
            nodes.push(Node {
                dir: node_dir,
                agent_spec,
                dcs_spec,
                agent: Mutex::new(None),
                dcs: Mutex::new(None),
                paused_postmaster: Mutex::new(None),
                clock_file,
            });
        }
        let cluster = Self {
            user,
            bin_dir,
            password,
            nodes,
            agent_pids: Mutex::new(Vec::new()),
        };
        // Started only once `cluster` owns the slots, so an error stops what did start.
        for i in 0..cluster.nodes.len() {
            cluster.start_dcs(i)?;
        }
        for i in 0..cluster.nodes.len() {
            cluster.start_agent(i)?;
        }
        Ok(cluster)
    }

    /// The unprivileged account for the servers (the PostgreSQL fixtures' `dcs-test`).
    pub async fn user() -> Result<OsUser, ChaosError> {
        Ok(server_user().await?)
    }

    /// The superuser's password the clients use.
    #[must_use]
    pub fn password(&self) -> &str {
        &self.password
    }

    /// Copies every node's logs (agent, PostgreSQL, DCS member) into `out/node<i>/`, so
    /// they outlive the temporary directory.
    pub fn keep_logs(&self, out: &Path) {
        for (i, node) in self.nodes.iter().enumerate() {
            let target = out.join(format!("node{i}"));
            if std::fs::create_dir_all(&target).is_err() {
                continue;
            }
            for file in ["agent.log", "data.log", "dcs.log"] {
                let _ = std::fs::copy(node.dir.join(file), target.join(file));
            }
        }
    }

    /// Node `i`'s agent log.
    #[must_use]
    pub fn agent_log(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join("agent.log")
    }

    /// The last lines of every agent's log, for errors.
    #[must_use]
    pub fn log_tails(&self) -> String {
        (0..self.nodes.len())
            .map(|i| log_tail(&self.agent_log(i), 15))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Starts node `i`'s agent when it does not run.
    pub fn start_agent(&self, i: usize) -> Result<(), ChaosError> {
        if let Some(pid) = start(&self.nodes[i].agent, &self.nodes[i].agent_spec)? {
            slot(&self.agent_pids).push(pid);
        }
        Ok(())
    }

    /// Kills node `i`'s agent with `SIGKILL` (its postmaster lives on).
    pub fn kill_agent(&self, i: usize) -> Result<(), ChaosError> {
        let agent = slot(&self.nodes[i].agent).take();
        Ok(agent.map_or(Ok(()), ServerProcess::kill)?)
    }

    /// Freezes node `i`'s agent with `SIGSTOP`.
    pub fn pause_agent(&self, i: usize) -> Result<(), ChaosError> {
        pause(&self.nodes[i].agent)
    }

    /// Thaws node `i`'s agent; a no-op when it is not frozen.
    pub fn resume_agent(&self, i: usize) -> Result<(), ChaosError> {
        resume(&self.nodes[i].agent)
    }

    /// Starts node `i`'s DCS member when it does not run.
    pub fn start_dcs(&self, i: usize) -> Result<(), ChaosError> {
        start(&self.nodes[i].dcs, &self.nodes[i].dcs_spec).map(drop)
    }

    /// Kills node `i`'s DCS member with `SIGKILL`.
    pub fn kill_dcs(&self, i: usize) -> Result<(), ChaosError> {
        let dcs = slot(&self.nodes[i].dcs).take();
        Ok(dcs.map_or(Ok(()), ServerProcess::kill)?)
    }

    /// Freezes node `i`'s DCS member.
    pub fn pause_dcs(&self, i: usize) -> Result<(), ChaosError> {
        pause(&self.nodes[i].dcs)
    }

    /// Thaws node `i`'s DCS member.
    pub fn resume_dcs(&self, i: usize) -> Result<(), ChaosError> {
        resume(&self.nodes[i].dcs)
    }

    /// The live postmaster of node `i`.
    #[must_use]
    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        postmaster_pid(&self.nodes[i].dir.join("data"))
    }

    /// Kills node `i`'s postmaster with `SIGKILL`; whether one ran. Its agent restarts it.
    pub fn kill_postgres(&self, i: usize) -> bool {
        self.postmaster_pid(i)
            .is_some_and(|pid| kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok())
    }

    /// Freezes node `i`'s postmaster and its backends (they share its process group, as
    /// `pg_ctl` starts it in a session of its own); whether one ran.
    pub fn pause_postgres(&self, i: usize) -> bool {
        let Some(pid) = self.postmaster_pid(i) else {
            return false;
        };
        let frozen = killpg(Pid::from_raw(pid), Signal::SIGSTOP).is_ok();
        if frozen {
            *slot(&self.nodes[i].paused_postmaster) = Some(pid);
        }
        frozen
    }

    /// Thaws a postmaster frozen by [`pause_postgres`](Self::pause_postgres).
    pub fn resume_postgres(&self, i: usize) {
        if let Some(pid) = slot(&self.nodes[i].paused_postmaster).take() {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGCONT);
        }
    }

    /// Moves node `i`'s agent's wall clock by `offset_s` seconds from real time (0: back to
    /// real time). Only the agent sees it: libfaketime rereads the file on every call and
    /// fakes neither the monotonic clock nor any other program.
    pub fn set_clock(&self, i: usize, offset_s: i64) -> Result<(), ChaosError> {
        write(&self.nodes[i].clock_file, &format!("{offset_s:+}\n"))
    }

    /// Undoes every process fault: thaws, restarts and resets clocks (partitions and netem
    /// are the network's).
    pub fn heal(&self) -> Result<(), ChaosError> {
        for i in 0..self.nodes.len() {
            self.resume_postgres(i);
            self.resume_dcs(i)?;
            self.resume_agent(i)?;
            self.set_clock(i, 0)?;
            if slot(&self.nodes[i].dcs)
                .as_ref()
                .is_none_or(ServerProcess::has_exited)
            {
                self.start_dcs(i)?;
            }
            if slot(&self.nodes[i].agent)
                .as_ref()
                .is_none_or(ServerProcess::has_exited)
            {
                self.start_agent(i)?;
            }
        }
        Ok(())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.resume_postgres(i);
            let _ = self.resume_dcs(i);
        }
        let agents: Vec<ServerProcess> = self
            .nodes
            .iter()
            .filter_map(|node| slot(&node.agent).take())
            .collect();
        let data_dirs: Vec<PathBuf> = self.nodes.iter().map(|n| n.dir.join("data")).collect();
        stop_agents(agents, &data_dirs, &self.bin_dir, &self.user);
        for pid in slot(&self.agent_pids).iter() {
            let _ = std::fs::remove_file(format!("/dev/shm/faketime_shm_{pid}"));
            let _ = std::fs::remove_file(format!("/dev/shm/sem.faketime_sem_{pid}"));
        }
        // The DCS members' guards stop them as the nodes drop.
    }
}

/// Starts `spec` in `process` unless it runs; the new process id.
fn start(
    process: &Mutex<Option<ServerProcess>>,
    spec: &ProcessSpec,
) -> Result<Option<u32>, ChaosError> {
    let mut process = slot(process);
    if process.as_ref().is_some_and(|p| !p.has_exited()) {
        return Ok(None);
    }
    if let Some(old) = process.take() {
        old.kill()?;
    }
    let new = spec.spawn()?;
    let pid = new.pid();
    *process = Some(new);
    Ok(Some(pid))
}

fn pause(process: &Mutex<Option<ServerProcess>>) -> Result<(), ChaosError> {
    match slot(process).as_mut() {
        Some(p) if !p.has_exited() => Ok(p.pause()?),
        _ => Ok(()),
    }
}

fn resume(process: &Mutex<Option<ServerProcess>>) -> Result<(), ChaosError> {
    match slot(process).as_mut() {
        Some(p) if !p.has_exited() => Ok(p.resume()?),
        _ => Ok(()),
    }
}

/// `ip netns exec <ns> setpriv ... -- program`: the process group leader ends up being
/// `program` itself (both only `exec`), so group signals reach the server.
fn in_namespace(
    name: String,
    network: &Network,
    i: usize,
    log: PathBuf,
    user: Option<&OsUser>,
) -> ProcessSpec {
    let mut spec =
        ProcessSpec::new(name, "ip", log).with_args(["netns", "exec", &network.namespace(i)]);
    if let Some(user) = user {
        // Changing the uid clears the parent-death signal the outer setpriv set; set it again.
        spec = spec.with_args([
            "setpriv",
            "--reuid",
            &user.uid.to_string(),
            "--regid",
            &user.gid.to_string(),
            "--clear-groups",
            "--pdeathsig",
            "KILL",
            "--",
        ]);
    }
    spec
}

fn agent_spec(
    network: &Network,
    options: &ChaosOptions,
    i: usize,
    dir: &Path,
    agent: &Path,
    config: &Path,
    user: &OsUser,
) -> ProcessSpec {
    let mut spec = in_namespace(
        format!("ha-agent node{i}"),
        network,
        i,
        dir.join("agent.log"),
        Some(user),
    )
    // libfaketime is preloaded only after the switch to the agent's account: a preloaded
    // root process would create the library's shared memory where the agent cannot open it.
    .with_arg("env")
    .with_arg(format!("LD_PRELOAD={FAKETIME_LIB}"))
    .with_arg(format!(
        "FAKETIME_TIMESTAMP_FILE={}",
        dir.join("faketime").display()
    ))
    .with_args(["FAKETIME_NO_CACHE=1", "FAKETIME_DONT_FAKE_MONOTONIC=1"])
    // The postmaster and the tools the agent runs inherit the environment; only the agent
    // itself gets a wrong clock.
    .with_arg("FAKETIME_ONLY_CMDS=ha-agent")
    .with_arg(agent)
    .with_arg(config)
    .with_current_dir(dir)
    .with_env("HOME", dir);
    if options.negative_control {
        spec = spec.with_env(ha_agent::agent::UNSAFE_NEVER_DEMOTE_VAR, "1");
    }
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PATRONI_") {
            spec = spec.without_env(key);
        }
    }
    spec
}

fn dcs_spec(network: &Network, dcs: Dcs, i: usize, dir: &Path) -> Result<ProcessSpec, ChaosError> {
    let address = network.address(i);
    let log = dir.join("dcs.log");
    let spec = match dcs {
        Dcs::Etcd => {
            let cluster = (0..network.nodes())
                .map(|k| format!("m{k}=http://{}:{ETCD_PEER_PORT}", network.address(k)))
                .collect::<Vec<_>>()
                .join(",");
            let client = format!("http://{address}:{ETCD_CLIENT_PORT}");
            let peer = format!("http://{address}:{ETCD_PEER_PORT}");
            let mut spec = in_namespace(format!("etcd node{i}"), network, i, log, None)
                .with_args(["etcd", "--name", &format!("m{i}")])
                .with_arg("--data-dir")
                .with_arg(dir.join("etcd"))
                .with_args(["--listen-client-urls", &client])
                .with_args(["--advertise-client-urls", &client])
                .with_args(["--listen-peer-urls", &peer])
                .with_args(["--initial-advertise-peer-urls", &peer])
                .with_args(["--initial-cluster", &cluster])
                .with_args(["--initial-cluster-token", "chaos"])
                .with_args(["--initial-cluster-state", "new"])
                .with_args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
                .with_args(["--logger", "zap", "--log-outputs", "stderr"]);
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD_") {
                    spec = spec.without_env(key);
                }
            }
            spec
        }
        Dcs::ZooKeeper => {
            let java = crate::fixtures::zookeeper::java()?;
            let classpath = crate::fixtures::zookeeper::classpath()?;
            let data = dir.join("zk");
            mkdir(&data)?;
            write(&data.join("myid"), &format!("{}\n", i + 1))?;
            let mut servers = String::new();
            for k in 0..network.nodes() {
                let _ = writeln!(servers, "server.{}={}:2888:3888", k + 1, network.address(k));
            }
            let cfg = dir.join("zoo.cfg");
            write(
                &cfg,
                &format!(
                    "tickTime=500\ndataDir={}\nclientPort={ZK_CLIENT_PORT}\n\
                     clientPortAddress={address}\ninitLimit=40\nsyncLimit=6\n\
                     minSessionTimeout=1000\nmaxSessionTimeout=60000\n\
                     admin.enableServer=false\n4lw.commands.whitelist=ruok,srvr,stat,mntr\n\
                     extendedTypesEnabled=true\n{servers}",
                    data.display()
                ),
            )?;
            in_namespace(format!("zookeeper node{i}"), network, i, log, None)
                .with_arg(java)
                .with_args([
                    "-Xms32m",
                    "-Xmx256m",
                    "-XX:+UseSerialGC",
                    "-XX:TieredStopAtLevel=1",
                    "-XX:-UsePerfData",
                    "-Djava.net.preferIPv4Stack=true",
                    "-Dorg.slf4j.simpleLogger.showDateTime=true",
                ])
                .with_args(["-cp", &classpath])
                .with_arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
                .with_arg(cfg)
                .without_env("JAVA_TOOL_OPTIONS")
                .without_env("JDK_JAVA_OPTIONS")
        }
    };
    Ok(spec)
}

/// A Patroni configuration for node `i`; strings are JSON strings, which YAML reads as is.
fn agent_yaml(
    network: &Network,
    options: &ChaosOptions,
    i: usize,
    dir: &Path,
    bin_dir: &Path,
    password: &str,
) -> String {
    let q = |text: &str| Value::from(text).to_string();
    let path = |path: &Path| q(&path.to_string_lossy());
    let address = network.address(i);
    let (section, port) = match options.dcs {
        Dcs::Etcd => ("etcd3", ETCD_CLIENT_PORT),
        Dcs::ZooKeeper => ("zookeeper", ZK_CLIENT_PORT),
    };
    let hosts = (0..network.nodes())
        .map(|k| q(&format!("{}:{port}", network.address(k))))
        .collect::<Vec<_>>()
        .join(", ");
    let subnet = network.subnet();
    format!(
        "# Written by the dcs-tests chaos harness.
scope: chaos
name: node{i}

restapi:
  listen: {address}:{API_PORT}
  connect_address: {address}:{API_PORT}
  authentication:
    username: admin
    password: {password}

{section}:
  hosts: [{hosts}]

bootstrap:
  dcs:
    ttl: {ttl}
    loop_wait: {loop_wait}
    retry_timeout: {retry_timeout}
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      use_slots: true
      parameters:
        max_connections: 40
  initdb:
  - encoding: UTF8
  - locale: C
  - data-checksums
  pg_hba:
  - local all all trust
  - host replication replicator {subnet} md5
  - host all all {subnet} md5

postgresql:
  listen: {address}:{PG_PORT}
  connect_address: {address}:{PG_PORT}
  data_dir: {data_dir}
  bin_dir: {bin_dir}
  pgpass: {pgpass}
  authentication:
    superuser:
      username: {superuser}
      password: {password}
    replication:
      username: replicator
      password: {replication}
    rewind:
      username: rewind_user
      password: {rewind}
  # Written on every start on every node (bootstrap.pg_hba only reaches initdb's copy).
  pg_hba:
  - local all all trust
  - host replication replicator {subnet} md5
  - host all all {subnet} md5
  parameters:
    unix_socket_directories: {socket_dir}
    # Processes are killed, not machines: the kernel keeps unsynced writes.
    fsync: 'off'
    shared_buffers: 16MB
",
        password = q(password),
        ttl = options.ttl,
        loop_wait = options.loop_wait,
        retry_timeout = options.retry_timeout,
        data_dir = path(&dir.join("data")),
        bin_dir = path(bin_dir),
        pgpass = path(&dir.join("pgpass")),
        superuser = q(SUPERUSER),
        replication = q(&format!("rep-{password}")),
        rewind = q(&format!("rew-{password}")),
        socket_dir = path(dir),
    )
}

/// The last `lines` lines of a log (logs grow large; only the end is read).
fn log_tail(path: &Path, lines: usize) -> String {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let read = || -> std::io::Result<String> {
        let mut file = std::fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(32 * 1024)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            format!(
                "{}:\n{}",
                path.display(),
                all[all.len().saturating_sub(lines)..].join("\n")
            )
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

fn mkdir(path: &Path) -> Result<(), ChaosError> {
    std::fs::create_dir_all(path)
        .map_err(|source| ChaosError::io(format!("creating {}", path.display()), source))
}

fn write(path: &Path, text: &str) -> Result<(), ChaosError> {
    std::fs::write(path, text)
        .map_err(|source| ChaosError::io(format!("writing {}", path.display()), source))
}

fn chmod(path: &Path, mode: u32) -> Result<(), ChaosError> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|source| ChaosError::io(format!("chmod {}", path.display()), source))
}

/// Gives `path` to the servers' account.
pub(super) fn give(path: &Path, user: &OsUser) -> Result<(), ChaosError> {
    std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
        .map_err(|source| ChaosError::io(format!("chown {}", path.display()), source))
}
