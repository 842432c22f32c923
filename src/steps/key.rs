//! What a multi-step run keeps in the store: its keys ([`StepKey`]) and the
//! bytes under them (a step's record, the run's final record).

use std::fmt;

use crate::codec::{split_framed, Codec, CodecError};
use crate::fingerprint::Fingerprint;

/// A key of a multi-step run's store: the run's own key, one of its steps,
/// one of its compensations, or its given-up mark. Only the steps layer
/// makes them; callers name the type, in
/// [`StepStore`](crate::steps::StepStore), and never build one.
///
/// With feature `journal` it is a [`Codec`] when the run's key is, so a
/// steps store can be journaled like any other.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StepKey<K> {
    run: K,
    part: Part,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub(crate) enum Part {
    /// The run: claimed by its owner for the whole run; completed with the
    /// run's final record.
    Run,
    /// Step `i`: claimed while it runs, completed with its result.
    Step(u32),
    /// The compensation of step `i`: completed once it ran.
    Undo(u32),
    /// Completed when the run is given up: no step runs after it.
    GiveUp,
}

impl<K> StepKey<K> {
    pub(crate) fn new(run: K, part: Part) -> Self {
        StepKey { run, part }
    }

    /// The run this key belongs to.
    pub fn run_key(&self) -> &K {
        &self.run
    }
}

impl<K: fmt::Debug> fmt::Debug for StepKey<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.part {
            Part::Run => write!(f, "run {:?}", self.run),
            Part::Step(i) => write!(f, "run {:?} step {i}", self.run),
            Part::Undo(i) => write!(f, "run {:?} undo {i}", self.run),
            Part::GiveUp => write!(f, "run {:?} given up", self.run),
        }
    }
}

impl<K: Codec> Codec for StepKey<K> {
    const TAG: &'static str = "steps/1";

    fn tag() -> String {
        format!("{}({})", Self::TAG, K::tag())
    }

    /// `[part: u8][index: u32 LE][the run's key]`.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let (kind, index) = match self.part {
            Part::Run => (0, 0),
            Part::Step(i) => (1, i),
            Part::Undo(i) => (2, i),
            Part::GiveUp => (3, 0),
        };
        out.push(kind);
        out.extend_from_slice(&index.to_le_bytes());
        self.run.encode(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let short = || CodecError::new("a step key takes at least 5 bytes");
        let (&kind, rest) = bytes.split_first().ok_or_else(short)?;
        let (index, rest) = rest.split_first_chunk::<4>().ok_or_else(short)?;
        let index = u32::from_le_bytes(*index);
        let part = match kind {
            0 => Part::Run,
            1 => Part::Step(index),
            2 => Part::Undo(index),
            3 => Part::GiveUp,
            _ => return Err(CodecError::new(format!("no step key part {kind}"))),
        };
        Ok(StepKey::new(K::decode(rest)?, part))
    }
}

/// Appends `bytes` with its length in front.
fn frame(bytes: &[u8], out: &mut Vec<u8>) {
    // Step names and results are far below 4 GiB; a longer one would be
    // refused by `encode` long before.
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// A finished step's record: `[name, framed][its result's encoding]`.
pub(crate) fn step_record(name: &str, result: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + name.len() + result.len());
    frame(name.as_bytes(), &mut out);
    out.extend_from_slice(result);
    out
}

/// A step's name and result bytes, from [`step_record`].
pub(crate) fn split_step(record: &[u8]) -> Result<(String, &[u8]), CodecError> {
    let (name, result) = split_framed(record)?;
    let name = std::str::from_utf8(name)
        .map_err(|_| CodecError::new("a step's name is not UTF-8"))?
        .to_string();
    Ok((name, result))
}

/// How a run ended, as its own key records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ended {
    /// `finish` stored the run's result; every step's result is kept with
    /// it, so a replay never needs the step keys (which expire first).
    Finished {
        result: Vec<u8>,
        steps: Vec<(String, Vec<u8>)>,
    },
    /// `give_up` ran every compensation.
    GaveUp,
}

