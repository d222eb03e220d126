//! `remove`: deletes every key of a cluster after patronictl's three typed confirmations.

use super::output::Format;
use super::{Context, Result, listing, prompt};

/// What the second confirmation asks the user to type.
const AWARE: &str = "Yes I am aware";

pub(super) async fn remove(ctx: &Context, cluster: &str, format: Format) -> Result<()> {
    let opened = ctx.open(Some(cluster)).await?;
    let state = opened.read().await?;
    let members = listing::listing(&state, cluster, false, false);
    println!("{}", listing::render(&members, format));

    if prompt("Please confirm the cluster name to remove", false).await? != cluster {
        return Err("Cluster names specified do not match".into());
    }
    let question = format!(
        "You are about to remove all information in DCS for {cluster}, please type: \"{AWARE}\""
    );
    if prompt(&question, false).await? != AWARE {
        return Err(format!("You did not exactly type \"{AWARE}\""));
    }
    // A running cluster is removed only by someone who knows who leads it.
    if let Some(leader) = state.leader.as_ref().filter(|l| !l.name.is_empty()) {
        let question =
            "This cluster currently is healthy. Please specify the leader name to continue";
        if prompt(question, false).await? != leader.name {
            return Err("You did not specify the current leader of the cluster".into());
        }
    }
    opened
        .dcs
        .delete_cluster()
        .await
        .map_err(|e| format!("removing cluster {cluster} from the DCS failed: {e}"))
}
