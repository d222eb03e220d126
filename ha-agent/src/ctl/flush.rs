//! `flush`: discards a scheduled restart (on each chosen member) or the cluster's
//! scheduled switchover.

use std::time::SystemTime;

use dcs_core::model::Failover;
use dcs_core::{ClusterState, DcsExt as _, Member, Precondition};

use super::args::{FlushTarget, RoleFilter};
use super::{
    Context, Opened, QUICK_TIMEOUT, Result, confirm, listing, member_names, members_leader_first,
    select_members, time,
};

/// What `flush` does for one command line.
pub(super) struct FlushRequest<'a> {
    pub(super) cluster: &'a str,
    pub(super) names: &'a [String],
    pub(super) target: FlushTarget,
    pub(super) role: RoleFilter,
    pub(super) force: bool,
}

pub(super) async fn flush(ctx: &Context, request: FlushRequest<'_>) -> Result<()> {
    let opened = ctx.open(Some(request.cluster)).await?;
    let state = opened.read().await?;
    match request.target {
        FlushTarget::Restart => flush_restarts(&opened, &state, &request).await,
        FlushTarget::Switchover => flush_switchover(&opened, &state, request.cluster).await,
    }
}

async fn flush_restarts(
    opened: &Opened,
    state: &ClusterState,
    request: &FlushRequest<'_>,
) -> Result<()> {
    let members = select_members(state, request.cluster, request.names, request.role)?;
    let question = format!(
        "Are you sure you want to flush members {}?",
        member_names(&members)
    );
    if !confirm(&question, request.force).await? {
        return Err("Aborted flush".into());
    }
    let mut failed = false;
    for member in members {
        if has_scheduled_restart(member) {
            failed |= !delete_scheduled_restart(opened, member, false).await;
        } else {
            println!("No scheduled restart for member {}", member.name);
        }
    }
    if failed {
        Err("flush failed on some members".into())
    } else {
        Ok(())
    }
}

/// Whether `member` publishes a `scheduled_restart`.
pub(super) fn has_scheduled_restart(member: &Member) -> bool {
    member
        .data
        .extra
        .get("scheduled_restart")
        .is_some_and(listing::truthy)
}

/// `DELETE /restart` on `member`, reported as patronictl's `check_response` does
/// (`silent_success`: print only a failure). Returns whether it worked.
pub(super) async fn delete_scheduled_restart(
    opened: &Opened,
    member: &Member,
    silent_success: bool,
) -> bool {
    let name = &member.name;
    match opened
        .request(member, "DELETE", "restart", None, QUICK_TIMEOUT)
        .await
    {
        Ok(r) if r.status >= 400 => {
            println!(
                "Failed: flush scheduled restart for member {name}, status code={}, ({})",
                r.status, r.body
            );
            false
        }
        Ok(_) => {
            if !silent_success {
                println!("Success: flush scheduled restart for member {name}");
            }
            true
        }
        Err(error) => {
            println!("Failed: flush scheduled restart for member {name}: {error}");
            false
        }
    }
}

/// Asks the members, leader first, to cancel the scheduled switchover; when none answers,
/// clears the `failover` key itself (patronictl's fallback).
async fn flush_switchover(opened: &Opened, state: &ClusterState, cluster: &str) -> Result<()> {
    let Some(failover) = state
        .failover
        .as_ref()
        .filter(|f| f.value.scheduled_at.is_some())
    else {
        println!("No pending scheduled switchover");
        return Ok(());
    };
    for member in members_leader_first(state) {
        match opened
            .request(member, "DELETE", "switchover", None, QUICK_TIMEOUT)
            .await
        {
            Ok(r) if r.status == 200 => {
                println!("Success: {}", r.body);
                return Ok(());
            }
            Ok(r) if r.status == 404 => {
                println!("Failed: {}", r.body);
                return Err("flushing the scheduled switchover failed".into());
            }
            Ok(r) => println!(
                "Failed: member={}, status_code={}, ({})",
                member.name, r.status, r.body
            ),
            Err(error) => {
                eprintln!("{error}");
                eprintln!("Member {} is not accessible", member.name);
            }
        }
    }
    eprintln!("Failing over to DCS");
    println!(
        "{} Could not find any accessible member of cluster {cluster}",
        time::timestamp(SystemTime::now(), true)
    );
    // Compare-and-set on the version read: a request written since is not ours to clear.
    opened
        .dcs
        .set_failover(
            &Failover::default(),
            Precondition::Version(failover.version.clone()),
        )
        .await
        .map_err(|e| format!("clearing the failover key failed: {e}"))?;
    Ok(())
}
