//! [`Codec`]: how keys and values are written to the journal.
//!
//! Only a journaled store needs its key and value types to implement it; the
//! plain store asks nothing of them but `Clone`. An encoding is identified by
//! its [`TAG`](Codec::TAG), which the journal writes into its header, so a
//! journal written with one key or value encoding is refused, with a clear
//! error, by a store built for another.

use std::fmt;

/// Why a value could not be encoded for the journal, or bytes read back from
/// it do not decode as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(String);

impl CodecError {
    /// An error that says what was wrong with the bytes.
    pub fn new(what: impl Into<String>) -> Self {
        CodecError(what.into())
    }
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CodecError {}

/// A stable byte encoding of a key or value, for the journal.
///
/// `decode` of what `encode` wrote must give back an equal value, and the encoding must not change
/// while journals written with it exist: change the [`TAG`](Self::TAG) when
/// it does, and old journals are refused instead of misread. `decode` gets
/// exactly the bytes `encode` wrote.
///
/// ```
/// use idemstore::{Codec, CodecError};
///
/// #[derive(Clone, PartialEq, Debug)]
/// struct OrderId(u64);
///
/// impl Codec for OrderId {
///     const TAG: &'static str = "order-id/1";
///     fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
///         self.0.encode(out)
///     }
///     fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
///         u64::decode(bytes).map(OrderId)
///     }
/// }
///
/// let mut bytes = Vec::new();
/// OrderId(7).encode(&mut bytes)?;
/// assert_eq!(OrderId::decode(&bytes), Ok(OrderId(7)));
/// # Ok::<(), CodecError>(())
/// ```
pub trait Codec: Sized {
    /// A short name of this encoding, written in the journal's header.
    const TAG: &'static str;

    /// The full name of this encoding: [`TAG`](Self::TAG), or, for types
    /// built of others (tuples), the names of their parts too.
    fn tag() -> String {
        Self::TAG.to_string()
    }

    /// Appends the encoding of `self` to `out`. An error (a value this
    /// encoding cannot represent) fails the completion that wrote it, with
    /// nothing stored.
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError>;

    /// The value `bytes` encode.
    fn decode(bytes: &[u8]) -> Result<Self, CodecError>;
}

macro_rules! integer_codec {
    ($($t:ty => $tag:literal),* $(,)?) => {$(
        impl Codec for $t {
            const TAG: &'static str = $tag;
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
                out.extend_from_slice(&self.to_le_bytes());
                Ok(())
            }
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                let array = bytes.try_into().map_err(|_| {
                    CodecError::new(format!(
                        "{} takes {} bytes, got {}",
                        $tag,
                        std::mem::size_of::<$t>(),
                        bytes.len()
                    ))
                })?;
                Ok(<$t>::from_le_bytes(array))
            }
        }
    )*};
}

integer_codec!(
    u8 => "u8", u16 => "u16", u32 => "u32", u64 => "u64", u128 => "u128",
    i8 => "i8", i16 => "i16", i32 => "i32", i64 => "i64", i128 => "i128",
);

impl Codec for bool {
    const TAG: &'static str = "bool";
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.push(u8::from(*self));
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        match bytes {
            [0] => Ok(false),
            [1] => Ok(true),
            _ => Err(CodecError::new("bool takes one byte, 0 or 1")),
        }
    }
}

impl Codec for () {
    const TAG: &'static str = "unit";
    fn encode(&self, _: &mut Vec<u8>) -> Result<(), CodecError> {
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        if bytes.is_empty() {
            Ok(())
        } else {
            Err(CodecError::new("() takes no bytes"))
        }
    }
}

impl Codec for String {
    const TAG: &'static str = "utf8";
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(self.as_bytes());
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        String::from_utf8(bytes.to_vec()).map_err(|e| CodecError::new(format!("not UTF-8: {e}")))
    }
}

impl Codec for Vec<u8> {
    const TAG: &'static str = "bytes";
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(self);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes.to_vec())
    }
}

impl Codec for bytes::Bytes {
    // The same bytes as `Vec<u8>`: a journal written with one reads as the other.
    const TAG: &'static str = "bytes";
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(self);
        Ok(())
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        Ok(bytes::Bytes::copy_from_slice(bytes))
    }
}

impl<T: Codec> Codec for std::sync::Arc<T> {
    const TAG: &'static str = T::TAG;
    fn tag() -> String {
        T::tag()
    }
    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        T::encode(self, out)
    }
    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        T::decode(bytes).map(std::sync::Arc::new)
    }
}

