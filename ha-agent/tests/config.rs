//! The agent reads Patroni's configuration files, environment and errors as a Patroni user
//! expects.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dcs_etcd::Hosts;
use ha_agent::config::{
    Config, ConfigError, DcsConfig, HostPort, InitdbOption, Warning, WarningKind, WatchdogMode,
};
use proptest::prelude::*;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

const MINIMAL: &str = "
scope: pg
name: pg0
restapi:
  listen: 0.0.0.0:8008
  connect_address: 10.0.0.1:8008
etcd3:
  hosts: 10.0.0.5:2379,10.0.0.6:2379
postgresql:
  listen: 0.0.0.0:5432
  connect_address: 10.0.0.1:5432
  data_dir: /var/lib/postgresql/data
  authentication:
    superuser: {username: postgres, password: secret}
    replication: {username: replicator, password: rep}
";

fn load(yaml: &str) -> (Config, Vec<Warning>) {
    Config::from_yaml_str(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"))
}

fn error(yaml: &str) -> ConfigError {
    match Config::from_yaml_str(yaml) {
        Ok(_) => panic!("accepted:\n{yaml}"),
        Err(e) => e,
    }
}

/// MINIMAL with `extra` appended (later keys of the same section are in new sections,
/// so extras add top-level sections or replace whole ones via `replace`).
fn with(replace: &[(&str, &str)], extra: &str) -> String {
    let mut yaml = MINIMAL.to_owned();
    for (from, to) in replace {
        assert!(yaml.contains(from), "{from}");
        yaml = yaml.replace(from, to);
    }
    yaml.push_str(extra);
    yaml
}

fn env(pairs: &[(&str, &str)]) -> impl Iterator<Item = (String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect::<Vec<_>>()
        .into_iter()
}

fn paths(warnings: &[Warning]) -> Vec<&str> {
    warnings.iter().map(|w| w.path.as_str()).collect()
}

#[test]
fn patronis_example_config_loads_unchanged_with_only_the_expected_warnings() {
    let (config, warnings) = Config::load(fixture("postgres0.yml")).unwrap();
    assert_eq!(paths(&warnings), ["bootstrap.users"], "{warnings:?}");
    assert_eq!(warnings[0].kind, WarningKind::Ignored);

    assert_eq!(config.scope, "batman");
    assert_eq!(config.name, "postgresql0");
    assert_eq!(config.namespace, "/service");
    let DcsConfig::Etcd3(etcd) = &config.dcs else {
        panic!("{:?}", config.dcs)
    };
    assert_eq!(etcd.endpoints().unwrap(), ["http://127.0.0.1:2379"]);
    assert_eq!(
        config.restapi.listen,
        HostPort {
            host: "127.0.0.1".into(),
            port: 8008
        }
    );
    assert_eq!(config.postgresql.data_dir, Path::new("data/postgresql0"));
    assert_eq!(
        config.postgresql.pgpass.as_deref(),
        Some(Path::new("/tmp/pgpass0"))
    );
    assert_eq!(config.postgresql.superuser.username, "postgres");
    assert_eq!(
        config.postgresql.superuser.password.as_deref(),
        Some("zalando")
    );
    assert_eq!(config.postgresql.replication.username, "replicator");
    assert_eq!(
        config.postgresql.rewind.as_ref().unwrap().username,
        "rewind_user"
    );
    assert_eq!(
        config.postgresql.parameters["unix_socket_directories"],
        ".."
    );
    assert_eq!(
        config.bootstrap.initdb,
        [
            InitdbOption::Value("encoding".into(), "UTF8".into()),
            InitdbOption::Flag("data-checksums".into())
        ]
    );
    assert_eq!(
        config
            .bootstrap
            .initdb
            .iter()
            .map(InitdbOption::to_arg)
            .collect::<Vec<_>>(),
        ["--encoding=UTF8", "--data-checksums"]
    );
    assert_eq!(config.bootstrap.pg_hba.len(), 2);
    // bootstrap.dcs is kept whole, in order, for the DCS `config` key.
    assert_eq!(
        config.bootstrap.dcs.to_json(),
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":null}}"#
    );
    assert_eq!(config.bootstrap.dcs.maximum_lag_on_failover(), 1_048_576);
    assert!(!config.tags.nofailover && !config.tags.clonefrom && !config.tags.nosync);
    assert!(config.tags.may_fail_over());
    assert_eq!(config.watchdog.mode, WatchdogMode::Automatic);

    assert_eq!(config.conn_url(), "postgres://127.0.0.1:5432/postgres");
    assert_eq!(config.api_url(), "http://127.0.0.1:8008/patroni");
    let options = config.client_options();
    assert_eq!(options.name(), "postgresql0");
    assert_eq!(options.path().prefix(), "/service/batman/");
    assert_eq!(options.timing().ttl(), Duration::from_secs(30));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let (config, _) = Config::load(fixture("postgres0.yml")).unwrap();
    let debug = format!("{config:?}");
    for secret in ["zalando", "rep-pass", "rewind_password"] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
    }
}

