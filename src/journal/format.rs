//! The journal's bytes: a header, then records.
//!
//! ```text
//! header  = magic "IDEMJRNL" | version u32 | tag_len u32 | tag | crc32c u32 (of all before)
//! record  = len u32 | crc32c u32 (of len) | crc32c u32 (of body) | body (len bytes)
//! body    = kind u8 | fields
//!   1 complete: token u64 | expires_at u64 (wall, ns since the Unix epoch)
//!               | has_fingerprint u8 | fingerprint [16] (if 1) | key_len u32 | key | value
//!   2 remove:   upto u64 | key           (drops the key's result if its token <= upto)
//!   3 reserve:  upto u64                 (tokens up to `upto` may be handed out)
//! ```
//! Integers are little-endian. A record is written whole by one `write(2)`
//! of its batch; what a crash can leave is a batch cut short, so a damaged
//! record followed by nothing whole is a torn tail, and a damaged record
//! followed by a whole one is damage inside the file. The length's own
//! checksum lets a reader trust a length before it has the body: a record
//! whose length checks out is skipped whole, so bytes inside its value that
//! look like records are never taken for records, and looking for whole
//! records after damage rejects each candidate offset in constant time.

use std::fmt;

use crate::codec::CodecError;
use crate::fingerprint::Fingerprint;

pub(crate) const MAGIC: &[u8; 8] = b"IDEMJRNL";
pub(crate) const VERSION: u32 = 1;
/// The largest record body the journal writes or reads: larger lengths are
/// damage, so a flipped bit in a length never makes the reader allocate.
pub(crate) const MAX_BODY: usize = 1 << 30;
const RECORD_HEADER: usize = 12;

const KIND_COMPLETE: u8 = 1;
const KIND_REMOVE: u8 = 2;
const KIND_RESERVE: u8 = 3;

/// One decoded record, borrowing the journal's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record<'a> {
    Complete {
        token: u64,
        expires_at: u64,
        fingerprint: Option<Fingerprint>,
        key: &'a [u8],
        value: &'a [u8],
    },
    Remove {
        upto: u64,
        key: &'a [u8],
    },
    Reserve {
        upto: u64,
    },
}

/// The header of a journal whose keys and values are encoded as `tag` says.
pub(crate) fn header(tag: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + tag.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(tag.len() as u32).to_le_bytes());
    out.extend_from_slice(tag.as_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Why a record was not written.
#[derive(Debug)]
pub(crate) enum Unwritable {
    /// Its body would exceed [`MAX_BODY`]: this many bytes.
    TooLarge(usize),
    /// Its key or value did not encode.
    Codec(CodecError),
}

/// Appends a complete record to `out`; on an error, `out` is as it was.
pub(crate) fn complete(
    out: &mut Vec<u8>,
    token: u64,
    expires_at: u64,
    fingerprint: Option<Fingerprint>,
    key: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
    value: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<(), Unwritable> {
    framed(out, |body| {
        body.push(KIND_COMPLETE);
        body.extend_from_slice(&token.to_le_bytes());
        body.extend_from_slice(&expires_at.to_le_bytes());
        match fingerprint {
            Some(fp) => {
                body.push(1);
                body.extend_from_slice(&fp.to_bytes());
            }
            None => body.push(0),
        }
        let len_at = body.len();
        body.extend_from_slice(&[0; 4]);
        key(body)?;
        let key_len = u32::try_from(body.len() - len_at - 4)
            .map_err(|_| CodecError::new("a key over 4 GiB"))?;
        body[len_at..len_at + 4].copy_from_slice(&key_len.to_le_bytes());
        value(body)
    })
}

/// Appends a remove record to `out`; on an error, `out` is as it was.
pub(crate) fn remove(
    out: &mut Vec<u8>,
    upto: u64,
    key: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<(), Unwritable> {
    framed(out, |body| {
        body.push(KIND_REMOVE);
        body.extend_from_slice(&upto.to_le_bytes());
        key(body)
    })
}

/// Appends a token reservation to `out`.
pub(crate) fn reserve(out: &mut Vec<u8>, upto: u64) {
    let written = framed(out, |body| {
        body.push(KIND_RESERVE);
        body.extend_from_slice(&upto.to_le_bytes());
        Ok(())
    });
    debug_assert!(written.is_ok(), "nine bytes always fit");
}

/// Writes a record's frame around the body `fill` appends.
fn framed(
    out: &mut Vec<u8>,
    fill: impl FnOnce(&mut Vec<u8>) -> Result<(), CodecError>,
) -> Result<(), Unwritable> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER]);
    if let Err(e) = fill(out) {
        out.truncate(start);
        return Err(Unwritable::Codec(e));
    }
    let body = &out[start + RECORD_HEADER..];
    if body.len() > MAX_BODY {
        let len = body.len();
        out.truncate(start);
        return Err(Unwritable::TooLarge(len));
    }
    let len = (body.len() as u32).to_le_bytes();
    let crc = crc32c::crc32c(body);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + 8].copy_from_slice(&crc32c::crc32c(&len).to_le_bytes());
    out[start + 8..start + 12].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}

