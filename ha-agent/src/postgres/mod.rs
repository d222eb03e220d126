//! Control of the local PostgreSQL: the I/O half of the act step, with no HA logic.
//!
//! A [`Postgres`] runs PostgreSQL's own programs (`initdb`, `pg_ctl`, `psql`,
//! `pg_basebackup`, `pg_controldata`) as the server's [`OsUser`], each with a deadline, and
//! writes the two files the agent owns (`postgresql.conf`, `pg_hba.conf`; see [`conf`]).
//! Every failure is one [`PostgresError`].
//!
//! | Decision ([`crate::ha::Action`]) | Calls |
//! |---|---|
//! | `RaceToBootstrap` won | [`Postgres::initdb`], [`Postgres::start`] (no standby), [`Postgres::create_users`] |
//! | `CloneFrom { member }` | [`Postgres::clone_from`], then [`Postgres::start`] with [`Postgres::standby_settings`] |
//! | `StartPostgres { role }` | [`Postgres::start`] |
//! | `Follow { upstream, slot }` | [`Postgres::follow`] (running replica), else [`Postgres::restart`] |
//! | `Demote { mode }` | [`Postgres::stop`] ([`StopMode::Immediate`] or [`StopMode::Fast`]), [`Postgres::start`] as a replica |
//! | `Promote` | [`Postgres::promote`] |
//! | primary housekeeping | [`Postgres::create_slot`], [`Postgres::drop_slot`], [`Postgres::physical_slots`] |
//!
//! Observation uses [`Postgres::postmaster_pid`], [`Postgres::status`] (running) and
//! [`Postgres::data_dir_state`] / [`Postgres::control_data`] (running or not).
//!
//! # Guarantees, assumptions, caveats
//!
//! * Every program run has a deadline; one that misses it is killed and reported as
//!   [`PostgresError::Timeout`]. A killed `pg_ctl` leaves the server in whatever state it
//!   reached: observe again before acting.
//! * The postmaster is started by `pg_ctl`, which detaches it into its own session: it
//!   outlives the agent, as under Patroni, so an agent restart does not restart PostgreSQL.
//! * Passwords never appear in an argument list, where every local user could read them:
//!   they go through the environment (`PGPASSWORD`), an `initdb` password file, SQL on
//!   `psql`'s standard input (with statement logging off for that session), or
//!   `postgresql.conf` (`primary_conninfo`), which is `0600` and the server's.
//! * Files the agent writes are written whole (temporary file, then rename) and belong to
//!   the server's account.
//! * [`Postgres::postmaster_pid`] trusts `postmaster.pid` and a live process with that id;
//!   a recycled pid after a crash can make a stopped server look running until the next
//!   start fails (Patroni compares the process start time; not done yet).

mod command;
pub mod conf;
mod error;
mod session;
mod state;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::{Config, Credentials, InitdbOption};
use crate::ha::DataDir;
pub use command::OsUser;
use command::Run;
pub use conf::{Conninfo, ServerParameters, StandbySettings};
pub use error::PostgresError;
pub use state::{ControlData, ServerStatus, WalSender, parse_lsn};

/// How [`Postgres::stop`] shuts the server down (`pg_ctl stop -m`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for every client to disconnect: never used by the HA loop (a client could hold
    /// a switchover forever), offered for `ha-agent ctl`-driven maintenance.
    Smart,
    /// Disconnect clients, write a shutdown checkpoint: a replica that streamed everything
    /// has every commit. A graceful demotion (switchover).
    Fast,
    /// Stop at once without a checkpoint (crash recovery at the next start): the lease is
    /// lost and not one more write may be accepted.
    Immediate,
}

impl StopMode {
    /// The `pg_ctl -m` word.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Smart => "smart",
            Self::Fast => "fast",
            Self::Immediate => "immediate",
        }
    }
}

/// Everything [`Postgres`] needs to know, usually built by [`PostgresOptions::from_config`].
///
/// Fields are public so the caller can adjust one (the merged parameters after the DCS
/// `config` key changed, a socket directory in tests).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Where `pg_ctl`, `initdb`, ... are; `None`: found on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The data directory.
    pub data_dir: PathBuf,
    /// `listen_addresses`, on the command line.
    pub listen_addresses: String,
    /// `port`, on the command line.
    pub port: u16,
    /// `cluster_name`, on the command line: the scope, as Patroni sets it.
    pub cluster_name: String,
    /// This member's name: `application_name` of its replication connection.
    pub member_name: String,
    /// `authentication.superuser`: `initdb --username` and every query.
    pub superuser: Credentials,
    /// `authentication.replication`: created on the primary, used by replicas.
    pub replication: Credentials,
    /// `authentication.rewind`: created on the primary when set.
    pub rewind: Option<Credentials>,
    /// The server parameters: dynamic and local merged ([`conf::merged_parameters`]).
    pub parameters: Map<String, Value>,
    /// `postgresql.pg_hba`: the whole `pg_hba.conf`; empty keeps the file as it is.
    pub pg_hba: Vec<String>,
    /// The account PostgreSQL's programs run as.
    pub os_user: OsUser,
    /// The server's log (`pg_ctl start -l`); default: `<data_dir>.log` beside the data
    /// directory, so a base backup does not copy it.
    pub log_file: PathBuf,
    /// Deadline of `pg_ctl start`, `stop` and `promote` (`postgresql.pg_ctl_timeout`).
    pub pg_ctl_timeout: Duration,
    /// Deadline of a query, `pg_controldata` or a reload.
    pub command_timeout: Duration,
    /// Deadline of `initdb` and `pg_basebackup`.
    pub bootstrap_timeout: Duration,
    /// `postgresql.before_stop`, split into words: run before a fast or smart stop.
    pub before_stop: Option<Vec<String>>,
}

