//! Bounding check output.
//!
//! Invariant: every output this crate reports is at most the check's `output_max_size` bytes
//! and valid UTF-8 (cuts land on character boundaries; invalid bytes become U+FFFD and the
//! result is cut again). Where Consul frames a cut with a note (`Captured <n> of <m> bytes` for
//! scripts, `... (captured <n> of <m> bytes)` for TTL updates), the note is kept and the payload
//! shrinks to make room, and `<n>` is the number of payload bytes actually kept.

use std::collections::VecDeque;

/// The longest prefix of `s` that fits in `max` bytes without splitting a character.
pub(crate) fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The longest suffix of `s` that fits in `max` bytes without splitting a character.
fn tail_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// Cuts an owned string to `max` bytes in place.
pub(crate) fn cap(mut s: String, max: usize) -> String {
    let len = truncate_utf8(&s, max).len();
    s.truncate(len);
    s
}

/// Decodes the first bytes of a stream that may have been cut mid-character: an incomplete
/// trailing sequence is dropped (it is an artefact of the cut), other invalid bytes become
/// U+FFFD, and the result is capped at `max`.
pub(crate) fn decode_head(bytes: &[u8], max: usize) -> String {
    let bytes = &bytes[..bytes.len() - incomplete_tail_len(bytes)];
    cap(String::from_utf8_lossy(bytes).into_owned(), max)
}

/// Length of a trailing, incomplete UTF-8 sequence (0 when the input ends on a boundary).
fn incomplete_tail_len(bytes: &[u8]) -> usize {
    // A character is at most 4 bytes, so only the last 3 can start an unfinished one.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0b1100_0000 == 0b1000_0000 {
            continue; // continuation byte: keep looking for the lead byte
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if need > back { back } else { 0 };
    }
    0
}

/// Keeps the last `cap` bytes written to it and counts everything, like the circular buffer
/// Consul captures script output in, so a chatty script costs bounded memory.
#[derive(Debug)]
pub(crate) struct TailBuffer {
    cap: usize,
    kept: VecDeque<u8>,
    total: u64,
}

impl TailBuffer {
    pub(crate) fn new(cap: usize) -> Self {
        TailBuffer {
            cap,
            kept: VecDeque::with_capacity(cap.min(64 * 1024)),
            total: 0,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len() as u64);
        let data = &data[data.len().saturating_sub(self.cap)..];
        let overflow = (self.kept.len() + data.len()).saturating_sub(self.cap);
        self.kept.drain(..overflow);
        self.kept.extend(data);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The captured output, at most `max` bytes. When anything was dropped (or has to be
    /// dropped to fit), Consul's `Captured <n> of <m> bytes\n...\n` prefix says so and the
    /// newest bytes are kept.
    pub(crate) fn render(&self, max: usize) -> String {
        let (front, back) = self.kept.as_slices();
        let mut bytes = Vec::with_capacity(self.kept.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        // A cut at the front may have split a character: skip its continuation bytes.
        let skip = if (self.kept.len() as u64) < self.total {
            bytes
                .iter()
                .take(3)
                .take_while(|b| **b & 0b1100_0000 == 0b1000_0000)
                .count()
        } else {
            0
        };
        let text = String::from_utf8_lossy(&bytes[skip..]);
        if self.kept.len() as u64 == self.total && text.len() <= max {
            return text.into_owned();
        }
        let prefix = |n: usize| format!("Captured {n} of {} bytes\n...\n", self.total);
        // The prefix is longest when n has as many digits as max, so this budget always fits.
        let budget = max.saturating_sub(prefix(max).len());
        if budget == 0 {
            return cap(prefix(0), max);
        }
        let kept = tail_utf8(&text, budget);
        format!("{}{kept}", prefix(kept.len()))
    }
}

/// Caps a TTL update's output the way Consul's `CheckTTL.SetStatus` does, with the
/// `... (captured <n> of <m> bytes)` note, keeping the whole result within `max`.
pub(crate) fn cap_ttl_output(output: &str, max: usize) -> String {
    if output.len() <= max {
        return output.to_owned();
    }
    let total = output.len();
    let suffix = |n: usize| format!(" ... (captured {n} of {total} bytes)");
    let budget = max.saturating_sub(suffix(max).len());
    if budget == 0 {
        return truncate_utf8(output, max).to_owned();
    }
    let kept = truncate_utf8(output, budget);
    format!("{kept}{}", suffix(kept.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_never_splits_a_character() {
        assert_eq!(truncate_utf8("hello", 10), "hello");
        assert_eq!(truncate_utf8("hello", 3), "hel");
        // "é" is two bytes: a cut in its middle backs off before it.
        assert_eq!(truncate_utf8("aé", 2), "a");
        assert_eq!(truncate_utf8("€uro", 2), "");
        assert_eq!(cap("€uro".to_owned(), 4), "€u");
    }

    #[test]
    fn decode_head_drops_a_cut_character_and_replaces_invalid_bytes() {
        let euro = "€".as_bytes(); // e2 82 ac
        assert_eq!(decode_head(&[b'a', euro[0], euro[1]], 100), "a");
        assert_eq!(decode_head(&[b'a', euro[0]], 100), "a");
        assert_eq!(decode_head("a€".as_bytes(), 100), "a€");
        assert_eq!(decode_head(&[b'a', 0xff, b'b'], 100), "a\u{fffd}b");
        // Replacement characters are 3 bytes each: the result is still capped.
        let garbage = vec![0xffu8; 10];
        assert!(decode_head(&garbage, 8).len() <= 8);
    }

    #[test]
    fn tail_buffer_keeps_everything_that_fits() {
        let mut buf = TailBuffer::new(16);
        assert!(buf.is_empty());
        buf.push(b"hello ");
        buf.push(b"world");
        assert!(!buf.is_empty());
        assert_eq!(buf.render(16), "hello world");
    }

    #[test]
    fn tail_buffer_keeps_the_newest_bytes_with_consuls_prefix() {
        let mut buf = TailBuffer::new(100);
        for i in 0..100 {
            buf.push(format!("line {i:03}\n").as_bytes());
        }
        let out = buf.render(100);
        assert!(out.len() <= 100, "{} bytes", out.len());
        let (prefix, tail) = out.split_once("\n...\n").unwrap();
        assert_eq!(prefix, format!("Captured {} of 900 bytes", tail.len()));
        assert!(tail.ends_with("line 099\n"));
        assert!("line 000\n".len() * 100 == 900);
    }

    #[test]
    fn tail_buffer_cut_skips_a_split_character() {
        let mut buf = TailBuffer::new(4);
        buf.push("x€€".as_bytes()); // 7 bytes; the last 4 start inside the first €
        let out = buf.render(1000);
        assert_eq!(out, "Captured 3 of 7 bytes\n...\n€");
    }

    #[test]
    fn tail_buffer_with_a_tiny_cap_still_respects_it() {
        let mut buf = TailBuffer::new(8);
        buf.push(b"0123456789");
        let out = buf.render(8);
        assert!(out.len() <= 8);
        assert!(out.starts_with("Captured"));
    }

    #[test]
    fn ttl_output_is_cut_with_consuls_note() {
        assert_eq!(cap_ttl_output("short", 100), "short");
        let long = "x".repeat(200);
        let out = cap_ttl_output(&long, 100);
        assert!(out.len() <= 100);
        let (kept, note) = out.split_once(" ... ").unwrap();
        assert_eq!(note, format!("(captured {} of 200 bytes)", kept.len()));
        assert!(cap_ttl_output(&long, 10).len() <= 10);
    }
}
