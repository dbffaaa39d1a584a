//! The gossip keyring: the keys this agent opens packets with, the first one (the primary)
//! sealing what it sends; how operations change it; its file; and the wire form of the
//! cluster-wide operations (`muster keyring`, `/v1/operator/keyring`).
//!
//! Rotation, as Consul's: install the new key everywhere (every agent then opens both),
//! use it (every agent seals with it), remove the old one. Each step reaches every member
//! over its push/pull port, sealed with a key the member already has, so only holders of a
//! current key can change a keyring.
//!
//! Invariants: the primary is never removed; at most [`MAX_KEYS`] keys; every key is 16, 24
//! or 32 bytes; the file (`data_dir/serf/local.keyring`, Consul's JSON list of base64 keys,
//! primary first) is replaced atomically and a file that cannot be read stops the agent with
//! its path, never silently replaced.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Most keys installed at once.
pub const MAX_KEYS: usize = 16;
/// First byte of a keyring request frame (push/pull states start with their version, 1).
pub const REQUEST_TAG: u8 = 0xA1;
/// First byte of a keyring reply frame.
pub const REPLY_TAG: u8 = 0xA2;

/// Each member's answer to a keyring operation: its name, and its keyring after the
/// operation (primary first) or why it refused.
pub type KeyringAnswers = Vec<(String, Result<Vec<Vec<u8>>, String>)>;

/// One keyring operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyringOp {
    /// Report the keys.
    List,
    /// Add a key (opens packets; does not seal).
    Install(Vec<u8>),
    /// Make an installed key the primary.
    Use(Vec<u8>),
    /// Remove a key that is not the primary.
    Remove(Vec<u8>),
}

impl KeyringOp {
    fn code(&self) -> u8 {
        match self {
            KeyringOp::List => 0,
            KeyringOp::Install(_) => 1,
            KeyringOp::Use(_) => 2,
            KeyringOp::Remove(_) => 3,
        }
    }

    fn key(&self) -> &[u8] {
        match self {
            KeyringOp::List => &[],
            KeyringOp::Install(k) | KeyringOp::Use(k) | KeyringOp::Remove(k) => k,
        }
    }
}

/// A key as Consul shows it.
pub fn encode_key(key: &[u8]) -> String {
    STANDARD.encode(key)
}

/// A key as Consul takes it: base64 of 16, 24 or 32 bytes.
pub fn decode_key(text: &str) -> Result<Vec<u8>, String> {
    let key = STANDARD
        .decode(text.trim())
        .map_err(|e| format!("Invalid key: {e}"))?;
    if ![16, 24, 32].contains(&key.len()) {
        return Err(format!(
            "Invalid key: key size must be 16, 24 or 32 bytes, not {}",
            key.len()
        ));
    }
    Ok(key)
}

/// The keyring after `op` (primary first), or Consul's reason for refusing it.
pub fn apply(keys: &[Vec<u8>], op: &KeyringOp) -> Result<Vec<Vec<u8>>, String> {
    if keys.is_empty() && *op != KeyringOp::List {
        return Err("keyring operations need gossip encryption (encrypt) to be enabled".into());
    }
    let mut out = keys.to_vec();
    match op {
        KeyringOp::List => {}
        KeyringOp::Install(k) => {
            decode_key(&encode_key(k))?;
            if !out.contains(k) {
                if out.len() >= MAX_KEYS {
                    return Err(format!("the keyring is full ({MAX_KEYS} keys)"));
                }
                out.push(k.clone());
            }
        }
        KeyringOp::Use(k) => {
            let Some(at) = out.iter().position(|x| x == k) else {
                return Err("Requested key is not in the keyring".into());
            };
            let key = out.remove(at);
            out.insert(0, key);
        }
        KeyringOp::Remove(k) => {
            if out.first() == Some(k) {
                return Err("Removing the primary key is not allowed".into());
            }
            let Some(at) = out.iter().position(|x| x == k) else {
                return Err("Requested key is not in the keyring".into());
            };
            out.remove(at);
        }
    }
    Ok(out)
}

