//! [`BufferedBody`]: the body type the layer hands on, in both directions,
//! and the bounded reads that fill it.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;

/// A body that is in memory, in memory up to a point and then still
/// streaming, or streaming untouched.
///
/// The layer reads idempotent requests' bodies (to fingerprint them) and
/// their responses' bodies (to store them) into memory, then hands the
/// same bytes on as this type; requests it does not apply to, and
/// responses too large to store, keep streaming through it. Its data is
/// always [`Bytes`]; its error is the wrapped body's.
///
/// ```
/// use bytes::Bytes;
/// use http_body_util::BodyExt;
/// use idemstore::http::BufferedBody;
///
/// # fn block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     struct Unpark(std::thread::Thread);
/// #     impl std::task::Wake for Unpark {
/// #         fn wake(self: std::sync::Arc<Self>) { self.0.unpark() }
/// #     }
/// #     let waker = std::sync::Arc::new(Unpark(std::thread::current())).into();
/// #     let mut cx = std::task::Context::from_waker(&waker);
/// #     let mut f = std::pin::pin!(f);
/// #     loop {
/// #         if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) { return v }
/// #         std::thread::park();
/// #     }
/// # }
/// let body = BufferedBody::<http_body_util::Empty<Bytes>>::full("hello");
/// let bytes = block_on(body.collect()).unwrap().to_bytes();
/// assert_eq!(bytes, "hello");
/// ```
pub struct BufferedBody<B: Body> {
    chunks: VecDeque<Bytes>,
    trailers: Option<HeaderMap>,
    rest: Rest<B>,
}

enum Rest<B: Body> {
    Done,
    Stream(Pin<Box<B>>),
    /// Reading failed after `chunks`; the error is yielded after them.
    Failed(Option<B::Error>),
}

// No field is ever pinned structurally: the stream is boxed and the error
// is only moved out, so the body may move freely whatever `B` is.
impl<B: Body> Unpin for BufferedBody<B> {}

impl<B: Body> BufferedBody<B> {
    /// A body held entirely in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self::from_chunks(vec![bytes.into()], None)
    }

    /// A body that streams `body` through untouched.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http_body_util::Full;
    /// use idemstore::http::BufferedBody;
    /// let body = BufferedBody::stream(Full::new(Bytes::from("streamed")));
    /// assert!(!body.is_buffered());
    /// assert!(BufferedBody::<Full<Bytes>>::full("held").is_buffered());
    /// ```
    pub fn stream(body: B) -> Self {
        BufferedBody {
            chunks: VecDeque::new(),
            trailers: None,
            rest: Rest::Stream(Box::pin(body)),
        }
    }

    pub(crate) fn from_chunks(chunks: Vec<Bytes>, trailers: Option<HeaderMap>) -> Self {
        BufferedBody {
            chunks: chunks.into_iter().filter(|c| !c.is_empty()).collect(),
            trailers,
            rest: Rest::Done,
        }
    }

    /// Whether the whole body is in memory.
    pub fn is_buffered(&self) -> bool {
        matches!(self.rest, Rest::Done)
    }
}

impl<B: Body> Body for BufferedBody<B>
where
    B::Data: Buf,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(chunk) = this.chunks.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        match &mut this.rest {
            Rest::Done => Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t)))),
            Rest::Failed(error) => Poll::Ready(error.take().map(Err)),
            Rest::Stream(body) => body
                .as_mut()
                .poll_frame(cx)
                .map_ok(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining()))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
            && match &self.rest {
                Rest::Done => self.trailers.is_none(),
                Rest::Failed(error) => error.is_none(),
                Rest::Stream(body) => body.is_end_stream(),
            }
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.chunks.iter().map(|c| c.len() as u64).sum();
        match &self.rest {
            Rest::Stream(body) => {
                let hint = body.size_hint();
                let mut sum = SizeHint::new();
                sum.set_lower(hint.lower().saturating_add(buffered));
                if let Some(upper) = hint.upper() {
                    sum.set_upper(upper.saturating_add(buffered));
                }
                sum
            }
            Rest::Done | Rest::Failed(_) => SizeHint::with_exact(buffered),
        }
    }
}

impl<B: Body> fmt::Debug for BufferedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rest = match self.rest {
            Rest::Done => "done",
            Rest::Stream(_) => "streaming",
            Rest::Failed(_) => "failed",
        };
        f.debug_struct("BufferedBody")
            .field("buffered_chunks", &self.chunks.len())
            .field("rest", &rest)
            .finish()
    }
}