/// Why a journal's bytes cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FormatError {
    /// The file does not start with a journal header.
    NotAJournal,
    /// A journal of another format version.
    Version(u32),
    /// A journal whose keys and values were encoded otherwise.
    Codec { found: String },
    /// Damage at `offset` with whole records after it.
    Corrupt { offset: u64, why: &'static str },
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::NotAJournal => f.write_str("not an idemstore journal (bad header)"),
            FormatError::Version(v) => write!(
                f,
                "journal format version {v}; this build reads version {VERSION}"
            ),
            FormatError::Codec { found } => write!(f, "journal written with codec {found:?}"),
            FormatError::Corrupt { offset, why } => {
                write!(f, "damaged record at byte offset {offset}: {why}")
            }
        }
    }
}

/// Where a scan stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// Bytes of whole records and header: where the next record goes.
    pub(crate) valid_len: u64,
    /// A damaged end that no whole record follows, if any: its offset is
    /// `valid_len`, and this many bytes of it were dropped.
    pub(crate) torn_bytes: u64,
}

/// Reads the header: the offset of the first record.
pub(crate) fn read_header(bytes: &[u8], tag: &str) -> Result<usize, FormatError> {
    if bytes.len() < 16 || &bytes[..8] != MAGIC {
        return Err(FormatError::NotAJournal);
    }
    let version = u32_at(bytes, 8);
    let tag_len = u32_at(bytes, 12) as usize;
    let end = 16usize
        .checked_add(tag_len)
        .filter(|&end| end.saturating_add(4) <= bytes.len())
        .ok_or(FormatError::NotAJournal)?;
    if u32_at(bytes, end) != crc32c::crc32c(&bytes[..end]) {
        return Err(FormatError::NotAJournal);
    }
    if version != VERSION {
        return Err(FormatError::Version(version));
    }
    let found = &bytes[16..end];
    if found != tag.as_bytes() {
        return Err(FormatError::Codec {
            found: String::from_utf8_lossy(found).into_owned(),
        });
    }
    Ok(end + 4)
}

/// Calls `each` with every whole record after the header, in order, and
/// says where the whole records end. Damage followed by a whole record is an
/// error; damage with nothing whole after it is a torn tail, reported in the
/// [`ScanEnd`]. Never panics and allocates nothing, whatever `bytes` hold.
pub(crate) fn scan<'a>(
    bytes: &'a [u8],
    tag: &str,
    mut each: impl FnMut(u64, Record<'a>),
) -> Result<ScanEnd, FormatError> {
    let mut at = read_header(bytes, tag)?;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Ok((record, next)) => {
                each(at as u64, record);
                at = next;
            }
            Err(damage) => {
                let whole_after = match damage.resume_at {
                    Some(from) => (from..bytes.len()).any(|later| record_at(bytes, later).is_ok()),
                    None => false,
                };
                if whole_after {
                    return Err(FormatError::Corrupt {
                        offset: at as u64,
                        why: damage.why,
                    });
                }
                return Ok(ScanEnd {
                    valid_len: at as u64,
                    torn_bytes: (bytes.len() - at) as u64,
                });
            }
        }
    }
    Ok(ScanEnd {
        valid_len: at as u64,
        torn_bytes: 0,
    })
}

/// The largest token named by any whole record from `from` on, damage
/// skipped: what a journal cut at damage must still not go below.
pub(crate) fn tokens_after(bytes: &[u8], from: usize) -> u64 {
    let mut at = from;
    let mut max = 0;
    while at < bytes.len() {
        match record_at(bytes, at) {
            Ok((record, next)) => {
                max = max.max(match record {
                    Record::Complete { token, .. } => token,
                    Record::Remove { upto, .. } | Record::Reserve { upto } => upto,
                });
                at = next;
            }
            Err(_) => at += 1,
        }
    }
    max
}

/// Why the bytes at an offset are not a whole record, and where a whole
/// record after them could start (`None`: nothing whole fits after them).
struct Damage {
    why: &'static str,
    resume_at: Option<usize>,
}

/// The record starting at `at`, and where the next one starts.
fn record_at(bytes: &[u8], at: usize) -> Result<(Record<'_>, usize), Damage> {
    let rest = &bytes[at..];
    let damage = |why, resume_at| Damage { why, resume_at };
    if rest.len() < RECORD_HEADER {
        return Err(damage("a record header cut short", None));
    }
    let len_bytes = &rest[..4];
    if crc32c::crc32c(len_bytes) != u32_at(rest, 4) {
        return Err(damage(
            "a record length whose checksum does not match",
            Some(at + 1),
        ));
    }
    let len = u32_at(rest, 0) as usize;
    if len > MAX_BODY {
        return Err(damage(
            "a record length beyond the largest record",
            Some(at + 1),
        ));
    }
    // The length is sound: the record ends at `end`.
    let Some(body) = rest.get(RECORD_HEADER..RECORD_HEADER + len) else {
        return Err(damage("a record cut short", None));
    };
    let end = at + RECORD_HEADER + len;
    if crc32c::crc32c(body) != u32_at(rest, 8) {
        return Err(damage("a record whose checksum does not match", Some(end)));
    }
    match parse_body(body) {
        Ok(record) => Ok((record, end)),
        Err(why) => Err(damage(why, Some(end))),
    }
}

