//! `ha_agent::postgres` against real PostgreSQL: bootstrap a primary, clone a streaming
//! replica through a slot, promote it, and stop servers every way the HA loop does.
//!
//! Skips (or fails with `DCS_TEST_REQUIRE=postgres`) when PostgreSQL is not installed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dcs_tests::fixtures::postgres::{bin_dir, server_user};
use dcs_tests::require::skip_or_fail;
use ha_agent::config::{Credentials, InitdbOption};
use ha_agent::postgres::{
    Conninfo, OsUser, Postgres, PostgresError, PostgresOptions, ServerStatus, StopMode,
};
use serde_json::Value;

/// How long a replica may take to connect and catch up on two busy cores.
const CATCH_UP: Duration = Duration::from_secs(30);

/// Stops every server it knows when the test ends, also when it panics.
struct Servers {
    bin_dir: PathBuf,
    user: OsUser,
    data_dirs: Vec<PathBuf>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        use std::os::unix::process::CommandExt as _;
        for data in &self.data_dirs {
            if !data.join("postmaster.pid").exists() {
                continue;
            }
            let mut command = std::process::Command::new(self.bin_dir.join("pg_ctl"));
            command
                .args(["stop", "-m", "immediate", "-w", "-D"])
                .arg(data)
                .current_dir("/")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null());
            if !self.user.is_current() {
                command.uid(self.user.uid).gid(self.user.gid);
            }
            let _ = command.status();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

fn member(dir: &Path, name: &str, bin_dir: &Path, user: &OsUser) -> (Postgres, PathBuf) {
    let data_dir = dir.join(name);
    let mut options = PostgresOptions::new(&data_dir, user.clone());
    options.bin_dir = Some(bin_dir.to_owned());
    "127.0.0.1".clone_into(&mut options.listen_addresses);
    options.port = free_port();
    "batman".clone_into(&mut options.cluster_name);
    name.clone_into(&mut options.member_name);
    options.superuser = Credentials {
        username: "postgres".to_owned(),
        password: Some("super 'secret'".to_owned()),
        options: Vec::new(),
    };
    options.replication = Credentials {
        username: "replicator".to_owned(),
        password: Some("rep-pass".to_owned()),
        options: Vec::new(),
    };
    options.rewind = Some(Credentials {
        username: "rewind_user".to_owned(),
        password: Some("rewind-pass".to_owned()),
        options: Vec::new(),
    });
    for (key, value) in [
        (
            "unix_socket_directories",
            dir.to_string_lossy().into_owned(),
        ),
        // Durability is not under test; a crash here kills a process, not the machine.
        ("fsync", "off".to_owned()),
        ("max_wal_senders", "5".to_owned()),
    ] {
        options
            .parameters
            .insert(key.to_owned(), Value::String(value));
    }
    // Every connection needs its password: the test proves they reach the server.
    options.pg_hba = vec![
        "local all all scram-sha-256".to_owned(),
        "host all all 127.0.0.1/32 scram-sha-256".to_owned(),
        "host replication replicator 127.0.0.1/32 scram-sha-256".to_owned(),
    ];
    (Postgres::new(options), data_dir)
}

/// Polls `check` until it gives `Some`, for at most [`CATCH_UP`].
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + CATCH_UP;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {CATCH_UP:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn primary_replica_promotion_and_stop_modes_on_real_postgres() {
    let (bin_dir, user) = match (bin_dir(), server_user().await) {
        (Ok(bin_dir), Ok(user)) if bin_dir.join("pg_ctl").is_file() => (bin_dir, user),
        (Err(e), _) | (_, Err(e)) => return skip_or_fail("postgres", e),
        (Ok(bin_dir), Ok(_)) => {
            return skip_or_fail("postgres", format!("no pg_ctl in {}", bin_dir.display()));
        }
    };
    let user = OsUser {
        name: user.name,
        uid: user.uid,
        gid: user.gid,
    };
    let dir = tempfile::Builder::new()
        .prefix("ha-agent-postgres-")
        .tempdir()
        .unwrap();
    if !user.is_current() {
        std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid)).unwrap();
    }
    let (primary, primary_data) = member(dir.path(), "pg0", &bin_dir, &user);
    let (replica, replica_data) = member(dir.path(), "pg1", &bin_dir, &user);
    let _servers = Servers {
        bin_dir: bin_dir.clone(),
        user: user.clone(),
        data_dirs: vec![primary_data.clone(), replica_data.clone()],
    };

