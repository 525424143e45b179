//! How a stream goes over the wire: Google's framing (SSE `data:` events with CRLF on
//! `alt=sse`, else one JSON array sent piece by piece), the producer task that paces the frames,
//! and how the stream ends (EOF, hang, abort).

use std::io;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use serde_json::Value;
use tokio::sync::mpsc;

use super::body::{FakeBody, JSON_CT, SSE_CT};
use super::recording::Flight;
use super::{Responded, StreamEnd};

/// `events` as a streamed reply: SSE when `sse`, else a JSON array; `delay` between events.
pub(super) fn respond(events: &[Value], sse: bool, delay: Duration, end: StreamEnd) -> Responded {
    let frames = stream_frames(events, sse, end);
    let ct = if sse { SSE_CT } else { JSON_CT };
    Responded::Stream(Box::new(move |flight| {
        streamed(ct, frames, delay, end, flight)
    }))
}

/// SSE frames for events (CRLF framing like Google), or JSON-array frames.
fn stream_frames(events: &[Value], sse: bool, end: StreamEnd) -> Vec<Bytes> {
    let mut frames: Vec<Bytes> = events
        .iter()
        .enumerate()
        .map(|(i, ev)| {
            if sse {
                Bytes::from(format!("data: {ev}\r\n\r\n"))
            } else if i == 0 {
                Bytes::from(format!("[{ev}\n"))
            } else {
                Bytes::from(format!(",\r\n{ev}\n"))
            }
        })
        .collect();
    if !sse && end == StreamEnd::Eof {
        frames.push(Bytes::from_static(if events.is_empty() {
            b"[]"
        } else {
            b"]"
        }));
    }
    frames
}

fn streamed(
    content_type: &str,
    frames: Vec<Bytes>,
    delay: Duration,
    end: StreamEnd,
    flight: Flight,
) -> Response<FakeBody> {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        for (i, frame) in frames.into_iter().enumerate() {
            if i > 0 && !delay.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = tx.closed() => return,
                }
            }
            if tx.send(Ok(frame)).await.is_err() {
                return;
            }
        }
        match end {
            StreamEnd::Eof => {}
            // Ends when the client (or the fake's shutdown) drops the body.
            StreamEnd::Hang => tx.closed().await,
            StreamEnd::Abort => {
                let _ = tx
                    .send(Err(io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "fake gemini: abrupt close",
                    )))
                    .await;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", content_type)
        .body(FakeBody {
            full: None,
            frames: Some(rx),
            abort: None,
            flight: Some(flight),
        })
        .expect("fake gemini: response head")
}
