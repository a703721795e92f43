//! Opaque cursors: the position (last id served) masked with a seed-derived
//! key and followed by a keyed tag, all in hex, so clients cannot read or
//! forge them and tampering is detected.

use sha2::{Digest, Sha256};

/// Encodes "after this id" as an opaque cursor.
pub(crate) fn encode(seed: u64, after: usize) -> String {
    let pos = after as u64;
    format!("{:016x}{:016x}", pos ^ mask(seed), tag(seed, pos))
}

/// Decodes a cursor made by [`encode`] with the same seed; `None` if it is
/// malformed or was not issued by this server.
pub(crate) fn decode(seed: u64, cursor: &str) -> Option<usize> {
    if cursor.len() != 32 || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let masked = u64::from_str_radix(cursor.get(..16)?, 16).ok()?;
    let given = u64::from_str_radix(cursor.get(16..)?, 16).ok()?;
    let pos = masked ^ mask(seed);
    if given != tag(seed, pos) {
        return None;
    }
    usize::try_from(pos).ok()
}

fn mask(seed: u64) -> u64 {
    digest64(seed, b"cursor-mask", 0)
}

fn tag(seed: u64, pos: u64) -> u64 {
    digest64(seed, b"cursor-tag", pos)
}

fn digest64(seed: u64, label: &[u8], n: u64) -> u64 {
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(label);
    h.update(n.to_le_bytes());
    let out = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&out[..8]);
    u64::from_le_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_forgeries() {
        for after in [0usize, 1, 99, 100, 123_456] {
            let c = encode(11, after);
            assert_eq!(c.len(), 32);
            assert_eq!(decode(11, &c), Some(after));
            assert_eq!(decode(12, &c), None);
        }
        let c = encode(11, 5);
        let mut flipped: Vec<char> = c.chars().collect();
        flipped[3] = if flipped[3] == '0' { '1' } else { '0' };
        let flipped: String = flipped.into_iter().collect();
        assert_eq!(decode(11, &flipped), None);
        for bad in ["", "abc", "zz", &"0".repeat(32), "é".repeat(16).as_str()] {
            assert_eq!(decode(11, bad), None, "{bad}");
        }
    }
}