impl PostgresOptions {
    /// Options for `data_dir` with Patroni's defaults: port 5432 on localhost, superuser
    /// `postgres`, replication user `replicator`, no parameters, 60 s for `pg_ctl`, 30 s
    /// for a query, an hour for `initdb` and `pg_basebackup`.
    #[must_use]
    pub fn new(data_dir: impl Into<PathBuf>, os_user: OsUser) -> Self {
        let data_dir = data_dir.into();
        Self {
            bin_dir: None,
            log_file: default_log_file(&data_dir),
            data_dir,
            listen_addresses: "localhost".to_owned(),
            port: 5432,
            cluster_name: String::new(),
            member_name: String::new(),
            superuser: Credentials {
                username: "postgres".to_owned(),
                ..Credentials::default()
            },
            replication: Credentials {
                username: "replicator".to_owned(),
                ..Credentials::default()
            },
            rewind: None,
            parameters: Map::new(),
            pg_hba: Vec::new(),
            os_user,
            pg_ctl_timeout: Duration::from_secs(60),
            command_timeout: Duration::from_secs(30),
            bootstrap_timeout: Duration::from_secs(3600),
            before_stop: None,
        }
    }

    /// Options from the agent's configuration. `parameters` are the local ones; once the
    /// DCS `config` key is known, replace them with [`conf::merged_parameters`].
    #[must_use]
    pub fn from_config(config: &Config, os_user: OsUser) -> Self {
        let pg = &config.postgresql;
        let mut options = Self::new(&pg.data_dir, os_user);
        options.bin_dir.clone_from(&pg.bin_dir);
        options.listen_addresses.clone_from(&pg.listen.host);
        options.port = pg.listen.port;
        options.cluster_name.clone_from(&config.scope);
        options.member_name.clone_from(&config.name);
        options.superuser = pg.superuser.clone();
        options.replication = pg.replication.clone();
        options.rewind.clone_from(&pg.rewind);
        options.parameters = conf::merged_parameters(&config.bootstrap.dcs, &pg.parameters);
        options.pg_hba.clone_from(&pg.pg_hba);
        options.pg_ctl_timeout = Duration::from_secs(pg.pg_ctl_timeout);
        options.before_stop = pg
            .before_stop
            .as_deref()
            .and_then(crate::config::split_command);
        options
    }
}

fn default_log_file(data_dir: &Path) -> PathBuf {
    let mut name = data_dir.file_name().unwrap_or_default().to_os_string();
    name.push(".log");
    data_dir.with_file_name(name)
}

/// The longest the status query may take: the HA loop waits for it every cycle, and a
/// server that takes longer (frozen, overloaded) is reported as not answering.
pub const STATUS_DEADLINE: Duration = Duration::from_secs(5);

/// The local PostgreSQL server: its programs, data directory and files.
///
/// Methods take `&self` and hold no state beyond the options and the status query's
/// kept connection, so one value can be shared by the loop and a long action; the caller
/// makes sure only one action runs at a time.
#[derive(Clone, Debug)]
pub struct Postgres {
    options: PostgresOptions,
    session: session::Session,
}

impl Postgres {
    /// A handle for the server these options describe; nothing runs yet.
    #[must_use]
    pub fn new(options: PostgresOptions) -> Self {
        Self {
            options,
            session: session::Session::default(),
        }
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &PostgresOptions {
        &self.options
    }

    /// The options, to change the parameters or `pg_hba` lines for the next write.
    pub fn options_mut(&mut self) -> &mut PostgresOptions {
        &mut self.options
    }

    fn program(&self, name: &str) -> PathBuf {
        self.options
            .bin_dir
            .as_ref()
            .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
    }

    fn data(&self) -> String {
        self.options.data_dir.to_string_lossy().into_owned()
    }

    /// The directory programs run in: the data directory's parent, which the server's
    /// account can enter (the agent's own working directory may not be).
    fn work_dir(&self) -> &Path {
        self.options
            .data_dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or_else(|| Path::new("/"))
    }

    fn run(&self, program: &str, args: Vec<String>, timeout: Duration) -> Run<'_> {
        let shown = format!("{program} {}", args.join(" "));
        Run {
            program: self.program(program),
            args,
            user: &self.options.os_user,
            dir: self.work_dir(),
            env: Vec::new(),
            timeout,
            shown,
            parsed: matches!(program, "psql" | "pg_controldata"),
            stdin: None,
        }
    }

