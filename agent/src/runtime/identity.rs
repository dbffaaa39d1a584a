//! Who this agent is on disk and on the network: the data directory, the persisted node ID,
//! the pid file and the advertised address.
//!
//! Invariants: the node ID is stable across restarts (`<data_dir>/node-id`, created once with
//! a random UUID v4, never silently replaced: a file that does not hold a UUID is an error
//! naming the file); the pid file is written after the data dir exists and removed at
//! shutdown; the advertised address is never unspecified (`0.0.0.0`/`::`).

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use uuid::Uuid;

/// The file under `data_dir` holding the node UUID (Consul's name).
pub const NODE_ID_FILE: &str = "node-id";

/// Creates `data_dir` (and its parents) if needed.
pub fn ensure_data_dir(data_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(data_dir).map_err(|e| {
        format!(
            "cannot create data_dir {:?}: {e}",
            data_dir.display().to_string()
        )
    })?;
    if !data_dir.is_dir() {
        return Err(format!(
            "data_dir {:?} is not a directory",
            data_dir.display().to_string()
        ));
    }
    Ok(())
}

/// The node ID: `node_id` from the config when set, else the UUID persisted in
/// `<data_dir>/node-id`, created on first start. IDs are lower case, as Consul writes them.
pub fn load_or_create_node_id(data_dir: &Path, configured: Option<Uuid>) -> Result<Uuid, String> {
    if let Some(id) = configured {
        return Ok(id);
    }
    let path = data_dir.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => Uuid::parse_str(text.trim()).map_err(|e| {
            format!(
                "{}: the node ID file does not hold a valid UUID ({e}); fix it, or remove it \
                 to get a new node ID",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Uuid::new_v4();
            write_atomically(&path, id.hyphenated().to_string().as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(id)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes `content` to `path` through a temporary file and a rename, so a crash never leaves
/// a half-written file behind.
fn write_atomically(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        // Make the rename durable; best effort on filesystems that refuse to sync a dir.
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// The pid file: written at start, removed when dropped (at shutdown).
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's PID to `path` (Consul writes the bare number).
    pub fn write(path: &Path) -> Result<PidFile, String> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create the pid_file directory: {e}"))?;
        }
        std::fs::write(path, std::process::id().to_string())
            .map_err(|e| format!("cannot write pid_file {}: {e}", path.display()))?;
        Ok(PidFile {
            path: path.to_owned(),
        })
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The address this node is known by: `advertise_addr` when set; else `bind_addr` unless
/// it is unspecified; else the host's single private IPv4 address (Consul's rule), with
/// Consul's errors when there is none or more than one.
pub fn advertise_addr(
    bind: IpAddr,
    advertise: Option<IpAddr>,
    host_addrs: impl FnOnce() -> Result<Vec<IpAddr>, String>,
) -> Result<IpAddr, String> {
    if let Some(a) = advertise {
        return Ok(a);
    }
    if !bind.is_unspecified() {
        return Ok(bind);
    }
    if bind.is_ipv6() {
        return Err(
            "bind_addr is [::]: set advertise_addr (or a specific bind_addr) to the address \
             other nodes should use"
                .to_owned(),
        );
    }
    let mut private: Vec<Ipv4Addr> = host_addrs()?
        .into_iter()
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if is_private_v4(v4) => Some(v4),
            _ => None,
        })
        .collect();
    private.sort();
    private.dedup();
    match private.as_slice() {
        [one] => Ok(IpAddr::V4(*one)),
        [] => Err("No private IPv4 address found".to_owned()),
        _ => Err(
            "Multiple private IPv4 addresses found. Please configure one with 'bind' and/or \
             'advertise'."
                .to_owned(),
        ),
    }
}

/// RFC 1918 and RFC 6598 (carrier-grade NAT) addresses, as go-sockaddr's private set.
fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_private() || (a == 100 && (64..128).contains(&b))
}

/// The host's local IPv4 addresses, read from `/proc/net/fib_trie` (no unsafe, no extra
/// crate): every `|-- <ip>` line followed by a `/32 host LOCAL` line.
pub fn host_ipv4_addrs() -> Result<Vec<IpAddr>, String> {
    let text = std::fs::read_to_string("/proc/net/fib_trie").map_err(|e| {
        format!(
            "cannot list the host's addresses (/proc/net/fib_trie: {e}); set bind_addr or \
             advertise_addr"
        )
    })?;
    Ok(parse_fib_trie(&text))
}

fn parse_fib_trie(text: &str) -> Vec<IpAddr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(ip) = t.parse::<Ipv4Addr>() {
            last = Some(ip);
        } else if t.contains("host LOCAL")
            && let Some(ip) = last.take()
            && !out.contains(&IpAddr::V4(ip))
        {
            out.push(IpAddr::V4(ip));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create_node_id(dir.path(), None).unwrap();
        let text = std::fs::read_to_string(dir.path().join(NODE_ID_FILE)).unwrap();
        assert_eq!(text, first.hyphenated().to_string());
        assert_eq!(first.get_version_num(), 4);
        let second = load_or_create_node_id(dir.path(), None).unwrap();
        assert_eq!(first, second);
        // A configured ID wins and leaves the file alone.
        let configured = Uuid::new_v4();
        assert_eq!(
            load_or_create_node_id(dir.path(), Some(configured)).unwrap(),
            configured
        );
        assert_eq!(
            load_or_create_node_id(dir.path(), None).unwrap(),
            first,
            "the persisted ID is unchanged"
        );
        // Surrounding whitespace (an editor's newline) is fine.
        std::fs::write(dir.path().join(NODE_ID_FILE), format!("  {first}\n")).unwrap();
        assert_eq!(load_or_create_node_id(dir.path(), None).unwrap(), first);
    }

    #[test]
    fn garbage_node_id_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(NODE_ID_FILE);
        std::fs::write(&path, "not-a-uuid").unwrap();
        let err = load_or_create_node_id(dir.path(), None).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("not hold a valid UUID"), "{err}");
        // The file is left for the operator to look at.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not-a-uuid");
    }

    #[test]
    fn data_dir_errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        ensure_data_dir(&nested).unwrap();
        assert!(nested.is_dir());
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        let err = ensure_data_dir(&file.join("sub")).unwrap_err();
        assert!(err.contains("cannot create data_dir"), "{err}");
        assert!(err.contains(&file.display().to_string()), "{err}");
    }

    #[test]
    fn pid_file_is_written_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/muster.pid");
        let pid = PidFile::write(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(pid.path()).unwrap(),
            std::process::id().to_string()
        );
        drop(pid);
        assert!(!path.exists());
    }

    #[test]
    fn advertise_address_follows_consul() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let never = || -> Result<Vec<IpAddr>, String> { panic!("not needed") };
        assert_eq!(
            advertise_addr(ip("0.0.0.0"), Some(ip("10.1.1.1")), never).unwrap(),
            ip("10.1.1.1")
        );
        assert_eq!(
            advertise_addr(ip("127.0.0.11"), None, never).unwrap(),
            ip("127.0.0.11")
        );
        let hosts = |v: &[&str]| {
            let v: Vec<IpAddr> = v.iter().map(|s| ip(s)).collect();
            move || Ok(v)
        };
        assert_eq!(
            advertise_addr(ip("0.0.0.0"), None, hosts(&["127.0.0.1", "192.168.1.5"])).unwrap(),
            ip("192.168.1.5")
        );
        assert_eq!(
            advertise_addr(ip("0.0.0.0"), None, hosts(&["100.64.0.9", "8.8.8.8"])).unwrap(),
            ip("100.64.0.9")
        );
        assert_eq!(
            advertise_addr(ip("0.0.0.0"), None, hosts(&["127.0.0.1", "8.8.8.8"])).unwrap_err(),
            "No private IPv4 address found"
        );
        assert!(
            advertise_addr(ip("0.0.0.0"), None, hosts(&["10.0.0.1", "172.16.0.1"]))
                .unwrap_err()
                .starts_with("Multiple private IPv4 addresses found.")
        );
        assert!(advertise_addr(ip("::"), None, hosts(&[])).is_err());
    }

    #[test]
    fn fib_trie_lists_local_addresses() {
        let text = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.0.0/24 2 0 2
        |-- 10.0.0.0
           /24 link UNICAST
        |-- 10.0.0.7
           /32 host LOCAL
        |-- 10.0.0.255
           /32 link BROADCAST
  +-- 127.0.0.0/8 2 0 2
     |-- 127.0.0.1
        /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.0.0.7
           /32 host LOCAL
";
        assert_eq!(
            parse_fib_trie(text),
            vec![
                "10.0.0.7".parse::<IpAddr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
    }
}
