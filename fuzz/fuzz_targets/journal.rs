//! Arbitrary bytes opened as a journal: raw, behind a valid header, or as
//! records framed with valid checksums (the first byte chooses; see
//! `tests/journal_bytes/mod.rs`), under both recovery modes. Opening must
//! never panic nor allocate without bound; any error is fine.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/journal_bytes/mod.rs"]
mod journal_bytes;

fuzz_target!(|input: &[u8]| {
    journal_bytes::open_arbitrary(input);
});