    // ---- data directory ----

    /// Whether the data directory is missing or empty (this member must bootstrap or
    /// clone), or initialized, with its system identifier.
    ///
    /// Runs every cycle, so it reads the identifier from `global/pg_control` itself (its
    /// first field, a native-endian 64-bit integer) instead of running `pg_controldata`.
    pub async fn data_dir_state(&self) -> Result<DataDir, PostgresError> {
        if is_empty_dir(&self.options.data_dir).await? {
            return Ok(DataDir::Empty);
        }
        let path = self.options.data_dir.join("global").join("pg_control");
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(|e| PostgresError::io("reading", &path, e))?;
        let Some(first) = bytes.first_chunk::<8>() else {
            return Err(PostgresError::Unexpected {
                command: format!("reading {}", path.display()),
                output: format!("{} bytes, too short for pg_control", bytes.len()),
            });
        };
        Ok(DataDir::Initialized {
            system_id: u64::from_ne_bytes(*first).to_string(),
        })
    }

    /// What `pg_control` says (`pg_controldata`): works while the server is stopped.
    pub async fn control_data(&self) -> Result<ControlData, PostgresError> {
        let output = self
            .run(
                "pg_controldata",
                vec![self.data()],
                self.options.command_timeout,
            )
            .output()
            .await?;
        state::parse_controldata(&String::from_utf8_lossy(&output.stdout))
    }

