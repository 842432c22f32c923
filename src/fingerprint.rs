//! Stable 128-bit payload fingerprints.
//!
//! A fingerprint must mean the same thing in every process and on every
//! platform (records may one day leave the process), so it uses a fixed,
//! seedless hash, MurmurHash3 x64/128, never the per-process random hasher.
//! Integers are fed little-endian and `usize` as `u64`, so `Fingerprint::of`
//! gives the same answer on big- and little-endian, 32- and 64-bit targets.

use std::fmt;
use std::hash::{Hash, Hasher};

/// A stable 128-bit hash of a request's payload.
///
/// A key claimed with one fingerprint and reused with another is refused with
/// [`ClaimError::Mismatch`](crate::ClaimError::Mismatch), whatever state the
/// key is in. The same input gives the same fingerprint in every process,
/// version-to-version and across platforms.
///
/// ```
/// use idemstore::Fingerprint;
///
/// let a = Fingerprint::of_bytes(br#"{"amount": 100}"#);
/// assert_eq!(a, Fingerprint::of_bytes(br#"{"amount": 100}"#));
/// assert_ne!(a, Fingerprint::of_bytes(br#"{"amount": 999}"#));
///
/// // Any `Hash` value, such as a tuple of the parts that define a request:
/// let b = Fingerprint::of(&("POST", "/orders", 100_u64));
/// assert_eq!(Fingerprint::from_bytes(b.to_bytes()), b);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u64; 2]);

impl Fingerprint {
    /// The fingerprint of `bytes`.
    pub fn of_bytes(bytes: &[u8]) -> Self {
        let mut hasher = FingerprintHasher::new();
        hasher.write(bytes);
        hasher.fingerprint()
    }

    /// The fingerprint of any `Hash` value, fed through [`FingerprintHasher`].
    pub fn of<T: Hash + ?Sized>(value: &T) -> Self {
        let mut hasher = FingerprintHasher::new();
        value.hash(&mut hasher);
        hasher.fingerprint()
    }

    /// The fingerprint as 16 bytes, for storing or sending elsewhere.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.0[0].to_le_bytes());
        out[8..].copy_from_slice(&self.0[1].to_le_bytes());
        out
    }

    /// A fingerprint from the bytes [`to_bytes`](Self::to_bytes) gave.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        let (lo, hi) = bytes.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        Fingerprint([word(lo), word(hi)])
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({:016x}{:016x})", self.0[1], self.0[0])
    }
}

/// A streaming [`Hasher`] that produces a [`Fingerprint`]: feed it a request
/// piece by piece (method, path, body chunks) without joining them first.
///
/// ```
/// use std::hash::Hasher;
/// use idemstore::{Fingerprint, FingerprintHasher};
///
/// let mut h = FingerprintHasher::new();
/// h.write(b"hello ");
/// h.write(b"world");
/// assert_eq!(h.fingerprint(), Fingerprint::of_bytes(b"hello world"));
/// ```
#[derive(Clone, Debug)]
pub struct FingerprintHasher {
    h1: u64,
    h2: u64,
    tail: [u8; 16],
    tail_len: usize,
    total: u64,
}

const C1: u64 = 0x87c3_7b91_1142_53d5;
const C2: u64 = 0x4cf5_ad43_2745_937f;

impl FingerprintHasher {
    /// A hasher with nothing fed yet.
    pub fn new() -> Self {
        FingerprintHasher {
            h1: 0,
            h2: 0,
            tail: [0; 16],
            tail_len: 0,
            total: 0,
        }
    }

    fn block(&mut self, block: &[u8; 16]) {
        let (lo, hi) = block.split_at(8);
        let k1 = u64::from_le_bytes(lo.try_into().unwrap_or([0; 8]));
        let k2 = u64::from_le_bytes(hi.try_into().unwrap_or([0; 8]));
        self.h1 ^= mix_k1(k1);
        self.h1 = self
            .h1
            .rotate_left(27)
            .wrapping_add(self.h2)
            .wrapping_mul(5)
            .wrapping_add(0x52dc_e729);
        self.h2 ^= mix_k2(k2);
        self.h2 = self
            .h2
            .rotate_left(31)
            .wrapping_add(self.h1)
            .wrapping_mul(5)
            .wrapping_add(0x3849_5ab5);
    }

    /// The fingerprint of everything fed so far.
    pub fn fingerprint(&self) -> Fingerprint {
        let (mut h1, mut h2) = (self.h1, self.h2);
        let tail = &self.tail[..self.tail_len];
        if tail.len() > 8 {
            let mut k2 = [0u8; 8];
            k2[..tail.len() - 8].copy_from_slice(&tail[8..]);
            h2 ^= mix_k2(u64::from_le_bytes(k2));
        }
        if !tail.is_empty() {
            let n = tail.len().min(8);
            let mut k1 = [0u8; 8];
            k1[..n].copy_from_slice(&tail[..n]);
            h1 ^= mix_k1(u64::from_le_bytes(k1));
        }
        h1 ^= self.total;
        h2 ^= self.total;
        h1 = h1.wrapping_add(h2);
        h2 = h2.wrapping_add(h1);
        h1 = fmix64(h1);
        h2 = fmix64(h2);
        h1 = h1.wrapping_add(h2);
        h2 = h2.wrapping_add(h1);
        Fingerprint([h1, h2])
    }
}