#[test]
fn zookeeper_is_the_other_supported_dcs() {
    let yaml = with(
        &[(
            "etcd3:\n  hosts: 10.0.0.5:2379,10.0.0.6:2379",
            "zookeeper:\n  hosts: ['z1:2181', 'z2:2181']",
        )],
        "",
    );
    let (config, warnings) = load(&yaml);
    assert!(warnings.is_empty(), "{warnings:?}");
    let DcsConfig::ZooKeeper(zk) = &config.dcs else {
        panic!("{:?}", config.dcs)
    };
    assert_eq!(zk.connect_string(), "z1:2181,z2:2181");
}

#[test]
fn urls_are_built_as_patroni_builds_them() {
    let yaml = with(
        &[
            (
                "connect_address: 10.0.0.1:8008",
                "certfile: /etc/ssl/api.pem",
            ),
            (
                "connect_address: 10.0.0.1:5432",
                "connect_address: '[fd00::1]:5433'\n  database: app",
            ),
        ],
        "namespace: /prod/\n",
    );
    let (config, _) = load(&yaml);
    // https because of certfile; listen because connect_address is absent.
    assert_eq!(config.api_url(), "https://0.0.0.0:8008/patroni");
    assert_eq!(config.conn_url(), "postgres://[fd00::1]:5433/app");
    assert_eq!(config.cluster_path().prefix(), "/prod/pg/");
}

#[test]
fn unknown_keys_are_warned_about_with_their_full_path() {
    let yaml = with(
        &[("  data_dir:", "  paramters: {a: 1}\n  data_dir:")],
        "tags:\n  custom: x\nrestapi_typo: 1\n",
    );
    let (config, warnings) = load(&yaml);
    let unknown: Vec<&str> = warnings
        .iter()
        .filter(|w| w.kind == WarningKind::UnknownKey)
        .map(|w| w.path.as_str())
        .collect();
    assert_eq!(
        unknown,
        ["restapi_typo", "postgresql.paramters"],
        "{warnings:?}"
    );
    // Custom tags are a feature, kept for the member key.
    assert_eq!(config.tags.all["custom"], "x");
    let yaml = with(
        &[("hosts: 10.0.0.5", "use_proxies: true\n  hosts: 10.0.0.5")],
        "",
    );
    assert_eq!(paths(&load(&yaml).1), ["etcd3.use_proxies"]);
}

