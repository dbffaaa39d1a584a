//! The gossip envelope: every datagram and push/pull frame is either sealed with the
//! cluster key (AES-256-GCM) or, when no key is in use, marked as plain.
//!
//! Layout: `[kind u8][...]`. Kind [`PLAIN`]: the payload follows. Kind [`SEALED_V1`]: a
//! 12-byte random nonce, then ciphertext and its 16-byte tag ([`OVERHEAD`] = 29 bytes, as
//! memberlist). The AAD is a protocol label plus the channel (UDP or TCP), so a packet sealed
//! for one use cannot be replayed as the other and another protocol's packets never open.
//!
//! Consul's key may be 16, 24 or 32 bytes; the AES-256 key is derived from it with
//! HKDF-SHA256, so every accepted key length works with the same cipher (wire
//! compatibility with Consul is impossible anyway: the inner protocol is foca, not memberlist).
//!
//! Invariants: nothing that fails to open reaches foca; [`Sealer::open`] says whether the
//! packet was refused for its key or for being plain while plain is not accepted.

use ring::aead::{self, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::hkdf;
use ring::rand::{SecureRandom, SystemRandom};

/// Envelope kind: not encrypted.
pub const PLAIN: u8 = 0;
/// Envelope kind: AES-256-GCM, version 1.
pub const SEALED_V1: u8 = 1;
/// Bytes a sealed envelope adds: kind, nonce, tag.
pub const OVERHEAD: usize = 1 + NONCE_LEN + 16;
/// Salt of the key derivation (a fixed protocol label).
const KDF_SALT: &[u8] = b"muster gossip key v1";

/// Which transport a payload is sealed for (part of the AAD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// A foca datagram.
    Udp,
    /// A push/pull frame.
    Tcp,
}

impl Channel {
    fn aad(self) -> &'static [u8] {
        match self {
            Channel::Udp => b"muster-gossip/1 udp",
            Channel::Tcp => b"muster-gossip/1 tcp",
        }
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Sealed, but it does not open with our key (or we have none).
    #[error("failed to decrypt: wrong or missing encrypt key")]
    WrongKey,
    /// Plain, but this agent requires encryption (`encrypt_verify_incoming`).
    #[error("unencrypted packet refused (encrypt_verify_incoming)")]
    Unencrypted,
    /// Too short or an unknown envelope kind.
    #[error("malformed packet envelope")]
    Malformed,
}

impl OpenError {
    /// True when the key is the problem (a key mismatch between agents).
    pub fn is_key_mismatch(&self) -> bool {
        matches!(self, OpenError::WrongKey | OpenError::Unencrypted)
    }
}

/// Seals outgoing and opens incoming envelopes with this agent's keyring and rules: the
/// primary (first) key seals, every key opens (see `keyring` for rotation).
pub struct Sealer {
    keys: parking_lot::RwLock<Vec<(Vec<u8>, LessSafeKey)>>,
    verify_incoming: bool,
    verify_outgoing: bool,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.read().len())
            .field("verify_incoming", &self.verify_incoming)
            .field("verify_outgoing", &self.verify_outgoing)
            .finish()
    }
}

impl Sealer {
    /// A sealer for `key` (raw bytes of the `encrypt` key). Without a key everything is
    /// plain and only plain packets are accepted. With one, `verify_outgoing` seals what we
    /// send and `verify_incoming` refuses plain packets (Consul's meaning of both).
    pub fn new(key: Option<&[u8]>, verify_incoming: bool, verify_outgoing: bool) -> Sealer {
        let keys: Vec<Vec<u8>> = key.map(<[u8]>::to_vec).into_iter().collect();
        Sealer::with_keyring(&keys, verify_incoming, verify_outgoing)
    }

    /// A sealer for a keyring (primary first).
    pub fn with_keyring(keys: &[Vec<u8>], verify_incoming: bool, verify_outgoing: bool) -> Sealer {
        Sealer {
            keys: parking_lot::RwLock::new(keys.iter().map(|k| (k.clone(), derive(k))).collect()),
            verify_incoming,
            verify_outgoing,
            rng: SystemRandom::new(),
        }
    }

    /// The keyring, primary first.
    pub fn keyring(&self) -> Vec<Vec<u8>> {
        self.keys
            .read()
            .iter()
            .map(|(raw, _)| raw.clone())
            .collect()
    }

