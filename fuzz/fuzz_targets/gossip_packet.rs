//! Gossip packets: the envelope before decryption (plain, sealed with our key or not, on
//! both channels) and every decoder that sees the payload after it: push/pull states,
//! leave intents, member identities, keyring frames.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use muster::gossip::identity::GossipId;
use muster::gossip::keyring;
use muster::gossip::seal::{Channel, Sealer};
use muster::gossip::wire::{Intent, State};

fn sealers() -> &'static [Sealer; 2] {
    static S: OnceLock<[Sealer; 2]> = OnceLock::new();
    S.get_or_init(|| {
        [
            Sealer::new(Some(b"0123456789abcdef0123456789abcdef"), true, true),
            Sealer::new(None, false, false),
        ]
    })
}

fn decoders(payload: &[u8]) {
    let _ = State::decode(payload);
    let _ = Intent::decode(payload);
    let _ = GossipId::decode(payload);
    let _ = keyring::decode_request(payload);
    let _ = keyring::decode_reply(payload);
}

fuzz_target!(|data: &[u8]| {
    for sealer in sealers() {
        for channel in [Channel::Udp, Channel::Tcp] {
            let mut packet = data.to_vec();
            if let Ok(payload) = sealer.open(channel, &mut packet) {
                decoders(payload);
            }
        }
    }
    decoders(data);
    // A valid seal of the input, opened again: the payload must come back unchanged.
    let sealed = sealers()[0].seal(Channel::Udp, data);
    let mut copy = sealed.clone();
    assert_eq!(sealers()[0].open(Channel::Udp, &mut copy).ok(), Some(data));
});