#[test]
fn each_bad_value_is_one_error_naming_its_path() {
    // (replacements in MINIMAL, text appended, start of the expected message)
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case<'_>] = &[
        (
            &[("listen: 0.0.0.0:5432", "listen: abc")],
            "",
            r#"postgresql.listen: "abc" is not host:port"#,
        ),
        (
            &[("listen: 0.0.0.0:8008", "listen: 0.0.0.0:99999")],
            "",
            r#"restapi.listen: "0.0.0.0:99999" is not host:port"#,
        ),
        (
            &[(
                "connect_address: 10.0.0.1:5432",
                "connect_address: '*:5432'",
            )],
            "",
            r#"postgresql.connect_address: "*:5432" is not host:port"#,
        ),
        (
            &[("scope: pg", "scope: a/b")],
            "",
            r#"scope: "a/b" is not a non-empty name without '/'"#,
        ),
        (
            &[("name: pg0", "name: [x]")],
            "",
            r#"name: ["x"] is not a string"#,
        ),
        (&[("scope: pg\n", "")], "", "scope: required but not set"),
        (&[("name: pg0\n", "")], "", "name: required but not set"),
        (
            &[("  data_dir: /var/lib/postgresql/data\n", "")],
            "",
            "postgresql.data_dir: required but not set",
        ),
        (
            &[("  listen: 0.0.0.0:8008\n", "")],
            "",
            "restapi.listen: required but not set",
        ),
        (
            &[(
                "    replication: {username: replicator, password: rep}\n",
                "",
            )],
            "",
            "postgresql.authentication.replication: required but not set",
        ),
        (
            &[],
            "tags:\n  nofailover: maybe\n",
            r#"tags.nofailover: "maybe" is not a boolean"#,
        ),
        (
            &[],
            "bootstrap:\n  dcs:\n    ttl: thirty\n",
            r#"bootstrap.dcs.ttl: "thirty" is not an integer"#,
        ),
        (
            &[],
            "bootstrap:\n  initdb: [{encoding: UTF8, locale: C}]\n",
            "bootstrap.initdb[0]",
        ),
        (
            &[(
                "  data_dir:",
                "  parameters: {shared_buffers: [1]}\n  data_dir:",
            )],
            "",
            "postgresql.parameters.shared_buffers: [1] is not a string, number or boolean",
        ),
        (
            &[("hosts: 10.0.0.5:2379,10.0.0.6:2379", "hosts: 10.0.0.5:port")],
            "",
            "etcd3.hosts entry \"10.0.0.5:port\"",
        ),
        (&[], "tags: 5\n", "tags: 5 is not a mapping"),
    ];
    for (replace, extra, expected) in cases {
        let yaml = with(replace, extra);
        let message = error(&yaml).to_string();
        assert!(message.starts_with(expected), "{message:?} vs {expected:?}");
    }
    let error = error(&with(&[("listen: 0.0.0.0:5432", "listen: abc")], ""));
    assert_eq!(error.path(), Some("postgresql.listen"));
}

#[test]
fn passwords_are_not_echoed_in_errors() {
    let yaml = with(&[("password: secret", "password: {nested: s3cr3t}")], "");
    let message = error(&yaml).to_string();
    assert!(
        message.contains("postgresql.authentication.superuser.password"),
        "{message}"
    );
    assert!(!message.contains("s3cr3t"), "{message}");
}

#[test]
fn exactly_one_supported_dcs_section_is_required() {
    let no_dcs = with(
        &[("etcd3:\n  hosts: 10.0.0.5:2379,10.0.0.6:2379\n", "")],
        "",
    );
    assert!(matches!(error(&no_dcs), ConfigError::NoDcs));
    let both = with(&[], "zookeeper:\n  hosts: z:2181\n");
    let ConfigError::SeveralDcs { sections } = error(&both) else {
        panic!()
    };
    assert_eq!(sections, ["etcd3", "zookeeper"]);
    for section in ["etcd", "consul", "kubernetes", "raft", "exhibitor"] {
        let yaml = with(
            &[(
                "etcd3:\n  hosts: 10.0.0.5:2379,10.0.0.6:2379",
                &format!("{section}:\n  host: x"),
            )],
            "",
        );
        let error = error(&yaml);
        assert!(matches!(error, ConfigError::Unsupported { .. }), "{error}");
        assert_eq!(error.path(), Some(section));
    }
    let message = error(&with(&[("etcd3:", "etcd:")], "")).to_string();
    assert!(message.contains("rename the section to etcd3"), "{message}");
}