/// A [`Codec`] for any serde type, in postcard's compact encoding (feature
/// `serde`). Wrap the stored type in it: `Store<String, Serde<Receipt>>`.
///
/// ```
/// use idemstore::{Codec, Serde};
///
/// #[derive(serde::Serialize, serde::Deserialize, Clone, PartialEq, Debug)]
/// struct Receipt { id: u64, amount_cents: i64, note: String }
///
/// let receipt = Serde(Receipt { id: 7, amount_cents: -250, note: "refund".into() });
/// let mut bytes = Vec::new();
/// receipt.encode(&mut bytes)?;
/// assert_eq!(Serde::<Receipt>::decode(&bytes)?, receipt);
/// # Ok::<(), idemstore::CodecError>(())
/// ```
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serde<T>(pub T);

#[cfg(feature = "serde")]
impl<T> Codec for Serde<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    const TAG: &'static str = "postcard/1";

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        let bytes = postcard::to_allocvec(&self.0)
            .map_err(|e| CodecError::new(format!("postcard could not encode the value: {e}")))?;
        out.extend_from_slice(&bytes);
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        postcard::from_bytes(bytes)
            .map(Serde)
            .map_err(|e| CodecError::new(format!("not a postcard value of this type: {e}")))
    }
}

/// Appends `value` with its length in front, so a tuple's fields can be
/// told apart.
pub(crate) fn encode_framed<T: Codec>(value: &T, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    value.encode(out)?;
    let len = u32::try_from(out.len() - at - 4)
        .map_err(|_| CodecError::new("a tuple field over 4 GiB"))?;
    out[at..at + 4].copy_from_slice(&len.to_le_bytes());
    Ok(())
}

/// Splits a field written by [`encode_framed`] off the front of `bytes`.
pub(crate) fn split_framed(bytes: &[u8]) -> Result<(&[u8], &[u8]), CodecError> {
    let too_short = || CodecError::new("a length-prefixed field runs past the end");
    let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(too_short)?;
    let len = u32::from_le_bytes(*len) as usize;
    if rest.len() < len {
        return Err(too_short());
    }
    Ok(rest.split_at(len))
}

macro_rules! tuple_codec {
    ($tag:literal; $($name:ident)+; $last:ident) => {
        impl<$($name: Codec,)+ $last: Codec> Codec for ($($name,)+ $last,) {
            const TAG: &'static str = $tag;
            fn tag() -> String {
                let parts: &[String] = &[$($name::tag(),)+ $last::tag()];
                format!("({})", parts.join(","))
            }
            #[allow(non_snake_case)]
            fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
                let ($($name,)+ $last,) = self;
                $(encode_framed($name, out)?;)+
                $last.encode(out)
            }
            #[allow(non_snake_case)]
            fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
                let rest = bytes;
                $(
                    let ($name, rest) = split_framed(rest)?;
                    let $name = $name::decode($name)?;
                )+
                Ok(($($name,)+ $last::decode(rest)?,))
            }
        }
    };
}

tuple_codec!("tuple2"; A; B);
tuple_codec!("tuple3"; A B; C);
tuple_codec!("tuple4"; A B C; D);

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T: Codec + PartialEq + fmt::Debug>(value: T) {
        let mut bytes = Vec::new();
        value.encode(&mut bytes).unwrap();
        assert_eq!(T::decode(&bytes), Ok(value));
    }

    #[test]
    fn every_codec_round_trips() {
        round_trip(0xdead_beef_u32);
        round_trip(-5_i64);
        round_trip(u128::MAX);
        round_trip(true);
        round_trip(());
        round_trip("héllo".to_string());
        round_trip(vec![0_u8, 255, 7]);
        round_trip(bytes::Bytes::from_static(b"body"));
        round_trip(("tenant".to_string(), 7_u64));
        round_trip((1_u8, "a".to_string(), vec![2_u8]));
        round_trip((String::new(), String::new(), String::new(), 0_u16));
    }

    #[test]
    fn a_tuple_tag_names_its_parts() {
        assert_eq!(<(String, std::sync::Arc<u64>)>::tag(), "(utf8,u64)");
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        assert!(u64::decode(&[1, 2, 3]).is_err());
        assert!(bool::decode(&[2]).is_err());
        assert!(String::decode(&[0xff, 0xfe]).is_err());
        assert!(<(String, u8)>::decode(&[9, 0, 0, 0, b'a']).is_err());
        assert!(<(String, u8)>::decode(&[]).is_err());
    }
}