    let system_id = bootstrap_primary(&primary, &primary_data).await;
    let slot = clone_streaming_replica(&primary, &replica, &replica_data, &system_id).await;
    promote_and_release_the_slot(&primary, &replica, &slot).await;
    stop_modes(&primary, &replica, &replica_data).await;
}

/// initdb with `bootstrap.initdb` options, start as primary, create the users and a row.
async fn bootstrap_primary(primary: &Postgres, primary_data: &Path) -> String {
    assert_eq!(
        primary.data_dir_state().await.unwrap(),
        ha_agent::ha::DataDir::Empty
    );
    primary
        .initdb(&[
            InitdbOption::Value("encoding".to_owned(), "UTF8".to_owned()),
            InitdbOption::Value("locale".to_owned(), "C".to_owned()),
            InitdbOption::Flag("data-checksums".to_owned()),
            InitdbOption::Flag("no-sync".to_owned()),
        ])
        .await
        .unwrap();
    let conf = std::fs::read_to_string(primary_data.join("postgresql.conf")).unwrap();
    assert!(conf.contains("include 'postgresql.base.conf'"), "{conf}");
    assert!(primary_data.join("postgresql.base.conf").is_file());
    assert!(!primary.is_running().await.unwrap());
    let control = primary.control_data().await.unwrap();
    assert_eq!(
        primary.data_dir_state().await.unwrap(),
        ha_agent::ha::DataDir::Initialized {
            system_id: control.system_id.clone()
        }
    );

    primary.start(None).await.unwrap();
    assert!(primary.postmaster_pid().await.unwrap().is_some());
    let status = primary.status().await.unwrap();
    assert!(!status.in_recovery);
    assert_eq!(status.timeline, Some(1));
    assert!(status.wal.flush.is_some_and(|lsn| lsn > 0));
    assert_eq!(status.system_id, control.system_id);
    let kept = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ha-agent'";
    assert_eq!(
        primary.query(kept).await.unwrap(),
        "1",
        "the status query runs over a kept connection, not a psql run"
    );
    assert_eq!(primary.status().await.unwrap().system_id, status.system_id);
    assert_eq!(primary.query(kept).await.unwrap(), "1", "and reuses it");
    assert_eq!(
        primary.query("SHOW cluster_name").await.unwrap(),
        "batman",
        "the command-line parameters reach the server"
    );
    assert_eq!(primary.query("SHOW fsync").await.unwrap(), "off");
    let error = primary.query("SELECT * FROM missing").await.unwrap_err();
    assert!(
        matches!(&error, PostgresError::Failed { output, .. } if output.contains("does not exist")),
        "a failed statement is an error with the server's message: {error}"
    );
    assert_eq!(primary.query("SHOW wal_log_hints").await.unwrap(), "on");

    primary.create_users().await.unwrap();
    assert_eq!(
        primary
            .query(
                "SELECT rolreplication, has_function_privilege('rewind_user', \
                 'pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)', 'EXECUTE') \
                 FROM pg_roles WHERE rolname = 'replicator'"
            )
            .await
            .unwrap(),
        "t|t",
        "a replication user, and a rewind user allowed what pg_rewind needs"
    );
    // Idempotent: a second bootstrap step (a retry) only updates the passwords.
    primary.create_users().await.unwrap();
    primary
        .query("CREATE TABLE t (x text); INSERT INTO t VALUES ('before clone')")
        .await
        .unwrap();
    control.system_id
}