/// The outcome of reading a body into memory up to a limit.
pub(crate) enum Read<B: Body> {
    /// The whole body, within the limit.
    Complete {
        chunks: Vec<Bytes>,
        trailers: Option<HeaderMap>,
        len: usize,
    },
    /// The body is longer than the limit: what was read, then the rest,
    /// still streaming.
    TooLarge(BufferedBody<B>),
    /// Reading failed: what was read, then the error.
    Failed(BufferedBody<B>),
}

/// Reads `body` into memory, stopping once more than `limit` bytes came.
/// A `Content-Length` (or size hint) already over the limit stops it before
/// any read.
pub(crate) async fn read_bounded<B>(body: B, limit: usize) -> Read<B>
where
    B: Body,
    B::Data: Buf,
{
    let limit = limit as u64;
    if body.size_hint().lower() > limit {
        return Read::TooLarge(BufferedBody::stream(body));
    }
    let mut body = Box::pin(body);
    let mut chunks = Vec::new();
    let mut len: u64 = 0;
    let give_back = |chunks: Vec<Bytes>, rest: Rest<B>| BufferedBody {
        chunks: chunks.into(),
        trailers: None,
        rest,
    };
    loop {
        match body.frame().await {
            None => {
                return Read::Complete {
                    chunks,
                    trailers: None,
                    len: len as usize,
                }
            }
            Some(Err(error)) => return Read::Failed(give_back(chunks, Rest::Failed(Some(error)))),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(mut data) => {
                    let chunk = data.copy_to_bytes(data.remaining());
                    len += chunk.len() as u64;
                    chunks.push(chunk);
                    if len > limit {
                        return Read::TooLarge(give_back(chunks, Rest::Stream(body)));
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        // Trailers end the body (http-body's contract).
                        return Read::Complete {
                            chunks,
                            trailers: Some(trailers),
                            len: len as usize,
                        };
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    use http_body_util::Full;

    use crate::test_util::block_on;

    /// A body that yields the given frames, with no size hint.
    struct Frames<E>(VecDeque<Result<Frame<Bytes>, E>>);

    impl<E: Unpin> Body for Frames<E> {
        type Data = Bytes;
        type Error = E;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
            Poll::Ready(self.get_mut().0.pop_front())
        }
    }

    fn chunked(parts: &[&'static str]) -> Frames<Infallible> {
        Frames(
            parts
                .iter()
                .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
                .collect(),
        )
    }

    #[test]
    fn reads_a_body_within_the_limit() {
        match block_on(read_bounded(chunked(&["ab", "cd"]), 4)) {
            Read::Complete { chunks, len, .. } => {
                assert_eq!((chunks.concat(), len), (b"abcd".to_vec(), 4));
            }
            _ => panic!("expected the whole body"),
        }
    }

    #[test]
    fn a_body_over_the_limit_comes_back_whole() {
        let Read::TooLarge(body) = block_on(read_bounded(chunked(&["ab", "cd", "ef"]), 3)) else {
            panic!("expected too large");
        };
        assert!(!body.is_buffered());
        assert_eq!(block_on(body.collect()).unwrap().to_bytes(), "abcdef");
    }

    #[test]
    fn a_known_length_over_the_limit_is_refused_before_reading() {
        let Read::TooLarge(body) = block_on(read_bounded(Full::new(Bytes::from("abcdef")), 5))
        else {
            panic!("expected too large");
        };
        assert_eq!(body.size_hint().exact(), Some(6));
        assert_eq!(block_on(body.collect()).unwrap().to_bytes(), "abcdef");
    }

    #[test]
    fn a_failed_read_yields_the_prefix_then_the_error() {
        let frames = Frames(VecDeque::from([
            Ok(Frame::data(Bytes::from("ab"))),
            Err("reset"),
        ]));
        let Read::Failed(mut body) = block_on(read_bounded(frames, 10)) else {
            panic!("expected a failure");
        };
        let first = block_on(body.frame()).unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "ab");
        assert_eq!(block_on(body.frame()).unwrap().unwrap_err(), "reset");
        assert!(block_on(body.frame()).is_none());
        assert!(body.is_end_stream());
    }

    #[test]
    fn trailers_follow_the_buffered_data() {
        let mut trailers = HeaderMap::new();
        trailers.insert("x-sum", "1".parse().unwrap());
        let mut body =
            BufferedBody::<Full<Bytes>>::from_chunks(vec![Bytes::from("x")], Some(trailers));
        assert_eq!(body.size_hint().exact(), Some(1));
        assert!(block_on(body.frame()).unwrap().unwrap().is_data());
        assert!(!body.is_end_stream());
        assert!(block_on(body.frame()).unwrap().unwrap().is_trailers());
        assert!(body.is_end_stream());
    }
}
