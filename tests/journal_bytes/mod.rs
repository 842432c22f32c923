//! A journal's bytes as the tests and the `journal` fuzz target see them:
//! the record framing (`src/journal/format.rs`), a CRC-32C to forge valid
//! frames with, and [`open_arbitrary`], which builds stores on whatever
//! bytes it is given. Shared with `fuzz/fuzz_targets/journal.rs`.
#![allow(dead_code)] // Each user takes a different subset.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use idemstore::{Claim, Fsync, Recovery, Store};

/// A record's frame: `len u32 | crc32c u32 of len | crc32c u32 of body`,
/// then the body.
pub const FRAME: usize = 12;

/// CRC-32C (Castagnoli), as the journal checksums its header and records.
pub fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0x82F6_3B78 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

/// The header's length: magic, version, tag length, tag, checksum.
pub fn header_len(journal: &[u8]) -> usize {
    let tag_len = u32::from_le_bytes(journal[12..16].try_into().unwrap()) as usize;
    20 + tag_len
}

/// The `(offset, length)` of each whole record after the header, in order.
pub fn records(journal: &[u8]) -> Vec<(usize, usize)> {
    let mut at = header_len(journal);
    let mut out = Vec::new();
    while at + FRAME <= journal.len() {
        let len = u32::from_le_bytes(journal[at..at + 4].try_into().unwrap()) as usize;
        if at + FRAME + len > journal.len() {
            break;
        }
        out.push((at, FRAME + len));
        at += FRAME + len;
    }
    out
}

/// Appends `body` framed as a record with a valid checksum.
pub fn frame(out: &mut Vec<u8>, body: &[u8]) {
    let len = (body.len() as u32).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc32c(&len).to_le_bytes());
    out.extend_from_slice(&crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// A journal header of `version` and codec `tag`, with a valid checksum.
pub fn header(version: u32, tag: &str) -> Vec<u8> {
    let mut out = b"IDEMJRNL".to_vec();
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(tag.len() as u32).to_le_bytes());
    out.extend_from_slice(tag.as_bytes());
    let crc = crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A directory of its own for scratch journals: under /dev/shm where there
/// is one (no disk, fast fsyncs), else the system's temp dir.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("idemstore-journal-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// The header a `Store<Vec<u8>, Vec<u8>>` writes on an empty file, read
/// back from a real one so that it follows the store's format.
fn real_header() -> &'static [u8] {
    static HEADER: OnceLock<Vec<u8>> = OnceLock::new();
    HEADER.get_or_init(|| {
        let path = scratch_dir().join("header");
        let _ = std::fs::remove_file(&path);
        let store: Store<Vec<u8>, Vec<u8>> = Store::builder()
            .journal(&path)
            .background_sweeper(false)
            .build()
            .expect("a journal on an empty file");
        drop(store);
        let bytes = std::fs::read(&path).expect("the new journal");
        let _ = std::fs::remove_file(&path);
        bytes[..header_len(&bytes)].to_vec()
    })
}

/// What [`open_arbitrary`] writes for `input`, chosen by its first byte:
/// the rest raw (0), behind a valid header (1), or behind a valid header
/// as records `[n u8][n bytes of body]`, each framed with a valid checksum
/// so that the record parser and the replay see them (2); a last body cut
/// short goes in raw, as a torn tail.
pub fn journal_for(input: &[u8]) -> Vec<u8> {
    let Some((&mode, rest)) = input.split_first() else {
        return Vec::new();
    };
    match mode % 3 {
        0 => rest.to_vec(),
        1 => [real_header(), rest].concat(),
        _ => {
            let mut out = real_header().to_vec();
            let mut rest = rest;
            while let Some((&n, tail)) = rest.split_first() {
                let n = usize::from(n);
                if n > tail.len() {
                    out.extend_from_slice(tail);
                    break;
                }
                frame(&mut out, &tail[..n]);
                rest = &tail[n..];
            }
            out
        }
    }
}

/// Builds a `Store<Vec<u8>, Vec<u8>>` on the journal [`journal_for`] makes
/// of `input`, under both recovery modes. Whatever the bytes, it must not
/// panic or allocate without bound; any error is fine. A store that opens
/// takes one claim and completes it, so the restored state is used.
pub fn open_arbitrary(input: &[u8]) {
    let path = scratch_dir().join("journal");
    let bytes = journal_for(input);
    for recovery in [Recovery::Strict, Recovery::TruncateAtDamage] {
        std::fs::write(&path, &bytes).expect("write the scratch journal");
        let built: Result<Store<Vec<u8>, Vec<u8>>, _> = Store::builder()
            .journal(&path)
            .journal_recovery(recovery)
            .fsync(Fsync::Never)
            .background_sweeper(false)
            .build();
        if let Ok(store) = built {
            if let Ok(Claim::Owner(ticket)) = store.claim(b"fuzz".to_vec()) {
                let _ = ticket.complete(b"done".to_vec());
            }
        }
    }
}

/// Removes [`open_arbitrary`]'s scratch directory.
pub fn remove_scratch() {
    let _ = std::fs::remove_dir_all(scratch_dir());
}