impl Ended {
    /// `[1][result, framed]([name, framed][result, framed])*`, or `[2]`.
    pub(crate) fn encode(&self) -> Vec<u8> {
        match self {
            Ended::Finished { result, steps } => {
                let mut out = vec![1];
                frame(result, &mut out);
                for (name, bytes) in steps {
                    frame(name.as_bytes(), &mut out);
                    frame(bytes, &mut out);
                }
                out
            }
            Ended::GaveUp => vec![2],
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes.split_first() {
            Some((1, rest)) => {
                let (result, mut rest) = split_framed(rest)?;
                let mut steps = Vec::new();
                while !rest.is_empty() {
                    let (name, after) = split_framed(rest)?;
                    let (value, after) = split_framed(after)?;
                    let name = std::str::from_utf8(name)
                        .map_err(|_| CodecError::new("a step's name is not UTF-8"))?;
                    steps.push((name.to_string(), value.to_vec()));
                    rest = after;
                }
                Ok(Ended::Finished {
                    result: result.to_vec(),
                    steps,
                })
            }
            Some((2, [])) => Ok(Ended::GaveUp),
            _ => Err(CodecError::new("not a multi-step run's record")),
        }
    }
}

/// A step's fingerprint: its name, and the run's payload fingerprint if it
/// has one, so a retry that asks for another step at an index, or runs with
/// another payload, is refused by the store's own fingerprint check.
pub(crate) fn step_fingerprint(run: Option<Fingerprint>, name: &str) -> Fingerprint {
    let mut bytes = Vec::with_capacity(22 + name.len());
    bytes.extend_from_slice(b"step");
    match run {
        Some(fingerprint) => {
            bytes.push(1);
            bytes.extend_from_slice(&fingerprint.to_bytes());
        }
        None => bytes.push(0),
    }
    bytes.extend_from_slice(name.as_bytes());
    Fingerprint::of_bytes(&bytes)
}

/// The run key's fingerprint: the run's payload fingerprint, or one fixed
/// value for a run with none (every backend claims with a fingerprint).
pub(crate) fn run_fingerprint(run: Option<Fingerprint>) -> Fingerprint {
    run.unwrap_or_else(|| Fingerprint::of_bytes(b"steps/run"))
}

/// The fingerprint of a run's given-up mark and compensation keys.
pub(crate) fn mark_fingerprint() -> Fingerprint {
    Fingerprint::of_bytes(b"steps/mark")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_records_round_trip() {
        for part in [Part::Run, Part::Step(7), Part::Undo(u32::MAX), Part::GiveUp] {
            let key = StepKey::new("order-1".to_string(), part);
            let mut bytes = Vec::new();
            key.encode(&mut bytes).unwrap();
            assert_eq!(StepKey::decode(&bytes), Ok(key));
        }
        let finished = Ended::Finished {
            result: b"receipt".to_vec(),
            steps: vec![("reserve".into(), vec![1, 2]), ("charge".into(), vec![])],
        };
        assert_eq!(Ended::decode(&finished.encode()), Ok(finished));
        assert_eq!(Ended::decode(&Ended::GaveUp.encode()), Ok(Ended::GaveUp));
        let record = step_record("ship", b"label");
        assert_eq!(
            split_step(&record).unwrap(),
            ("ship".to_string(), &b"label"[..])
        );
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert!(StepKey::<u64>::decode(&[9, 0, 0, 0, 0]).is_err());
        assert!(StepKey::<u64>::decode(&[1, 0]).is_err());
        assert!(Ended::decode(&[]).is_err());
        assert!(Ended::decode(&[1, 9, 0, 0, 0]).is_err());
        assert!(Ended::decode(&[2, 0]).is_err());
        assert!(split_step(&[3, 0, 0, 0, 0xff, 0xfe, 0xfd]).is_err());
    }

    #[test]
    fn the_tag_names_the_run_key() {
        assert_eq!(<StepKey<String>>::tag(), "steps/1(utf8)");
    }

    #[test]
    fn step_fingerprints_differ_by_name_and_payload() {
        let payload = Some(Fingerprint::of_bytes(b"cart"));
        let a = step_fingerprint(None, "reserve");
        assert_eq!(a, step_fingerprint(None, "reserve"));
        assert_ne!(a, step_fingerprint(None, "charge"));
        assert_ne!(a, step_fingerprint(payload, "reserve"));
        assert_ne!(
            step_fingerprint(payload, "reserve"),
            step_fingerprint(Some(Fingerprint::of_bytes(b"other")), "reserve")
        );
    }
}
