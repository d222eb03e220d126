//! The REST API over real sockets: a hand-written HTTP/1.1 client against `serve`.

use std::time::{Duration, UNIX_EPOCH};

use dcs_core::ClusterState;
use dcs_core::model::{MemberState, RawEntry, Role, Version};
use ha_agent::api::{NodeStatus, PostgresStatus, Snapshot, Xlog, serve};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

/// One parsed answer.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        assert_eq!(self.header("content-type"), Some("application/json"));
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// Sends one request on `stream` and reads one response (by `Content-Length`, so the
/// connection stays usable for the next request).
async fn exchange(stream: &mut BufReader<TcpStream>, method: &str, target: &str) -> Reply {
    let request = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    stream
        .get_mut()
        .write_all(request.as_bytes())
        .await
        .unwrap();

    let mut line = String::new();
    stream.read_line(&mut line).await.unwrap();
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        line.clear();
        stream.read_line(&mut line).await.unwrap();
        let header = line.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':').expect("a header");
        headers.push((name.to_owned(), value.trim().to_owned()));
    }
    let mut reply = Reply {
        status,
        headers,
        body: String::new(),
    };
    // A HEAD response announces the length of the body it does not send.
    if method != "HEAD" {
        let length: usize = reply
            .header("content-length")
            .map_or(0, |l| l.parse().unwrap());
        let mut body = vec![0; length];
        stream.read_exact(&mut body).await.unwrap();
        reply.body = String::from_utf8(body).unwrap();
    }
    reply
}

async fn request(address: std::net::SocketAddr, method: &str, target: &str) -> Reply {
    let mut stream = BufReader::new(TcpStream::connect(address).await.unwrap());
    exchange(&mut stream, method, target).await
}

fn cluster(keys: &[(&str, &str)]) -> ClusterState {
    ClusterState::from_entries(keys.iter().map(|(key, value)| RawEntry {
        key: (*key).to_owned(),
        value: value.as_bytes().to_vec(),
        version: Version::new(1),
        owner: None,
        created: 1,
    }))
}

fn primary_snapshot() -> Snapshot {
    let mut node = NodeStatus::new("batman", "pg0", "4.1.4");
    node.state = MemberState::Running;
    node.role = Role::Primary;
    node.holds_lease = true;
    node.postgres = Some(PostgresStatus {
        postmaster_start_time: Some(UNIX_EPOCH + Duration::from_secs(1_714_557_600)),
        server_version: 160_004,
        xlog: Xlog::Primary { location: 1000 },
        timeline: Some(2),
        replication_state: None,
        replication: vec![],
    });
    Snapshot {
        node,
        cluster: Some(cluster(&[
            ("leader", "pg0"),
            (
                "members/pg0",
                r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","api_url":"http://10.0.0.1:8008/patroni","state":"running","role":"primary","xlog_location":1000,"timeline":2}"#,
            ),
            ("status", r#"{"optime":1000}"#),
            ("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#),
        ])),
    }
}

struct Server {
    address: std::net::SocketAddr,
    snapshots: watch::Sender<Snapshot>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

async fn start(snapshot: Snapshot) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (snapshots, receiver) = watch::channel(snapshot);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, receiver, None, async {
        let _ = stopped.await;
    }));
    Server {
        address,
        snapshots,
        stop,
        task,
    }
}

#[tokio::test]
async fn health_checks_answer_with_patronis_codes_over_http() {
    let server = start(primary_snapshot()).await;
    let a = server.address;

    let primary = request(a, "GET", "/primary").await;
    assert_eq!(primary.status, 200);
    assert_eq!(primary.json()["role"], "primary");
    assert_eq!(request(a, "GET", "/").await.status, 200);
    assert_eq!(request(a, "GET", "/leader").await.status, 200);

    let replica = request(a, "GET", "/replica?lag=1MB").await;
    assert_eq!(replica.status, 503);
    assert_eq!(
        replica.json()["patroni"]["name"],
        "pg0",
        "503 carries the status too"
    );

    // HAProxy's checks: the status line decides, no body follows.
    let head = request(a, "HEAD", "/primary").await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    let options = request(a, "OPTIONS", "/replica").await;
    assert_eq!((options.status, options.body.as_str()), (503, ""));
    let options = request(a, "OPTIONS", "/read-write").await;
    assert_eq!(options.status, 200);

    let liveness = request(a, "GET", "/liveness").await;
    assert_eq!((liveness.status, liveness.body.as_str()), (200, ""));
    assert_eq!(request(a, "GET", "/readiness").await.status, 200);

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test]
async fn status_cluster_history_and_config_documents_are_served() {
    let server = start(primary_snapshot()).await;
    let a = server.address;

    let patroni = request(a, "GET", "/patroni").await;
    assert_eq!(patroni.status, 200);
    let doc = patroni.json();
    assert_eq!(doc["xlog"]["location"], 1000);
    assert_eq!(doc["timeline"], 2);
    assert_eq!(doc["postmaster_start_time"], "2024-05-01 10:00:00+00:00");
    assert_eq!(doc["patroni"]["version"], "4.1.4");

    let cluster = request(a, "GET", "/cluster").await.json();
    assert_eq!(cluster["members"][0]["name"], "pg0");
    assert_eq!(cluster["members"][0]["role"], "leader");
    assert_eq!(cluster["members"][0]["host"], "10.0.0.1");
    assert_eq!(cluster["scope"], "batman", "Patroni 4.x names the scope");

    assert_eq!(
        request(a, "GET", "/history").await.json(),
        serde_json::json!([])
    );
    assert_eq!(request(a, "GET", "/config").await.json()["ttl"], 30);
    assert_eq!(request(a, "GET", "/failsafe").await.status, 502);

    let metrics = request(a, "GET", "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type"), Some("text/plain"));
    assert!(
        metrics
            .body
            .contains("patroni_primary{scope=\"batman\",name=\"pg0\"} 1\n")
    );
    assert!(
        metrics
            .body
            .contains("# TYPE patroni_postgres_timeline gauge\n")
    );

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}