#[test]
fn settings_unsafe_to_ignore_are_refused() {
    let cases = [
        ("watchdog:\n  mode: required\n", "watchdog.mode"),
        ("bootstrap:\n  method: wal_e\n", "bootstrap.method"),
        (
            "bootstrap:\n  dcs:\n    synchronous_mode: true\n",
            "bootstrap.dcs.synchronous_mode",
        ),
        (
            "bootstrap:\n  dcs:\n    synchronous_mode: quorum\n",
            "bootstrap.dcs.synchronous_mode",
        ),
        (
            "bootstrap:\n  dcs:\n    standby_cluster: {host: 10.1.1.1, port: 5432}\n",
            "bootstrap.dcs.standby_cluster",
        ),
        ("citus:\n  group: 0\n  database: citus\n", "citus"),
    ];
    for (extra, path) in cases {
        let error = error(&with(&[], extra));
        assert!(matches!(error, ConfigError::Unsupported { .. }), "{error}");
        assert_eq!(error.path(), Some(path), "{error}");
    }
    // Scripts run as Patroni runs them; a command line that cannot be split is refused.
    let scripts = with(
        &[(
            "  data_dir:",
            "  pre_promote: /fence.sh --strict\n  before_stop: '/drain.sh \"a b\"'\n  \
             callbacks: {on_role_change: /vip.sh}\n  data_dir:",
        )],
        "",
    );
    let (config, warnings) = load(&scripts);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        config.postgresql.pre_promote.as_deref(),
        Some("/fence.sh --strict")
    );
    assert_eq!(
        config.postgresql.before_stop.as_deref(),
        Some("/drain.sh \"a b\"")
    );
    assert_eq!(
        config
            .postgresql
            .callbacks
            .get("on_role_change")
            .map(String::as_str),
        Some("/vip.sh")
    );
    let unbalanced = with(
        &[(
            "  data_dir:",
            "  pre_promote: \"/fence.sh 'x\"\n  data_dir:",
        )],
        "",
    );
    assert_eq!(error(&unbalanced).path(), Some("postgresql.pre_promote"));
    // Off is off, whether PyYAML's `off` (false) or the string.
    for mode in ["off", "'off'", "false"] {
        let (config, warnings) = load(&with(&[], &format!("watchdog:\n  mode: {mode}\n")));
        assert_eq!(config.watchdog.mode, WatchdogMode::Off);
        assert!(warnings.is_empty());
    }
    let (_, warnings) = load(&with(
        &[],
        "bootstrap:\n  dcs:\n    synchronous_mode: false\n",
    ));
    assert!(warnings.is_empty(), "{warnings:?}");
}

