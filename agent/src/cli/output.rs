//! Output of the CLI commands, byte for byte as Consul prints it: columns aligned the way
//! `ryanuber/columnize` aligns them (each column padded to its widest cell, two spaces
//! between columns, the last column unpadded), and the API's JSON rows decoded into small
//! typed rows first.
//!
//! Everything here is a pure function of the decoded rows.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// Go encodes nil maps and slices as `null`: read them as empty.
fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Option::unwrap_or_default)
}

/// Aligns rows into columns (Consul's `columnize` with its default config).
pub fn columnize(rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.trim().chars().count();
            match widths.get_mut(i) {
                Some(max) => *max = (*max).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut lines = Vec::with_capacity(rows.len());
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let cell = cell.trim();
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths[i] - cell.chars().count();
                line.push_str(cell);
                line.extend(std::iter::repeat_n(' ', pad + 2));
            }
        }
        lines.push(line);
    }
    lines.join("\n")
}

/// Go's `text/tabwriter` as `consul catalog services -tags` uses it (min width 0, padding 6,
/// pad with spaces), over two columns, then trimmed as Consul trims it.
pub fn two_columns_tabwriter(rows: &[(String, String)]) -> String {
    let width = rows
        .iter()
        .map(|(a, _)| a.chars().count())
        .max()
        .unwrap_or(0)
        + 6;
    let lines: Vec<String> = rows
        .iter()
        .map(|(a, b)| {
            let pad = width - a.chars().count();
            format!("{a}{}{b}", " ".repeat(pad))
        })
        .collect();
    lines.join("\n").trim().to_owned()
}

/// A member as `/v1/agent/members` returns it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct MemberRow {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: String,
    /// Gossip port.
    pub port: u16,
    /// Serf tags.
    #[serde(deserialize_with = "null_default")]
    pub tags: BTreeMap<String, String>,
    /// Serf status code.
    pub status: i64,
}

/// Serf's name for a status code.
pub fn member_status(code: i64) -> &'static str {
    match code {
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "none",
    }
}

