//! What a running or stopped server says about itself, parsed.

use crate::ha::WalPosition;

use super::PostgresError;

/// A running server's answer to [`Postgres::status`](super::Postgres::status).
#[derive(Clone, Debug, PartialEq)]
pub struct ServerStatus {
    /// `pg_is_in_recovery()`: a replica (or a primary still promoting).
    pub in_recovery: bool,
    /// The timeline: a primary's current one (from its WAL file name), a replica's
    /// received one (or its last checkpoint's when nothing was received yet).
    pub timeline: Option<u64>,
    /// WAL positions in bytes: `flush` on a primary, `receive` and `replay` on a replica.
    pub wal: WalPosition,
    /// The WAL receiver's `status` (`streaming`, `startup`, `catchup`, ...); `None` on a
    /// primary and on a replica without a running receiver.
    pub receiver: Option<String>,
    /// The upstream's name as the receiver connected to it (`sender_host`), if any.
    pub sender_host: Option<String>,
    /// The database system identifier.
    pub system_id: String,
    /// `server_version_num`, e.g. `150004`.
    pub server_version: u32,
    /// `pg_postmaster_start_time()`, as seconds since the Unix epoch.
    pub postmaster_start: Option<f64>,
    /// `pg_last_xact_replay_timestamp()` (replicas), as seconds since the Unix epoch.
    pub replay_timestamp: Option<f64>,
    /// `pg_is_wal_replay_paused()` (replicas).
    pub replay_paused: bool,
    /// The settings that wait for a restart (`pg_settings.pending_restart`), by name, with
    /// the value in effect (`current_setting`), in name order. As in Patroni, `hot_standby`
    /// and the recovery settings (which the agent changes itself) are left out.
    pub pending_restart: Vec<(String, String)>,
    /// This server's WAL senders (`pg_stat_replication`), in the order PostgreSQL lists
    /// them.
    pub wal_senders: Vec<WalSender>,
}

/// One row of `pg_stat_replication`: a standby streaming from this server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalSender {
    /// `usename`.
    pub usename: String,
    /// `application_name`: a member's name, for members.
    pub application_name: String,
    /// `client_addr`; `None` over a Unix socket.
    pub client_addr: Option<String>,
    /// `state`: `streaming`, `catchup`, ...
    pub state: String,
    /// `sync_state`: `async`, `sync`, `potential`, `quorum`.
    pub sync_state: String,
    /// `sync_priority`.
    pub sync_priority: i64,
}

impl ServerStatus {
    /// Whether the replica's WAL receiver is streaming from its upstream.
    #[must_use]
    pub fn is_streaming(&self) -> bool {
        self.receiver.as_deref() == Some("streaming")
    }
}

/// The query behind [`ServerStatus`]: one row, `|`-separated, numbers as decimal bytes.
pub(crate) const STATUS_SQL: &str = "\
SELECT pg_catalog.pg_is_in_recovery(), \
CASE WHEN pg_catalog.pg_is_in_recovery() \
  THEN COALESCE((SELECT received_tli FROM pg_catalog.pg_stat_get_wal_receiver()), \
                (SELECT timeline_id FROM pg_catalog.pg_control_checkpoint())) \
  ELSE ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END, \
CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL \
  ELSE pg_catalog.pg_current_wal_flush_lsn() - '0/0' END, \
pg_catalog.pg_last_wal_receive_lsn() - '0/0', \
pg_catalog.pg_last_wal_replay_lsn() - '0/0', \
(SELECT status FROM pg_catalog.pg_stat_get_wal_receiver()), \
(SELECT sender_host FROM pg_catalog.pg_stat_get_wal_receiver()), \
(SELECT system_identifier FROM pg_catalog.pg_control_system()), \
pg_catalog.current_setting('server_version_num'), \
extract(epoch FROM pg_catalog.pg_postmaster_start_time()), \
extract(epoch FROM pg_catalog.pg_last_xact_replay_timestamp()), \
CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() ELSE false END, \
pg_catalog.json_build_object('pending_restart', \
(SELECT pg_catalog.json_object_agg(name, pg_catalog.current_setting(name) ORDER BY name) \
  FROM pg_catalog.pg_settings WHERE pending_restart AND name <> ALL(ARRAY[\
  'hot_standby', 'primary_conninfo', 'primary_slot_name', 'restore_command', \
  'archive_cleanup_command', 'recovery_end_command', 'recovery_min_apply_delay', \
  'recovery_target', 'recovery_target_lsn', 'recovery_target_name', 'recovery_target_time', \
  'recovery_target_timeline', 'recovery_target_xid', 'recovery_target_inclusive', \
  'recovery_target_action', 'promote_trigger_file'])), \
'replication', (SELECT pg_catalog.json_agg(r) FROM (SELECT usename, application_name, \
  client_addr, state, sync_state, sync_priority FROM pg_catalog.pg_stat_replication) r))";

