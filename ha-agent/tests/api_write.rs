//! The REST API's authenticated endpoints over real sockets, against a cluster in a
//! `MemoryDcs` and a stand-in for the HA loop that answers `LocalRequest`s.

use std::sync::Arc;
use std::time::Duration;

use dcs_core::model::{ClusterConfig, MemberData, MemberState, Role};
use dcs_core::{
    Acquire, ClientOptions, ClusterPath, ClusterState, Dcs, DcsExt as _, MemoryDcs, MemoryStore,
    Precondition, Timing, WatchOutcome,
};
use ha_agent::api::{
    Allowlist, Control, LocalReply, LocalRequest, Network, NodeStatus, PostgresStatus, Snapshot,
    Xlog, serve,
};
use ha_agent::config::Credentials;
use ha_agent::http::{HttpResponse, request};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Every exchange gets this long; the slowest one (a switchover poll) needs a few seconds.
const TIMEOUT: Duration = Duration::from_secs(60);

fn options(name: &str) -> ClientOptions {
    ClientOptions::new(ClusterPath::new("batman").unwrap(), name)
        .unwrap()
        .with_timing(Timing::from_secs(30, 10, 10).unwrap())
}

fn member(role: &str, tags: &Value) -> MemberData {
    let json = json!({
        "conn_url": "postgres://127.0.0.1:5432/postgres",
        "api_url": "http://127.0.0.1:8008/patroni",
        "state": "running",
        "role": role,
        "tags": tags,
    });
    MemberData::parse(json.to_string().as_bytes())
}

fn admin() -> Credentials {
    Credentials {
        username: "admin".into(),
        password: Some("s3cret".into()),
        options: Vec::new(),
    }
}

/// What the stand-in HA loop was asked, in order.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Restart,
    ScheduleRestart {
        at: std::time::SystemTime,
        filters: Value,
    },
    CancelRestart,
    Reload,
    Reinitialize {
        force: bool,
        from_leader: bool,
    },
}

/// A three-member cluster: pg0 leads, pg1 replicates, pg2 replicates with `nofailover`;
/// an API server for pg0 with credentials, and a stand-in HA loop.
struct Harness {
    store: MemoryStore,
    pg0: MemoryDcs,
    pg1: MemoryDcs,
    /// Keeps pg2's member key alive.
    _pg2: MemoryDcs,
    lease: Option<dcs_core::LeaderLease>,
    base: String,
    asked: mpsc::UnboundedReceiver<Asked>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
}

impl Harness {
    async fn start() -> Self {
        let store = MemoryStore::new();
        let pg0 = store.client(options("pg0"));
        let pg1 = store.client(options("pg1"));
        let pg2 = store.client(options("pg2"));
        pg0.publish_member(&member("primary", &json!({})))
            .await
            .unwrap();
        pg1.publish_member(&member("replica", &json!({})))
            .await
            .unwrap();
        pg2.publish_member(&member("replica", &json!({"nofailover": true})))
            .await
            .unwrap();
        let Acquire::Won(lease) = pg0.try_acquire_leader().await.unwrap() else {
            panic!("pg0 must win the empty race");
        };
        pg0.set_config(
            &ClusterConfig::parse(
                br#"{"ttl":30,"loop_wait":10,"postgresql":{"parameters":{"max_connections":100}}}"#,
            ),
            Precondition::Absent,
        )
        .await
        .unwrap();

        let (requests, mut queue) = mpsc::channel::<LocalRequest>(4);
        let (asked_tx, asked) = mpsc::unbounded_channel();
        // The stand-in HA loop: records each request and answers as the real one would.
        tokio::spawn(async move {
            while let Some(request) = queue.recv().await {
                let (what, reply, status, message) = match request {
                    LocalRequest::Restart { reply } => {
                        (Asked::Restart, reply, 200, "restarted successfully")
                    }
                    LocalRequest::ScheduleRestart { restart, reply } => (
                        Asked::ScheduleRestart {
                            at: restart.at,
                            filters: Value::Object(restart.filters),
                        },
                        reply,
                        202,
                        "Restart scheduled",
                    ),
                    LocalRequest::CancelRestart { reply } => (
                        Asked::CancelRestart,
                        reply,
                        200,
                        "scheduled restart deleted",
                    ),
                    LocalRequest::Reload { reply } => {
                        (Asked::Reload, reply, 202, "reload scheduled")
                    }
                    LocalRequest::Reinitialize {
                        force,
                        from_leader,
                        reply,
                    } => (
                        Asked::Reinitialize { force, from_leader },
                        reply,
                        503,
                        "I am the leader, can not reinitialize",
                    ),
                };
                let _ = asked_tx.send(what);
                let _ = reply.send(LocalReply {
                    status,
                    message: message.into(),
                });
            }
        });

        let control = Control {
            dcs: Arc::new(store.client(options("pg0-api"))),
            requests,
            authentication: Some(admin()),
            allowlist: None,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (_snapshots, receiver) = watch::channel(primary_snapshot());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, receiver, Some(control), async {
            let _ = stopped.await;
        }));
        Self {
            store,
            pg0,
            pg1,
            _pg2: pg2,
            lease: Some(lease),
            base,
            asked,
            stop,
            server,
        }
    }

    async fn send(&self, method: &str, path: &str, body: Option<&str>) -> HttpResponse {
        let url = format!("{}{path}", self.base);
        request(method, &url, body, Some(&admin()), TIMEOUT)
            .await
            .unwrap()
    }

    async fn cluster(&self) -> ClusterState {
        self.pg1.cluster().await.unwrap()
    }

    async fn config(&self) -> Value {
        Value::Object(self.cluster().await.config.unwrap().value.data)
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.server.await.unwrap();
    }
}

