//! `EtcdDcs` specifics beyond the contract, on real etcd: graceful close, an unreachable
//! store, and etcd authentication (wrong password, read-only user, the right credentials).
//!
//! Skips (or fails, when `DCS_TEST_REQUIRE` lists etcd) if etcd cannot start.

use std::time::Duration;

use dcs_core::{
    Acquire, ClientOptions, ClusterPath, Dcs, DcsExt, Error, MemberData, Precondition, Timing,
};
use dcs_etcd::{EtcdConfig, EtcdDcs, Hosts};
use dcs_tests::fixtures::{EtcdServer, free_ports};
use dcs_tests::require::skip_or_fail;
use etcd_client::Permission;

fn timing() -> Timing {
    Timing::new(
        Duration::from_secs(3),
        Duration::from_secs(1),
        Duration::from_secs(1),
    )
    .expect("valid timing")
}

async fn etcd() -> Option<EtcdServer> {
    match EtcdServer::start().await {
        Ok(server) => Some(server),
        Err(e) => {
            skip_or_fail("etcd", e);
            None
        }
    }
}

fn config(server: &EtcdServer) -> EtcdConfig {
    EtcdConfig {
        hosts: Some(Hosts::List(
            server
                .endpoints()
                .iter()
                .map(|e| e.trim_start_matches("http://").to_owned())
                .collect(),
        )),
        ..EtcdConfig::default()
    }
}

async fn client(config: &EtcdConfig, scope: &str, name: &str) -> EtcdDcs {
    let options = ClientOptions::new(ClusterPath::new(scope).expect("scope"), name)
        .expect("name")
        .with_timing(timing());
    EtcdDcs::connect(config, options).await.expect("client")
}

/// `close` revokes the lease: the leader key and the member key are gone at once, and
/// another member takes the lock without waiting for the ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_removes_the_leader_and_member_keys_at_once() {
    let Some(etcd) = etcd().await else { return };
    let config = config(&etcd);
    let leaving = client(&config, "close", "pg0").await;
    let other = client(&config, "close", "pg1").await;
    leaving
        .publish_member(&MemberData::default())
        .await
        .expect("publish");
    let Acquire::Won(lease) = leaving.try_acquire_leader().await.expect("acquire") else {
        panic!("the lock is free");
    };
    leaving.close().await.expect("close");
    let state = other.cluster().await.expect("snapshot");
    assert!(
        state.leader.is_none() && state.members.is_empty(),
        "{state:?}"
    );
    assert!(lease.is_valid(), "gone before the ttl, not by expiry");
    assert!(matches!(
        other.try_acquire_leader().await.expect("acquire"),
        Acquire::Won(_)
    ));
}

/// With every endpoint unreachable, each call fails with a retryable error within its
/// deadline — never `LeaseLost`, never a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_store_is_a_retryable_error_never_a_lost_lease() {
    // Ports nothing listens on: bound and released again.
    let ports = free_ports(2).expect("free ports");
    let config = EtcdConfig::from_url(&format!(
        "etcd://127.0.0.1:{},127.0.0.1:{}",
        ports[0], ports[1]
    ))
    .expect("url");
    let dcs = client(&config, "unreachable", "pg0").await;
    let calls: [(&str, dcs_core::Result<()>); 4] = [
        ("cluster", dcs.cluster().await.map(drop)),
        ("acquire", dcs.try_acquire_leader().await.map(drop)),
        (
            "publish",
            dcs.publish_member(&MemberData::default()).await.map(drop),
        ),
        (
            "write",
            dcs.write(dcs_core::StateKey::Config, "{}", Precondition::Any)
                .await
                .map(drop),
        ),
    ];
    for (what, result) in calls {
        match result {
            Err(e) if e.is_retryable() => {}
            other => panic!("{what}: expected a retryable error, got {other:?}"),
        }
    }
}