impl Default for FingerprintHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl Hasher for FingerprintHasher {
    fn write(&mut self, mut bytes: &[u8]) {
        self.total = self.total.wrapping_add(bytes.len() as u64);
        if self.tail_len > 0 {
            let take = (16 - self.tail_len).min(bytes.len());
            self.tail[self.tail_len..self.tail_len + take].copy_from_slice(&bytes[..take]);
            self.tail_len += take;
            bytes = &bytes[take..];
            if self.tail_len < 16 {
                return;
            }
            let block = self.tail;
            self.block(&block);
            self.tail_len = 0;
        }
        let mut blocks = bytes.chunks_exact(16);
        for block in &mut blocks {
            let mut b = [0u8; 16];
            b.copy_from_slice(block);
            self.block(&b);
        }
        let rest = blocks.remainder();
        self.tail[..rest.len()].copy_from_slice(rest);
        self.tail_len = rest.len();
    }

    // Fixed-width, little-endian integers: the same fingerprint everywhere.
    fn write_u16(&mut self, i: u16) {
        self.write(&i.to_le_bytes());
    }
    fn write_u32(&mut self, i: u32) {
        self.write(&i.to_le_bytes());
    }
    fn write_u64(&mut self, i: u64) {
        self.write(&i.to_le_bytes());
    }
    fn write_u128(&mut self, i: u128) {
        self.write(&i.to_le_bytes());
    }
    fn write_usize(&mut self, i: usize) {
        self.write(&(i as u64).to_le_bytes());
    }
    fn write_i16(&mut self, i: i16) {
        self.write_u16(i as u16);
    }
    fn write_i32(&mut self, i: i32) {
        self.write_u32(i as u32);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_i128(&mut self, i: i128) {
        self.write_u128(i as u128);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as i64 as u64);
    }

    /// The low 64 bits of the fingerprint.
    fn finish(&self) -> u64 {
        self.fingerprint().0[0]
    }
}

/// Whether a claim with `given` may use an entry claimed with `stored`: a
/// fingerprint is checked only when both sides have one.
pub(crate) fn fingerprints_agree(stored: Option<Fingerprint>, given: Option<Fingerprint>) -> bool {
    match (stored, given) {
        (Some(stored), Some(given)) => stored == given,
        _ => true,
    }
}

fn mix_k1(k1: u64) -> u64 {
    k1.wrapping_mul(C1).rotate_left(31).wrapping_mul(C2)
}

fn mix_k2(k2: u64) -> u64 {
    k2.wrapping_mul(C2).rotate_left(33).wrapping_mul(C1)
}

fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference values from the canonical MurmurHash3_x64_128 (seed 0), as
    /// printed by Python's `mmh3.hash_bytes` (h1 then h2, little-endian).
    #[test]
    fn matches_reference_murmur3() {
        for (input, hex) in REFERENCE {
            let bytes = Fingerprint::of_bytes(input.as_bytes()).to_bytes();
            let got: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(&got, hex, "input {input:?}");
        }
    }

    #[test]
    fn streaming_equals_one_shot_at_every_split() {
        let data: Vec<u8> = (0..=70u8).collect();
        let whole = Fingerprint::of_bytes(&data);
        for split in 0..data.len() {
            let mut h = FingerprintHasher::new();
            h.write(&data[..split]);
            h.write(&data[split..]);
            assert_eq!(h.fingerprint(), whole, "split at {split}");
        }
    }

    #[test]
    fn integers_are_fixed_width_little_endian() {
        assert_eq!(
            Fingerprint::of(&7usize),
            Fingerprint::of_bytes(&7u64.to_le_bytes())
        );
        assert_eq!(Fingerprint::of(&-1i32), Fingerprint::of_bytes(&[0xff; 4]));
    }

    const REFERENCE: &[(&str, &str)] = &[
        ("", "00000000000000000000000000000000"),
        ("a", "897859f6655555855a890e51483ab5e6"),
        ("hello", "029bbd41b3a7d8cb191dae486a901e5b"),
        ("hello world", "0e617feb46603f53b163eb607d4697ab"),
        (
            "The quick brown fox jumps over the lazy dog",
            "6c1b07bc7bbc4be347939ac4a93c437a",
        ),
        ("0123456789abcdef", "a7d14acf946de04bda08a7635c5bc387"),
        ("0123456789abcdef0", "75c0a58587ae24ebca283131b368fb73"),
    ];
}