fn primary_snapshot() -> Snapshot {
    let mut node = NodeStatus::new("batman", "pg0", "4.1.4");
    node.state = MemberState::Running;
    node.role = Role::Primary;
    node.holds_lease = true;
    node.postgres = Some(PostgresStatus {
        postmaster_start_time: None,
        server_version: 160_004,
        xlog: Xlog::Primary { location: 1000 },
        timeline: Some(1),
        replication_state: None,
        replication: vec![],
    });
    Snapshot {
        node,
        cluster: None,
    }
}

/// One request on a raw connection, answered in full: status line, headers and body.
async fn raw(base: &str, request: &str) -> String {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    answer
}

#[tokio::test]
async fn write_requests_need_the_configured_credentials() {
    let h = Harness::start().await;
    let switchover = r#"{"leader":"pg0","candidate":"pg1"}"#;
    let url = format!("{}/switchover", h.base);

    let anonymous = request("POST", &url, Some(switchover), None, TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        (anonymous.status, anonymous.body.as_str()),
        (401, "no auth header received")
    );
    let wrong = Credentials {
        password: Some("guess".into()),
        ..admin()
    };
    let guessed = request("POST", &url, Some(switchover), Some(&wrong), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(
        (guessed.status, guessed.body.as_str()),
        (401, "not authenticated")
    );
    for (method, path) in [
        ("PATCH", "/config"),
        ("POST", "/restart"),
        ("POST", "/reinitialize"),
        ("DELETE", "/switchover"),
    ] {
        let url = format!("{}{path}", h.base);
        let refused = request(method, &url, Some("{}"), None, TIMEOUT)
            .await
            .unwrap();
        assert_eq!(refused.status, 401, "{method} {path}");
    }
    // Browsers and curl learn how to authenticate from the challenge.
    let challenge = raw(
        &h.base,
        "POST /reload HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(challenge.starts_with("HTTP/1.1 401"), "{challenge}");
    assert!(
        challenge
            .to_ascii_lowercase()
            .contains("www-authenticate: basic realm=\"patroni\"\r\n"),
        "{challenge}"
    );

    // Nothing was written or asked, and reads stay open to everyone.
    assert!(h.cluster().await.failover.is_none());
    let status = ha_agent::http::get(&format!("{}/patroni", h.base), TIMEOUT)
        .await
        .unwrap();
    assert_eq!(status.status, 200);
    let mut h = h;
    assert!(h.asked.try_recv().is_err(), "the HA loop was asked nothing");
    h.stop().await;
}

#[tokio::test]
async fn a_switchover_writes_the_failover_key_and_reports_the_new_leader() {
    let mut h = Harness::start().await;
    let lease = h.lease.take().unwrap();
    let (pg0, pg1) = (h.pg0, h.pg1);
    h.pg0 = h.store.client(options("pg0-spare"));
    h.pg1 = h.store.client(options("pg1-spare"));

    // The old and new leaders' HA loops, reduced to what they do for a switchover.
    let leaders = tokio::spawn(async move {
        let mut seen = pg1.cluster().await.unwrap();
        while seen.failover.is_none() {
            let _: WatchOutcome = pg1.watch(&seen, Duration::from_secs(1)).await.unwrap();
            seen = pg1.cluster().await.unwrap();
        }
        let request = seen.failover.clone().unwrap().value;
        pg0.release_leader(lease).await.unwrap();
        let Acquire::Won(_new) = pg1.try_acquire_leader().await.unwrap() else {
            panic!("pg1 must win once pg0 let go");
        };
        // The new leader clears the request it carried out.
        pg1.delete(dcs_core::StateKey::Failover, None)
            .await
            .unwrap();
        (request, pg0, pg1)
    });

    let answer = h
        .send(
            "POST",
            "/switchover",
            Some(r#"{"leader":"pg0","candidate":"pg1","scheduled_at":null}"#),
        )
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (200, r#"Successfully switched over to "pg1""#)
    );
    let (request, _pg0, _pg1) = leaders.await.unwrap();
    assert_eq!(request.leader.as_deref(), Some("pg0"));
    assert_eq!(request.candidate.as_deref(), Some("pg1"));
    assert_eq!(request.scheduled_at, None);
    h.stop().await;
}

#[tokio::test]
async fn a_switchover_nobody_carries_out_fails_when_the_request_is_dropped() {
    let h = Harness::start().await;
    let pg0 = h.store.client(options("pg0-loop"));
    // The leader's loop refuses the request and clears it, keeping the lock.
    let refuser = tokio::spawn(async move {
        let mut seen = pg0.cluster().await.unwrap();
        while seen.failover.is_none() {
            pg0.watch(&seen, Duration::from_secs(1)).await.unwrap();
            seen = pg0.cluster().await.unwrap();
        }
        pg0.write(dcs_core::StateKey::Failover, "{}", Precondition::Any)
            .await
            .unwrap();
    });
    let answer = h
        .send("POST", "/failover", Some(r#"{"candidate":"pg1"}"#))
        .await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (503, "Failover failed")
    );
    refuser.await.unwrap();
    h.stop().await;
}

#[tokio::test]
async fn impossible_switchovers_are_refused_without_writing() {
    let h = Harness::start().await;
    for (path, body, status, text) in [
        (
            "/switchover",
            r#"{"leader":"pg1","candidate":"pg0"}"#,
            412,
            "leader name does not match",
        ),
        (
            "/switchover",
            r#"{"leader":"pg0","candidate":"pg7"}"#,
            412,
            "candidate does not exists",
        ),
        (
            "/switchover",
            r#"{"leader":"pg0","candidate":"pg2"}"#,
            412,
            "switchover is not possible: no good candidates have been found",
        ),
        (
            "/switchover",
            r#"{"candidate":"pg1"}"#,
            400,
            "Switchover could be performed only from a specific leader",
        ),
        (
            "/failover",
            r#"{"leader":"pg0"}"#,
            400,
            "Failover could be performed only to a specific candidate",
        ),
        (
            "/switchover",
            r#"{"leader":"pg0","scheduled_at":"2001-01-01T00:00:00+00:00"}"#,
            422,
            "Cannot schedule switchover in the past",
        ),
    ] {
        let answer = h.send("POST", path, Some(body)).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (status, text),
            "{body}"
        );
    }
    let invalid = h.send("POST", "/switchover", Some("{leader: pg0}")).await;
    assert_eq!(invalid.status, 400);
    assert!(invalid.body.contains("not valid JSON"), "{}", invalid.body);
    let huge = format!(r#"{{"leader":"{}"}}"#, "x".repeat(70_000));
    assert_eq!(h.send("POST", "/switchover", Some(&huge)).await.status, 413);

    assert!(h.cluster().await.failover.is_none(), "nothing was written");
    h.stop().await;
}

#[tokio::test]
async fn a_scheduled_switchover_is_stored_and_can_be_cancelled() {
    let h = Harness::start().await;
    let at = "2999-01-01T12:00:00+01:00";
    let body = json!({"leader": "pg0", "candidate": "pg1", "scheduled_at": at}).to_string();
    let answer = h.send("POST", "/switchover", Some(&body)).await;
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (202, "Switchover scheduled")
    );
    let stored = h.cluster().await.failover.unwrap().value;
    assert_eq!(stored.leader.as_deref(), Some("pg0"));
    assert_eq!(stored.candidate.as_deref(), Some("pg1"));
    assert_eq!(stored.scheduled_at.as_deref(), Some(at));

    let cancelled = h.send("DELETE", "/switchover", None).await;
    assert_eq!(
        (cancelled.status, cancelled.body.as_str()),
        (200, "scheduled switchover deleted")
    );
    assert!(h.cluster().await.failover.unwrap().value.is_empty());
    let again = h.send("DELETE", "/switchover", None).await;
    assert_eq!(
        (again.status, again.body.as_str()),
        (404, "no switchover is scheduled")
    );
    h.stop().await;
}

#[tokio::test]
async fn config_is_patched_with_nulls_deleting_and_replaced_by_put() {
    let h = Harness::start().await;
    let patched = h
        .send(
            "PATCH",
            "/config",
            Some(r#"{"loop_wait":5,"postgresql":{"parameters":{"work_mem":"8MB"}},"pause":true}"#),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    let expected = json!({"ttl": 30, "loop_wait": 5,
        "postgresql": {"parameters": {"max_connections": 100, "work_mem": "8MB"}}, "pause": true});
    assert_eq!(
        serde_json::from_str::<Value>(&patched.body).unwrap(),
        expected
    );
    assert_eq!(h.config().await, expected);

    let deleted = h
        .send(
            "PATCH",
            "/config",
            Some(r#"{"pause":null,"postgresql":{"parameters":{"max_connections":null}}}"#),
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(
        h.config().await,
        json!({"ttl": 30, "loop_wait": 5, "postgresql": {"parameters": {"work_mem": "8MB"}}})
    );

    let replaced = h
        .send("PUT", "/config", Some(r#"{"ttl":20,"loop_wait":2}"#))
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(h.config().await, json!({"ttl": 20, "loop_wait": 2}));

    assert_eq!(h.send("PATCH", "/config", Some("{}")).await.status, 400);
    assert_eq!(h.send("PATCH", "/config", Some("[1]")).await.status, 400);

    // Synchronous replication is not implemented: turning it on is refused, not ignored.
    for (method, body) in [
        ("PATCH", r#"{"synchronous_mode":true}"#),
        ("PATCH", r#"{"synchronous_mode":"quorum"}"#),
        ("PUT", r#"{"ttl":20,"synchronous_mode":"on"}"#),
    ] {
        let refused = h.send(method, "/config", Some(body)).await;
        assert_eq!(refused.status, 400, "{method} {body}");
        assert!(
            refused.body.contains("synchronous_mode"),
            "{}",
            refused.body
        );
    }
    assert_eq!(h.config().await, json!({"ttl": 20, "loop_wait": 2}));
    let off = h
        .send("PATCH", "/config", Some(r#"{"synchronous_mode":false}"#))
        .await;
    assert_eq!(off.status, 200);
    h.stop().await;
}

#[tokio::test]
async fn patching_without_a_config_key_is_unavailable() {
    let h = Harness::start().await;
    h.pg0
        .delete(dcs_core::StateKey::Config, None)
        .await
        .unwrap();
    let answer = h.send("PATCH", "/config", Some(r#"{"ttl":20}"#)).await;
    assert_eq!(answer.status, 503);
    assert!(h.cluster().await.config.is_none(), "nothing was created");
    h.stop().await;
}

#[tokio::test]
async fn restart_reload_and_reinitialize_are_carried_out_by_the_ha_loop() {
    let mut h = Harness::start().await;

    let restart = h.send("POST", "/restart", None).await;
    assert_eq!(
        (restart.status, restart.body.as_str()),
        (200, "restarted successfully")
    );
    assert_eq!(h.asked.recv().await, Some(Asked::Restart));

    let filtered = h
        .send("POST", "/restart", Some(r#"{"role":"replica"}"#))
        .await;
    assert_eq!(
        (filtered.status, filtered.body.as_str()),
        (503, "restart conditions are not satisfied")
    );
    let newer = h
        .send("POST", "/restart", Some(r#"{"postgres_version":"16.5"}"#))
        .await;
    assert_eq!(newer.status, 200, "a newer binary is a reason to restart");
    assert_eq!(h.asked.recv().await, Some(Asked::Restart));

    let reload = h.send("POST", "/reload", None).await;
    assert_eq!(
        (reload.status, reload.body.as_str()),
        (202, "reload scheduled")
    );
    assert_eq!(h.asked.recv().await, Some(Asked::Reload));

    let reinit = h
        .send("POST", "/reinitialize", Some(r#"{"force":"true"}"#))
        .await;
    assert_eq!(
        (reinit.status, reinit.body.as_str()),
        (503, "I am the leader, can not reinitialize")
    );
    assert_eq!(
        h.asked.recv().await,
        Some(Asked::Reinitialize {
            force: true,
            from_leader: false
        })
    );

    let scheduled = h
        .send(
            "POST",
            "/restart",
            Some(r#"{"schedule":"2999-01-01T00:00:00+00:00","role":"replica","timeout":"1min"}"#),
        )
        .await;
    assert_eq!(
        (scheduled.status, scheduled.body.as_str()),
        (202, "Restart scheduled")
    );
    assert_eq!(
        h.asked.recv().await,
        Some(Asked::ScheduleRestart {
            at: ha_agent::ha::parse_scheduled_at("2999-01-01T00:00:00Z").unwrap(),
            // The role filter does not match the primary now: it is checked when due.
            filters: json!({"role": "replica", "timeout": 60}),
        })
    );
    let past = h
        .send(
            "POST",
            "/restart",
            Some(r#"{"schedule":"2000-01-01T00:00:00+00:00"}"#),
        )
        .await;
    assert_eq!(
        (past.status, past.body.as_str()),
        (422, "Cannot schedule restart in the past")
    );

    let cancel = h.send("DELETE", "/restart", None).await;
    assert_eq!(
        (cancel.status, cancel.body.as_str()),
        (200, "scheduled restart deleted")
    );
    assert_eq!(h.asked.recv().await, Some(Asked::CancelRestart));
    assert!(
        h.asked.try_recv().is_err(),
        "refused requests never reach the loop"
    );
    h.stop().await;
}

/// `POST /reload` from 127.0.0.1 to an API without credentials, with `allowlist`, whose
/// last cluster view is `cluster`: the status, and whether the HA loop was asked.
async fn reload_from_localhost(
    allowlist: Option<Allowlist>,
    cluster: Option<dcs_core::ClusterState>,
) -> (u16, bool) {
    let store = MemoryStore::new();
    let (requests, mut queue) = mpsc::channel::<LocalRequest>(1);
    let (asked_tx, mut asked) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(LocalRequest::Reload { reply }) = queue.recv().await {
            let _ = asked_tx.send(());
            let _ = reply.send(LocalReply {
                status: 202,
                message: "reload scheduled".into(),
            });
        }
    });
    let control = Control {
        dcs: Arc::new(store.client(options("pg0"))),
        requests,
        authentication: None,
        allowlist,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/reload", listener.local_addr().unwrap());
    let snapshot = Snapshot {
        cluster,
        ..primary_snapshot()
    };
    let (_snapshots, receiver) = watch::channel(snapshot);
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, receiver, Some(control), async {
        let _ = stopped.await;
    }));
    let answer = request("POST", &url, None, None, TIMEOUT).await.unwrap();
    if answer.status == 403 {
        assert_eq!(answer.body, "Access is denied");
    }
    stop.send(()).unwrap();
    server.await.unwrap();
    (answer.status, asked.try_recv().is_ok())
}

#[tokio::test]
async fn without_credentials_configured_anyone_may_write() {
    assert_eq!(reload_from_localhost(None, None).await, (202, true));
}

#[tokio::test]
async fn the_allowlist_refuses_other_addresses_before_anything_else() {
    let networks = |list: &[&str]| -> Vec<Network> {
        list.iter().map(|n| Network::parse(n).unwrap()).collect()
    };
    let elsewhere = Allowlist {
        networks: networks(&["10.0.0.0/8", "192.0.2.1"]),
        include_members: false,
    };
    assert_eq!(
        reload_from_localhost(Some(elsewhere.clone()), None).await,
        (403, false),
        "127.0.0.1 is not in the list: refused, the loop never asked"
    );
    let local = Allowlist {
        networks: networks(&["10.0.0.0/8", "127.0.0.0/8"]),
        include_members: false,
    };
    assert_eq!(reload_from_localhost(Some(local), None).await, (202, true));

    // With allowlist_include_members, a member's api_url host is allowed too.
    let store = MemoryStore::new();
    let pg1 = store.client(options("pg1"));
    pg1.publish_member(&member("replica", &json!({})))
        .await
        .unwrap();
    let cluster = pg1.cluster().await.unwrap();
    let members = Allowlist {
        include_members: true,
        ..elsewhere.clone()
    };
    assert_eq!(
        reload_from_localhost(Some(members.clone()), Some(cluster)).await,
        (202, true),
        "pg1's api_url is on 127.0.0.1"
    );
    assert_eq!(
        reload_from_localhost(Some(members), None).await,
        (403, false),
        "no cluster view, no members to allow"
    );
}
