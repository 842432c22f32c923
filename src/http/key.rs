//! The client's `Idempotency-Key` header and the store key built from it.

use std::fmt;

use http::{HeaderMap, HeaderName, Method};

/// The longest client key accepted, in characters.
pub const MAX_KEY_LEN: usize = 255;

/// The store key of one idempotent request: the scope (tenant, user, API
/// key...), the method, the path (without the query) and the client's key.
///
/// Two requests share a stored response only if all four agree, so two
/// tenants that happen to pick the same key never meet (rule 16 in the
/// crate's semantics), and one key cannot be replayed on another endpoint.
///
/// Build one to look a request up in the layer's store:
///
/// ```
/// use http::Method;
/// use idemstore::http::{HttpStore, RequestKey};
///
/// let store = HttpStore::new();
/// let key = RequestKey::new("tenant-a", Method::POST, "/orders", "order-1");
/// assert!(store.get(&key).is_none());
/// assert!(!store.remove(&key));
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestKey {
    /// What the layer's scope extractor returned; empty without one.
    pub scope: String,
    /// The request method.
    pub method: Method,
    /// The request path, without the query string.
    pub path: String,
    /// The client's key, unquoted.
    pub key: String,
}

impl RequestKey {
    /// A key from its four parts.
    pub fn new(
        scope: impl Into<String>,
        method: Method,
        path: impl Into<String>,
        key: impl Into<String>,
    ) -> Self {
        RequestKey {
            scope: scope.into(),
            method,
            path: path.into(),
            key: key.into(),
        }
    }
}

/// Why an `Idempotency-Key` header value was refused (answered with 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The value was empty (or an empty quoted string).
    Empty,
    /// The key was longer than [`MAX_KEY_LEN`] characters; holds its length.
    TooLong(usize),
    /// The key held a byte that is not visible ASCII (a control character,
    /// or a byte above 0x7E such as UTF-8).
    NotVisibleAscii,
    /// The value opened a quoted string but was not a valid one: no closing
    /// quote, text after it, or a backslash escaping something other than
    /// `"` or `\`.
    BadQuotedString,
    /// The header appeared more than once.
    Repeated,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::Empty => f.write_str("the key is empty"),
            KeyError::TooLong(n) => {
                write!(
                    f,
                    "the key is {n} characters long; at most {MAX_KEY_LEN} are allowed"
                )
            }
            KeyError::NotVisibleAscii => {
                f.write_str("the key must contain only visible ASCII characters")
            }
            KeyError::BadQuotedString => {
                f.write_str("the key is not a valid structured-field string")
            }
            KeyError::Repeated => f.write_str("the header must appear only once"),
        }
    }
}

impl std::error::Error for KeyError {}

/// Parses one `Idempotency-Key` header value into the client's key.
///
/// Accepted: 1 to [`MAX_KEY_LEN`] visible ASCII characters (0x21 to 0x7E),
/// or the same as a structured-field string (RFC 8941 §3.3.3), which is
/// what draft-ietf-httpapi-idempotency-key-header specifies: quoted, with
/// `\"` and `\\` escapes, spaces allowed inside. A quoted key and its bare
/// form are the same key. Leading and trailing spaces and tabs are ignored.
///
/// ```
/// use idemstore::http::{parse_key, KeyError};
///
/// assert_eq!(parse_key(b"8e03978e-40d5-43e8").as_deref(), Ok("8e03978e-40d5-43e8"));
/// assert_eq!(parse_key(br#""a \"b\"""#).as_deref(), Ok(r#"a "b""#));
/// assert_eq!(parse_key(b""), Err(KeyError::Empty));
/// assert_eq!(parse_key("clé".as_bytes()), Err(KeyError::NotVisibleAscii));
/// assert_eq!(parse_key(&[b'k'; 256]), Err(KeyError::TooLong(256)));
/// ```
pub fn parse_key(value: &[u8]) -> Result<String, KeyError> {
    let value = trim_ows(value);
    let key = match value {
        [b'"', ..] => unquote(value)?,
        _ => {
            if value.iter().any(|b| !b.is_ascii_graphic()) {
                return Err(KeyError::NotVisibleAscii);
            }
            value.to_vec()
        }
    };
    if key.is_empty() {
        return Err(KeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(KeyError::TooLong(key.len()));
    }
    // Every byte is ASCII (checked above or in `unquote`), so this is UTF-8.
    String::from_utf8(key).map_err(|_| KeyError::NotVisibleAscii)
}

/// The key in `headers` under `name`: `Ok(None)` when absent.
pub(crate) fn from_headers(
    headers: &HeaderMap,
    name: &HeaderName,
) -> Result<Option<String>, KeyError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(KeyError::Repeated);
    }
    parse_key(first.as_bytes()).map(Some)
}

