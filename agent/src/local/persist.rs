//! Persistence of API registrations, as Consul lays them out in `data_dir`:
//! `services/<sha256(id)>`, `checks/<sha256(id)>` and TTL state in
//! `checks/state/<sha256(id)>`, one JSON record per file.
//!
//! Invariants:
//! - a write is atomic: a temp file in the same directory, fsync, rename, fsync of the
//!   directory; a crash leaves the old record or the new one, plus at most a stray `*.tmp`
//!   that loading ignores;
//! - every record carries a `Version`; unknown fields are ignored, a newer version is skipped;
//! - loading never fails as a whole: a file that cannot be read or decoded is logged with its
//!   path and skipped, and it is left on disk for the operator (never silently deleted).

use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use muster_server::HealthStatus;
use serde::{Deserialize, Serialize};

use super::Source;
use crate::config::{CheckDefinition, ServiceDefinition};

/// The record version this build writes and reads.
pub(crate) const RECORD_VERSION: u64 = 1;
/// Largest record file read back; anything bigger is not ours.
const MAX_RECORD_BYTES: u64 = 4 * 1024 * 1024;

const SERVICES_DIR: &str = "services";
const CHECKS_DIR: &str = "checks";
const STATE_DIR: &str = "state";
const TMP_SUFFIX: &str = ".tmp";

/// A persisted service (its checks are persisted one file each).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceRecord {
    #[serde(rename = "Version")]
    pub version: u64,
    #[serde(rename = "Source", default = "api_source")]
    pub source: Source,
    #[serde(rename = "Service")]
    pub service: ServiceDefinition,
}

/// A persisted check: a runnable definition or a maintenance check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckRecord {
    #[serde(rename = "Version")]
    pub version: u64,
    #[serde(rename = "Source", default = "api_source")]
    pub source: Source,
    #[serde(rename = "Check", default, skip_serializing_if = "Option::is_none")]
    pub check: Option<CheckDefinition>,
    #[serde(
        rename = "Maintenance",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub maintenance: Option<MaintenanceRecord>,
}

impl CheckRecord {
    /// The CheckID of the record.
    pub fn id(&self) -> Option<&str> {
        match (&self.check, &self.maintenance) {
            (Some(c), _) => Some(&c.id),
            (None, Some(m)) => Some(&m.check_id),
            (None, None) => None,
        }
    }
}

/// A maintenance check: who it is for and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MaintenanceRecord {
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "ServiceID", default)]
    pub service_id: Option<String>,
    #[serde(rename = "Reason", default)]
    pub reason: String,
}

/// The last state of a TTL check, restored after a restart while it has not expired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TtlRecord {
    #[serde(rename = "Version")]
    pub version: u64,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    #[serde(rename = "Status")]
    pub status: HealthStatus,
    #[serde(rename = "Output", default)]
    pub output: String,
    /// When the TTL runs out, in milliseconds since the Unix epoch.
    #[serde(rename = "ExpiresUnixMs")]
    pub expires_unix_ms: u64,
}

impl TtlRecord {
    /// A record for a TTL that expires `remaining` from now.
    pub fn new(check_id: &str, status: HealthStatus, output: &str, remaining: Duration) -> Self {
        let expires = SystemTime::now() + remaining;
        TtlRecord {
            version: RECORD_VERSION,
            check_id: check_id.to_owned(),
            status,
            output: output.to_owned(),
            expires_unix_ms: unix_ms(expires),
        }
    }

    /// Time left before the TTL expires, zero once it has.
    pub fn remaining(&self) -> Duration {
        let now = unix_ms(SystemTime::now());
        Duration::from_millis(self.expires_unix_ms.saturating_sub(now))
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn api_source() -> Source {
    Source::Api
}

/// Everything read back at start.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    pub services: Vec<ServiceRecord>,
    pub checks: Vec<CheckRecord>,
    pub ttl_states: Vec<TtlRecord>,
}

/// The persisted registrations under one data directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    services: PathBuf,
    checks: PathBuf,
    states: PathBuf,
}

