//! `version`: ctl's own version, then each member's Patroni and PostgreSQL versions from
//! its `GET /patroni`.

use serde_json::Value;

use super::args::RoleFilter;
use super::{Context, QUICK_TIMEOUT, Result, members_with_role};

pub(super) async fn version(ctx: &Context, cluster: Option<&str>, names: &[String]) -> Result<()> {
    // patronictl's `patronictl version 3.0.2`, naming what answers and what it mimics.
    println!(
        "ha-agent ctl version {} (Patroni-compatible {})",
        env!("CARGO_PKG_VERSION"),
        crate::agent::PATRONI_VERSION
    );
    let Some(cluster) = cluster else {
        return Ok(());
    };
    println!();
    let opened = ctx.open(Some(cluster)).await?;
    let state = opened.read().await?;
    let chosen = members_with_role(&state, RoleFilter::Any)
        .into_iter()
        .filter(|m| m.data.api_url.is_some())
        .filter(|m| names.is_empty() || names.contains(&m.name));
    for member in chosen {
        let versions = opened
            .request(member, "GET", "patroni", None, QUICK_TIMEOUT)
            .await
            .and_then(|response| versions(&response.body));
        match versions {
            Ok(text) => println!("{}: {text}", member.name),
            Err(error) => println!("{}: failed to get version: {error}", member.name),
        }
    }
    Ok(())
}

/// `Patroni 4.0.4 PostgreSQL 16.4` from a `GET /patroni` body (whatever its status: a
/// replica's health answer still carries it); Python's `None` for a missing Patroni version,
/// no PostgreSQL part without a `server_version`.
fn versions(body: &str) -> Result<String> {
    let status: Value = serde_json::from_str(body).map_err(|e| e.to_string())?;
    let patroni = match status.pointer("/patroni/version") {
        Some(Value::String(version)) => version.clone(),
        Some(other) if !other.is_null() => other.to_string(),
        _ => "None".to_owned(),
    };
    let postgres = status
        .get("server_version")
        .and_then(Value::as_u64)
        .filter(|v| *v != 0)
        .map(|v| format!(" PostgreSQL {}", pg_version(v)))
        .unwrap_or_default();
    Ok(format!("Patroni {patroni}{postgres}"))
}

/// patronictl's `format_pg_version`: `90605` → `9.6.5`, `160004` → `16.4`.
fn pg_version(version: u64) -> String {
    if version < 100_000 {
        format!(
            "{}.{}.{}",
            version / 10_000,
            version / 100 % 100,
            version % 100
        )
    } else {
        format!("{}.{}", version / 10_000, version % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_read_like_patronictls() {
        assert_eq!(
            versions(
                r#"{"state":"running","server_version":160004,"patroni":{"version":"4.0.4","scope":"b"}}"#
            ),
            Ok("Patroni 4.0.4 PostgreSQL 16.4".to_owned())
        );
        assert_eq!(
            versions(r#"{"server_version":90605,"patroni":{"version":"3.0.2"}}"#),
            Ok("Patroni 3.0.2 PostgreSQL 9.6.5".to_owned())
        );
        assert_eq!(
            versions(r#"{"state":"stopped","patroni":{"version":"3.0.2"}}"#),
            Ok("Patroni 3.0.2".to_owned())
        );
        assert_eq!(versions("{}"), Ok("Patroni None".to_owned()));
        assert!(versions("not json").is_err());
    }
}