/// A slot for `pg1`, a base backup, a start as replica: streaming, rows replicated.
async fn clone_streaming_replica(
    primary: &Postgres,
    replica: &Postgres,
    replica_data: &Path,
    system_id: &str,
) -> String {
    let slot = dcs_core::model::slot_name_from_member_name("pg1");
    assert!(primary.create_slot(&slot).await.unwrap());
    assert!(!primary.create_slot(&slot).await.unwrap(), "already there");
    let upstream = Conninfo::from_conn_url(&format!(
        "postgres://127.0.0.1:{}/postgres",
        primary.options().port
    ))
    .unwrap();
    replica.clone_from(&upstream).await.unwrap();
    let standby = replica.standby_settings(&upstream, Some(&slot));
    replica.start(Some(&standby)).await.unwrap();
    assert!(replica_data.join("standby.signal").is_file());
    let status = eventually("streaming", || async {
        replica
            .status()
            .await
            .ok()
            .filter(ServerStatus::is_streaming)
    })
    .await;
    assert!(status.in_recovery);
    assert_eq!(status.timeline, Some(1));
    assert_eq!(status.system_id, system_id, "a clone is the same cluster");
    assert_eq!(replica.control_data().await.unwrap().system_id, system_id);
    assert_eq!(
        replica.query("SELECT x FROM t").await.unwrap(),
        "before clone"
    );
    primary
        .query("INSERT INTO t VALUES ('streamed')")
        .await
        .unwrap();
    eventually("the row to replicate", || async {
        replica
            .query("SELECT count(*) FROM t WHERE x = 'streamed'")
            .await
            .ok()
            .filter(|count| count == "1")
    })
    .await;
    let slots = primary.physical_slots().await.unwrap();
    assert!(
        slots
            .iter()
            .any(|(name, lsn)| *name == slot && lsn.is_some()),
        "{slots:?}"
    );
    assert!(
        !replica.follow(&standby).await.unwrap(),
        "same upstream: nothing to reload"
    );
    assert!(
        !primary.drop_slot(&slot).await.unwrap(),
        "a slot in use is kept"
    );

    // Follow: a new slot is a change, applied by a reload without a restart.
    assert!(primary.create_slot("other_slot").await.unwrap());
    let moved = replica.standby_settings(&upstream, Some("other_slot"));
    assert!(
        replica.follow(&moved).await.unwrap(),
        "a new slot is a change"
    );
    wait_slot_active(primary, "other_slot").await;
    assert!(replica.follow(&standby).await.unwrap());
    wait_slot_active(primary, &slot).await;
    eventually("the unused slot to be dropped", || async {
        primary
            .drop_slot("other_slot")
            .await
            .ok()
            .filter(|dropped| *dropped)
    })
    .await;

    slot
}

async fn wait_slot_active(primary: &Postgres, slot: &str) {
    let sql = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'");
    eventually("the replica to stream through its new slot", || async {
        primary
            .query(&sql)
            .await
            .ok()
            .filter(|active| active == "t")
    })
    .await;
}

/// Promotion: a new timeline, writable; the old primary may drop the released slot.
async fn promote_and_release_the_slot(primary: &Postgres, replica: &Postgres, slot: &str) {
    replica.promote().await.unwrap();
    let status = replica.status().await.unwrap();
    assert!(!status.in_recovery);
    assert_eq!(status.timeline, Some(2));
    replica
        .query("INSERT INTO t VALUES ('after promotion')")
        .await
        .unwrap();
    eventually("the promoted replica's slot to be released", || async {
        primary
            .drop_slot(slot)
            .await
            .ok()
            .filter(|dropped| *dropped)
    })
    .await;
    assert!(primary.physical_slots().await.unwrap().is_empty());
}

/// Fast leaves a clean primary, immediate a crashed one that recovers every commit.
async fn stop_modes(primary: &Postgres, replica: &Postgres, replica_data: &Path) {
    assert!(primary.stop(StopMode::Fast).await.unwrap());
    assert!(!primary.is_running().await.unwrap());
    assert!(
        !primary.stop(StopMode::Fast).await.unwrap(),
        "stopping a stopped server is a no-op"
    );
    let control = primary.control_data().await.unwrap();
    assert!(
        control.is_clean_shutdown() && control.was_primary(),
        "{control:?}"
    );

    assert!(replica.stop(StopMode::Immediate).await.unwrap());
    let crashed = replica.control_data().await.unwrap();
    assert!(!crashed.is_clean_shutdown(), "{crashed:?}");
    assert!(crashed.was_primary());
    replica.start(None).await.unwrap();
    assert!(
        !replica.status().await.unwrap().in_recovery,
        "the status query reaches the restarted server (a new connection)"
    );
    assert!(!replica_data.join("standby.signal").exists());
    assert_eq!(
        replica.query("SELECT count(*) FROM t").await.unwrap(),
        "3",
        "crash recovery keeps every commit"
    );
    assert!(replica.stop(StopMode::Smart).await.unwrap());
    assert!(!replica.is_running().await.unwrap());
}

#[tokio::test]
async fn initdb_refuses_a_data_directory_that_is_not_empty() {
    let Ok(bin_dir) = bin_dir() else {
        return skip_or_fail("postgres", "no PostgreSQL programs");
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("PG_VERSION"), "15\n").unwrap();
    let mut options = PostgresOptions::new(&data, OsUser::current());
    options.bin_dir = Some(bin_dir);
    let postgres = Postgres::new(options);
    let error = postgres.initdb(&[]).await.unwrap_err();
    assert!(
        matches!(error, PostgresError::DataDirNotEmpty { .. }),
        "{error}"
    );
    let error = postgres.clone_from(&Conninfo::new()).await.unwrap_err();
    assert!(
        matches!(error, PostgresError::DataDirNotEmpty { .. }),
        "{error}"
    );
}
