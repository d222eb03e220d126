//! The harness of the `ha-agent ctl` tests (`ctl.rs`, `ctl_more.rs`): the built binary run
//! against a patronictl-style configuration file, a real etcd holding a cluster written
//! through the `Dcs` API, and member REST APIs that record what they were sent.

#![allow(
    dead_code,
    reason = "each test file uses the part of the harness its commands need"
)]

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use dcs_core::model::{ClusterConfig, Status, TimelineHistory};
use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, DcsExt, LeaderLease, MemberData, Precondition,
};
use dcs_etcd::{EtcdConfig, EtcdDcs, Hosts};
use dcs_tests::fixtures::EtcdServer;
use dcs_tests::require::skip_or_fail;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// What one run of the binary printed and returned.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// One request the fake member API received.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) authorization: Option<String>,
    pub(crate) body: String,
}

/// A member REST API that answers every request with one status and body, and records
/// the requests.
pub(crate) struct FakeApi {
    pub(crate) url: String,
    received: Arc<Mutex<Vec<Received>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeApi {
    pub(crate) async fn start(status: u16, answer: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/patroni", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let mut stream = BufReader::new(stream);
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or_default().to_owned();
                let path = parts.next().unwrap_or_default().to_owned();
                let (mut length, mut authorization) = (0, None);
                loop {
                    line.clear();
                    stream.read_line(&mut line).await.unwrap();
                    let header = line.trim_end();
                    if header.is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    if name.eq_ignore_ascii_case("content-length") {
                        length = value.trim().parse().unwrap();
                    } else if name.eq_ignore_ascii_case("authorization") {
                        authorization = Some(value.trim().to_owned());
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                log.lock().unwrap().push(Received {
                    method,
                    path,
                    authorization,
                    body: String::from_utf8(body).unwrap(),
                });
                let reply = format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{answer}",
                    answer.len()
                );
                stream.get_mut().write_all(reply.as_bytes()).await.unwrap();
            }
        });
        Self {
            url,
            received,
            task,
        }
    }

    pub(crate) fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A cluster `batman` in a real etcd: pg0 holds the lock, pg1 streams 7 MB behind, pg2
/// (`nofailover`) is stopped; a paused config, two history lines.
pub(crate) struct Cluster {
    _etcd: EtcdServer,
    etcd_config: EtcdConfig,
    dir: tempfile::TempDir,
    config_file: PathBuf,
    // The members' own clients keep their member keys and pg0's lock alive.
    members: Vec<EtcdDcs>,
    _lease: LeaderLease,
}

