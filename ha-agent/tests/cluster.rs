//! Three real `ha-agent` processes, each with its own PostgreSQL 15, on one real etcd: what
//! an operator sees of the whole agent. Bootstrap, switchover (REST API, `ha-agent ctl`,
//! Patroni's own `patronictl`), failover after `kill -9` only once the dead primary's lease
//! has expired, a crashed postmaster, and a frozen DCS.
//!
//! Each test starts its own cluster ([`AgentCluster`]) and runs alone (the tests of this
//! file take one lock: three PostgreSQL servers per test are plenty for two cores). Each is
//! bounded in time and prints every node's agent and PostgreSQL log tail when it fails.
//! Skips (or fails, when `DCS_TEST_REQUIRE` lists it) as `postgres`, `etcd`, `zookeeper` or
//! `patroni` when that is not installed.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use dcs_tests::fixtures::agents::{AgentStatus, ApiResponse};
use dcs_tests::fixtures::{AgentCluster, AgentClusterOptions, AgentDcs, FixtureError};
use dcs_tests::require::skip_or_fail;
use serde_json::{Value, json};

/// The agent under test, built by Cargo for this test binary.
const AGENT: &str = env!("CARGO_BIN_EXE_ha-agent");

/// How long initdb, the first start and two base backups may take on two busy cores.
const BOOTSTRAP: Duration = Duration::from_secs(180);

/// How long a switchover, a failover or a rejoin may take once started.
const CONVERGE: Duration = Duration::from_secs(120);

/// How long a committed row may take to reach a streaming replica.
const REPLICATE: Duration = Duration::from_secs(30);

/// How long one poll's `psql` may take.
const QUICK: Duration = Duration::from_secs(3);

/// The tests of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts a cluster, runs `scenario` on it within `limit`, and fails with every log tail
/// when the scenario fails or overruns. Returns early (skip) when a server is missing.
async fn run(
    options: AgentClusterOptions,
    limit: Duration,
    scenario: impl AsyncFnOnce(&AgentCluster) -> Result<(), String>,
) {
    let _serial = SERIAL.lock().await;
    let backend = options.dcs().name();
    let cluster = match AgentCluster::start(options).await {
        Ok(cluster) => cluster,
        Err(FixtureError::NotInstalled { program, hint }) => {
            let what = if program.contains("etcd")
                || program.contains("zookeeper")
                || program.contains("java")
            {
                backend
            } else {
                "postgres"
            };
            skip_or_fail(what, format!("{program} is not installed ({hint})"));
            return;
        }
        Err(e) => panic!("the cluster did not start: {e}"),
    };
    match tokio::time::timeout(limit, scenario(&cluster)).await {
        Ok(Ok(())) => {}
        Ok(Err(message)) => panic!("{message}\n\n{}", cluster.log_tails()),
        Err(elapsed) => panic!(
            "the scenario did not finish: {elapsed} ({limit:?})\n\n{}",
            cluster.log_tails()
        ),
    }
}

fn options() -> AgentClusterOptions {
    AgentClusterOptions::new(AGENT)
}