    /// Replaces the keyring. Encryption cannot be switched on or off this way (foca's
    /// packet size depends on it): an empty keyring stays empty, a non-empty one non-empty.
    pub fn set_keyring(&self, keys: &[Vec<u8>]) {
        let mut current = self.keys.write();
        if current.is_empty() != keys.is_empty() {
            return;
        }
        *current = keys.iter().map(|k| (k.clone(), derive(k))).collect();
    }

    /// Whether outgoing packets are sealed.
    pub fn seals(&self) -> bool {
        !self.keys.read().is_empty() && self.verify_outgoing
    }

    /// The envelope overhead of what we send.
    pub fn overhead(&self) -> usize {
        if self.seals() { OVERHEAD } else { 1 }
    }

    /// Wraps `payload` for `channel`.
    pub fn seal(&self, channel: Channel, payload: &[u8]) -> Vec<u8> {
        let keys = self.keys.read();
        let Some((_, key)) = keys.first().filter(|_| self.verify_outgoing) else {
            let mut out = Vec::with_capacity(payload.len() + 1);
            out.push(PLAIN);
            out.extend_from_slice(payload);
            return out;
        };
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .expect("the system random source works");
        let mut out = Vec::with_capacity(payload.len() + OVERHEAD);
        out.push(SEALED_V1);
        out.extend_from_slice(&nonce);
        let mut body = payload.to_vec();
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(channel.aad()),
            &mut body,
        )
        .expect("payloads are far below AES-GCM's size limit");
        out.extend_from_slice(&body);
        out
    }

    /// Unwraps an envelope received on `channel`; the returned slice is the payload.
    pub fn open<'a>(&self, channel: Channel, packet: &'a mut [u8]) -> Result<&'a [u8], OpenError> {
        let (&mut kind, rest) = packet.split_first_mut().ok_or(OpenError::Malformed)?;
        let keys = self.keys.read();
        match kind {
            PLAIN if !keys.is_empty() && self.verify_incoming => Err(OpenError::Unencrypted),
            PLAIN => Ok(rest),
            SEALED_V1 => {
                if keys.is_empty() {
                    return Err(OpenError::WrongKey);
                }
                if rest.len() < NONCE_LEN + 16 {
                    return Err(OpenError::Malformed);
                }
                let (nonce, body) = rest.split_at_mut(NONCE_LEN);
                let nonce: [u8; NONCE_LEN] =
                    (&*nonce).try_into().map_err(|_| OpenError::Malformed)?;
                // AES-GCM decrypts in place, so each try needs the ciphertext as received;
                // the primary is tried first, the others only during a rotation.
                let original = (keys.len() > 1).then(|| body.to_vec());
                for (i, (_, key)) in keys.iter().enumerate() {
                    if i > 0
                        && let Some(o) = &original
                    {
                        body.copy_from_slice(o);
                    }
                    let n = Nonce::assume_unique_for_key(nonce);
                    if key.open_in_place(n, Aad::from(channel.aad()), body).is_ok() {
                        let len = body.len() - aead::AES_256_GCM.tag_len();
                        return Ok(&body[..len]);
                    }
                }
                Err(OpenError::WrongKey)
            }
            _ => Err(OpenError::Malformed),
        }
    }
}

