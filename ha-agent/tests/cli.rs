//! The `ha-agent` binary's entry points as a user meets them: `--validate-config`, a bad
//! file, root, and usage errors. Runs the built binary; needs no server.

use std::path::Path;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ha-agent"))
        .args(args)
        // A developer's PATRONI_* variables would change what the file says.
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .expect("the ha-agent binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn write_config(dir: &Path, extra: &str) -> String {
    let bin_dir = dcs_tests::fixtures::postgres::bin_dir().map_or_else(
        |_| "/usr/lib/postgresql/15/bin".to_owned(),
        |d| d.display().to_string(),
    );
    let path = dir.join("node.yml");
    std::fs::write(
        &path,
        format!(
            "scope: demo\nname: node0\nrestapi:\n  listen: 127.0.0.1:8008\n\
             etcd3:\n  hosts: 127.0.0.1:2379\n\
             postgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  data_dir: {}/data\n  bin_dir: {bin_dir}\n  authentication:\n    superuser:\n      username: postgres\n    replication:\n      username: replicator\n\
             {extra}",
            dir.display()
        ),
    )
    .unwrap();
    path.display().to_string()
}

#[test]
fn validate_config_accepts_a_good_file_and_names_the_bad_value_of_another() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "");
    let output = agent(&["--validate-config", &good]);
    if dcs_tests::fixtures::postgres::bin_dir().is_ok() {
        assert!(output.status.success(), "{}", text(&output));
        assert!(text(&output).contains("the configuration is valid"));
    }

    let bad = write_config(dir.path(), "").replace("node.yml", "bad.yml");
    let text_of_good = std::fs::read_to_string(&good).unwrap();
    std::fs::write(
        &bad,
        text_of_good.replace("listen: 127.0.0.1:5432", "listen: abc"),
    )
    .unwrap();
    let output = agent(&["--validate-config", &bad]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(
        text(&output).contains(r#"postgresql.listen: "abc" is not host:port"#),
        "{}",
        text(&output)
    );
}

#[test]
fn validate_config_names_missing_postgresql_programs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.yml");
    std::fs::write(
        &path,
        format!(
            "scope: demo\nname: node0\nrestapi:\n  listen: 127.0.0.1:8008\n\
             etcd3:\n  hosts: 127.0.0.1:2379\n\
             postgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  data_dir: {0}/data\n  bin_dir: {0}/nowhere\n  authentication:\n    superuser:\n      username: postgres\n    replication:\n      username: replicator\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let output = agent(&["--validate-config", &path.display().to_string()]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("pg_ctl not found"),
        "{}",
        text(&output)
    );
}

#[test]
fn running_as_root_is_refused_with_the_reason() {
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "");
    let output = agent(&[&config]);
    assert_eq!(output.status.code(), Some(1));
    assert!(
        text(&output).contains("refusing to run as root"),
        "{}",
        text(&output)
    );
}

#[test]
fn usage_errors_exit_2_and_show_the_usage() {
    for args in [
        &["--frobnicate"][..],
        &["--validate-config"],
        &["a.yml", "b.yml"],
    ] {
        let output = agent(args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(text(&output).contains("usage: ha-agent"), "{args:?}");
    }
    let output = agent(&["--version"]);
    assert!(output.status.success());
    assert!(text(&output).starts_with("ha-agent "));
}