/// Reads a keyring file; `Ok(None)` when there is none.
pub fn load(path: &Path) -> Result<Option<Vec<Vec<u8>>>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read the keyring {}: {e}", path.display())),
    };
    let bad = |why: String| format!("the keyring {} is not valid: {why}", path.display());
    let list: Vec<String> = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if list.is_empty() || list.len() > MAX_KEYS {
        return Err(bad(format!("it must list 1 to {MAX_KEYS} keys")));
    }
    let keys = list
        .iter()
        .map(|k| decode_key(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(bad)?;
    Ok(Some(keys))
}

/// Writes a keyring file atomically (temp file, fsync, rename), readable by the owner only.
pub fn save(path: &Path, keys: &[Vec<u8>]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let list: Vec<String> = keys.iter().map(|k| encode_key(k)).collect();
    let text = serde_json::to_vec(&list).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("keyring.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&text)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// `[REQUEST_TAG][op][len u8][key]`.
pub fn encode_request(op: &KeyringOp) -> Vec<u8> {
    let key = op.key();
    let mut out = vec![REQUEST_TAG, op.code(), key.len() as u8];
    out.extend_from_slice(key);
    out
}

/// The operation of a request frame (after its tag check).
pub fn decode_request(frame: &[u8]) -> Result<KeyringOp, String> {
    let [REQUEST_TAG, code, len, rest @ ..] = frame else {
        return Err("not a keyring request".into());
    };
    if rest.len() != usize::from(*len) {
        return Err("truncated keyring request".into());
    }
    let key = rest.to_vec();
    Ok(match code {
        0 => KeyringOp::List,
        1 => KeyringOp::Install(key),
        2 => KeyringOp::Use(key),
        3 => KeyringOp::Remove(key),
        other => return Err(format!("unknown keyring operation {other}")),
    })
}

/// `[REPLY_TAG][1][n][len key]*` with the keys after the operation, or `[REPLY_TAG][0][text]`.
pub fn encode_reply(result: &Result<Vec<Vec<u8>>, String>) -> Vec<u8> {
    let mut out = vec![REPLY_TAG];
    match result {
        Ok(keys) => {
            out.push(1);
            out.push(keys.len() as u8);
            for k in keys {
                out.push(k.len() as u8);
                out.extend_from_slice(k);
            }
        }
        Err(e) => {
            out.push(0);
            out.extend_from_slice(&e.as_bytes()[..e.len().min(1024)]);
        }
    }
    out
}

/// A member's answer.
pub fn decode_reply(frame: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    match frame {
        [REPLY_TAG, 0, text @ ..] => Err(String::from_utf8_lossy(text).into_owned()),
        [REPLY_TAG, 1, n, tail @ ..] => {
            let mut rest: &[u8] = tail;
            let mut keys = Vec::with_capacity(usize::from(*n));
            for _ in 0..*n {
                let Some((&len, after)) = rest.split_first() else {
                    return Err("truncated keyring reply".into());
                };
                let len = usize::from(len);
                if after.len() < len {
                    return Err("truncated keyring reply".into());
                }
                keys.push(after[..len].to_vec());
                rest = &after[len..];
            }
            Ok(keys)
        }
        _ => Err("not a keyring reply (an agent without keyring support?)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(b: u8) -> Vec<u8> {
        vec![b; 32]
    }

    #[test]
    fn rotation_install_use_remove() {
        let ring = vec![k(1)];
        let ring = apply(&ring, &KeyringOp::Install(k(2))).unwrap();
        assert_eq!(ring, [k(1), k(2)]);
        assert_eq!(
            apply(&ring, &KeyringOp::Install(k(2))).unwrap(),
            ring,
            "idempotent"
        );
        assert_eq!(
            apply(&ring, &KeyringOp::Remove(k(1))).unwrap_err(),
            "Removing the primary key is not allowed"
        );
        assert_eq!(
            apply(&ring, &KeyringOp::Use(k(3))).unwrap_err(),
            "Requested key is not in the keyring"
        );
        let ring = apply(&ring, &KeyringOp::Use(k(2))).unwrap();
        assert_eq!(ring, [k(2), k(1)]);
        let ring = apply(&ring, &KeyringOp::Remove(k(1))).unwrap();
        assert_eq!(ring, [k(2)]);
        assert!(
            apply(&[], &KeyringOp::Install(k(2)))
                .unwrap_err()
                .contains("encrypt")
        );
        let full: Vec<Vec<u8>> = (0..MAX_KEYS as u8).map(k).collect();
        assert!(apply(&full, &KeyringOp::Install(k(99))).is_err());
        assert!(apply(&ring, &KeyringOp::Install(vec![1; 7])).is_err());
    }

    #[test]
    fn keys_are_consul_base64() {
        let key = decode_key("aGVsbG8gd29ybGQhIGhlbGxvIHdvcmxkISEhISEhISE=").unwrap();
        assert_eq!(key.len(), 32);
        assert_eq!(
            encode_key(&key),
            "aGVsbG8gd29ybGQhIGhlbGxvIHdvcmxkISEhISEhISE="
        );
        assert!(
            decode_key("not base64!")
                .unwrap_err()
                .starts_with("Invalid key")
        );
        assert!(decode_key("aGVsbG8=").unwrap_err().contains("16, 24 or 32"));
    }

    #[test]
    fn the_file_round_trips_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("serf/local.keyring");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &[k(2), k(1)]).unwrap();
        assert_eq!(load(&path).unwrap(), Some(vec![k(2), k(1)]));
        let mode = std::fs::metadata(&path).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        for bad in ["{", "[]", r#"["short"]"#, r#"[1]"#] {
            std::fs::write(&path, bad).unwrap();
            let e = load(&path).unwrap_err();
            assert!(e.contains(&path.display().to_string()), "{bad}: {e}");
        }
    }

    #[test]
    fn frames_round_trip_and_garbage_is_refused() {
        for op in [
            KeyringOp::List,
            KeyringOp::Install(k(3)),
            KeyringOp::Use(k(3)),
            KeyringOp::Remove(k(4)),
        ] {
            assert_eq!(decode_request(&encode_request(&op)).unwrap(), op);
        }
        assert!(decode_request(&[REQUEST_TAG, 9, 0]).is_err());
        assert!(decode_request(&[REQUEST_TAG, 1, 5, 1]).is_err());
        assert!(decode_request(&[1, 2, 3]).is_err());
        let ok = Ok(vec![k(1), vec![2; 16]]);
        assert_eq!(decode_reply(&encode_reply(&ok)), ok);
        let err = Err("Removing the primary key is not allowed".to_owned());
        assert_eq!(decode_reply(&encode_reply(&err)), err);
        assert!(decode_reply(&[REPLY_TAG, 1, 2, 32]).is_err());
        assert!(decode_reply(&[]).is_err());
    }
}
