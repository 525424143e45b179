//! A fast fake Gemini upstream for `bench/run.sh`: loopback only, fixed realistic answers, as
//! little work per request as possible so the load generator measures the proxy, not the fake.
//!
//! Serves `GET /v1beta/models`, `POST …:generateContent` (one JSON answer) and
//! `POST …:streamGenerateContent?alt=sse` (a few SSE events, CRLF framed like Google's). A model
//! whose name contains `slow` streams its events 10 ms apart, so a time-to-first-byte probe can
//! tell a relayed stream from a buffered one; one whose name contains `hold` streams them 20 s
//! apart (for holding thousands of streams open). Requests without `x-goog-api-key` get a 401.
//!
//! Usage: `cargo run --release --example bench_upstream -- [ADDR] [H2_MAX_STREAMS]` (default
//! `127.0.0.1:0`); prints `listening on 127.0.0.1:PORT` once bound. With `H2_MAX_STREAMS`, each
//! connection also speaks HTTP/2 without TLS (h2c, prior knowledge) and caps it at that many
//! concurrent streams, as Google's `SETTINGS_MAX_CONCURRENT_STREAMS` does (HTTP/1.1 stays
//! served). Not a test double: see `tests/support/`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// Pre-built answers, shared by every connection.
struct Answers {
    generate: Bytes,
    events: Vec<Bytes>,
    models: Bytes,
}

const TEXT: &str =
    "Rust's ownership model gives each value a single owner; when the owner goes out of \
scope the value is dropped. Borrowing lets code use a value without taking ownership: any number \
of shared references, or exactly one mutable reference, at a time. The compiler checks these rules \
at compile time, so data races and use-after-free bugs are caught before the program runs.";

fn answers() -> Answers {
    let usage = r#""usageMetadata":{"promptTokenCount":1204,"candidatesTokenCount":78,"totalTokenCount":1282,"promptTokensDetails":[{"modality":"TEXT","tokenCount":1204}]},"modelVersion":"gemini-2.5-flash","responseId":"mF3kaKfXBIbnz7IPmLyQ-Ak""#;
    let generate = format!(
        r#"{{"candidates":[{{"content":{{"parts":[{{"text":{}}}],"role":"model"}},"finishReason":"STOP","index":0}}],{usage}}}"#,
        json_string(TEXT)
    );
    // Four events: text split in three, then the finish with the final usage.
    let words: Vec<&str> = TEXT.split_inclusive(' ').collect();
    let third = words.len().div_ceil(3);
    let mut events: Vec<Bytes> = words
        .chunks(third)
        .map(|piece| {
            let text: String = piece.concat();
            Bytes::from(format!(
                "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":{}}}],\"role\":\"model\"}},\"index\":0}}],{usage}}}\r\n\r\n",
                json_string(&text)
            ))
        })
        .collect();
    events.push(Bytes::from(format!(
        "data: {{\"candidates\":[{{\"content\":{{\"parts\":[{{\"text\":\"\"}}],\"role\":\"model\"}},\"finishReason\":\"STOP\",\"index\":0}}],{usage}}}\r\n\r\n"
    )));
    let models = [
        "gemini-2.5-pro",
        "gemini-2.5-flash",
        "gemini-2.5-flash-lite",
        "gemini-2.0-flash",
    ]
    .iter()
    .map(|m| {
        format!(
            r#"{{"name":"models/{m}","version":"001","displayName":"{m}","inputTokenLimit":1048576,"outputTokenLimit":65536,"supportedGenerationMethods":["generateContent","countTokens"]}}"#
        )
    })
    .collect::<Vec<_>>()
    .join(",");
    Answers {
        generate: Bytes::from(generate),
        events,
        models: Bytes::from(format!(r#"{{"models":[{models}]}}"#)),
    }
}

fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The SSE events as body frames, optionally `gap` apart.
struct Events {
    events: Arc<Answers>,
    next: usize,
    gap: Option<Duration>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl http_body::Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.next >= self.events.events.len() {
            return Poll::Ready(None);
        }
        if let Some(sleep) = self.sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let frame = self.events.events[self.next].clone();
        self.next += 1;
        if let Some(gap) = self.gap {
            self.sleep = Some(Box::pin(tokio::time::sleep(gap)));
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, Infallible>;

async fn handle(answers: Arc<Answers>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_owned();
    let has_key = req.headers().contains_key("x-goog-api-key");
    // Read the request body whole, as Google does, so keep-alive connections stay usable.
    let _ = req.into_body().collect().await;
    if !has_key {
        return reply(
            StatusCode::UNAUTHORIZED,
            Bytes::from_static(b"{}"),
            "application/json",
        );
    }
    if path == "/v1beta/models" {
        return reply(StatusCode::OK, answers.models.clone(), JSON);
    }
    match path.rsplit_once(':') {
        Some((model, "generateContent")) if model.starts_with("/v1beta/models/") => {
            reply(StatusCode::OK, answers.generate.clone(), JSON)
        }
        Some((model, "streamGenerateContent")) if model.starts_with("/v1beta/models/") => {
            let gap = if model.contains("hold") {
                Some(Duration::from_secs(20))
            } else {
                model.contains("slow").then(|| Duration::from_millis(10))
            };
            let body = Events {
                events: answers.clone(),
                next: 0,
                gap,
                sleep: None,
            };
            let mut response = Response::new(body.boxed());
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            );
            response
        }
        _ => reply(StatusCode::NOT_FOUND, Bytes::from_static(b"{}"), JSON),
    }
}

const JSON: &str = "application/json; charset=UTF-8";

fn reply(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut response = Response::new(Full::new(body).boxed());
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let h2_max_streams: Option<u32> = match std::env::args().nth(2) {
        Some(n) => Some(n.parse().map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "H2_MAX_STREAMS: a number")
        })?),
        None => None,
    };
    let listener = TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        eprintln!("refusing to serve on {local}: loopback only");
        std::process::exit(2);
    }
    println!("listening on {local}");
    let answers = Arc::new(answers());
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let answers = answers.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let answers = answers.clone();
                async move { Ok::<_, Infallible>(handle(answers, req).await) }
            });
            let io = TokioIo::new(stream);
            match h2_max_streams {
                None => {
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(io, service)
                        .await;
                }
                Some(max) => {
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http2().max_concurrent_streams(max);
                    let _ = builder.serve_connection(io, service).await;
                }
            }
        });
    }
}
