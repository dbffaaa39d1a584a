//! Leader reconciliation of gossip membership into the catalog (Consul's `reconcileMember` and
//! `reconcileReaped` in `agent/consul/leader.go`), as a pure diff.
//!
//! Given the catalog and the gossip member list, [`reconcile`] returns the commands that make
//! the catalog match, and nothing for what already matches:
//! - alive: node registered at its address with `serfHealth` passing (`Agent alive and
//!   reachable`); servers also carry the `consul` service on their RPC port;
//! - failed: `serfHealth` critical (`Agent not live or unreachable`), node kept, nothing new
//!   registered for a node the catalog does not know;
//! - left: node deregistered; reaped (gone from the list) nodes that carry `serfHealth` are
//!   deregistered too; nodes without `serfHealth` (registered through the API) are left alone;
//! - this server's own node is never deregistered by itself (another leader will do it).

use std::collections::BTreeSet;

use super::Catalog;
use super::command::{Command, Deregistration, Registration};
use super::model::{
    CONSUL_SERVICE, HealthCheck, HealthStatus, NodeService, SERF_CHECK_ALIVE_OUTPUT,
    SERF_CHECK_FAILED_OUTPUT, SERF_CHECK_ID, SERF_CHECK_NAME, Weights,
};

/// Gossip status of a member (serf's states; `reaped` members are simply absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    /// Alive and reachable.
    Alive,
    /// Announced a graceful leave that is still propagating: no catalog change yet.
    Leaving,
    /// Left gracefully.
    Left,
    /// Failed (unreachable).
    Failed,
}

/// Role of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberRole {
    /// A server, reachable for Raft RPC on this port.
    Server {
        /// Server RPC port (Consul: 8300).
        rpc_port: u16,
    },
    /// A client agent.
    Client,
}

/// One gossip member, as the agent sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Node UUID.
    pub id: String,
    /// Address (IP) the member gossips from.
    pub address: String,
    /// Gossip status.
    pub status: MemberStatus,
    /// Server or client.
    pub role: MemberRole,
}

/// Who is reconciling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReconcileContext {
    /// Datacenter written on registered nodes.
    pub datacenter: String,
    /// This server's node name (never deregistered by itself).
    pub self_name: String,
}

/// The commands that bring the catalog in line with `members`, in member order, then reaps.
pub fn reconcile(catalog: &Catalog, members: &[Member], ctx: &ReconcileContext) -> Vec<Command> {
    let mut commands = Vec::new();
    for member in members {
        let command = match member.status {
            MemberStatus::Alive => alive(catalog, member, ctx),
            MemberStatus::Failed => failed(catalog, member, ctx),
            MemberStatus::Left => deregister(catalog, &member.name, ctx),
            MemberStatus::Leaving => None,
        };
        commands.extend(command);
    }
    // Nodes the gossip layer has forgotten (reaped) but that we registered from gossip.
    let known: BTreeSet<String> = members.iter().map(|m| m.name.to_lowercase()).collect();
    for entry in catalog.nodes.values() {
        let managed = entry.checks.contains_key(&SERF_CHECK_ID.to_lowercase());
        if managed && !known.contains(&entry.node.name.to_lowercase()) {
            commands.extend(deregister(catalog, &entry.node.name, ctx));
        }
    }
    commands
}

fn serf_check(status: HealthStatus, output: &str) -> HealthCheck {
    HealthCheck {
        check_id: SERF_CHECK_ID.to_string(),
        name: SERF_CHECK_NAME.to_string(),
        status,
        output: output.to_string(),
        ..HealthCheck::default()
    }
}

fn serf_status(catalog: &Catalog, node: &str) -> Option<HealthStatus> {
    catalog.check(node, SERF_CHECK_ID).map(|c| c.status)
}

fn alive(catalog: &Catalog, m: &Member, ctx: &ReconcileContext) -> Option<Command> {
    let service = match m.role {
        MemberRole::Server { rpc_port } => Some(NodeService {
            id: CONSUL_SERVICE.to_string(),
            service: CONSUL_SERVICE.to_string(),
            port: rpc_port,
            weights: Weights::default(),
            ..NodeService::default()
        }),
        MemberRole::Client => None,
    };
    let existing = catalog.node(&m.name);
    if let Some(node) = existing
        && node.address == m.address
    {
        let service_ok = service.as_ref().is_none_or(|want| {
            catalog
                .service(&m.name, &want.id)
                .is_some_and(|have| have.service == want.service && have.port == want.port)
        });
        if service_ok && serf_status(catalog, &m.name) == Some(HealthStatus::Passing) {
            return None;
        }
    }
    let mut reg = Registration {
        id: m.id.clone(),
        node: m.name.clone(),
        address: m.address.clone(),
        datacenter: ctx.datacenter.clone(),
        service,
        checks: vec![serf_check(HealthStatus::Passing, SERF_CHECK_ALIVE_OUTPUT)],
        ..Registration::default()
    };
    // Keep what the node's own agent registered about itself.
    if let Some(node) = existing {
        reg.tagged_addresses = node.tagged_addresses.clone();
        reg.node_meta = node.meta.clone();
        if !node.datacenter.is_empty() {
            reg.datacenter = node.datacenter.clone();
        }
    }
    reg.normalize();
    Some(Command::Register(reg))
}