#[test]
fn timing_is_adjusted_as_patroni_4_does_and_said() {
    let timing = |dcs: &str| {
        let (config, warnings) = load(&with(&[], &format!("bootstrap:\n  dcs:\n{dcs}")));
        let t = config.timing();
        (
            (
                t.ttl().as_secs(),
                t.loop_wait().as_secs(),
                t.retry_timeout().as_secs(),
            ),
            paths(&warnings)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(timing("    ttl: 30\n"), ((30, 10, 10), vec![]));
    assert_eq!(
        timing("    ttl: 60\n    loop_wait: 5\n    retry_timeout: '20'\n"),
        ((60, 5, 20), vec![])
    );
    // loop_wait is shortened so that loop_wait + 2 * retry_timeout <= ttl.
    assert_eq!(
        timing("    ttl: 25\n    loop_wait: 10\n    retry_timeout: 10\n"),
        ((25, 5, 10), vec!["bootstrap.dcs.loop_wait".to_owned()])
    );
    // A short ttl is kept; here not even loop_wait 1 suffices.
    assert_eq!(
        timing("    ttl: 10\n    retry_timeout: 15\n"),
        (
            (10, 1, 4),
            vec![
                "bootstrap.dcs.loop_wait".to_owned(),
                "bootstrap.dcs.retry_timeout".to_owned()
            ]
        )
    );
    // Below the minimum ttl.
    assert_eq!(
        timing("    ttl: 5\n    loop_wait: 1\n    retry_timeout: 3\n"),
        ((7, 1, 3), vec!["bootstrap.dcs.ttl".to_owned()])
    );
    // A default loop_wait that must shrink is said too.
    assert_eq!(
        timing("    ttl: 20\n"),
        (
            (20, 1, 9),
            vec![
                "bootstrap.dcs.loop_wait".to_owned(),
                "bootstrap.dcs.retry_timeout".to_owned()
            ]
        )
    );
    let (_, warnings) = load(&with(&[], "bootstrap:\n  dcs:\n    ttl: 25\n"));
    assert!(
        warnings[0]
            .message
            .contains("loop_wait + 2 * retry_timeout <= ttl"),
        "{}",
        warnings[0]
    );
    assert_eq!(warnings[0].kind, WarningKind::Adjusted);
}

#[test]
fn conflicting_failover_tags_follow_nofailover() {
    let (config, warnings) = load(&with(
        &[],
        "tags:\n  nofailover: true\n  failover_priority: 3\n",
    ));
    assert!(!config.tags.may_fail_over());
    assert_eq!(config.tags.effective_failover_priority(), 0);
    assert_eq!(paths(&warnings), ["tags.failover_priority"]);
    let (config, _) = load(&with(&[], "tags:\n  failover_priority: 0\n"));
    assert!(!config.tags.may_fail_over());
    let (config, _) = load(&with(
        &[],
        "tags:\n  failover_priority: 5\n  nofailover: 'off'\n",
    ));
    assert_eq!(config.tags.effective_failover_priority(), 5);
    let (config, _) = load(&with(&[], "tags:\n  nofailover: yes\n"));
    assert!(
        config.tags.nofailover,
        "YAML 1.1's yes, as Patroni's PyYAML reads it"
    );
}

#[test]
fn environment_overrides_the_file_as_patroni_maps_it() {
    let (mut config, _) = load(MINIMAL);
    let warnings = config
        .apply_env(env(&[
            ("PATRONI_NAME", "pg9"),
            ("PATRONI_SCOPE", "other"),
            ("PATRONI_NAMESPACE", "/ns"),
            ("PATRONI_RESTAPI_LISTEN", "127.0.0.1:9008"),
            ("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.9.9.9:9008"),
            ("PATRONI_RESTAPI_USERNAME", "admin"),
            ("PATRONI_RESTAPI_PASSWORD", "apipw"),
            ("PATRONI_ETCD3_HOSTS", "'e1:2379','e2:2379'"),
            ("PATRONI_ETCD3_USERNAME", "root"),
            ("PATRONI_ETCD3_PASSWORD", "etcdpw"),
            ("PATRONI_POSTGRESQL_LISTEN", "*:5433"),
            ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "10.9.9.9:5433"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/data"),
            ("PATRONI_POSTGRESQL_BIN_DIR", "/usr/lib/postgresql/16/bin"),
            ("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass"),
            ("PATRONI_SUPERUSER_USERNAME", "su"),
            ("PATRONI_SUPERUSER_PASSWORD", "supw"),
            ("PATRONI_REPLICATION_PASSWORD", "replpw"),
            ("PATRONI_REWIND_USERNAME", "rw"),
            ("PATRONI_REWIND_SSLMODE", "require"),
            ("PATRONI_NOFAILOVER", "true"),
            ("HOME", "/root"),
        ]))
        .unwrap();
    assert_eq!(
        (config.scope.as_str(), config.name.as_str()),
        ("other", "pg9")
    );
    assert_eq!(config.cluster_path().prefix(), "/ns/other/");
    assert_eq!(config.restapi.listen.to_string(), "127.0.0.1:9008");
    assert_eq!(config.api_url(), "http://10.9.9.9:9008/patroni");
    let auth = config.restapi.authentication.as_ref().unwrap();
    assert_eq!(
        (auth.username.as_str(), auth.password.as_deref()),
        ("admin", Some("apipw"))
    );
    let DcsConfig::Etcd3(etcd) = &config.dcs else {
        panic!()
    };
    assert_eq!(
        etcd.hosts,
        Some(Hosts::List(vec!["e1:2379".into(), "e2:2379".into()]))
    );
    assert_eq!(
        etcd.credentials().unwrap(),
        Some(("root".into(), "etcdpw".into()))
    );
    assert_eq!(config.postgresql.listen.host, "*");
    assert_eq!(config.conn_url(), "postgres://10.9.9.9:5433/postgres");
    assert_eq!(config.postgresql.data_dir, Path::new("/data"));
    assert_eq!(
        config.postgresql.bin_dir.as_deref(),
        Some(Path::new("/usr/lib/postgresql/16/bin"))
    );
    assert_eq!(
        config.postgresql.pgpass.as_deref(),
        Some(Path::new("/tmp/pgpass"))
    );
    assert_eq!(config.postgresql.superuser.username, "su");
    assert_eq!(
        config.postgresql.superuser.password.as_deref(),
        Some("supw")
    );
    // Merged into the file's entry, not replacing it.
    assert_eq!(config.postgresql.replication.username, "replicator");
    assert_eq!(
        config.postgresql.replication.password.as_deref(),
        Some("replpw")
    );
    let rewind = config.postgresql.rewind.as_ref().unwrap();
    assert_eq!(
        rewind.options,
        [("sslmode".to_owned(), "require".to_owned())]
    );
    // Patroni maps no tag from the environment: PATRONI_NOFAILOVER is said to be unused.
    assert!(!config.tags.nofailover);
    assert_eq!(paths(&warnings), ["PATRONI_NOFAILOVER"]);
    assert_eq!(warnings[0].kind, WarningKind::UnusedEnvironment);
}

#[test]
fn a_bad_environment_value_is_an_error_and_leaves_the_config_unchanged() {
    let (mut config, _) = load(MINIMAL);
    let error = config
        .apply_env(env(&[("PATRONI_POSTGRESQL_LISTEN", "nowhere")]))
        .unwrap_err();
    assert_eq!(error.path(), Some("postgresql.listen"));
    assert_eq!(config.postgresql.listen.port, 5432);
    // An empty value is no override, as in Patroni.
    config.apply_env(env(&[("PATRONI_NAME", "")])).unwrap();
    assert_eq!(config.name, "pg0");
}

#[test]
fn zookeeper_hosts_come_from_the_environment_too() {
    let yaml = MINIMAL.replace("etcd3:\n  hosts: 10.0.0.5:2379,10.0.0.6:2379\n", "");
    assert!(matches!(error(&yaml), ConfigError::NoDcs));
    let mut config = Config::from_yaml_str(&format!("{yaml}zookeeper:\n  hosts: old:2181\n"))
        .unwrap()
        .0;
    let warnings = config
        .apply_env(env(&[("PATRONI_ZOOKEEPER_HOSTS", "z1:2181,z2:2181")]))
        .unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let DcsConfig::ZooKeeper(zk) = &config.dcs else {
        panic!()
    };
    assert_eq!(zk.hosts, ["z1:2181", "z2:2181"]);
    assert!(!zk.use_ssl);
    let error = config
        .apply_env(env(&[("PATRONI_ZOOKEEPER_USE_SSL", "true")]))
        .unwrap_err();
    // Read as a boolean, then refused by the backend for want of a CA file.
    assert!(error.to_string().contains("zookeeper.cacert"), "{error}");
    let error = config
        .apply_env(env(&[("PATRONI_ZOOKEEPER_USE_SSL", "maybe")]))
        .unwrap_err();
    assert_eq!(error.path(), Some("zookeeper.use_ssl"), "{error}");
}

#[test]
fn patroni_configuration_is_the_whole_config_when_set() {
    let (config, warnings) = Config::from_env(env(&[
        ("PATRONI_CONFIGURATION", MINIMAL),
        ("PATRONI_NAME", "ignored"),
    ]))
    .unwrap();
    assert_eq!(config.name, "pg0");
    assert_eq!(paths(&warnings), ["PATRONI_NAME"]);
}

#[test]
fn the_environment_may_supply_required_keys_before_checking() {
    let yaml = MINIMAL.replace("name: pg0\n", "");
    assert!(matches!(error(&yaml), ConfigError::Missing { .. }));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patroni.yml");
    std::fs::write(&path, &yaml).unwrap();
    let (config, warnings) =
        Config::load_with_env(&path, env(&[("PATRONI_NAME", "pod-0")])).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.name, "pod-0");
}

#[test]
fn a_config_can_come_from_the_environment_alone() {
    let (config, _) = Config::from_env(env(&[
        ("PATRONI_SCOPE", "pg"),
        ("PATRONI_NAME", "pg1"),
        ("PATRONI_RESTAPI_LISTEN", ":8008"),
        ("PATRONI_ETCD3_HOST", "etcd:2379"),
        ("PATRONI_POSTGRESQL_LISTEN", "0.0.0.0:5432"),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "pg1:5432"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/data"),
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_REPLICATION_USERNAME", "replicator"),
    ]))
    .unwrap();
    assert_eq!(config.restapi.listen.host, "");
    assert_eq!(config.api_url(), "http://:8008/patroni");
    assert_eq!(config.client_options().name(), "pg1");
}

#[test]
fn io_and_syntax_errors_are_clear() {
    let error = Config::load("/nonexistent/patroni.yml").unwrap_err();
    assert!(
        error.to_string().starts_with("/nonexistent/patroni.yml: "),
        "{error}"
    );
    let error = Config::from_yaml_str("scope: [unclosed").unwrap_err();
    assert!(matches!(error, ConfigError::Syntax { .. }), "{error}");
    let error = Config::from_yaml_str("- a list").unwrap_err();
    assert!(error.to_string().contains("is not a mapping"), "{error}");
    assert!(matches!(
        Config::from_yaml_str("").unwrap_err(),
        ConfigError::Missing { .. }
    ));
}

#[test]
fn a_loaded_file_is_read_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("patroni.yml");
    std::fs::write(&path, MINIMAL).unwrap();
    let (config, warnings) = Config::load(&path).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(config.name, "pg0");
}