fn parse_body(body: &[u8]) -> Result<Record<'_>, &'static str> {
    let (&kind, fields) = body.split_first().ok_or("an empty record")?;
    let word = |at: usize| {
        fields
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            .ok_or("a record's fields cut short")
    };
    match kind {
        KIND_COMPLETE => {
            let token = word(0)?;
            let expires_at = word(8)?;
            let (fingerprint, at) = match fields.get(16) {
                Some(0) => (None, 17),
                Some(1) => {
                    let bytes = fields.get(17..33).ok_or("a fingerprint cut short")?;
                    let mut array = [0; 16];
                    array.copy_from_slice(bytes);
                    (Some(Fingerprint::from_bytes(array)), 33)
                }
                _ => return Err("a bad fingerprint flag"),
            };
            let key_len = fields
                .get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap_or([0; 4])) as usize)
                .ok_or("a key length cut short")?;
            let key_end = (at + 4)
                .checked_add(key_len)
                .filter(|&end| end <= fields.len())
                .ok_or("a key longer than its record")?;
            let key = &fields[at + 4..key_end];
            let value = &fields[key_end..];
            Ok(Record::Complete {
                token,
                expires_at,
                fingerprint,
                key,
                value,
            })
        }
        KIND_REMOVE => Ok(Record::Remove {
            upto: word(0)?,
            key: &fields[8.min(fields.len())..],
        }),
        KIND_RESERVE if fields.len() == 8 => Ok(Record::Reserve { upto: word(0)? }),
        KIND_RESERVE => Err("a reservation of the wrong size"),
        _ => Err("an unknown record kind"),
    }
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut array = [0; 4];
    array.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(array)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Codec;

    fn journal() -> Vec<u8> {
        let mut bytes = header("t");
        reserve(&mut bytes, 10);
        complete(
            &mut bytes,
            3,
            99,
            Some(Fingerprint::of_bytes(b"p")),
            |k| "key".to_string().encode(k),
            |v| "value".to_string().encode(v),
        )
        .unwrap();
        remove(&mut bytes, 3, |k| "key".to_string().encode(k)).unwrap();
        bytes
    }

    fn records(bytes: &[u8]) -> Result<(Vec<Record<'_>>, ScanEnd), FormatError> {
        let mut out = Vec::new();
        let end = scan(bytes, "t", |_, r| out.push(r))?;
        Ok((out, end))
    }

    #[test]
    fn records_read_back_as_written() {
        let bytes = journal();
        let (records, end) = records(&bytes).unwrap();
        assert_eq!(end.valid_len, bytes.len() as u64);
        assert_eq!(records[0], Record::Reserve { upto: 10 });
        assert_eq!(
            records[1],
            Record::Complete {
                token: 3,
                expires_at: 99,
                fingerprint: Some(Fingerprint::of_bytes(b"p")),
                key: b"key",
                value: b"value",
            }
        );
        assert_eq!(
            records[2],
            Record::Remove {
                upto: 3,
                key: b"key"
            }
        );
    }

    #[test]
    fn a_cut_anywhere_in_the_last_record_is_a_torn_tail() {
        let bytes = journal();
        let (_, whole) = records(&bytes[..bytes.len() - 1]).unwrap();
        let last = whole.valid_len as usize;
        for cut in last..bytes.len() {
            let (recs, end) = records(&bytes[..cut]).unwrap();
            assert_eq!(recs.len(), 2, "cut at {cut}");
            assert_eq!(end.valid_len as usize, last);
            assert_eq!(end.torn_bytes as usize, cut - last);
        }
    }

    #[test]
    fn a_flipped_bit_before_whole_records_is_corruption() {
        let mut bytes = journal();
        let first_record = header("t").len();
        bytes[first_record + 13] ^= 1;
        assert_eq!(
            records(&bytes).unwrap_err(),
            FormatError::Corrupt {
                offset: first_record as u64,
                why: "a record whose checksum does not match"
            }
        );
    }

    #[test]
    fn headers_of_other_journals_and_other_files_are_refused() {
        let bytes = journal();
        assert_eq!(
            scan(&bytes, "u", |_, _| {}).unwrap_err(),
            FormatError::Codec { found: "t".into() }
        );
        assert_eq!(
            scan(b"hello", "t", |_, _| {}).unwrap_err(),
            FormatError::NotAJournal
        );
        let mut other = bytes.clone();
        other[8] = 2;
        // The header's checksum covers the version.
        assert_eq!(
            scan(&other, "t", |_, _| {}).unwrap_err(),
            FormatError::NotAJournal
        );
        let mut v2 = MAGIC.to_vec();
        v2.extend_from_slice(&2u32.to_le_bytes());
        v2.extend_from_slice(&0u32.to_le_bytes());
        let crc = crc32c::crc32c(&v2);
        v2.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(
            scan(&v2, "", |_, _| {}).unwrap_err(),
            FormatError::Version(2)
        );
    }
}