fn failed(catalog: &Catalog, m: &Member, ctx: &ReconcileContext) -> Option<Command> {
    let node = catalog.node(&m.name)?;
    if node.address == m.address && serf_status(catalog, &m.name) == Some(HealthStatus::Critical) {
        return None;
    }
    let mut reg = Registration {
        id: m.id.clone(),
        node: m.name.clone(),
        address: m.address.clone(),
        datacenter: ctx.datacenter.clone(),
        checks: vec![serf_check(HealthStatus::Critical, SERF_CHECK_FAILED_OUTPUT)],
        // Do not clobber what is known about the node.
        skip_node_update: true,
        ..Registration::default()
    };
    reg.normalize();
    Some(Command::Register(reg))
}

fn deregister(catalog: &Catalog, name: &str, ctx: &ReconcileContext) -> Option<Command> {
    if name.eq_ignore_ascii_case(&ctx.self_name) || catalog.node(name).is_none() {
        return None;
    }
    Some(Command::Deregister(Deregistration {
        node: name.to_string(),
        datacenter: ctx.datacenter.clone(),
        ..Deregistration::default()
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::command::CommandResult;
    use crate::catalog::tests::{ID1, ID2, apply_ok, node_reg, svc};

    fn ctx() -> ReconcileContext {
        ReconcileContext {
            datacenter: "dc1".into(),
            self_name: "db1".into(),
        }
    }

    fn member(name: &str, id: &str, addr: &str, status: MemberStatus, role: MemberRole) -> Member {
        Member {
            name: name.into(),
            id: id.into(),
            address: addr.into(),
            status,
            role,
        }
    }

    fn server(name: &str, id: &str, addr: &str, status: MemberStatus) -> Member {
        member(
            name,
            id,
            addr,
            status,
            MemberRole::Server { rpc_port: 8300 },
        )
    }

    /// Applies reconciliation until it converges; returns how many rounds produced commands.
    fn converge(c: &mut Catalog, members: &[Member], mut index: u64) -> usize {
        let mut rounds = 0;
        loop {
            let cmds = reconcile(c, members, &ctx());
            if cmds.is_empty() {
                return rounds;
            }
            rounds += 1;
            assert!(rounds < 3, "reconcile does not converge: {cmds:?}");
            for cmd in cmds {
                index += 1;
                assert_eq!(c.apply(index, &cmd), CommandResult::Ok);
            }
        }
    }

    #[test]
    fn alive_server_registers_node_serf_check_and_consul_service() {
        let mut c = Catalog::new();
        let members = [server("db1", ID1, "10.0.0.1", MemberStatus::Alive)];
        let cmds = reconcile(&c, &members, &ctx());
        assert_eq!(cmds.len(), 1);
        assert_eq!(converge(&mut c, &members, 1), 1);
        let check = c.check("db1", SERF_CHECK_ID).unwrap();
        assert_eq!(check.status, HealthStatus::Passing);
        assert_eq!(check.name, "Serf Health Status");
        assert_eq!(check.output, "Agent alive and reachable");
        assert!(check.service_id.is_empty());
        let consul = c.service("db1", "consul").unwrap();
        assert_eq!(consul.port, 8300);
        assert_eq!(c.node("db1").unwrap().datacenter, "dc1");
        // Already in line: nothing to do.
        assert!(reconcile(&c, &members, &ctx()).is_empty());
    }

    #[test]
    fn alive_client_gets_no_consul_service_and_keeps_its_meta() {
        let mut c = Catalog::new();
        let mut r = node_reg("app", ID2, "10.0.0.9");
        r.node_meta.insert("rack".into(), "a".into());
        r.service = Some(svc("web", "web", &[]));
        apply_ok(&mut c, 1, Command::Register(r));
        let members = [member(
            "app",
            ID2,
            "10.0.0.9",
            MemberStatus::Alive,
            MemberRole::Client,
        )];
        converge(&mut c, &members, 1);
        assert!(c.service("app", "consul").is_none());
        assert!(c.service("app", "web").is_some());
        assert_eq!(c.node("app").unwrap().meta["rack"], "a");
        assert_eq!(
            c.check("app", SERF_CHECK_ID).unwrap().status,
            HealthStatus::Passing
        );
    }

    #[test]
    fn alive_with_new_address_or_port_reregisters() {
        let mut c = Catalog::new();
        converge(
            &mut c,
            &[server("db1", ID1, "10.0.0.1", MemberStatus::Alive)],
            1,
        );
        let moved = [server("db1", ID1, "10.0.0.7", MemberStatus::Alive)];
        assert_eq!(reconcile(&c, &moved, &ctx()).len(), 1);
        converge(&mut c, &moved, 10);
        assert_eq!(c.node("db1").unwrap().address, "10.0.0.7");
        let new_port = [member(
            "db1",
            ID1,
            "10.0.0.7",
            MemberStatus::Alive,
            MemberRole::Server { rpc_port: 9300 },
        )];
        converge(&mut c, &new_port, 20);
        assert_eq!(c.service("db1", "consul").unwrap().port, 9300);
    }

    #[test]
    fn failed_marks_critical_and_keeps_node() {
        let mut c = Catalog::new();
        converge(
            &mut c,
            &[server("db2", ID2, "10.0.0.2", MemberStatus::Alive)],
            1,
        );
        let failed = [server("db2", ID2, "10.0.0.2", MemberStatus::Failed)];
        assert_eq!(converge(&mut c, &failed, 10), 1);
        let check = c.check("db2", SERF_CHECK_ID).unwrap();
        assert_eq!(check.status, HealthStatus::Critical);
        assert_eq!(check.output, "Agent not live or unreachable");
        assert!(
            c.service("db2", "consul").is_some(),
            "node and services stay"
        );
        // Back alive.
        let alive = [server("db2", ID2, "10.0.0.2", MemberStatus::Alive)];
        converge(&mut c, &alive, 20);
        assert_eq!(
            c.check("db2", SERF_CHECK_ID).unwrap().status,
            HealthStatus::Passing
        );
    }

    #[test]
    fn failed_unknown_node_is_ignored() {
        let c = Catalog::new();
        let failed = [server("ghost", ID2, "10.0.0.2", MemberStatus::Failed)];
        assert!(reconcile(&c, &failed, &ctx()).is_empty());
    }

    #[test]
    fn left_and_reaped_nodes_are_deregistered_but_not_external_or_self() {
        let mut c = Catalog::new();
        let all = [
            server("db1", ID1, "10.0.0.1", MemberStatus::Alive),
            server("db2", ID2, "10.0.0.2", MemberStatus::Alive),
            member(
                "app",
                "9c1e2d3f-4a5b-4c6d-8e7f-0a1b2c3d4e5f",
                "10.0.0.3",
                MemberStatus::Alive,
                MemberRole::Client,
            ),
        ];
        converge(&mut c, &all, 1);
        // An externally registered node (no serfHealth).
        apply_ok(
            &mut c,
            50,
            Command::Register(node_reg("external", "", "192.0.2.1")),
        );
        // db2 left; app was reaped (gone from the list); db1 (self) left too.
        let now = [
            server("db1", ID1, "10.0.0.1", MemberStatus::Left),
            server("db2", ID2, "10.0.0.2", MemberStatus::Left),
        ];
        let cmds = reconcile(&c, &now, &ctx());
        let mut gone: Vec<String> = cmds
            .iter()
            .map(|cmd| match cmd {
                Command::Deregister(d) => d.node.clone(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        gone.sort();
        assert_eq!(gone, ["app", "db2"]);
        converge(&mut c, &now, 60);
        assert!(
            c.node("db1").is_some(),
            "self is never deregistered by itself"
        );
        assert!(c.node("external").is_some());
        assert!(c.node("db2").is_none() && c.node("app").is_none());
    }

    #[test]
    fn leaving_is_not_acted_on() {
        let mut c = Catalog::new();
        converge(
            &mut c,
            &[server("db2", ID2, "10.0.0.2", MemberStatus::Alive)],
            1,
        );
        let leaving = [server("db2", ID2, "10.0.0.2", MemberStatus::Leaving)];
        assert!(reconcile(&c, &leaving, &ctx()).is_empty());
    }

    #[test]
    fn reconcile_commands_validate() {
        let c = Catalog::new();
        let members = [
            server("db1", ID1, "10.0.0.1", MemberStatus::Alive),
            member(
                "app",
                ID2,
                "10.0.0.3",
                MemberStatus::Alive,
                MemberRole::Client,
            ),
        ];
        for cmd in reconcile(&c, &members, &ctx()) {
            cmd.validate_against(&c).unwrap();
        }
    }
}
