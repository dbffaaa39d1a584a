//! Leader duties of a server: reconcile gossip membership into the catalog
//! (`muster_server::reconcile`), which gives every node its `serfHealth` check and servers
//! the `consul` service, and deregisters nodes that left.
//!
//! When: at once on gaining leadership, on every member change, every
//! [`RECONCILE_INTERVAL`] (Consul's `ReconcileInterval`), and [`RETRY_AFTER_FAILURE`] after a
//! failed round. Only the leader writes; a follower's loop just waits. The diff is computed
//! from a `?consistent` read, so a new leader never reconciles against a catalog that has not
//! applied everything its predecessor committed; identical content writes nothing.
//!
//! Reaping (deregistering catalog nodes that gossip does not list at all) waits
//! [`REAP_GRACE`] after this agent started: right after a restart the member list is still
//! filling up, and a leader elected in those seconds would otherwise deregister every node
//! gossip has not reported yet, taking their services with them (the agents only re-sync at
//! their next full anti-entropy round). Failed and left members are handled at once.

use std::time::Duration;

use muster_server::{
    Command, Consistency, Deregistration, ReconcileContext, ServerError, ServerHandle,
};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::members::to_reconcile;
use crate::node::{Member, Members};

/// Consul's reconcile interval.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
/// How soon a failed round is retried.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(5);
/// How long after start nodes absent from the member list are left alone (gossip's join
/// retries are 30 s apart: two of them).
pub const REAP_GRACE: Duration = Duration::from_secs(60);

/// Runs one reconciliation round as leader: reads the catalog, writes the commands that make
/// it match `members`. Returns how many commands were written.
pub async fn reconcile_once(
    catalog: &ServerHandle,
    members: &[Member],
    ctx: &ReconcileContext,
) -> Result<usize, ServerError> {
    reconcile_round(catalog, members, ctx, true).await
}

/// [`reconcile_once`], leaving nodes absent from `members` alone unless `reap`.
async fn reconcile_round(
    catalog: &ServerHandle,
    members: &[Member],
    ctx: &ReconcileContext,
    reap: bool,
) -> Result<usize, ServerError> {
    let view = to_reconcile(members);
    let (mut commands, _) = catalog
        .read(Consistency::Consistent, |c| {
            muster_server::reconcile(c, &view, ctx)
        })
        .await?;
    if !reap {
        commands.retain(|c| !is_reap(c, members));
    }
    let count = commands.len();
    for command in commands {
        let outcome = catalog.write(command).await?;
        if let Err(e) = outcome.result.into_result() {
            // A rejection is a bug in the diff or a race with an API write; the next round
            // recomputes from the catalog, so log and go on.
            tracing::warn!(error = %e, "reconcile: the catalog refused a command");
        }
    }
    if count > 0 {
        tracing::debug!(commands = count, "reconciled members into the catalog");
    }
    Ok(count)
}

/// A whole-node deregistration of a node the member list does not have (not a `left` one).
fn is_reap(command: &Command, members: &[Member]) -> bool {
    match command {
        Command::Deregister(d) => {
            d.service_id.is_empty()
                && d.check_id.is_empty()
                && !members.iter().any(|m| m.name.eq_ignore_ascii_case(&d.node))
        }
        _ => false,
    }
}

/// The leader's own node on a graceful leave. `reconcile` never deregisters the node doing
/// the reconciling (Consul leaves that to the next leader); a single server has no next
/// leader, so the leaving leader removes its own node itself. Its local services and checks
/// go with it.
pub async fn deregister_self(
    catalog: &ServerHandle,
    ctx: &ReconcileContext,
) -> Result<(), ServerError> {
    let command = Command::Deregister(Deregistration {
        node: ctx.self_name.clone(),
        datacenter: ctx.datacenter.clone(),
        ..Deregistration::default()
    });
    catalog.write(command).await?;
    Ok(())
}