/// `Result<T, FixtureError>` to the scenario's `Result<T, String>`, saying what failed.
trait Context<T> {
    fn context(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn context(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

/// Waits until node `i` returns `expected` for `sql`.
async fn wait_for_row(
    cluster: &AgentCluster,
    i: usize,
    sql: &str,
    expected: &str,
) -> Result<(), String> {
    let goal = format!("show {expected:?} for {sql:?} on {}", cluster.name(i));
    cluster
        .wait_until(REPLICATE, &goal, || async {
            let seen = cluster.psql_with_timeout(i, sql, QUICK).await.ok()?;
            (seen == expected).then_some(())
        })
        .await
        .context("replication")
}

/// The index of a node other than `primary`.
fn other_than(cluster: &AgentCluster, primary: usize) -> usize {
    (primary + 1) % cluster.node_count()
}

/// What node `i`'s `/patroni` says now, or an error naming the node.
async fn status(cluster: &AgentCluster, i: usize) -> Result<AgentStatus, String> {
    cluster
        .status(i)
        .await
        .ok_or_else(|| format!("{} does not answer GET /patroni", cluster.name(i)))
}

/// Checks that a switchover to `candidate` happened: it becomes the primary on a newer
/// timeline, every other node (the old primary included) streams from it, and a row
/// written on it reaches the old primary.
async fn check_switched_over(
    cluster: &AgentCluster,
    old_primary: usize,
    candidate: usize,
    old_timeline: Option<u64>,
    marker: &str,
) -> Result<(), String> {
    let primary = cluster
        .wait_for_cluster(CONVERGE)
        .await
        .context("after the switchover")?;
    let goal = format!("have {} as the primary", cluster.name(candidate));
    let primary = if primary == candidate {
        primary
    } else {
        // wait_for_cluster may have caught the old layout before the switchover began.
        cluster
            .wait_until(CONVERGE, &goal, || async {
                (cluster.primaries().await == [candidate]).then_some(candidate)
            })
            .await
            .context("after the switchover")?
    };
    cluster
        .wait_for_cluster(CONVERGE)
        .await
        .context("the old primary rejoining")?;
    let new_status = status(cluster, primary).await?;
    if new_status.timeline <= old_timeline {
        return Err(format!(
            "the new primary's timeline {:?} is not newer than {old_timeline:?}",
            new_status.timeline
        ));
    }
    if cluster.in_recovery(old_primary, QUICK).await != Some(true) {
        return Err(format!(
            "{} (the old primary) is not in recovery",
            cluster.name(old_primary)
        ));
    }
    cluster
        .psql(primary, &format!("INSERT INTO notes VALUES ('{marker}')"))
        .await
        .context("writing on the new primary")?;
    wait_for_row(
        cluster,
        old_primary,
        &format!("SELECT count(*) FROM notes WHERE note = '{marker}'"),
        "1",
    )
    .await
}

/// Creates `notes` on the primary with one row, and waits until every replica has it.
async fn seed(cluster: &AgentCluster, primary: usize) -> Result<(), String> {
    cluster
        .psql(
            primary,
            "CREATE TABLE notes (note text); INSERT INTO notes VALUES ('seed')",
        )
        .await
        .context("writing on the primary")?;
    for i in (0..cluster.node_count()).filter(|i| *i != primary) {
        wait_for_row(cluster, i, "SELECT note FROM notes", "seed").await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_bootstrap_one_primary_and_two_streaming_replicas() {
    run(options(), BOOTSTRAP + CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        let leader = cluster.leader_key().await.context("the DCS")?;
        if leader.as_ref().map(|l| l.name.as_str()) != Some(cluster.name(primary)) {
            return Err(format!(
                "the leader key {leader:?} does not name the primary {}",
                cluster.name(primary)
            ));
        }
        cluster
            .psql(
                primary,
                "CREATE TABLE notes (note text); \
                 INSERT INTO notes VALUES ('written on the primary')",
            )
            .await
            .context("writing on the primary")?;
        for i in 0..cluster.node_count() {
            let health = cluster
                .api_get(i, "/primary")
                .await
                .context("GET /primary")?;
            let replica = cluster
                .api_get(i, "/replica")
                .await
                .context("GET /replica")?;
            let expected = if i == primary { (200, 503) } else { (503, 200) };
            if (health.status, replica.status) != expected {
                return Err(format!(
                    "{}: /primary {} and /replica {}, expected {expected:?}",
                    cluster.name(i),
                    health.status,
                    replica.status
                ));
            }
            if i == primary {
                continue;
            }
            wait_for_row(
                cluster,
                i,
                "SELECT note FROM notes",
                "written on the primary",
            )
            .await?;
            if cluster
                .psql(i, "INSERT INTO notes VALUES ('on a replica')")
                .await
                .is_ok()
            {
                return Err(format!("{} accepted a write", cluster.name(i)));
            }
        }
        // The primary's /patroni lists its WAL senders, one per replica, as Patroni 4 does
        // (from its next cycle on).
        let mut replicas: Vec<String> = (0..cluster.node_count())
            .filter(|i| *i != primary)
            .map(|i| cluster.name(i).to_owned())
            .collect();
        replicas.sort_unstable();
        let goal = format!("the primary's /patroni to list {replicas:?} streaming");
        cluster
            .wait_until(CONVERGE, &goal, || async {
                let listed = status(cluster, primary).await.ok()?.raw;
                let mut streaming: Vec<String> = listed["replication"]
                    .as_array()?
                    .iter()
                    .filter(|r| r["state"] == "streaming")
                    .filter_map(|r| r["application_name"].as_str().map(str::to_owned))
                    .collect();
                streaming.sort_unstable();
                (streaming == replicas).then_some(())
            })
            .await
            .context("replication in /patroni")?;
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_on_zookeeper_bootstrap_and_replicate() {
    let options = options().with_dcs(AgentDcs::ZooKeeper);
    run(options, BOOTSTRAP + CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        let leader = cluster.leader_key().await.context("the DCS")?;
        if leader.as_ref().map(|l| l.name.as_str()) != Some(cluster.name(primary)) {
            return Err(format!(
                "the leader znode {leader:?} does not name the primary {}",
                cluster.name(primary)
            ));
        }
        seed(cluster, primary).await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_via_rest_makes_the_candidate_primary_and_the_old_primary_follows_it() {
    run(options(), BOOTSTRAP + 3 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, primary).await?;
        let candidate = other_than(cluster, primary);
        let timeline = status(cluster, primary).await?.timeline;
        let request =
            json!({"leader": cluster.name(primary), "candidate": cluster.name(candidate)});

        // Without credentials the write endpoint refuses, and nothing changes.
        let anonymous = cluster
            .api_request(primary, "POST", "/switchover", Some(&request), false)
            .await
            .context("POST /switchover without credentials")?;
        if anonymous.status != 401 {
            return Err(format!(
                "POST /switchover without credentials answered {}: {}",
                anonymous.status, anonymous.body
            ));
        }
        let answer = cluster
            .api_post(primary, "/switchover", &request)
            .await
            .context("POST /switchover")?;
        if answer.status != 200 {
            return Err(format!(
                "POST /switchover answered {}: {}",
                answer.status, answer.body
            ));
        }
        if !answer.body.contains(cluster.name(candidate)) {
            return Err(format!(
                "POST /switchover's answer does not name the candidate: {}",
                answer.body
            ));
        }
        check_switched_over(cluster, primary, candidate, timeline, "after rest").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_via_ha_agent_ctl() {
    run(options(), BOOTSTRAP + 3 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, primary).await?;
        let candidate = other_than(cluster, primary);
        let timeline = status(cluster, primary).await?.timeline;
        let config = cluster.config_path(0);
        let output = command(
            AGENT,
            &[
                "ctl",
                "-c",
                &config.to_string_lossy(),
                "switchover",
                "--leader",
                cluster.name(primary),
                "--candidate",
                cluster.name(candidate),
                "--force",
            ],
        )
        .await?;
        if !output.success {
            return Err(format!(
                "ha-agent ctl switchover failed: {}{}",
                output.stdout, output.stderr
            ));
        }
        eprintln!("ha-agent ctl switchover: {}", output.stdout.trim());
        check_switched_over(cluster, primary, candidate, timeline, "after ctl").await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_is_replaced_only_after_its_lease_expires_and_rejoins_as_a_replica() {
    run(options(), BOOTSTRAP + 3 * CONVERGE, async |cluster| {
        let old = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, old).await?;

        // kill -9 of the agent and its postmaster: a lost machine, as far as the DCS sees.
        cluster.kill_agent(old).context("killing the agent")?;
        cluster
            .kill_postmaster(old)
            .context("killing the postmaster")?;
        let killed_at = Instant::now();
        let leader = cluster
            .leader_key()
            .await
            .context("reading the leader key")?
            .ok_or("no leader key right after the kill")?;
        if leader.name != cluster.name(old) {
            return Err(format!(
                "the leader key names {} after killing the primary {}",
                leader.name,
                cluster.name(old)
            ));
        }
        let remaining = leader
            .remaining
            .ok_or("etcd did not report the lease's remaining ttl")?;
        // etcd reports whole seconds; one second of slack keeps the bound safe whichever
        // way it rounds. Nothing can take the key before etcd expires the lease.
        let expires_no_earlier = leader.asked_at + remaining.saturating_sub(Duration::from_secs(1));

        let (ttl, _, _) = cluster.timing();
        let goal = "promote a replica after the lease expired";
        let new = cluster
            .wait_until(ttl + CONVERGE, goal, || async {
                for i in (0..cluster.node_count()).filter(|i| *i != old) {
                    let primary = cluster
                        .api_get(i, "/primary")
                        .await
                        .is_ok_and(|r| r.status == 200);
                    let writable = cluster.in_recovery(i, QUICK).await == Some(false);
                    if primary || writable {
                        return Some((i, Instant::now()));
                    }
                }
                None
            })
            .await
            .context("failover")?;
        let (new, seen_at) = new;
        if seen_at < expires_no_earlier {
            return Err(format!(
                "{} became primary {:?} after the kill, before the lease (granted {:?}, \
                 {remaining:?} left when read) expired",
                cluster.name(new),
                seen_at - killed_at,
                leader.granted_ttl
            ));
        }
        eprintln!(
            "{} became primary {:?} after the kill (lease had {remaining:?} left)",
            cluster.name(new),
            seen_at - killed_at
        );
        let primary = cluster
            .wait_for_primary(CONVERGE)
            .await
            .context("the new primary")?;
        if primary != new {
            return Err(format!(
                "{} answered as primary, then {} did",
                cluster.name(new),
                cluster.name(primary)
            ));
        }
        wait_for_row(cluster, primary, "SELECT note FROM notes", "seed").await?;

        cluster
            .start_agent(old)
            .await
            .context("restarting the old primary's agent")?;
        let after = cluster
            .wait_for_cluster(CONVERGE)
            .await
            .context("the old primary rejoining")?;
        if after != new {
            return Err(format!(
                "after the rejoin {} is primary, not {}",
                cluster.name(after),
                cluster.name(new)
            ));
        }
        cluster
            .psql(new, "INSERT INTO notes VALUES ('after failover')")
            .await
            .context("writing on the new primary")?;
        wait_for_row(
            cluster,
            old,
            "SELECT count(*) FROM notes WHERE note = 'after failover'",
            "1",
        )
        .await
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_postmaster_on_the_primary_never_leaves_two_primaries() {
    run(options(), BOOTSTRAP + 2 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, primary).await?;
        let killed = cluster
            .kill_postmaster(primary)
            .context("killing the postmaster")?
            .ok_or("the primary has no postmaster")?;

        let deadline = Instant::now() + CONVERGE;
        let mut polls = 0;
        loop {
            polls += 1;
            let mut health_primaries = Vec::new();
            let mut writable = Vec::new();
            let mut streaming = 0;
            for i in 0..cluster.node_count() {
                if cluster
                    .api_get(i, "/primary")
                    .await
                    .is_ok_and(|r| r.status == 200)
                {
                    health_primaries.push(cluster.name(i));
                }
                if cluster.in_recovery(i, QUICK).await == Some(false) {
                    writable.push(cluster.name(i));
                }
                if cluster
                    .status(i)
                    .await
                    .is_some_and(|s| s.is_streaming_replica())
                {
                    streaming += 1;
                }
            }
            if health_primaries.len() > 1 || writable.len() > 1 {
                return Err(format!(
                    "poll {polls}: /primary 200 on {health_primaries:?}, \
                     not in recovery: {writable:?}"
                ));
            }
            let restarted = cluster
                .postmaster_pid(primary)
                .is_some_and(|pid| pid != killed);
            let recovered = health_primaries.len() == 1
                && writable.len() == 1
                && streaming + 1 == cluster.node_count();
            if recovered && (restarted || health_primaries[0] != cluster.name(primary)) {
                eprintln!(
                    "recovered after {polls} polls: {} is primary",
                    health_primaries[0]
                );
                let now_primary = cluster
                    .index_of(health_primaries[0])
                    .ok_or("an unknown primary")?;
                return cluster
                    .psql(now_primary, "INSERT INTO notes VALUES ('after the crash')")
                    .await
                    .map(drop)
                    .context("writing after the crash");
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no recovery within {CONVERGE:?}: /primary 200 on {health_primaries:?}, \
                     not in recovery: {writable:?}, {streaming} streaming replicas"
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_stops_accepting_writes_before_its_lease_expires_when_the_dcs_freezes() {
    run(options(), BOOTSTRAP + 2 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, primary).await?;
        let (ttl, _, _) = cluster.timing();

        cluster.pause_dcs().context("pausing the DCS")?;
        // Every renewal the primary holds was sent before this instant, so its lease is
        // valid until this instant + ttl at the latest.
        let paused_at = Instant::now();
        let lease_deadline = paused_at + ttl;
        let mut last_ack: Option<Instant> = None;
        let mut refused = 0;
        while Instant::now() < lease_deadline + Duration::from_secs(5) {
            let write = cluster
                .psql_with_timeout(primary, "INSERT INTO notes VALUES ('tick')", QUICK)
                .await;
            match write {
                Ok(_) => last_ack = Some(Instant::now()),
                Err(_) => refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cluster.resume_dcs().context("resuming the DCS")?;
        let Some(last_ack) = last_ack else {
            return Err("no write succeeded after the pause began".to_owned());
        };
        if last_ack >= lease_deadline {
            return Err(format!(
                "a write was acknowledged {:?} after the pause, at or after the lease \
                 deadline ({ttl:?})",
                last_ack - paused_at
            ));
        }
        eprintln!(
            "last write acknowledged {:?} after the pause (ttl {ttl:?}); {refused} refused",
            last_ack - paused_at
        );
        // Once the DCS is back, the cluster has a primary again.
        cluster
            .wait_for_primary(CONVERGE)
            .await
            .context("after the DCS came back")
            .map(drop)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dcs_pause_shorter_than_retry_timeout_changes_nothing() {
    run(options(), BOOTSTRAP + CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, primary).await?;
        let (_, loop_wait, retry_timeout) = cluster.timing();
        let timeline = status(cluster, primary).await?.timeline;

        cluster.pause_dcs().context("pausing the DCS")?;
        let paused_at = Instant::now();
        let pause = retry_timeout / 2;
        let mut resumed = false;
        let mut writes = 0;
        // Write through the pause and for two loops after it.
        while paused_at.elapsed() < pause + 2 * loop_wait + Duration::from_secs(1) {
            if !resumed && paused_at.elapsed() >= pause {
                cluster.resume_dcs().context("resuming the DCS")?;
                resumed = true;
            }
            cluster
                .psql_with_timeout(primary, "INSERT INTO notes VALUES ('tick')", QUICK)
                .await
                .map_err(|e| {
                    format!(
                        "a write {:?} after a {pause:?} pause failed: {e}",
                        paused_at.elapsed()
                    )
                })?;
            writes += 1;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        if !resumed {
            cluster.resume_dcs().context("resuming the DCS")?;
        }
        let primaries = cluster.primaries().await;
        if primaries != [primary] {
            return Err(format!(
                "after the pause the primaries are {primaries:?}, not [{primary}]"
            ));
        }
        let now = status(cluster, primary).await?.timeline;
        if now != timeline {
            return Err(format!(
                "the timeline moved from {timeline:?} to {now:?}: the primary was demoted"
            ));
        }
        let leader = cluster.leader_key().await.context("the DCS")?;
        if leader.as_ref().map(|l| l.name.as_str()) != Some(cluster.name(primary)) {
            return Err(format!("the leader key is {leader:?} after the pause"));
        }
        eprintln!("{writes} writes through a {pause:?} pause, all acknowledged");
        Ok(())
    })
    .await;
}

/// `date -u` for `seconds` from now in `format`: the schedule in the form patronictl
/// sends (`%Y-%m-%dT%H:%M:%S+00:00`) and in the form `/patroni` prints start times.
async fn utc_in(seconds: u64, at: std::time::SystemTime, format: &str) -> Result<String, String> {
    let unix = at
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs()
        + seconds;
    let ran = command("date", &["-u", "-d", &format!("@{unix}"), format]).await?;
    Ok(ran.stdout.trim().to_owned())
}

/// A member's `scheduled_restart.schedule` in `GET /cluster` (read from the DCS).
async fn published_schedule(cluster: &AgentCluster, via: usize, member: &str) -> Option<String> {
    let response = cluster.api_get(via, "/cluster").await.ok()?;
    let document: Value = serde_json::from_str(&response.body).ok()?;
    let members = document.get("members")?.as_array()?;
    let entry = members
        .iter()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(member))?;
    Some(
        entry
            .pointer("/scheduled_restart/schedule")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    )
}

/// `postmaster_start_time` in node `i`'s `/patroni`.
async fn postmaster_start(cluster: &AgentCluster, i: usize) -> Result<String, String> {
    status(cluster, i)
        .await?
        .raw
        .get("postmaster_start_time")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| format!("{} publishes no postmaster_start_time", cluster.name(i)))
}

/// An error unless `answer` has `status`.
fn expect_status(what: &str, answer: &ApiResponse, status: u16) -> Result<(), String> {
    if answer.status == status {
        Ok(())
    } else {
        Err(format!(
            "{what} answered {}: {}",
            answer.status, answer.body
        ))
    }
}

/// A restart scheduled an hour ahead on `replica`: published in its member key, one at a
/// time, and gone from the key once cancelled.
async fn schedule_and_cancel_a_restart(
    cluster: &AgentCluster,
    primary: usize,
    replica: usize,
) -> Result<(), String> {
    let name = cluster.name(replica);
    let later = utc_in(
        3600,
        std::time::SystemTime::now(),
        "+%Y-%m-%dT%H:%M:%S+00:00",
    )
    .await?;
    let request = json!({ "schedule": later });
    let answer = cluster.api_post(replica, "/restart", &request).await;
    expect_status(
        "POST /restart with a schedule",
        &answer.context("POST /restart")?,
        202,
    )?;
    let again = cluster.api_post(replica, "/restart", &request).await;
    expect_status(
        "a second scheduled POST /restart",
        &again.context("POST /restart")?,
        409,
    )?;
    cluster
        .wait_until(CONVERGE, "the member key to show the schedule", || async {
            (published_schedule(cluster, primary, name).await? == later).then_some(())
        })
        .await
        .context("publishing")?;
    let cancel = cluster
        .api_request(replica, "DELETE", "/restart", None, true)
        .await;
    expect_status("DELETE /restart", &cancel.context("DELETE /restart")?, 200)?;
    cluster
        .wait_until(CONVERGE, "the member key to drop the schedule", || async {
            published_schedule(cluster, primary, name)
                .await?
                .is_empty()
                .then_some(())
        })
        .await
        .context("cancelling")?;
    let none = cluster
        .api_request(replica, "DELETE", "/restart", None, true)
        .await;
    expect_status(
        "DELETE /restart with nothing scheduled",
        &none.context("DELETE /restart")?,
        404,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_restart_runs_at_its_time_and_a_cancelled_one_never_does() {
    run(options(), BOOTSTRAP + 3 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        let replica = other_than(cluster, primary);
        let name = cluster.name(replica).to_owned();
        schedule_and_cancel_a_restart(cluster, primary, replica).await?;

        // Scheduled soon through `ha-agent ctl`: runs at its time, not before. The same
        // schedule on the primary with a filter it does not match runs nothing.
        let replica_started = postmaster_start(cluster, replica).await?;
        let primary_started = postmaster_start(cluster, primary).await?;
        let now = std::time::SystemTime::now();
        let soon = utc_in(8, now, "+%Y-%m-%dT%H:%M:%S+00:00").await?;
        let soon_as_start = utc_in(8, now, "+%Y-%m-%d %H:%M:%S").await?;
        let config = cluster.config_path(0).to_string_lossy().into_owned();
        let ctl = [
            "ctl",
            "-c",
            &config,
            "restart",
            cluster.scope(),
            &name,
            "--scheduled",
            &soon,
            "--force",
        ];
        let ran = command(AGENT, &ctl).await?;
        if !ran.success || !ran.stdout.contains("restart scheduled") {
            return Err(format!(
                "ha-agent ctl restart --scheduled: {}{}",
                ran.stdout, ran.stderr
            ));
        }
        let filtered = json!({ "schedule": soon, "role": "replica" });
        let answer = cluster.api_post(primary, "/restart", &filtered).await;
        expect_status(
            "POST /restart with a schedule and a role filter",
            &answer.context("POST /restart")?,
            202,
        )?;

        let restarted = cluster
            .wait_until(CONVERGE, "the scheduled restart to run", || async {
                let started = postmaster_start(cluster, replica).await.ok()?;
                (started != replica_started).then_some(started)
            })
            .await
            .context("the scheduled restart")?;
        if restarted.as_str() < soon_as_start.as_str() {
            return Err(format!(
                "{name} restarted at {restarted}, before its schedule {soon_as_start}"
            ));
        }
        cluster
            .wait_until(CONVERGE, "the schedules to be gone", || async {
                let left = [
                    published_schedule(cluster, primary, &name).await?,
                    published_schedule(cluster, primary, cluster.name(primary)).await?,
                ];
                left.iter().all(String::is_empty).then_some(())
            })
            .await
            .context("after the scheduled restarts")?;
        if postmaster_start(cluster, primary).await? != primary_started {
            return Err("the primary restarted although its schedule asked for a replica".into());
        }
        cluster
            .wait_for_cluster(CONVERGE)
            .await
            .context("the restarted replica streaming again")?;
        Ok(())
    })
    .await;
}

/// Every member's `pending_restart_reason` in `GET /cluster` (read from the DCS), by name.
async fn pending_restarts(cluster: &AgentCluster, via: usize) -> Option<Vec<(String, Value)>> {
    let response = cluster.api_get(via, "/cluster").await.ok()?;
    let document: Value = serde_json::from_str(&response.body).ok()?;
    let members = document.get("members")?.as_array()?;
    Some(
        members
            .iter()
            .map(|m| {
                let name = m.get("name").and_then(Value::as_str).unwrap_or_default();
                let reason = m
                    .get("pending_restart_reason")
                    .cloned()
                    .unwrap_or(Value::Null);
                (name.to_owned(), reason)
            })
            .collect(),
    )
}

/// Runs `ha-agent ctl -c <node 0's config> <args>`, failing unless it succeeds.
async fn ctl(cluster: &AgentCluster, args: &[&str]) -> Result<String, String> {
    let config = cluster.config_path(0).to_string_lossy().into_owned();
    let mut all = vec!["ctl", "-c", &config];
    all.extend_from_slice(args);
    let ran = command(AGENT, &all).await?;
    if ran.success {
        Ok(ran.stdout)
    } else {
        Err(format!(
            "ha-agent ctl {args:?}: {}{}",
            ran.stdout, ran.stderr
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_setting_that_needs_a_restart_is_flagged_until_restart_pending_applies_it() {
    run(options(), BOOTSTRAP + 3 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        if let Some(flagged) = pending_restarts(cluster, primary)
            .await
            .and_then(|all| all.into_iter().find(|(_, reason)| !reason.is_null()))
        {
            return Err(format!(
                "a restart is pending before any change: {flagged:?}"
            ));
        }
        let before = cluster
            .psql_with_timeout(primary, "SHOW max_connections", QUICK)
            .await
            .context("SHOW max_connections")?;
        let wanted = before
            .parse::<u32>()
            .map_err(|e| format!("max_connections {before:?}: {e}"))?
            + 20;
        let setting = format!("max_connections={wanted}");
        ctl(cluster, &["edit-config", "-p", &setting, "--force"]).await?;
        let expected =
            json!({"max_connections": {"old_value": before, "new_value": wanted.to_string()}});
        cluster
            .wait_until(CONVERGE, "every member to flag max_connections", || async {
                let all = pending_restarts(cluster, primary).await?;
                (all.len() == cluster.node_count() && all.iter().all(|(_, r)| *r == expected))
                    .then_some(())
            })
            .await
            .context("after edit-config")?;
        let listed = ctl(cluster, &["list"]).await?;
        if !listed.contains("Pending restart") {
            return Err(format!(
                "ctl list does not show the pending restart:\n{listed}"
            ));
        }
        // Replicas first: a replica may not run with fewer connections than its primary.
        let scope = cluster.scope().to_owned();
        for role in ["replica", "primary"] {
            ctl(
                cluster,
                &["restart", &scope, "--role", role, "--pending", "--force"],
            )
            .await?;
        }
        cluster
            .wait_until(CONVERGE, "the flags to clear", || async {
                let all = pending_restarts(cluster, primary).await?;
                all.iter().all(|(_, r)| r.is_null()).then_some(())
            })
            .await
            .context("after restart --pending")?;
        let primary = cluster
            .wait_for_cluster(CONVERGE)
            .await
            .context("after the restarts")?;
        for i in 0..cluster.node_count() {
            let seen = cluster
                .psql_with_timeout(i, "SHOW max_connections", QUICK)
                .await
                .context("SHOW max_connections")?;
            if seen != wanted.to_string() {
                return Err(format!(
                    "{} runs with max_connections {seen}",
                    cluster.name(i)
                ));
            }
        }
        // A restart with nothing pending restarts nothing.
        let started = postmaster_start(cluster, primary).await?;
        let answer = cluster
            .api_post(primary, "/restart", &json!({"restart_pending": true}))
            .await
            .context("POST /restart")?;
        expect_status("POST /restart with nothing pending", &answer, 503)?;
        if postmaster_start(cluster, primary).await? != started {
            return Err("the primary restarted with nothing pending".into());
        }
        Ok(())
    })
    .await;
}

/// Waits until node `i`'s callbacks have written `line`.
async fn wait_for_callback(cluster: &AgentCluster, i: usize, line: &str) -> Result<(), String> {
    let goal = format!("{} to call back {line:?}", cluster.name(i));
    cluster
        .wait_until(CONVERGE, &goal, || async {
            cluster
                .callback_log(i)
                .iter()
                .any(|seen| seen == line)
                .then_some(())
        })
        .await
        .map_err(|e| format!("{e}; its callbacks: {:?}", cluster.callback_log(i)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_run_on_start_role_change_restart_reload_and_stop() {
    run(
        options().with_scripts(),
        BOOTSTRAP + 3 * CONVERGE,
        async |cluster| {
            let primary = cluster
                .wait_for_cluster(BOOTSTRAP)
                .await
                .context("bootstrap")?;
            let scope = cluster.scope().to_owned();
            for i in 0..cluster.node_count() {
                let role = if i == primary { "primary" } else { "replica" };
                wait_for_callback(cluster, i, &format!("on_start {role} {scope}")).await?;
            }

            let candidate = other_than(cluster, primary);
            let request =
                json!({"leader": cluster.name(primary), "candidate": cluster.name(candidate)});
            let answer = cluster
                .api_post(primary, "/switchover", &request)
                .await
                .context("POST /switchover")?;
            expect_status("POST /switchover", &answer, 200)?;
            wait_for_callback(
                cluster,
                candidate,
                &format!("on_role_change primary {scope}"),
            )
            .await?;
            wait_for_callback(cluster, primary, &format!("on_role_change replica {scope}")).await?;

            // Right after the demotion its start may still be finishing ("in progress").
            cluster
                .wait_until(CONVERGE, "POST /restart to be carried out", || async {
                    let answer = cluster
                        .api_post(primary, "/restart", &json!({}))
                        .await
                        .ok()?;
                    (answer.status == 200).then_some(())
                })
                .await
                .context("POST /restart")?;
            wait_for_callback(cluster, primary, &format!("on_restart replica {scope}")).await?;
            let answer = cluster
                .api_post(candidate, "/reload", &json!({}))
                .await
                .context("POST /reload")?;
            expect_status("POST /reload", &answer, 202)?;
            wait_for_callback(cluster, candidate, &format!("on_reload primary {scope}")).await?;

            cluster
                .stop_agent(primary)
                .await
                .context("stopping an agent")?;
            wait_for_callback(cluster, primary, &format!("on_stop replica {scope}")).await?;
            // Exactly one start was called back on the stopped node: the restart and the
            // demotion were not reported as starts.
            let log = cluster.callback_log(primary);
            let starts = log.iter().filter(|l| l.starts_with("on_start")).count();
            if starts != 1 {
                return Err(format!("{} called back {log:?}", cluster.name(primary)));
            }
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pre_promote_script_keeps_a_member_from_promoting() {
    run(
        options().with_scripts(),
        BOOTSTRAP + 3 * CONVERGE,
        async |cluster| {
            let primary = cluster
                .wait_for_cluster(BOOTSTRAP)
                .await
                .context("bootstrap")?;
            let others: Vec<usize> = (0..cluster.node_count())
                .filter(|i| *i != primary)
                .collect();
            for &i in &others {
                cluster
                    .deny_promotion(i, true)
                    .context("denying promotion")?;
            }
            // A graceful stop runs before_stop first, and gives the lock up.
            cluster
                .stop_agent(primary)
                .await
                .context("stopping the primary's agent")?;
            wait_for_callback(cluster, primary, "before_stop").await?;
            let goal = "a replica to try its pre_promote script";
            let tried = cluster
                .wait_until(CONVERGE, goal, || async {
                    others
                        .iter()
                        .copied()
                        .find(|&i| cluster.callback_log(i).iter().any(|l| l == "pre_promote"))
                })
                .await
                .context("the leader race")?;
            // With every fence failing, nobody may promote: watch for two ttls.
            let (ttl, _, _) = cluster.timing();
            let until = Instant::now() + 2 * ttl;
            while Instant::now() < until {
                let primaries = cluster.primaries().await;
                if !primaries.is_empty() {
                    return Err(format!(
                        "{:?} promoted although its pre_promote script failed",
                        primaries
                            .iter()
                            .map(|&i| cluster.name(i))
                            .collect::<Vec<_>>()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            // Once one fence lets it, that member promotes (after its backoff, if it had one).
            let allowed = tried;
            cluster
                .deny_promotion(allowed, false)
                .context("allowing promotion")?;
            let goal = format!("{} to promote", cluster.name(allowed));
            cluster
                .wait_until(CONVERGE, &goal, || async {
                    (cluster.primaries().await == [allowed]).then_some(())
                })
                .await
                .context("after the fence allowed it")?;
            Ok(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patronictl_lists_the_cluster_and_switches_it_over() {
    if let Err(why) = patronictl_available() {
        skip_or_fail("patroni", why);
        return;
    }
    run(options(), BOOTSTRAP + 3 * CONVERGE, async |cluster| {
        let primary = cluster
            .wait_for_cluster(BOOTSTRAP)
            .await
            .context("bootstrap")?;
        seed(cluster, primary).await?;
        let config = cluster.config_path(0).to_string_lossy().into_owned();

        let list = command(PATRONICTL, &["-c", &config, "list", "-f", "json"]).await?;
        let out = list.stdout;
        if !list.success {
            return Err(format!("patronictl list failed: {out}{}", list.stderr));
        }
        let rows: Vec<Value> =
            serde_json::from_str(&out).map_err(|e| format!("patronictl list JSON: {e}: {out}"))?;
        if rows.len() != cluster.node_count() {
            return Err(format!("patronictl lists {} members: {out}", rows.len()));
        }
        let timeline = status(cluster, primary).await?.timeline;
        for i in 0..cluster.node_count() {
            let row = rows
                .iter()
                .find(|r| r["Member"] == cluster.name(i))
                .ok_or_else(|| format!("patronictl does not list {}: {out}", cluster.name(i)))?;
            // Patroni 3.0.2 shows a member's `state`; later versions show a replica's
            // `replication_state` (`streaming`) instead.
            let (role, states) = if i == primary {
                ("Leader", &["running"][..])
            } else {
                ("Replica", &["running", "streaming"][..])
            };
            let host = format!("127.0.0.1:{}", cluster.pg_port(i));
            if row["Cluster"] != cluster.scope()
                || row["Host"] != host.as_str()
                || row["Role"] != role
                || !states.iter().any(|state| row["State"] == *state)
                || row["TL"].as_u64() != timeline
            {
                return Err(format!(
                    "patronictl's row for {} is {row}, expected {role} {states:?} at {host} \
                     on timeline {timeline:?}",
                    cluster.name(i)
                ));
            }
        }

        // pause --wait waits until every member's key shows the pause flag.
        for (verb, done) in [("pause", "paused"), ("resume", "resumed")] {
            let ran = command(PATRONICTL, &["-c", &config, verb, "--wait"]).await?;
            let out = format!("{}{}", ran.stdout, ran.stderr);
            let success = format!("Success: cluster management is {done}");
            if !ran.success || !out.contains(&success) {
                return Err(format!("patronictl {verb} --wait: {out}"));
            }
        }

        let candidate = other_than(cluster, primary);
        let switchover = command(
            PATRONICTL,
            &[
                "-c",
                &config,
                "switchover",
                "--leader",
                cluster.name(primary),
                "--candidate",
                cluster.name(candidate),
                "--force",
            ],
        )
        .await?;
        // It exits 0 even when the REST call fails (it then writes the DCS itself); the
        // REST API's answer in its output is what shows the call went through.
        let out = format!("{}{}", switchover.stdout, switchover.stderr);
        let answer = format!(
            "Successfully switched over to \"{}\"",
            cluster.name(candidate)
        );
        if !switchover.success || !out.contains(&answer) || out.contains("falling back to DCS") {
            return Err(format!(
                "patronictl switchover did not go through the REST API: {out}"
            ));
        }
        eprintln!("patronictl switchover: {}", switchover.stdout.trim());
        check_switched_over(cluster, primary, candidate, timeline, "after patronictl").await
    })
    .await;
}

const PATRONICTL: &str = "/usr/bin/patronictl";

fn patronictl_available() -> Result<(), String> {
    if !Path::new(PATRONICTL).exists() {
        return Err(format!(
            "{PATRONICTL} is not installed (Debian package patroni)"
        ));
    }
    Ok(())
}

/// What a program run by [`command`] did.
struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs a program to completion within [`CONVERGE`].
async fn command(program: &str, args: &[&str]) -> Result<Ran, String> {
    let run = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(CONVERGE, run)
        .await
        .map_err(|_| format!("{program} {args:?} did not finish within {CONVERGE:?}"))?
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    Ok(Ran {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    })
}