/// Parses the output of [`STATUS_SQL`] (`psql -A -t`: `|`-separated, NULL as empty). The
/// last field is a JSON object (`pending_restart`, `replication`) and may itself contain
/// `|`.
pub(crate) fn parse_status(output: &str) -> Result<ServerStatus, PostgresError> {
    let unexpected = || PostgresError::Unexpected {
        command: "the status query".to_owned(),
        output: output.to_owned(),
    };
    let fields: Vec<&str> = output.trim().splitn(13, '|').collect();
    let lists = |text: &str| -> Result<serde_json::Value, PostgresError> {
        serde_json::from_str(text).map_err(|_| unexpected())
    };
    let [
        recovery,
        timeline,
        flush,
        receive,
        replay,
        receiver,
        sender,
        system_id,
        version,
        started,
        replayed_at,
        paused,
        lists_text,
    ] = fields.as_slice()
    else {
        return Err(unexpected());
    };
    let lists = lists(lists_text)?;
    let number = |text: &str| -> Result<Option<u64>, PostgresError> {
        if text.is_empty() {
            Ok(None)
        } else {
            text.parse().map(Some).map_err(|_| unexpected())
        }
    };
    let text = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let epoch = |text: &str| -> Result<Option<f64>, PostgresError> {
        if text.is_empty() {
            Ok(None)
        } else {
            text.parse().map(Some).map_err(|_| unexpected())
        }
    };
    Ok(ServerStatus {
        in_recovery: match *recovery {
            "t" => true,
            "f" => false,
            _ => return Err(unexpected()),
        },
        timeline: number(timeline)?,
        wal: WalPosition {
            receive: number(receive)?,
            replay: number(replay)?,
            flush: number(flush)?,
        },
        receiver: text(receiver),
        sender_host: text(sender),
        system_id: text(system_id).ok_or_else(unexpected)?,
        server_version: version.parse().map_err(|_| unexpected())?,
        postmaster_start: epoch(started)?,
        replay_timestamp: epoch(replayed_at)?,
        replay_paused: *paused == "t",
        pending_restart: pending_restart(&lists).ok_or_else(unexpected)?,
        wal_senders: wal_senders(&lists).ok_or_else(unexpected)?,
    })
}

/// What `pg_control` says about a data directory, running or not (`pg_controldata`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ControlData {
    /// `Database system identifier`.
    pub system_id: String,
    /// `Database cluster state`: `in production`, `shut down`, `in archive recovery`,
    /// `shut down in recovery`, `in crash recovery`, ...
    pub cluster_state: String,
    /// `Latest checkpoint's TimeLineID`.
    pub timeline: u64,
    /// `Min recovery ending loc's timeline` (0 when unset): a replica's replay reaches it
    /// before its next restartpoint moves the checkpoint's timeline.
    pub min_recovery_timeline: u64,
    /// `Latest checkpoint location`, in bytes.
    pub checkpoint_lsn: u64,
}

impl ControlData {
    /// Whether the server last ran as a primary: it is not a replica's `pg_control`
    /// (`in archive recovery`, `shut down in recovery`). A crashed primary (`in
    /// production`) counts as a primary.
    #[must_use]
    pub fn was_primary(&self) -> bool {
        !self.cluster_state.contains("recovery")
    }

