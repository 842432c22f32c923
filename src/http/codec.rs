//! Journal encodings of the layer's keys and stored responses (features
//! `tower` and `journal`), so `HttpStore::builder().journal(path)` works.
//! A stored response round-trips exactly: status, every header value in
//! order (repeated names included) and the body.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::key::RequestKey;
use super::response::StoredResponse;
use crate::codec::{encode_framed, split_framed, Codec, CodecError};

impl Codec for RequestKey {
    const TAG: &'static str = "http-request-key/1";

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        encode_framed(&self.scope, out)?;
        encode_framed(&self.method.as_str().to_string(), out)?;
        encode_framed(&self.path, out)?;
        self.key.encode(out)
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (scope, rest) = split_framed(bytes)?;
        let (method, rest) = split_framed(rest)?;
        let (path, key) = split_framed(rest)?;
        let method = Method::from_bytes(method)
            .map_err(|e| CodecError::new(format!("a stored key's method: {e}")))?;
        Ok(RequestKey {
            scope: String::decode(scope)?,
            method,
            path: String::decode(path)?,
            key: String::decode(key)?,
        })
    }
}

impl Codec for StoredResponse {
    const TAG: &'static str = "http-response/1";

    fn encode(&self, out: &mut Vec<u8>) -> Result<(), CodecError> {
        out.extend_from_slice(&self.status().as_u16().to_le_bytes());
        let headers = self.headers();
        out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
        for (name, value) in headers {
            encode_framed(&name.as_str().as_bytes().to_vec(), out)?;
            encode_framed(&value.as_bytes().to_vec(), out)?;
        }
        out.extend_from_slice(self.body());
        Ok(())
    }

    fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let cut = || CodecError::new("a stored response cut short");
        let (status, rest) = bytes.split_first_chunk::<2>().ok_or_else(cut)?;
        let status = StatusCode::from_u16(u16::from_le_bytes(*status))
            .map_err(|e| CodecError::new(format!("a stored response's status: {e}")))?;
        let (count, mut rest) = rest.split_first_chunk::<4>().ok_or_else(cut)?;
        let count = u32::from_le_bytes(*count);
        // Not sized by `count`: it comes from the file.
        let mut headers = HeaderMap::new();
        for _ in 0..count {
            let (name, after) = split_framed(rest)?;
            let (value, after) = split_framed(after)?;
            rest = after;
            let name = HeaderName::from_bytes(name)
                .map_err(|e| CodecError::new(format!("a stored header name: {e}")))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|e| CodecError::new(format!("a stored header value: {e}")))?;
            headers.append(name, value);
        }
        Ok(StoredResponse::from_parts(
            status,
            headers,
            Bytes::copy_from_slice(rest),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_response_round_trips_exactly() {
        let mut headers = HeaderMap::new();
        headers.append("set-cookie", HeaderValue::from_static("a=1"));
        headers.append("set-cookie", HeaderValue::from_static("b=2"));
        headers.append("location", HeaderValue::from_static("/orders/7"));
        headers.append("x-bin", HeaderValue::from_bytes(&[0x80, 0xff]).unwrap());
        let stored = StoredResponse::new(StatusCode::CREATED, &headers, &b"\x00{\"id\":7}"[..]);
        let mut bytes = Vec::new();
        stored.encode(&mut bytes).unwrap();
        let back = StoredResponse::decode(&bytes).unwrap();
        assert_eq!(back.status(), StatusCode::CREATED);
        assert_eq!(back.headers(), stored.headers());
        let cookies: Vec<_> = back.headers().get_all("set-cookie").iter().collect();
        assert_eq!(cookies, ["a=1", "b=2"]);
        assert_eq!(back.body(), stored.body());
    }

    #[test]
    fn a_request_key_round_trips_and_bad_bytes_are_errors() {
        let key = RequestKey::new("tenant ü", Method::PATCH, "/orders/1", "k-1");
        let mut bytes = Vec::new();
        key.encode(&mut bytes).unwrap();
        assert_eq!(RequestKey::decode(&bytes), Ok(key));
        assert!(RequestKey::decode(&bytes[..3]).is_err());
        assert!(StoredResponse::decode(&[0xff, 0xff, 0, 0, 0, 0]).is_err());
        assert!(StoredResponse::decode(&[200, 0, 5, 0, 0, 0]).is_err());
    }
}