#[test]
fn member_tags_are_written_as_patroni_writes_them() {
    let (config, _) = load(&with(
        &[],
        "tags:\n  nofailover: 'on'\n  nosync: false\n  clonefrom: no\n  failover_priority: 0\n  zone: a\n",
    ));
    assert_eq!(
        serde_json::Value::Object(config.tags.member_tags()).to_string(),
        r#"{"nofailover":true,"failover_priority":0,"zone":"a"}"#
    );
}

fn yaml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("~".to_owned()),
        Just("true".to_owned()),
        Just("off".to_owned()),
        any::<i64>().prop_map(|n| n.to_string()),
        "[a-z0-9:./*,\\[\\] -]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("1.5e400".to_owned()),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec((key(), inner), 0..4).prop_map(|v| {
                let body: Vec<String> = v.into_iter().map(|(k, v)| format!("{k}: {v}")).collect();
                format!("{{{}}}", body.join(", "))
            }),
        ]
    })
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "scope",
            "name",
            "restapi",
            "listen",
            "connect_address",
            "etcd3",
            "zookeeper",
            "hosts",
            "host",
            "postgresql",
            "data_dir",
            "authentication",
            "superuser",
            "replication",
            "username",
            "password",
            "bootstrap",
            "dcs",
            "ttl",
            "loop_wait",
            "retry_timeout",
            "initdb",
            "tags",
            "nofailover",
            "failover_priority",
            "watchdog",
            "mode",
            "parameters",
            "standby_cluster",
            "synchronous_mode",
            "port",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,8}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_yaml_never_panics(entries in prop::collection::vec((key(), yaml_value()), 0..8)) {
        let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let _ = Config::from_yaml_str(&body.join("\n"));
        // The same keys over a valid config reach the deeper checks.
        let _ = Config::from_yaml_str(&format!("{MINIMAL}{}", body.join("\n")));
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = Config::from_yaml_str(&text);
    }
}