fn host_port(addr: &str, port: u16) -> String {
    match addr.parse::<std::net::IpAddr>() {
        Ok(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        Err(_) => format!("{addr}:{port}"),
    }
}

impl MemberRow {
    fn tag(&self, k: &str) -> &str {
        self.tags.get(k).map_or("", String::as_str)
    }

    fn is_server(&self) -> bool {
        self.tag("role") == "consul"
    }

    /// The segment `consul members` shows: `<all>` for servers, the tag or `<default>` for
    /// clients (default partition).
    fn segment(&self) -> String {
        if self.is_server() {
            "<all>".to_owned()
        } else if self.tag("segment").is_empty() {
            "<default>".to_owned()
        } else {
            self.tag("segment").to_owned()
        }
    }
}

/// Filters and sorts members as `consul members` does: keeps those whose status matches
/// `keep`, then servers first, then by segment, then by name.
pub fn select_members(mut members: Vec<MemberRow>, keep: impl Fn(&str) -> bool) -> Vec<MemberRow> {
    members.retain(|m| keep(member_status(m.status)));
    members.sort_by(|a, b| {
        (!a.is_server(), a.segment(), &a.name).cmp(&(!b.is_server(), b.segment(), &b.name))
    });
    members
}

/// The `consul members` table.
pub fn members_table(members: &[MemberRow]) -> String {
    let mut rows = vec![
        [
            "Node",
            "Address",
            "Status",
            "Type",
            "Build",
            "Protocol",
            "DC",
            "Partition",
            "Segment",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for m in members {
        let addr = host_port(&m.addr, m.port);
        let status = member_status(m.status).to_owned();
        let kind = match m.tag("role") {
            "consul" => "server",
            "node" => "client",
            _ => {
                rows.push(vec![
                    m.name.clone(),
                    addr,
                    status,
                    "unknown".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
                continue;
            }
        };
        let build = match m.tag("build") {
            "" => "< 0.3",
            b => b.split(':').next().unwrap_or(b),
        };
        let partition = match m.tag("ap") {
            "" => "default",
            p => p,
        };
        rows.push(vec![
            m.name.clone(),
            addr,
            status,
            kind.to_owned(),
            build.to_owned(),
            m.tag("vsn").to_owned(),
            m.tag("dc").to_owned(),
            partition.to_owned(),
            m.segment(),
        ]);
    }
    columnize(&rows)
}

/// The `consul members -detailed` table: tags as sorted `k=v` pairs.
pub fn members_detailed_table(members: &[MemberRow]) -> String {
    let mut rows = vec![
        ["Node", "Address", "Status", "Tags"]
            .map(str::to_owned)
            .to_vec(),
    ];
    for m in members {
        let tags = m
            .tags
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        rows.push(vec![
            m.name.clone(),
            host_port(&m.addr, m.port),
            member_status(m.status).to_owned(),
            tags,
        ]);
    }
    columnize(&rows)
}

/// A node row of `consul catalog nodes` (from `/v1/catalog/nodes` or, with `-service`,
/// from `/v1/catalog/service/<name>`, whose rows call the metadata `NodeMeta`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct NodeRow {
    /// Node UUID.
    #[serde(rename = "ID", deserialize_with = "null_default")]
    pub id: String,
    /// Node name.
    pub node: String,
    /// Address.
    pub address: String,
    /// Datacenter.
    pub datacenter: String,
    /// Tagged addresses.
    #[serde(deserialize_with = "null_default")]
    pub tagged_addresses: BTreeMap<String, String>,
    /// Metadata.
    #[serde(alias = "NodeMeta", deserialize_with = "null_default")]
    pub meta: BTreeMap<String, String>,
}

fn map_to_kv(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `consul catalog nodes` table (`ID` is the UUID's first group unless `detailed`).
pub fn nodes_table(nodes: &[NodeRow], detailed: bool) -> String {
    let header: &[&str] = if detailed {
        &["Node", "ID", "Address", "DC", "TaggedAddresses", "Meta"]
    } else {
        &["Node", "ID", "Address", "DC"]
    };
    let mut rows = vec![header.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()];
    for n in nodes {
        if detailed {
            rows.push(vec![
                n.node.clone(),
                n.id.clone(),
                n.address.clone(),
                n.datacenter.clone(),
                map_to_kv(&n.tagged_addresses),
                map_to_kv(&n.meta),
            ]);
        } else {
            let id = match n.id.find('-') {
                Some(i) if i > 0 => &n.id[..i],
                _ => n.id.as_str(),
            };
            rows.push(vec![
                n.node.clone(),
                id.to_owned(),
                n.address.clone(),
                n.datacenter.clone(),
            ]);
        }
    }
    columnize(&rows)
}

/// `consul catalog services`: one name per line, sorted; with `tags`, a tabwriter column of
/// sorted, comma-separated tags.
pub fn services_list(services: &BTreeMap<String, Vec<String>>, tags: bool) -> String {
    if tags {
        let rows: Vec<(String, String)> = services
            .iter()
            .map(|(name, t)| {
                let mut t = t.clone();
                t.sort();
                (name.clone(), t.join(","))
            })
            .collect();
        two_columns_tabwriter(&rows)
    } else {
        services.keys().cloned().collect::<Vec<_>>().join("\n")
    }
}

/// The services of `/v1/catalog/services` (`{name: [tags]}`).
pub fn services_from_catalog(v: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    if let Some(map) = v.as_object() {
        for (name, tags) in map {
            out.insert(name.clone(), string_list(tags));
        }
    }
    out
}

/// The services of `/v1/catalog/node/<node>` (`{"Node": ..., "Services": {id: {...}}}`, or
/// `null` for an unknown node), by service name with their tags merged.
pub fn services_from_node(v: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(services) = v.get("Services").and_then(Value::as_object) {
        for svc in services.values() {
            let name = svc
                .get("Service")
                .and_then(Value::as_str)
                .unwrap_or_default();
            out.entry(name.to_owned())
                .or_default()
                .extend(string_list(svc.get("Tags").unwrap_or(&Value::Null)));
        }
    }
    out
}

fn string_list(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `consul version`.
pub fn version_text() -> String {
    use crate::runtime::{PROTOCOL_MAX, PROTOCOL_MIN, PROTOCOL_VERSION, revision};
    let supplement = if PROTOCOL_VERSION < PROTOCOL_MAX {
        format!(
            " (agent will automatically use protocol >{PROTOCOL_VERSION} when speaking to \
             compatible agents)"
        )
    } else {
        String::new()
    };
    format!(
        "Muster v{}\nRevision {}\nProtocol {PROTOCOL_VERSION} spoken by default, understands \
         {PROTOCOL_MIN} to {PROTOCOL_MAX}{supplement}",
        env!("CARGO_PKG_VERSION"),
        revision()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn member(name: &str, addr: &str, role: &str, status: i64) -> MemberRow {
        let mut tags = BTreeMap::new();
        tags.insert("role".to_owned(), role.to_owned());
        tags.insert("dc".to_owned(), "dc1".to_owned());
        tags.insert("vsn".to_owned(), "2".to_owned());
        tags.insert("build".to_owned(), "0.1.0:dev".to_owned());
        MemberRow {
            name: name.into(),
            addr: addr.into(),
            port: 8301,
            tags,
            status,
        }
    }

    #[test]
    fn columnize_pads_every_column_but_the_last() {
        let rows = vec![
            vec!["a".to_owned(), "bb".to_owned(), "c".to_owned()],
            vec!["aaa".to_owned(), "b".to_owned(), "cccc".to_owned()],
        ];
        assert_eq!(columnize(&rows), "a    bb  c\naaa  b   cccc");
        // Short rows stop early; cells are trimmed.
        let rows = vec![
            vec!["x".to_owned(), " y ".to_owned()],
            vec!["long".to_owned()],
        ];
        assert_eq!(columnize(&rows), "x     y\nlong");
    }

    #[test]
    fn members_table_matches_consul() {
        let rows = select_members(
            vec![
                member("web-1", "10.0.0.21", "node", 1),
                member("db2", "10.0.0.12", "consul", 4),
                member("db1", "10.0.0.11", "consul", 1),
            ],
            |_| true,
        );
        let out = members_table(&rows);
        let expected = "\
Node   Address         Status  Type    Build  Protocol  DC   Partition  Segment
db1    10.0.0.11:8301  alive   server  0.1.0  2         dc1  default    <all>
db2    10.0.0.12:8301  failed  server  0.1.0  2         dc1  default    <all>
web-1  10.0.0.21:8301  alive   client  0.1.0  2         dc1  default    <default>";
        assert_eq!(out, expected);
    }

    #[test]
    fn members_filter_and_detailed_output() {
        let all = vec![
            member("db1", "10.0.0.11", "consul", 1),
            member("db2", "10.0.0.12", "consul", 4),
        ];
        let failed = select_members(all.clone(), |s| s == "failed");
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "db2");
        assert!(select_members(all.clone(), |s| s == "left").is_empty());
        let out = members_detailed_table(&all[..1]);
        assert_eq!(
            out,
            "Node  Address         Status  Tags\n\
             db1   10.0.0.11:8301  alive   build=0.1.0:dev,dc=dc1,role=consul,vsn=2"
        );
        // IPv6 addresses are bracketed, unknown roles have empty columns.
        let mut odd = member("x", "::1", "", 0);
        odd.tags.clear();
        let out = members_table(&[odd]);
        assert!(
            out.lines()
                .nth(1)
                .unwrap()
                .starts_with("x     [::1]:8301  none    unknown"),
            "{out}"
        );
    }

    #[test]
    fn nodes_table_matches_consul() {
        let rows: Vec<NodeRow> = serde_json::from_value(json!([
            {"ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "db1", "Address": "10.0.0.11",
             "Datacenter": "dc1", "TaggedAddresses": {"lan": "10.0.0.11", "wan": "10.0.0.11"},
             "Meta": {"rack": "a"}, "CreateIndex": 5},
            {"ID": "", "Node": "external", "Address": "example.com", "Datacenter": "dc1",
             "TaggedAddresses": null, "NodeMeta": {"k": "v", "a": "b"}}
        ]))
        .unwrap();
        assert_eq!(
            nodes_table(&rows, false),
            "Node      ID        Address      DC\n\
             db1       40e4a748  10.0.0.11    dc1\n\
             external            example.com  dc1"
        );
        assert_eq!(
            nodes_table(&rows, true),
            "Node      ID                                    Address      DC   TaggedAddresses               Meta\n\
             db1       40e4a748-2192-161a-0510-9bf59fe950b5  10.0.0.11    dc1  lan=10.0.0.11, wan=10.0.0.11  rack=a\n\
             external                                        example.com  dc1                                a=b, k=v"
        );
    }

    #[test]
    fn services_listing_matches_consul() {
        let catalog = json!({"web": ["v2", "dev"], "consul": [], "galeradb": ["icinga-galera"]});
        let services = services_from_catalog(&catalog);
        assert_eq!(services_list(&services, false), "consul\ngaleradb\nweb");
        assert_eq!(
            services_list(&services, true),
            "consul        \ngaleradb      icinga-galera\nweb           dev,v2",
            "Go's tabwriter pads a cell even when the last one is empty"
        );
        let node = json!({"Node": {"Node": "db1"}, "Services": {
            "web-1": {"ID": "web-1", "Service": "web", "Tags": ["a"]},
            "web-2": {"ID": "web-2", "Service": "web", "Tags": ["b"]}
        }});
        let services = services_from_node(&node);
        assert_eq!(services["web"], ["a", "b"]);
        assert!(services_from_node(&Value::Null).is_empty());
    }

    #[test]
    fn version_text_has_the_protocol_line() {
        let text = version_text();
        let mut lines = text.lines();
        assert_eq!(
            lines.next().unwrap(),
            format!("Muster v{}", env!("CARGO_PKG_VERSION"))
        );
        assert!(lines.next().unwrap().starts_with("Revision "));
        assert_eq!(
            lines.next().unwrap(),
            "Protocol 2 spoken by default, understands 2 to 3 (agent will automatically use \
             protocol >2 when speaking to compatible agents)"
        );
    }
}