fn trim_ows(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// An RFC 8941 sf-string: `DQUOTE *( unescaped / "\" ( DQUOTE / "\" ) ) DQUOTE`
/// where `unescaped` is 0x20-0x21 / 0x23-0x5B / 0x5D-0x7E.
fn unquote(value: &[u8]) -> Result<Vec<u8>, KeyError> {
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value[1..].iter();
    loop {
        match bytes.next() {
            None => return Err(KeyError::BadQuotedString),
            Some(b'"') => break,
            Some(b'\\') => match bytes.next() {
                Some(&c @ (b'"' | b'\\')) => out.push(c),
                _ => return Err(KeyError::BadQuotedString),
            },
            Some(&c @ 0x20..=0x7e) => out.push(c),
            Some(_) => return Err(KeyError::NotVisibleAscii),
        }
    }
    if bytes.next().is_some() {
        return Err(KeyError::BadQuotedString);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bare_and_quoted_forms_are_one_key() {
        assert_eq!(parse_key(b"abc"), parse_key(b"\"abc\""));
        assert_eq!(parse_key(b"  abc\t").as_deref(), Ok("abc"));
        assert_eq!(parse_key(b"\"with space\"").as_deref(), Ok("with space"));
        assert_eq!(parse_key(b"a\"b\\c").as_deref(), Ok("a\"b\\c"));
    }

    #[test]
    fn length_bounds_count_the_unquoted_key() {
        let max = "k".repeat(MAX_KEY_LEN);
        assert_eq!(parse_key(max.as_bytes()).as_deref(), Ok(max.as_str()));
        let quoted = format!("\"{max}\"");
        assert_eq!(parse_key(quoted.as_bytes()).as_deref(), Ok(max.as_str()));
        let long = format!("\"{max}k\"");
        assert_eq!(parse_key(long.as_bytes()), Err(KeyError::TooLong(256)));
        assert_eq!(parse_key(b"\"\""), Err(KeyError::Empty));
        assert_eq!(parse_key(b"   "), Err(KeyError::Empty));
    }

    #[test]
    fn refuses_what_is_not_visible_ascii_or_a_valid_string() {
        assert_eq!(parse_key(b"a b"), Err(KeyError::NotVisibleAscii));
        assert_eq!(parse_key(b"a\x7fb"), Err(KeyError::NotVisibleAscii));
        assert_eq!(parse_key(b"\"\xc3\xa9\""), Err(KeyError::NotVisibleAscii));
        assert_eq!(parse_key(b"\"open"), Err(KeyError::BadQuotedString));
        assert_eq!(parse_key(b"\"a\"b"), Err(KeyError::BadQuotedString));
        assert_eq!(parse_key(b"\"a\\nb\""), Err(KeyError::BadQuotedString));
    }

    #[test]
    fn a_repeated_header_is_refused() {
        let name = HeaderName::from_static("idempotency-key");
        let mut headers = HeaderMap::new();
        assert_eq!(from_headers(&headers, &name), Ok(None));
        headers.append(&name, HeaderValue::from_static("a"));
        assert_eq!(from_headers(&headers, &name), Ok(Some("a".into())));
        headers.append(&name, HeaderValue::from_static("b"));
        assert_eq!(from_headers(&headers, &name), Err(KeyError::Repeated));
    }
}
