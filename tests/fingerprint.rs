//! Stable fingerprints: rule 17 of `docs/semantics.md`.

use idemstore::Fingerprint;

/// Rule 17: fingerprints are a fixed function of the payload, the same in
/// every process: pinned here to MurmurHash3 x64/128 reference output. A
/// per-process random hasher would fail this.
#[test]
fn fingerprints_are_stable_across_processes() {
    let hex: String = Fingerprint::of_bytes(b"hello")
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, "029bbd41b3a7d8cb191dae486a901e5b");
    // `of` feeds integers little-endian and fixed-width.
    assert_eq!(
        Fingerprint::of(&0x0102_0304_u32),
        Fingerprint::of_bytes(&[4, 3, 2, 1])
    );
}

#[test]
fn different_payloads_differ() {
    let a = Fingerprint::of(&("POST", "/orders", b"{}".as_slice()));
    let b = Fingerprint::of(&("POST", "/orders", b"{ }".as_slice()));
    assert_ne!(a, b);
    assert_eq!(Fingerprint::from_bytes(a.to_bytes()), a);
}