    /// The newest timeline with a history file (`pg_wal/0000000N.history`), 1 when there
    /// is none. A primary runs on exactly this timeline (a promotion writes the file and
    /// moves on to it), while its `pg_control` names the old one until the next checkpoint.
    pub async fn newest_history_timeline(&self) -> Result<u64, PostgresError> {
        let dir = self.options.data_dir.join("pg_wal");
        let mut entries = tokio::fs::read_dir(&dir)
            .await
            .map_err(|e| PostgresError::io("listing", &dir, e))?;
        let mut newest = 1;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| PostgresError::io("listing", &dir, e))?
        {
            let name = entry.file_name();
            if let Some(timeline) = name.to_str().and_then(state::history_file_timeline) {
                newest = newest.max(timeline);
            }
        }
        Ok(newest)
    }

    /// Creates a new cluster in the (missing or empty) data directory: `initdb` with the
    /// `bootstrap.initdb` options and `--username` = the superuser (with its password,
    /// through a password file), then the agent's `postgresql.conf` and `pg_hba.conf`
    /// (initdb's `postgresql.conf` becomes `postgresql.base.conf`).
    pub async fn initdb(&self, options: &[InitdbOption]) -> Result<(), PostgresError> {
        self.prepare_empty_data_dir().await?;
        let mut args = vec![
            "-D".to_owned(),
            self.data(),
            format!("--username={}", self.options.superuser.username),
        ];
        args.extend(options.iter().map(InitdbOption::to_arg));
        let pwfile = match &self.options.superuser.password {
            Some(password) => {
                let path = self
                    .work_dir()
                    .join(format!(".ha-agent-initdb-pw.{}", std::process::id()));
                write_owned(&path, format!("{password}\n"), &self.options.os_user).await?;
                args.push(format!("--pwfile={}", path.display()));
                Some(path)
            }
            None => None,
        };
        let result = self
            .run("initdb", args, self.options.bootstrap_timeout)
            .output()
            .await;
        if let Some(path) = pwfile {
            // The password must not stay on disk whether or not initdb worked.
            let _ = tokio::fs::remove_file(&path).await;
        }
        result?;
        self.adopt_base_conf().await?;
        self.write_config(None).await.map(|_| ())
    }

    /// Appends lines to `pg_hba.conf` (`bootstrap.pg_hba`, right after [`initdb`](Self::initdb),
    /// as Patroni does when `postgresql.pg_hba` is not set).
    pub async fn append_pg_hba(&self, lines: &[String]) -> Result<(), PostgresError> {
        let path = self.options.data_dir.join("pg_hba.conf");
        let mut text = tokio::fs::read_to_string(&path)
            .await
            .map_err(|e| PostgresError::io("reading", &path, e))?;
        for line in lines {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(line);
            text.push('\n');
        }
        write_owned(&path, text, &self.options.os_user).await
    }

    /// Takes a base backup of the member at `source` (a [`Conninfo`], e.g. from its
    /// `conn_url`) into the missing or empty data directory, as the replication user
    /// (`pg_basebackup -X stream -c fast`). Start it with [`start`](Self::start) and
    /// [`standby_settings`](Self::standby_settings) afterwards. A failed clone leaves a
    /// partial data directory: empty it before trying again.
    pub async fn clone_from(&self, source: &Conninfo) -> Result<(), PostgresError> {
        self.prepare_empty_data_dir().await?;
        let conninfo = Self::with_credentials(source.clone(), &self.options.replication);
        let mut run = self.run(
            "pg_basebackup",
            vec![
                "-D".to_owned(),
                self.data(),
                "-X".to_owned(),
                "stream".to_owned(),
                "-c".to_owned(),
                "fast".to_owned(),
                "--no-password".to_owned(),
                "-d".to_owned(),
                conninfo.redacted(),
            ],
            self.options.bootstrap_timeout,
        );
        run.shown = format!(
            "pg_basebackup -D {} -X stream -c fast -d {}",
            self.data(),
            conninfo.redacted()
        );
        if let Some(password) = &self.options.replication.password {
            run.env.push(("PGPASSWORD", password.clone()));
        }
        run.output().await?;
        // The source's postgresql.conf is its agent's (or its own, if not managed); either
        // way the base file is what the next write includes.
        self.adopt_base_conf().await
    }

    /// Rewinds this stopped former primary's data directory onto `source`'s timeline
    /// (`pg_rewind`), as the `rewind` user (or the superuser when none is configured).
    ///
    /// The server must have been shut down cleanly (as a primary or in recovery);
    /// `pg_rewind` says "no rewind required" and changes nothing when the histories did
    /// not diverge. It copies the source's configuration files too: the next
    /// [`Postgres::start`] writes ours again.
    ///
    /// # Errors
    /// [`PostgresError`]: `pg_rewind` failed or missed `bootstrap_timeout`.
    pub async fn rewind(&self, source: &Conninfo) -> Result<(), PostgresError> {
        let credentials = self
            .options
            .rewind
            .as_ref()
            .unwrap_or(&self.options.superuser);
        let conninfo = Self::with_credentials(source.clone(), credentials);
        let mut run = self.run(
            "pg_rewind",
            vec![
                "-D".to_owned(),
                self.data(),
                "--no-sync".to_owned(),
                "--source-server".to_owned(),
                conninfo.redacted(),
            ],
            self.options.bootstrap_timeout,
        );
        if let Some(password) = &credentials.password {
            run.env.push(("PGPASSWORD", password.clone()));
        }
        run.output().await.map(|_| ())
    }

    /// The standby settings for streaming from `upstream` (a [`Conninfo`] of the member,
    /// e.g. from its `conn_url`) through the physical slot `slot` (as
    /// [`dcs_core::model::slot_name_from_member_name`] names it): `primary_conninfo` with
    /// the replication user, its password and options, and `application_name` = this
    /// member's name, as Patroni writes it.
    #[must_use]
    pub fn standby_settings(&self, upstream: &Conninfo, slot: Option<&str>) -> StandbySettings {
        let conninfo = Self::with_credentials(upstream.clone(), &self.options.replication)
            .with("application_name", &self.options.member_name);
        let conninfo = match &self.options.replication.password {
            Some(password) => conninfo.with("password", password),
            None => conninfo,
        };
        StandbySettings {
            primary_conninfo: conninfo.to_string(),
            primary_slot_name: slot.map(str::to_owned),
        }
    }

    fn with_credentials(conninfo: Conninfo, credentials: &Credentials) -> Conninfo {
        let mut conninfo = conninfo.with("user", &credentials.username);
        for (key, value) in &credentials.options {
            conninfo = conninfo.with(key, value);
        }
        conninfo
    }

    async fn prepare_empty_data_dir(&self) -> Result<(), PostgresError> {
        let dir = &self.options.data_dir;
        if !is_empty_dir(dir).await? {
            return Err(PostgresError::DataDirNotEmpty { path: dir.clone() });
        }
        if tokio::fs::metadata(dir).await.is_err() {
            // initdb and pg_basebackup could create it, but only if the account may write
            // the parent; the agent (root) creates it for them.
            tokio::fs::create_dir(dir)
                .await
                .map_err(|e| PostgresError::io("creating", dir, e))?;
        }
        let (dir, user) = (dir.clone(), self.options.os_user.clone());
        blocking(move || {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
                .and_then(|()| give(&dir, &user))
                .map_err(|e| PostgresError::io("giving the data directory to the account", dir, e))
        })
        .await
    }

    /// Moves a `postgresql.conf` not written by the agent to `postgresql.base.conf`
    /// (Patroni's layout), unless a base file is already there.
    async fn adopt_base_conf(&self) -> Result<(), PostgresError> {
        let conf = self.options.data_dir.join("postgresql.conf");
        let base = self.options.data_dir.join("postgresql.base.conf");
        if tokio::fs::metadata(&base).await.is_ok() {
            return Ok(());
        }
        tokio::fs::rename(&conf, &base)
            .await
            .map_err(|e| PostgresError::io("renaming to postgresql.base.conf", &conf, e))
    }

    /// Writes `postgresql.conf` (and `pg_hba.conf` when configured) for a primary
    /// (`standby: None`) or a replica; returns whether anything changed, so that the caller
    /// reloads only then. `standby.signal` is not touched: [`start`](Self::start) does that.
    pub async fn write_config(
        &self,
        standby: Option<&StandbySettings>,
    ) -> Result<bool, PostgresError> {
        let split = self.server_parameters();
        let mut changed = self
            .write_if_changed(
                "postgresql.conf",
                conf::postgresql_conf(&split.file, standby),
            )
            .await?;
        if !self.options.pg_hba.is_empty() {
            changed |= self
                .write_if_changed("pg_hba.conf", conf::pg_hba_conf(&self.options.pg_hba))
                .await?;
        }
        Ok(changed)
    }

    /// The parameters as the next start passes them.
    #[must_use]
    pub fn server_parameters(&self) -> ServerParameters {
        ServerParameters::split(
            &self.options.parameters,
            &self.options.listen_addresses,
            self.options.port,
            &self.options.cluster_name,
        )
    }

    async fn write_if_changed(&self, name: &str, text: String) -> Result<bool, PostgresError> {
        let path = self.options.data_dir.join(name);
        if tokio::fs::read_to_string(&path).await.ok().as_deref() == Some(text.as_str()) {
            return Ok(false);
        }
        write_owned(&path, text, &self.options.os_user).await?;
        Ok(true)
    }

    // ---- process control ----

    /// The postmaster's process id, from `postmaster.pid`, when that process is alive;
    /// `None` when the server is not running.
    pub async fn postmaster_pid(&self) -> Result<Option<u32>, PostgresError> {
        let path = self.options.data_dir.join("postmaster.pid");
        let text = match tokio::fs::read_to_string(&path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(PostgresError::io("reading", path, e)),
        };
        let Some(pid) = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok())
        else {
            // Written but not yet filled in: a postmaster is starting.
            return Ok(None);
        };
        let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            // EPERM: alive, owned by an account we may not signal.
            Ok(()) | Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        };
        Ok(alive.then_some(pid.unsigned_abs()))
    }

    /// Whether a postmaster runs on the data directory.
    pub async fn is_running(&self) -> Result<bool, PostgresError> {
        Ok(self.postmaster_pid().await?.is_some())
    }

    /// Starts the server and waits until it accepts connections (`pg_ctl start -w`):
    /// as a primary when `standby` is `None`, else as a replica streaming as `standby`
    /// says (`standby.signal` is created, or removed for a primary). Writes the
    /// configuration first; the command-line parameters go to `postgres` through
    /// `pg_ctl -o`, as Patroni passes them.
    ///
    /// A server that is already running is an error (`pg_ctl` refuses). A
    /// [`PostgresError::Failed`] or [`PostgresError::Timeout`] with
    /// [`is_running`](Self::is_running) still true means the server is starting but not
    /// ready within `pg_ctl_timeout` (a replica replaying a lot of WAL, an unreachable
    /// upstream before consistency): observe it as starting, do not start it again.
    pub async fn start(&self, standby: Option<&StandbySettings>) -> Result<(), PostgresError> {
        self.write_config(standby).await?;
        let signal = self.options.data_dir.join("standby.signal");
        if standby.is_some() {
            write_owned(&signal, String::new(), &self.options.os_user).await?;
        } else {
            match tokio::fs::remove_file(&signal).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(PostgresError::io("removing", signal, e));
                }
                _ => {}
            }
        }
        let timeout = self.options.pg_ctl_timeout;
        let args = vec![
            "start".to_owned(),
            "-w".to_owned(),
            "-t".to_owned(),
            timeout.as_secs().max(1).to_string(),
            "-D".to_owned(),
            self.data(),
            "-l".to_owned(),
            self.options.log_file.to_string_lossy().into_owned(),
            "-o".to_owned(),
            self.server_parameters().cmdline_options(),
        ];
        // pg_ctl's own deadline comes first; ours catches a pg_ctl that hangs anyway.
        match self
            .run("pg_ctl", args, timeout + Duration::from_secs(5))
            .output()
            .await
        {
            Err(PostgresError::Failed {
                command,
                status,
                output,
            }) => Err(PostgresError::Failed {
                command,
                status,
                output: format!("{output}\n{}", self.log_tail().await),
            }),
            other => other.map(|_| ()),
        }
    }

    /// Stops the server (`pg_ctl stop -m <mode> -w`); `Ok(false)` when it was not running.
    pub async fn stop(&self, mode: StopMode) -> Result<bool, PostgresError> {
        // A smart shutdown waits for every session, the status query's kept one too.
        self.session.close().await;
        if !self.is_running().await? {
            return Ok(false);
        }
        let timeout = self.options.pg_ctl_timeout;
        // Patroni runs it before every stop; an emergency stop (the lease is lost) does
        // not wait for a script.
        if let Some(words) = self.options.before_stop.as_deref()
            && mode != StopMode::Immediate
        {
            match self.run_script(words, timeout).await {
                Ok(()) => tracing::info!("before_stop script `{}` succeeded", words.join(" ")),
                Err(error) => tracing::warn!("before_stop script: {error}"),
            }
        }
        let args = vec![
            "stop".to_owned(),
            "-m".to_owned(),
            mode.as_str().to_owned(),
            "-w".to_owned(),
            "-t".to_owned(),
            timeout.as_secs().max(1).to_string(),
            "-D".to_owned(),
            self.data(),
        ];
        match self
            .run("pg_ctl", args, timeout + Duration::from_secs(5))
            .output()
            .await
        {
            Ok(_) => Ok(true),
            // It stopped between our check and pg_ctl's (a crash, another stop).
            Err(PostgresError::Failed { .. }) if !self.is_running().await? => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Runs a configured script (`before_stop`, `pre_promote`) as the server's account,
    /// without a shell, and waits at most `timeout` for it.
    ///
    /// # Errors
    /// It could not be run, exited with a failure (its status and last lines in the
    /// error) or ran out of time (then it is killed).
    pub async fn run_script(
        &self,
        words: &[String],
        timeout: Duration,
    ) -> Result<(), PostgresError> {
        let Some((program, args)) = words.split_first() else {
            return Ok(());
        };
        Run {
            program: PathBuf::from(program),
            args: args.to_vec(),
            user: &self.options.os_user,
            dir: self.work_dir(),
            env: Vec::new(),
            timeout,
            shown: words.join(" "),
            parsed: false,
            stdin: None,
        }
        .output()
        .await
        .map(|_| ())
    }

    /// Stops (if running) with `mode` and starts again as [`start`](Self::start) does.
    pub async fn restart(
        &self,
        mode: StopMode,
        standby: Option<&StandbySettings>,
    ) -> Result<(), PostgresError> {
        self.stop(mode).await?;
        self.start(standby).await
    }

    /// Makes the server re-read its configuration files (`pg_ctl reload`).
    pub async fn reload(&self) -> Result<(), PostgresError> {
        let args = vec!["reload".to_owned(), "-D".to_owned(), self.data()];
        self.run("pg_ctl", args, self.options.command_timeout)
            .output()
            .await
            .map(|_| ())
    }

    /// Promotes the replica and waits until it accepts writes (`pg_ctl promote -w`); it
    /// continues on a new timeline. The standby settings stay in `postgresql.conf` until the
    /// next [`write_config`](Self::write_config)`(None)`, harmlessly: without
    /// `standby.signal` they are not used.
    pub async fn promote(&self) -> Result<(), PostgresError> {
        let timeout = self.options.pg_ctl_timeout;
        let args = vec![
            "promote".to_owned(),
            "-w".to_owned(),
            "-t".to_owned(),
            timeout.as_secs().max(1).to_string(),
            "-D".to_owned(),
            self.data(),
        ];
        self.run("pg_ctl", args, timeout + Duration::from_secs(5))
            .output()
            .await
            .map(|_| ())
    }

    /// Points the running replica at another upstream or slot: rewrites
    /// `primary_conninfo`/`primary_slot_name` and reloads (PostgreSQL 13+ reconnects the
    /// WAL receiver without a restart). Returns whether anything changed; nothing is
    /// reloaded when not.
    pub async fn follow(&self, standby: &StandbySettings) -> Result<bool, PostgresError> {
        let changed = self.write_config(Some(standby)).await?;
        if changed {
            self.reload().await?;
        }
        Ok(changed)
    }

    async fn log_tail(&self) -> String {
        let path = &self.options.log_file;
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "log {}:\n{}",
                    path.display(),
                    lines[lines.len().saturating_sub(10)..].join("\n")
                )
            }
            Err(_) => format!("(no log at {})", path.display()),
        }
    }

    // ---- queries ----

    /// Runs `sql` as the superuser through `psql -X -A -t` and returns its output without
    /// the final newline (`SELECT 1` gives `"1"`; columns are `|`-separated, NULL empty).
    /// Several `;`-separated statements run one after another, each in its own
    /// transaction; the first error stops them.
    pub async fn query(&self, sql: &str) -> Result<String, PostgresError> {
        self.psql(sql, format!("psql: {sql}")).await
    }

    /// [`query`](Self::query) with the command shown in errors chosen by the caller (SQL
    /// reaches `psql` on its standard input, never in its arguments).
    async fn psql(&self, sql: &str, shown: String) -> Result<String, PostgresError> {
        let mut run = self.run(
            "psql",
            vec![
                "-X".to_owned(),
                "-A".to_owned(),
                "-t".to_owned(),
                "-q".to_owned(),
                "-v".to_owned(),
                "ON_ERROR_STOP=1".to_owned(),
                "--no-password".to_owned(),
                "-h".to_owned(),
                self.local_host(),
                "-p".to_owned(),
                self.options.port.to_string(),
                "-U".to_owned(),
                self.options.superuser.username.clone(),
                "-d".to_owned(),
                "postgres".to_owned(),
                "-f".to_owned(),
                "-".to_owned(),
            ],
            self.options.command_timeout,
        );
        run.shown = shown;
        run.stdin = Some(format!("{sql}\n;\n"));
        if let Some(password) = &self.options.superuser.password {
            run.env.push(("PGPASSWORD", password.clone()));
        }
        run.env.push((
            "PGCONNECT_TIMEOUT",
            self.options.command_timeout.as_secs().max(2).to_string(),
        ));
        let output = run.output().await?;
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(text.strip_suffix('\n').unwrap_or(&text).to_owned())
    }

    /// Where `psql` connects: the first absolute `unix_socket_directories` entry, else the
    /// first listen address (a wildcard meaning loopback).
    fn local_host(&self) -> String {
        let socket = self
            .options
            .parameters
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("unix_socket_directories"))
            .and_then(|(_, v)| v.as_str())
            .and_then(|dirs| dirs.split(',').map(str::trim).find(|d| d.starts_with('/')));
        if let Some(dir) = socket {
            return dir.to_owned();
        }
        match self
            .options
            .listen_addresses
            .split(',')
            .map(str::trim)
            .next()
            .unwrap_or_default()
        {
            "" | "*" | "0.0.0.0" => "127.0.0.1".to_owned(),
            "::" => "::1".to_owned(),
            host => host.to_owned(),
        }
    }

    /// The running server's role, timeline, WAL positions, WAL receiver state and system
    /// identifier, in one query.
    ///
    /// The query runs over a kept connection, with a deadline of at most
    /// [`STATUS_DEADLINE`] (the loop waits for it); when no connection can be had (an
    /// authentication method the client lacks, a password only in `.pgpass`) or it broke,
    /// through `psql`. A server that does not answer in time is not asked twice.
    pub async fn status(&self) -> Result<ServerStatus, PostgresError> {
        let deadline = self.options.command_timeout.min(STATUS_DEADLINE);
        match self
            .session
            .query_row(&self.session_config(), state::STATUS_SQL, deadline)
            .await
        {
            Ok(row) => state::parse_status(&row),
            Err(session::SessionError::Timeout) => Err(PostgresError::Timeout {
                command: "the status query".to_owned(),
                after: deadline,
            }),
            Err(error) => {
                tracing::debug!("status over the kept connection failed ({error}); using psql");
                state::parse_status(&self.query(state::STATUS_SQL).await?)
            }
        }
    }

    /// How the kept connection reaches the server: as `psql` does.
    fn session_config(&self) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host(self.local_host())
            .port(self.options.port)
            .user(&self.options.superuser.username)
            .dbname("postgres")
            .application_name("ha-agent")
            .connect_timeout(self.options.command_timeout.max(Duration::from_secs(2)));
        if let Some(password) = &self.options.superuser.password {
            config.password(password);
        }
        config
    }

    /// Creates (or updates the password of) the replication user and, when configured,
    /// the rewind user, on the running primary after bootstrap, as Patroni does: the
    /// replication user has `LOGIN REPLICATION`, the rewind user `LOGIN` and `EXECUTE` on
    /// the four functions `pg_rewind` needs.
    pub async fn create_users(&self) -> Result<(), PostgresError> {
        let replication = &self.options.replication;
        if replication.username != self.options.superuser.username {
            self.create_or_update_role(replication, "LOGIN REPLICATION")
                .await?;
        }
        let rewind = self
            .options
            .rewind
            .as_ref()
            .filter(|rewind| rewind.username != self.options.superuser.username);
        if let Some(rewind) = rewind {
            self.create_or_update_role(rewind, "LOGIN").await?;
            let role = quote_ident(&rewind.username);
            for function in [
                "pg_catalog.pg_ls_dir(text, boolean, boolean)",
                "pg_catalog.pg_stat_file(text, boolean)",
                "pg_catalog.pg_read_binary_file(text)",
                "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
            ] {
                self.query(&format!("GRANT EXECUTE ON FUNCTION {function} TO {role}"))
                    .await?;
            }
        }
        Ok(())
    }

    async fn create_or_update_role(
        &self,
        credentials: &Credentials,
        attributes: &str,
    ) -> Result<(), PostgresError> {
        let exists = self
            .query(&format!(
                "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {}",
                quote_literal(&credentials.username)
            ))
            .await?
            == "1";
        let verb = if exists { "ALTER" } else { "CREATE" };
        let password = credentials.password.as_deref().map_or_else(
            || "PASSWORD NULL".to_owned(),
            |p| format!("PASSWORD {}", quote_literal(p)),
        );
        // The statement carries the password: the server must not log it, whatever its
        // logging settings (Patroni does the same), and our errors must not show it.
        let sql = format!(
            "SET log_statement TO 'none';\n\
             SET log_min_duration_statement TO -1;\n\
             SET log_min_error_statement TO 'panic';\n\
             {verb} ROLE {} WITH {attributes} {password}",
            quote_ident(&credentials.username)
        );
        self.psql(&sql, format!("{verb} ROLE {}", credentials.username))
            .await
            .map(|_| ())
    }

    /// Creates the physical replication slot `name` on the primary, reserving WAL at once,
    /// unless it exists; returns whether it was created.
    pub async fn create_slot(&self, name: &str) -> Result<bool, PostgresError> {
        let literal = quote_literal(name);
        let created = self
            .query(&format!(
                // A WHERE without FROM gates the select list: the function runs only
                // when the slot is missing.
                "SELECT count(*) FROM (SELECT pg_catalog.pg_create_physical_replication_slot(\
                 {literal}, true) WHERE NOT EXISTS (SELECT 1 FROM \
                 pg_catalog.pg_replication_slots WHERE slot_name = {literal})) AS created"
            ))
            .await?;
        Ok(created == "1")
    }

    /// Drops the replication slot `name` unless it is missing or in use (a connected
    /// replica); returns whether it was dropped.
    pub async fn drop_slot(&self, name: &str) -> Result<bool, PostgresError> {
        let literal = quote_literal(name);
        let dropped = self
            .query(&format!(
                // The count of rows the drop ran for (the function returns void).
                "SELECT count(*) FROM (SELECT pg_catalog.pg_drop_replication_slot(slot_name) \
                 FROM pg_catalog.pg_replication_slots \
                 WHERE slot_name = {literal} AND NOT active) AS dropped"
            ))
            .await?;
        Ok(dropped == "1")
    }

    /// The physical replication slots and their `restart_lsn` in bytes (`None` before the
    /// slot reserved WAL), by name.
    pub async fn physical_slots(&self) -> Result<Vec<(String, Option<u64>)>, PostgresError> {
        let output = self
            .query(
                "SELECT slot_name, restart_lsn - '0/0' FROM pg_catalog.pg_replication_slots \
                 WHERE slot_type = 'physical' ORDER BY slot_name",
            )
            .await?;
        output
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| {
                let (name, lsn) =
                    line.split_once('|')
                        .ok_or_else(|| PostgresError::Unexpected {
                            command: "the slot query".to_owned(),
                            output: output.clone(),
                        })?;
                Ok((name.to_owned(), lsn.parse().ok()))
            })
            .collect()
    }
}