/// pg1 replicates pg0 (`primary_snapshot`'s cluster, `/status` optime 1000), `behind`
/// bytes behind in replay and caught up in receipt.
fn replica_snapshot(behind: u64) -> Snapshot {
    let mut snapshot = primary_snapshot();
    let node = &mut snapshot.node;
    node.name = "pg1".into();
    node.role = Role::Replica;
    node.holds_lease = false;
    node.postgres = Some(PostgresStatus {
        postmaster_start_time: None,
        server_version: 160_004,
        xlog: Xlog::Replica {
            received_location: 1000,
            replayed_location: 1000 - behind,
            replayed_timestamp: None,
            paused: false,
        },
        timeline: Some(2),
        replication_state: Some("streaming".into()),
        replication: vec![],
    });
    snapshot
}

#[tokio::test]
async fn readiness_measures_a_replicas_lag_like_patroni_4() {
    let server = start(replica_snapshot(100)).await;
    let a = server.address;
    for (target, status) in [
        ("/readiness", 200),
        ("/readiness?lag=100", 200),
        ("/readiness?lag=99", 503),
        ("/readiness?lag=0&mode=write", 200),
        ("/readiness?lag=garbage", 200),
    ] {
        let reply = request(a, "GET", target).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (status, ""),
            "{target}"
        );
    }
    // Patroni runs the role health check for HEAD: `/readiness` names no role.
    assert_eq!(request(a, "HEAD", "/readiness").await.status, 503);

    // A replica that stops streaming is no longer ready, on the next request.
    let mut archive = replica_snapshot(0);
    if let Some(pg) = &mut archive.node.postgres {
        pg.replication_state = Some("in archive recovery".into());
    }
    server.snapshots.send_replace(archive);
    assert_eq!(request(a, "GET", "/readiness").await.status, 503);

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test]
async fn without_control_the_write_endpoints_are_not_found() {
    let server = start(primary_snapshot()).await;
    for (method, target) in [
        ("POST", "/switchover"),
        ("POST", "/failover"),
        ("POST", "/restart"),
        ("PATCH", "/config"),
    ] {
        let reply = request(server.address, method, target).await;
        assert_eq!(reply.status, 404, "{method} {target}");
    }
    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test]
async fn each_request_sees_the_latest_snapshot_on_a_kept_alive_connection() {
    let server = start(primary_snapshot()).await;
    let mut connection = BufReader::new(TcpStream::connect(server.address).await.unwrap());
    assert_eq!(
        exchange(&mut connection, "GET", "/primary").await.status,
        200
    );

    // The lease ran out: the very next check on the same connection must say so.
    let mut lost = primary_snapshot();
    lost.node.holds_lease = false;
    server.snapshots.send_replace(lost);
    assert_eq!(
        exchange(&mut connection, "GET", "/primary").await.status,
        503
    );
    assert_eq!(
        exchange(&mut connection, "HEAD", "/leader").await.status,
        503
    );
    assert_eq!(
        exchange(&mut connection, "GET", "/health").await.status,
        200
    );

    server.stop.send(()).unwrap();
    server.task.await.unwrap();
}

#[tokio::test]
async fn shutdown_closes_the_listener_and_open_connections() {
    let server = start(primary_snapshot()).await;
    let mut idle = TcpStream::connect(server.address).await.unwrap();
    let mut connection = BufReader::new(TcpStream::connect(server.address).await.unwrap());
    assert_eq!(
        exchange(&mut connection, "GET", "/patroni").await.status,
        200
    );

    server.stop.send(()).unwrap();
    server.task.await.unwrap();

    assert!(TcpStream::connect(server.address).await.is_err());
    // Open connections are closed: a read sees end of stream.
    let mut buffer = [0; 1];
    assert_eq!(idle.read(&mut buffer).await.unwrap_or(0), 0);
    assert_eq!(connection.read(&mut buffer).await.unwrap_or(0), 0);
}