impl Cluster {
    /// `api_urls`: the REST API of pg0 and pg1.
    pub(crate) async fn start(api_urls: [&str; 2]) -> Option<Self> {
        let etcd = match EtcdServer::start().await {
            Ok(server) => server,
            Err(error) => {
                skip_or_fail("etcd", error);
                return None;
            }
        };
        let hosts: Vec<String> = etcd
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_owned())
            .collect();
        let etcd_config = EtcdConfig {
            hosts: Some(Hosts::List(hosts.clone())),
            ..EtcdConfig::default()
        };
        let client = |name: &'static str| {
            let options = ClientOptions::new(ClusterPath::new("batman").unwrap(), name).unwrap();
            EtcdDcs::connect(&etcd_config, options)
        };
        let pg0 = client("pg0").await.unwrap();
        let pg1 = client("pg1").await.unwrap();
        let pg2 = client("pg2").await.unwrap();

        pg0.initialize().await.unwrap();
        pg0.set_system_id("7268616322854375442", Precondition::Any)
            .await
            .unwrap();
        let config = ClusterConfig::parse(
            br#"{"ttl":30,"loop_wait":10,"postgresql":{"parameters":{"max_connections":100}},"pause":true}"#,
        );
        pg0.set_config(&config, Precondition::Absent).await.unwrap();
        let Acquire::Won(lease) = pg0.try_acquire_leader().await.unwrap() else {
            panic!("a fresh cluster's lock is free");
        };
        pg0.write_status(&Status::parse(br#"{"optime":67420024}"#))
            .await
            .unwrap();
        pg0.write_history(&TimelineHistory::parse(
            br#"[[1,25165984,"no recovery target specified","2024-09-24T12:00:00+00:00","pg0"]]"#,
        ))
        .await
        .unwrap();
        let member = |json: Value| MemberData::parse(json.to_string().as_bytes());
        pg0.publish_member(&member(json!({
            "conn_url": "postgres://127.0.0.1:5432/postgres", "api_url": api_urls[0],
            "state": "running", "role": "primary", "xlog_location": 67_420_024, "timeline": 2
        })))
        .await
        .unwrap();
        pg1.publish_member(&member(json!({
            "conn_url": "postgres://127.0.0.1:5433/postgres", "api_url": api_urls[1],
            "state": "running", "role": "replica", "xlog_location": 60_000_000,
            "replication_state": "streaming", "timeline": 2
        })))
        .await
        .unwrap();
        pg2.publish_member(&member(json!({
            "conn_url": "postgres://127.0.0.1:5434/postgres", "state": "stopped",
            "role": "replica", "tags": {"nofailover": true}
        })))
        .await
        .unwrap();

        let dir = tempfile::tempdir().unwrap();
        let config_file = dir.path().join("patronictl.yaml");
        std::fs::write(
            &config_file,
            format!(
                "scope: batman\netcd3:\n  hosts: {}\nctl:\n  authentication:\n    username: \
                 admin\n    password: secret\n",
                hosts.join(",")
            ),
        )
        .unwrap();
        Some(Self {
            _etcd: etcd,
            etcd_config,
            dir,
            config_file,
            members: vec![pg0, pg1, pg2],
            _lease: lease,
        })
    }

    /// Runs `ha-agent ctl -c <config> <args>` with `stdin` as its standard input.
    pub(crate) async fn ctl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Run {
        self.ctl_with_env(args, stdin, &[]).await
    }

    /// Runs `ha-agent ctl -c <config> <args>` with `stdin` and these environment variables
    /// (libpq's `PG*` are removed unless given here).
    pub(crate) async fn ctl_with_env(
        &self,
        args: &[&str],
        stdin: Option<&str>,
        env: &[(&str, &str)],
    ) -> Run {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_ha-agent"));
        command
            .arg("ctl")
            .arg("-c")
            .arg(&self.config_file)
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("PATRONICTL_CONFIG_FILE")
            .env_remove("DCS_URL")
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, _) in
            std::env::vars().filter(|(k, _)| k.starts_with("PATRONI_") || k.starts_with("PG"))
        {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().expect("the ha-agent binary runs");
        if let Some(text) = stdin {
            let mut pipe = child.stdin.take().unwrap();
            pipe.write_all(text.as_bytes()).await.unwrap();
        }
        let output = child.wait_with_output().await.unwrap();
        Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    pub(crate) async fn ctl(&self, args: &[&str]) -> Run {
        self.ctl_with_stdin(args, None).await
    }

    /// A fresh reader of the cluster, to check what ctl wrote.
    pub(crate) async fn reader(&self) -> EtcdDcs {
        self.client("batman", "reader").await
    }

    /// A client of `scope` in the same etcd.
    pub(crate) async fn client(&self, scope: &str, name: &str) -> EtcdDcs {
        let options = ClientOptions::new(ClusterPath::new(scope).unwrap(), name).unwrap();
        EtcdDcs::connect(&self.etcd_config, options).await.unwrap()
    }

    /// Publishes `data` as the member key of `name` (`pg0`, `pg1`, `pg2`) through that
    /// member's own client, as the member itself would.
    pub(crate) async fn publish(&self, name: &str, data: &Value) {
        let index = ["pg0", "pg1", "pg2"]
            .iter()
            .position(|n| *n == name)
            .expect("a member of the test cluster");
        self.members[index]
            .publish_member(&MemberData::parse(data.to_string().as_bytes()))
            .await
            .unwrap();
    }
}

/// An address nothing listens on: the member API is down.
pub(crate) async fn closed_api_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{address}/patroni")
}