/// The AES-256 key of a gossip key (HKDF-SHA256, see the module docs).
fn derive(k: &[u8]) -> LessSafeKey {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(k);
    let okm = prk
        .expand(&[b"aes-256-gcm"], &aead::AES_256_GCM)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    LessSafeKey::new(UnboundKey::from(okm))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn open_owned(s: &Sealer, ch: Channel, mut p: Vec<u8>) -> Result<Vec<u8>, OpenError> {
        s.open(ch, &mut p).map(<[u8]>::to_vec)
    }

    #[test]
    fn a_keyring_seals_with_the_primary_and_opens_with_any_key() {
        let old = KEY.to_vec();
        let new = b"fedcba9876543210fedcba9876543210".to_vec();
        let old_only = Sealer::new(Some(&old), true, true);
        let rotating = Sealer::with_keyring(&[old.clone(), new.clone()], true, true);
        // During a rotation both keys open; the primary seals.
        let from_old = old_only.seal(Channel::Udp, b"a");
        assert_eq!(open_owned(&rotating, Channel::Udp, from_old).unwrap(), b"a");
        let from_rotating = rotating.seal(Channel::Udp, b"b");
        assert_eq!(
            open_owned(&old_only, Channel::Udp, from_rotating).unwrap(),
            b"b"
        );
        rotating.set_keyring(&[new.clone(), old.clone()]);
        assert_eq!(rotating.keyring(), [new.clone(), old.clone()]);
        let sealed_new = rotating.seal(Channel::Tcp, b"c");
        assert_eq!(
            open_owned(&old_only, Channel::Tcp, sealed_new.clone()),
            Err(OpenError::WrongKey)
        );
        let new_only = Sealer::with_keyring(std::slice::from_ref(&new), true, true);
        assert_eq!(
            open_owned(&new_only, Channel::Tcp, sealed_new).unwrap(),
            b"c"
        );
        // The second key still opens, from a clean copy of the ciphertext.
        let from_old = old_only.seal(Channel::Udp, b"d");
        assert_eq!(open_owned(&rotating, Channel::Udp, from_old).unwrap(), b"d");
        // Encryption is never switched off (or on) by a keyring change.
        rotating.set_keyring(&[]);
        assert!(rotating.seals());
        let plain = Sealer::new(None, false, false);
        plain.set_keyring(&[new]);
        assert!(!plain.seals());
    }

    #[test]
    fn sealed_round_trip_and_overhead() {
        let s = Sealer::new(Some(KEY), true, true);
        let packet = s.seal(Channel::Udp, b"hello");
        assert_eq!(packet.len(), 5 + OVERHEAD);
        assert_eq!(packet[0], SEALED_V1);
        assert_eq!(open_owned(&s, Channel::Udp, packet).unwrap(), b"hello");
        // Random nonces: the same payload never seals to the same bytes.
        assert_ne!(s.seal(Channel::Udp, b"x"), s.seal(Channel::Udp, b"x"));
    }

    #[test]
    fn wrong_key_tampered_truncated_and_wrong_channel_are_refused() {
        let s = Sealer::new(Some(KEY), true, true);
        let other = Sealer::new(Some(b"fedcba9876543210"), true, true);
        let packet = s.seal(Channel::Udp, b"hello");
        assert_eq!(
            open_owned(&other, Channel::Udp, packet.clone()),
            Err(OpenError::WrongKey)
        );
        let mut tampered = packet.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(
            open_owned(&s, Channel::Udp, tampered),
            Err(OpenError::WrongKey)
        );
        assert_eq!(
            open_owned(&s, Channel::Udp, packet[..20].to_vec()),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            open_owned(&s, Channel::Tcp, packet.clone()),
            Err(OpenError::WrongKey)
        );
        assert_eq!(
            open_owned(&s, Channel::Udp, vec![]),
            Err(OpenError::Malformed)
        );
        assert_eq!(
            open_owned(&s, Channel::Udp, vec![9, 1, 2]),
            Err(OpenError::Malformed)
        );
        // No key at all: sealed packets cannot be read.
        let none = Sealer::new(None, true, true);
        assert_eq!(
            open_owned(&none, Channel::Udp, packet),
            Err(OpenError::WrongKey)
        );
    }

    #[test]
    fn verify_flags_follow_consul() {
        let plain = Sealer::new(None, true, true);
        let p = plain.seal(Channel::Udp, b"hi");
        assert_eq!(p, b"\x00hi");
        assert!(!plain.seals());
        // A keyed agent that verifies incoming refuses plain packets ...
        let strict = Sealer::new(Some(KEY), true, true);
        let err = open_owned(&strict, Channel::Udp, p.clone()).unwrap_err();
        assert_eq!(err, OpenError::Unencrypted);
        assert!(err.is_key_mismatch());
        // ... one in migration mode accepts them and still sends plain when told.
        let lenient = Sealer::new(Some(KEY), false, false);
        assert_eq!(open_owned(&lenient, Channel::Udp, p).unwrap(), b"hi");
        assert_eq!(lenient.seal(Channel::Udp, b"hi")[0], PLAIN);
        // and it opens sealed packets.
        let sealed = strict.seal(Channel::Udp, b"s");
        assert_eq!(open_owned(&lenient, Channel::Udp, sealed).unwrap(), b"s");
        // Every key length Consul accepts works.
        for len in [16, 24, 32] {
            let s = Sealer::new(Some(&KEY[..len]), true, true);
            let p = s.seal(Channel::Tcp, b"k");
            assert_eq!(open_owned(&s, Channel::Tcp, p).unwrap(), b"k");
        }
    }
}