    /// Whether the server was shut down cleanly (as a primary or a replica): a crashed one
    /// needs a start to recover before `pg_rewind` can use it.
    #[must_use]
    pub fn is_clean_shutdown(&self) -> bool {
        self.cluster_state.starts_with("shut down")
    }
}

/// `pending_restart` of the status query's JSON column: name → value in effect; `None`
/// when it is not a JSON object of strings (or null: nothing pending).
fn pending_restart(lists: &serde_json::Value) -> Option<Vec<(String, String)>> {
    match lists.get("pending_restart")? {
        serde_json::Value::Null => Some(Vec::new()),
        serde_json::Value::Object(settings) => settings
            .iter()
            .map(|(name, value)| Some((name.clone(), value.as_str()?.to_owned())))
            .collect(),
        _ => None,
    }
}

/// `replication` of the status query's JSON column; `None` when it is malformed.
fn wal_senders(lists: &serde_json::Value) -> Option<Vec<WalSender>> {
    let rows = match lists.get("replication")? {
        serde_json::Value::Null => return Some(Vec::new()),
        serde_json::Value::Array(rows) => rows,
        _ => return None,
    };
    let text = |row: &serde_json::Value, key: &str| {
        row.get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    rows.iter()
        .map(|row| {
            Some(WalSender {
                usename: text(row, "usename"),
                application_name: text(row, "application_name"),
                client_addr: row
                    .get("client_addr")
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned),
                state: text(row, "state"),
                sync_state: text(row, "sync_state"),
                sync_priority: row.get("sync_priority")?.as_i64()?,
            })
        })
        .collect()
}

/// Parses `pg_controldata` output (run with `LC_ALL=C`).
pub(crate) fn parse_controldata(output: &str) -> Result<ControlData, PostgresError> {
    let field = |name: &str| {
        output.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim())
        })
    };
    let unexpected = || PostgresError::Unexpected {
        command: "pg_controldata".to_owned(),
        output: output.lines().take(12).collect::<Vec<_>>().join("\n"),
    };
    Ok(ControlData {
        system_id: field("Database system identifier")
            .ok_or_else(unexpected)?
            .to_owned(),
        cluster_state: field("Database cluster state")
            .ok_or_else(unexpected)?
            .to_owned(),
        timeline: field("Latest checkpoint's TimeLineID")
            .and_then(|t| t.parse().ok())
            .ok_or_else(unexpected)?,
        min_recovery_timeline: field("Min recovery ending loc's timeline")
            .and_then(|t| t.parse().ok())
            .unwrap_or(0),
        checkpoint_lsn: field("Latest checkpoint location")
            .and_then(parse_lsn)
            .ok_or_else(unexpected)?,
    })
}

/// The timeline of a timeline history file's name (`00000002.history` → 2).
pub(crate) fn history_file_timeline(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".history")?;
    (hex.len() == 8)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