/// The file name of a record: the hex SHA-256 of the ID (IDs may hold any character).
pub(crate) fn file_name(id: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, id.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Store {
    /// Creates the directories if needed.
    pub fn open(data_dir: &Path) -> io::Result<Store> {
        let services = data_dir.join(SERVICES_DIR);
        let checks = data_dir.join(CHECKS_DIR);
        let states = checks.join(STATE_DIR);
        for dir in [&services, &checks, &states] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        Ok(Store {
            services,
            checks,
            states,
        })
    }

    /// Reads every record; unreadable ones are logged and skipped.
    pub fn load(&self) -> Loaded {
        Loaded {
            services: read_records(&self.services, |r: &ServiceRecord| r.version),
            checks: read_records(&self.checks, |r: &CheckRecord| r.version)
                .into_iter()
                .filter(|r| r.id().is_some())
                .collect(),
            ttl_states: read_records(&self.states, |r: &TtlRecord| r.version),
        }
    }

    pub fn save_service(&self, record: &ServiceRecord) -> io::Result<()> {
        write_record(&self.services, &file_name(&record.service.id), record)
    }

    pub fn remove_service(&self, id: &str) -> io::Result<()> {
        remove(&self.services.join(file_name(id)))
    }

    pub fn save_check(&self, record: &CheckRecord) -> io::Result<()> {
        let id = record.id().unwrap_or_default();
        write_record(&self.checks, &file_name(id), record)
    }

    pub fn remove_check(&self, id: &str) -> io::Result<()> {
        remove(&self.checks.join(file_name(id)))?;
        self.remove_ttl_state(id)
    }

    pub fn save_ttl_state(&self, record: &TtlRecord) -> io::Result<()> {
        write_record(&self.states, &file_name(&record.check_id), record)
    }

    pub fn remove_ttl_state(&self, id: &str) -> io::Result<()> {
        remove(&self.states.join(file_name(id)))
    }
}

fn remove(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `record` to `dir/name` atomically and durably.
fn write_record<T: Serialize>(dir: &Path, name: &str, record: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
    let tmp = dir.join(format!("{name}{TMP_SUFFIX}"));
    let path = dir.join(name);
    {
        // Records may hold ACL tokens: readable by the agent's user only (as Consul's 0600).
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
    }
    fs::rename(&tmp, &path)?;
    // The rename is durable only once the directory entry is on disk.
    fs::File::open(dir)?.sync_all()
}

fn read_records<T: serde::de::DeserializeOwned>(dir: &Path, version: impl Fn(&T) -> u64) -> Vec<T> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(dir = %dir.display(), error = %e, "cannot list persisted registrations");
            return Vec::new();
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .filter(|p| !p.to_string_lossy().ends_with(TMP_SUFFIX))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        match read_one::<T>(&path) {
            Ok(record) if version(&record) > RECORD_VERSION => {
                tracing::error!(
                    file = %path.display(),
                    version = version(&record),
                    "persisted record is from a newer version of muster; skipped"
                );
            }
            Ok(record) => out.push(record),
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot read persisted record; skipped");
            }
        }
    }
    out
}

fn read_one<T: serde::de::DeserializeOwned>(path: &Path) -> io::Result<T> {
    let len = fs::metadata(path)?.len();
    if len > MAX_RECORD_BYTES {
        return Err(io::Error::other(format!("file is too large ({len} bytes)")));
    }
    let bytes = fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn service(id: &str) -> ServiceRecord {
        let mut def = ServiceDefinition::from_api_json(&json!({"Name": "web", "ID": id})).unwrap();
        def.checks.clear();
        ServiceRecord {
            version: RECORD_VERSION,
            source: Source::Api,
            service: def,
        }
    }

    #[test]
    fn records_round_trip_and_removal_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_service(&service("web/1")).unwrap();
        let check = CheckDefinition::from_api_json(&json!({"Name": "t", "TTL": "10s"})).unwrap();
        store
            .save_check(&CheckRecord {
                version: RECORD_VERSION,
                source: Source::Api,
                check: Some(check.clone()),
                maintenance: None,
            })
            .unwrap();
        store
            .save_check(&CheckRecord {
                version: RECORD_VERSION,
                source: Source::Api,
                check: None,
                maintenance: Some(MaintenanceRecord {
                    check_id: "_node_maintenance".into(),
                    service_id: None,
                    reason: "r".into(),
                }),
            })
            .unwrap();
        let ttl = TtlRecord::new("t", HealthStatus::Passing, "ok", Duration::from_secs(60));
        store.save_ttl_state(&ttl).unwrap();

        let loaded = store.load();
        assert_eq!(loaded.services, vec![service("web/1")]);
        assert_eq!(loaded.checks.len(), 2);
        assert!(
            loaded
                .checks
                .iter()
                .any(|c| c.check.as_ref() == Some(&check))
        );
        assert_eq!(loaded.ttl_states, vec![ttl.clone()]);
        assert!(ttl.remaining() > Duration::from_secs(50));

        store.remove_service("web/1").unwrap();
        store.remove_service("web/1").unwrap();
        store.remove_check("t").unwrap();
        let loaded = store.load();
        assert!(loaded.services.is_empty());
        assert_eq!(loaded.checks.len(), 1);
        assert!(loaded.ttl_states.is_empty());
    }

    #[test]
    fn corrupt_newer_and_temp_files_are_skipped_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.save_service(&service("good")).unwrap();
        let services = dir.path().join("services");
        fs::write(services.join("garbage"), b"{not json").unwrap();
        fs::write(services.join("half.tmp"), b"{").unwrap();
        let mut newer = serde_json::to_value(service("newer")).unwrap();
        newer["Version"] = json!(99);
        newer["SomethingNew"] = json!({"x": 1});
        fs::write(services.join("newer"), newer.to_string()).unwrap();
        let mut extra = serde_json::to_value(service("extra")).unwrap();
        extra["Unknown"] = json!(true);
        fs::write(services.join("extra"), extra.to_string()).unwrap();

        let loaded = store.load();
        let ids: Vec<&str> = loaded
            .services
            .iter()
            .map(|s| s.service.id.as_str())
            .collect();
        assert_eq!(ids.len(), 2, "{ids:?}");
        assert!(ids.contains(&"good") && ids.contains(&"extra"));
        // Nothing is deleted behind the operator's back.
        use std::os::unix::fs::PermissionsExt as _;
        let good = services.join(file_name("good"));
        assert_eq!(
            fs::metadata(good).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(services.join("garbage").exists());
        assert!(services.join("newer").exists());
    }

    #[test]
    fn expired_ttl_state_has_no_time_left() {
        let mut ttl = TtlRecord::new("t", HealthStatus::Passing, "", Duration::ZERO);
        ttl.expires_unix_ms = 1;
        assert_eq!(ttl.remaining(), Duration::ZERO);
        assert_eq!(file_name("a").len(), 64);
        assert_ne!(file_name("a"), file_name("A"));
    }
}