/// The leader loop; returns when `shutdown` is cancelled or the server stops. With ACLs on,
/// each new leader also makes sure `initial_management` exists.
pub async fn run(
    catalog: ServerHandle,
    members: Members,
    ctx: ReconcileContext,
    initial_management: Option<String>,
    shutdown: CancellationToken,
) {
    let mut management_done = false;
    let mut leadership = catalog.leadership();
    let mut member_changes = members.subscribe();
    let mut tick = tokio::time::interval(RECONCILE_INTERVAL);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retry_at: Option<Instant> = None;
    let reap_from = Instant::now() + REAP_GRACE;
    loop {
        // The first tick completes at once: that is the start-up round.
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            changed = leadership.changed() => if changed.is_err() { return },
            changed = member_changes.changed() => if changed.is_err() { return },
            _ = tick.tick() => {}
            _ = sleep_until_opt(retry_at) => {}
        }
        if !*leadership.borrow_and_update() {
            retry_at = None;
            management_done = false;
            continue;
        }
        let mut management_failed = false;
        if let Some(secret) = initial_management.as_deref().filter(|_| !management_done) {
            match crate::acl::ensure_initial_management(&catalog, secret).await {
                Ok(created) => {
                    management_done = true;
                    if created {
                        tracing::info!("created the initial management ACL token");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the initial management token yet");
                    management_failed = true;
                }
            }
        }
        let current = members.current();
        // Mark the member list as seen: changes that arrive during the round trigger another.
        member_changes.borrow_and_update();
        let round = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return,
            r = reconcile_round(&catalog, &current, &ctx, Instant::now() >= reap_from) => r,
        };
        match round {
            Ok(_) => retry_at = None,
            Err(e) if e.is_shutting_down() => return,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?RETRY_AFTER_FAILURE, "reconcile failed");
                retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
            }
        }
        if management_failed {
            retry_at = Some(Instant::now() + RETRY_AFTER_FAILURE);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::node::{MemberStatus, NodeIdentity};
    use crate::runtime::members::self_member;
    use muster_server::{CatalogServer, HealthStatus, ServerConfig};

    pub(crate) async fn single_server(dir: &std::path::Path, name: &str) -> ServerHandle {
        let id = uuid::Uuid::new_v4().to_string();
        let config = ServerConfig::new(
            muster_server::raft_id_from_node_id(&id).unwrap(),
            name,
            "127.0.0.1:1",
            "dc1",
        );
        let handle = CatalogServer::start(config, dir, CancellationToken::new())
            .await
            .unwrap();
        handle.bootstrap_single().await.unwrap();
        handle
            .wait_for_leader(Instant::now() + Duration::from_secs(20))
            .await
            .expect("a single server elects itself");
        handle
    }

    fn identity(name: &str, server: bool) -> NodeIdentity {
        NodeIdentity {
            name: name.into(),
            id: uuid::Uuid::new_v4().to_string(),
            datacenter: "dc1".into(),
            advertise_addr: "127.0.0.1".parse().unwrap(),
            server,
            bootstrap_expect: 0,
            serf_lan_port: 8301,
            server_port: server.then_some(8300),
        }
    }

    async fn wait_until(what: &str, mut f: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !f().await {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leader_registers_members_and_follows_changes() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = single_server(dir.path(), "db1").await;
        let me = identity("db1", true);
        let members = Members::new(vec![self_member(&me, true)]);
        let ctx = ReconcileContext {
            datacenter: "dc1".into(),
            self_name: "db1".into(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            catalog.clone(),
            members.clone(),
            ctx.clone(),
            None,
            stop.clone(),
        ));

        let serf_of = async |node: &str| {
            catalog
                .read(Consistency::Stale, |c| {
                    c.check(node, "serfHealth")
                        .map(|ch| (ch.status, ch.output.clone()))
                })
                .await
                .unwrap()
                .0
        };
        wait_until("db1 registered", async || serf_of("db1").await.is_some()).await;
        let (status, output) = serf_of("db1").await.unwrap();
        assert_eq!(status, HealthStatus::Passing);
        assert_eq!(output, "Agent alive and reachable");
        let consul = catalog
            .read(Consistency::Stale, |c| {
                c.service("db1", "consul").map(|s| s.port)
            })
            .await
            .unwrap()
            .0;
        assert_eq!(consul, Some(8300));

        // A member change is reconciled at once, not at the next 60 s tick.
        let client = identity("app1", false);
        let mut list = vec![self_member(&me, true), self_member(&client, false)];
        members.set(list.clone());
        wait_until("app1 registered", async || serf_of("app1").await.is_some()).await;
        list[1].status = MemberStatus::Failed;
        members.set(list.clone());
        wait_until("app1 critical", async || {
            serf_of("app1").await.map(|s| s.0) == Some(HealthStatus::Critical)
        })
        .await;
        // Back again (a rejoin after a failure): passing again.
        list[1].status = MemberStatus::Alive;
        members.set(list.clone());
        wait_until("app1 passing again", async || {
            serf_of("app1").await
                == Some((
                    HealthStatus::Passing,
                    "Agent alive and reachable".to_owned(),
                ))
        })
        .await;
        list[1].status = MemberStatus::Left;
        members.set(list.clone());
        wait_until("app1 deregistered", async || {
            catalog
                .read(Consistency::Stale, |c| c.node("app1").is_none())
                .await
                .unwrap()
                .0
        })
        .await;

        // Identical content writes nothing: a second round is a no-op.
        let written = reconcile_once(&catalog, &members.current(), &ctx)
            .await
            .unwrap();
        assert_eq!(written, 0);

        stop.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();

        // The leaving leader removes its own node.
        deregister_self(&catalog, &ctx).await.unwrap();
        let gone = catalog
            .read(Consistency::Stale, |c| c.node("db1").is_none())
            .await
            .unwrap()
            .0;
        assert!(gone);
        catalog.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn absent_nodes_are_reaped_only_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = single_server(dir.path(), "db1").await;
        let me = identity("db1", true);
        let ghost = identity("ghost", false);
        let ctx = ReconcileContext {
            datacenter: "dc1".into(),
            self_name: "db1".into(),
        };
        let present = async |node: &str| {
            catalog
                .read(Consistency::Stale, |c| c.node(node).is_some())
                .await
                .unwrap()
                .0
        };
        let both = vec![self_member(&me, true), self_member(&ghost, false)];
        reconcile_once(&catalog, &both, &ctx).await.unwrap();
        assert!(present("ghost").await);

        // Gossip does not list it (yet, or any more): within the grace nothing is written.
        let alone = vec![self_member(&me, true)];
        let written = reconcile_round(&catalog, &alone, &ctx, false)
            .await
            .unwrap();
        assert_eq!(written, 0);
        assert!(present("ghost").await);
        // A member that left is still deregistered at once.
        let mut left = both.clone();
        left[1].status = MemberStatus::Left;
        reconcile_round(&catalog, &left, &ctx, false).await.unwrap();
        assert!(!present("ghost").await);
        // After the grace, absent nodes are reaped.
        reconcile_once(&catalog, &both, &ctx).await.unwrap();
        assert!(present("ghost").await);
        reconcile_round(&catalog, &alone, &ctx, true).await.unwrap();
        assert!(!present("ghost").await);
        catalog.shutdown().await;
    }
}