/// A string literal for SQL, correct whatever `standard_conforming_strings` says.
fn quote_literal(text: &str) -> String {
    format!("E'{}'", text.replace('\\', "\\\\").replace('\'', "''"))
}

/// An identifier for SQL, always quoted (a role name may be a keyword or mixed case).
fn quote_ident(text: &str) -> String {
    format!("\"{}\"", text.replace('"', "\"\""))
}

async fn is_empty_dir(dir: &Path) -> Result<bool, PostgresError> {
    match tokio::fs::read_dir(dir).await {
        Ok(mut entries) => Ok(entries
            .next_entry()
            .await
            .map_err(|e| PostgresError::io("reading", dir, e))?
            .is_none()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(true),
        Err(e) => Err(PostgresError::io("reading", dir, e)),
    }
}

/// Writes `path` whole (a temporary file renamed over it), `0600`, owned by `user`.
async fn write_owned(path: &Path, text: String, user: &OsUser) -> Result<(), PostgresError> {
    let (path, user) = (path.to_owned(), user.clone());
    blocking(move || {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut tmp = path.clone().into_os_string();
        tmp.push(".ha-agent-tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            give(&tmp, &user)?;
            std::fs::rename(&tmp, &path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            PostgresError::io("writing", path.clone(), e)
        })
    })
    .await
}

/// Gives `path` to `user` when the agent runs as another account (root).
fn give(path: &Path, user: &OsUser) -> std::io::Result<()> {
    if user.is_current() {
        Ok(())
    } else {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid))
    }
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, PostgresError> + Send + 'static,
) -> Result<T, PostgresError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|join| std::panic::resume_unwind(join.into_panic()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_quoting_keeps_quotes_and_backslashes_inside() {
        assert_eq!(quote_literal(r"it's a \ path"), r"E'it''s a \\ path'");
        assert_eq!(quote_ident(r#"Rep"lica"#), r#""Rep""lica""#);
    }

    #[test]
    fn the_server_log_lives_beside_the_data_directory() {
        assert_eq!(
            default_log_file(Path::new("/var/lib/pg/data")),
            PathBuf::from("/var/lib/pg/data.log")
        );
    }

    #[test]
    fn psql_uses_the_socket_directory_else_a_listen_address() {
        let mut options = PostgresOptions::new("/d", OsUser::current());
        options.listen_addresses = "*".to_owned();
        assert_eq!(Postgres::new(options.clone()).local_host(), "127.0.0.1");
        options.listen_addresses = "10.0.0.1,127.0.0.1".to_owned();
        assert_eq!(Postgres::new(options.clone()).local_host(), "10.0.0.1");
        options.parameters.insert(
            "unix_socket_directories".to_owned(),
            Value::String("@abstract, /run/pg".to_owned()),
        );
        assert_eq!(Postgres::new(options).local_host(), "/run/pg");
    }

    #[test]
    fn standby_settings_name_this_member_and_carry_the_replication_password() {
        let mut options = PostgresOptions::new("/d", OsUser::current());
        options.member_name = "pg1".to_owned();
        options.replication.password = Some("s3cret".to_owned());
        options
            .replication
            .options
            .push(("sslmode".to_owned(), "require".to_owned()));
        let upstream = Conninfo::from_conn_url("postgres://10.0.0.1:5432/postgres").unwrap();
        let standby = Postgres::new(options).standby_settings(&upstream, Some("pg1"));
        assert_eq!(
            standby.primary_conninfo,
            "host=10.0.0.1 port=5432 dbname=postgres user=replicator sslmode=require \
             application_name=pg1 password=s3cret"
        );
        assert_eq!(standby.primary_slot_name.as_deref(), Some("pg1"));
    }
}