/// With authentication enabled: a wrong password is `Unauthenticated`, a user without write
/// permission on the scope gets `PermissionDenied`, and the right credentials work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_authentication_errors_are_told_apart_and_credentials_work() {
    let Some(etcd) = etcd().await else { return };
    let mut admin = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("admin client");
    admin.role_add("root").await.expect("root role");
    admin
        .user_add("root", "rootpw", None)
        .await
        .expect("root user");
    admin
        .user_grant_role("root", "root")
        .await
        .expect("grant root");
    admin.role_add("reader").await.expect("reader role");
    admin
        .role_grant_permission("reader", Permission::read("/service/").with_prefix())
        .await
        .expect("read permission");
    admin
        .user_add("reader", "readerpw", None)
        .await
        .expect("reader user");
    admin
        .user_grant_role("reader", "reader")
        .await
        .expect("grant reader");
    admin.auth_enable().await.expect("auth enable");

    let with = |user: &str, password: &str| {
        let mut config = config(&etcd);
        config.username = Some(user.to_owned());
        config.password = Some(password.to_owned());
        config
    };
    let wrong = client(&with("root", "wrong"), "auth", "pg0").await;
    match wrong.cluster().await {
        Err(Error::Unauthenticated(_)) => {}
        other => panic!("wrong password: expected Unauthenticated, got {other:?}"),
    }
    let reader = client(&with("reader", "readerpw"), "auth", "pg0").await;
    reader.cluster().await.expect("a reader reads");
    match reader.initialize().await {
        Err(Error::PermissionDenied(_)) => {}
        other => panic!("a reader writing: expected PermissionDenied, got {other:?}"),
    }
    let root = client(&with("root", "rootpw"), "auth", "pg0").await;
    root.initialize().await.expect("root writes");
    assert!(matches!(
        root.try_acquire_leader().await.expect("acquire"),
        Acquire::Won(_)
    ));
}

/// Runs `openssl` with `args` in `dir`.
async fn openssl(dir: &std::path::Path, args: &[&str]) {
    let output = tokio::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .expect("openssl runs");
    assert!(output.status.success(), "openssl {args:?}: {output:?}");
}

/// A CA, a server certificate for 127.0.0.1 and a client certificate, in `dir`.
async fn certificates(dir: &std::path::Path) {
    let days = ["-days", "2"];
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=dcs-test-ca",
            days[0],
            days[1],
        ],
    )
    .await;
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("server.ext");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("client.ext");
    for (name, cn) in [("server", "127.0.0.1"), ("client", "root")] {
        let key = format!("{name}.key");
        let csr = format!("{name}.csr");
        let pem = format!("{name}.pem");
        let ext = format!("{name}.ext");
        let subject = format!("/CN={cn}");
        openssl(
            dir,
            &[
                "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr, "-subj",
                &subject,
            ],
        )
        .await;
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &pem,
                "-extfile",
                &ext,
                days[0],
                days[1],
            ],
        )
        .await;
    }
}

/// Over TLS with client-certificate authentication (`protocol: https`, `cacert`, `cert`,
/// `key`), the contract works; without the client certificate the server refuses, and the
/// client reports `Unauthenticated` (not a retryable outage).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate_works_and_without_one_is_refused() {
    let etcd = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("etcd"))
        .find(|path| path.is_file());
    let Some(etcd) = etcd else {
        skip_or_fail("etcd", "etcd is not installed (Debian package etcd-server)");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    certificates(dir.path()).await;
    let ports = free_ports(2).expect("free ports");
    let client_url = format!("https://127.0.0.1:{}", ports[0]);
    let peer_url = format!("http://127.0.0.1:{}", ports[1]);
    let path = |name: &str| dir.path().join(name);
    let log = std::fs::File::create(path("etcd.log")).expect("log");
    let mut server = tokio::process::Command::new(etcd)
        .args(["--name", "tls", "--data-dir"])
        .arg(path("data"))
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls={peer_url}")])
        .arg("--cert-file")
        .arg(path("server.pem"))
        .arg("--key-file")
        .arg(path("server.key"))
        .arg("--trusted-ca-file")
        .arg(path("ca.pem"))
        .arg("--client-cert-auth")
        .args(["--logger", "zap", "--log-outputs", "stderr"])
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("etcd starts");

    let mut config = EtcdConfig {
        hosts: Some(Hosts::Text(format!("127.0.0.1:{}", ports[0]))),
        protocol: Some("https".to_owned()),
        cacert: Some(path("ca.pem")),
        cert: Some(path("client.pem")),
        key: Some(path("client.key")),
        ..EtcdConfig::default()
    };
    let dcs = client(&config, "tls", "pg0").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match dcs.cluster().await {
            Ok(_) => break,
            Err(e) if e.is_retryable() && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "TLS client: {e}\n{}",
                std::fs::read_to_string(path("etcd.log")).unwrap_or_default()
            ),
        }
    }
    assert!(matches!(
        dcs.try_acquire_leader().await.expect("acquire over TLS"),
        Acquire::Won(_)
    ));

    config.cert = None;
    config.key = None;
    let anonymous = client(&config, "tls", "pg1").await;
    let refused = anonymous.cluster().await;
    assert!(
        matches!(refused, Err(Error::Unauthenticated(_))),
        "no client certificate: {refused:?}"
    );

    server.kill().await.expect("stop etcd");
}
