//! The fake's HTTP response body (`FakeBody`): a whole buffer, or frames fed by a producer task
//! (see `stream.rs`), with the abort that cuts a connection mid-body; and the builders of whole
//! responses (`full`, `json_response`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use serde_json::Value;
use tokio::sync::mpsc;

use super::recording::Flight;

pub(super) const JSON_CT: &str = "application/json; charset=UTF-8";
pub(super) const SSE_CT: &str = "text/event-stream";

/// The fake's response body: a whole buffer, or frames fed by a producer task.
pub struct FakeBody {
    pub(super) full: Option<Bytes>,
    pub(super) frames: Option<mpsc::Receiver<io::Result<Bytes>>>,
    /// An abort waiting one poll, so hyper flushes the frames before it drops the connection.
    pub(super) abort: Option<io::Error>,
    pub(super) flight: Option<Flight>,
}

impl FakeBody {
    fn finish(&mut self) {
        if let Some(mut flight) = self.flight.take() {
            flight.done = true;
        }
    }
}

impl Body for FakeBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        if let Some(e) = self.abort.take() {
            self.finish();
            return Poll::Ready(Some(Err(e)));
        }
        if let Some(rx) = self.frames.as_mut() {
            return match rx.poll_recv(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Poll::Ready(Some(Err(e))) => {
                    // hyper flushes its write buffer when the body is pending; erroring now
                    // would drop the last frames unsent.
                    self.abort = Some(e);
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Poll::Ready(None) => {
                    self.finish();
                    Poll::Ready(None)
                }
            };
        }
        Poll::Ready(self.full.take().map(|b| Ok(Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_none() && self.full.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.frames, &self.full) {
            (None, Some(b)) => SizeHint::with_exact(b.len() as u64),
            (None, None) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

pub(super) fn full(
    status: u16,
    content_type: &str,
    body: Bytes,
    headers: &[(String, String)],
) -> Response<FakeBody> {
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header("content-type", content_type);
    for (k, v) in headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    builder
        .body(FakeBody {
            full: Some(body),
            frames: None,
            abort: None,
            flight: None,
        })
        .expect("fake gemini: response head")
}

pub(super) fn json_response(status: u16, body: &Value) -> Response<FakeBody> {
    full(status, JSON_CT, Bytes::from(body.to_string()), &[])
}