/// An LSN as PostgreSQL prints it (`16/B374D848`), in bytes.
#[must_use]
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (high, low) = text.trim().split_once('/')?;
    let high = u64::from_str_radix(high, 16).ok()?;
    let low = u64::from_str_radix(low, 16).ok()?;
    (u32::try_from(high).is_ok() && u32::try_from(low).is_ok()).then_some((high << 32) | low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_status_has_a_flush_position_and_no_receiver() {
        let status = parse_status(concat!(
            "f|2|50331800|||||7268616322854375442|150004|1795780000.25||f|",
            r#"{"pending_restart" : null, "replication" : null}"#,
            "\n"
        ))
        .unwrap();
        assert!(!status.in_recovery);
        assert_eq!(status.timeline, Some(2));
        assert_eq!(status.wal.flush, Some(50_331_800));
        assert_eq!(status.wal.receive, None);
        assert!(!status.is_streaming());
        assert_eq!(status.system_id, "7268616322854375442");
        assert_eq!(status.server_version, 150_004);
        assert_eq!(status.postmaster_start, Some(1_795_780_000.25));
        assert_eq!(
            (status.replay_timestamp, status.replay_paused),
            (None, false)
        );
    }

    #[test]
    fn streaming_replica_status_has_receive_and_replay_positions() {
        let status =
            parse_status(concat!(
                "t|1||67420024|67419000|streaming|127.0.0.1|7268616322854375442|150004|1795780000|1795780100.5|t|",
                r#"{"pending_restart" : null, "replication" : null}"#
            ))
            .unwrap();
        assert!(status.in_recovery);
        assert!(status.is_streaming());
        assert_eq!(status.wal.receive, Some(67_420_024));
        assert_eq!(status.wal.replay, Some(67_419_000));
        assert_eq!(status.sender_host.as_deref(), Some("127.0.0.1"));
        assert_eq!(status.replay_timestamp, Some(1_795_780_100.5));
        assert!(status.replay_paused);
        assert!(status.pending_restart.is_empty());
    }

    #[test]
    fn pending_settings_and_wal_senders_are_read_from_the_json_column() {
        let status = parse_status(concat!(
            "f|2|50331800|||||7268616322854375442|150004|1795780000.25||f|",
            r#"{"pending_restart" : {"max_connections": "100", "shared_preload_libraries": "a|b"}, "#,
            r#""replication" : [{"usename":"replicator","application_name":"node1","#,
            r#""client_addr":"127.0.0.1","state":"streaming","sync_state":"async","sync_priority":0}]}"#
        ))
        .unwrap();
        assert_eq!(
            status.pending_restart,
            [
                ("max_connections".to_owned(), "100".to_owned()),
                ("shared_preload_libraries".to_owned(), "a|b".to_owned()),
            ]
        );
        assert_eq!(
            status.wal_senders,
            [WalSender {
                usename: "replicator".to_owned(),
                application_name: "node1".to_owned(),
                client_addr: Some("127.0.0.1".to_owned()),
                state: "streaming".to_owned(),
                sync_state: "async".to_owned(),
                sync_priority: 0,
            }]
        );
    }

    #[test]
    fn garbled_status_is_an_error_not_a_guess() {
        for output in [
            "",
            "x|1||||||1|150004|||f|{}",
            "t|one||||||1|150004|||f|{}",
            "t|1|||||",
            "t|1||||||1|150004|||f",
            "t|1||||||1|15.4|||f|{}",
            "t|1||||||1|150004|||f|{not json",
            "t|1||||||1|150004|||f|{}",
            r#"t|1||||||1|150004|||f|{"pending_restart": [1], "replication": null}"#,
            r#"t|1||||||1|150004|||f|{"pending_restart": null, "replication": [{"sync_priority": "x"}]}"#,
        ] {
            assert!(
                matches!(parse_status(output), Err(PostgresError::Unexpected { .. })),
                "{output:?}"
            );
        }
    }

    #[test]
    fn controldata_gives_system_id_state_and_timeline() {
        let output = "pg_control version number:            1300\n\
Catalog version number:               202209061\n\
Database system identifier:           7268616322854375442\n\
Database cluster state:               shut down in recovery\n\
pg_control last modified:             Fri 27 Nov 2026 10:00:00 AM UTC\n\
Latest checkpoint location:           0/3000060\n\
Latest checkpoint's TimeLineID:       2\n\
Min recovery ending loc's timeline:   3\n";
        let control = parse_controldata(output).unwrap();
        assert_eq!(control.system_id, "7268616322854375442");
        assert_eq!((control.timeline, control.min_recovery_timeline), (2, 3));
        assert_eq!(control.checkpoint_lsn, 0x300_0060);
        assert!(!control.was_primary());
        assert!(control.is_clean_shutdown());
        assert!(parse_controldata("garbage").is_err());
    }

    #[test]
    fn history_file_names_give_their_timeline() {
        assert_eq!(history_file_timeline("0000000A.history"), Some(10));
        assert_eq!(history_file_timeline("00000002.history.partial"), None);
        assert_eq!(history_file_timeline("000000010000000000000003"), None);
        assert_eq!(history_file_timeline("2.history"), None);
    }

    #[test]
    fn lsn_text_is_bytes() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("B374D848"), None);
        assert_eq!(parse_lsn("1/G"), None);
    }
}
