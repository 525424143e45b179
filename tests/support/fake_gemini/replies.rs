//! `Reply`: one scripted answer (a success, raw JSON, raw stream events, a delay or a hang),
//! its constructors for successes and raw replies, and the modifiers (`chunks`, `finish_reason`,
//! `event_delay`, `with_header`…). Error presets are in `errors.rs`; how a reply is rendered
//! depends on the route (see `render` in `mod.rs`).

use std::time::Duration;

use serde_json::Value;

/// How a scripted stream ends after its last event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// Clean end of body (EOF), as Google does.
    Eof,
    /// Keep the connection open and send nothing more until the client leaves.
    Hang,
    /// Cut the connection mid-body (no chunked terminator).
    Abort,
}

#[derive(Clone, Debug)]
pub(super) enum Content {
    Text(String),
    Parts(Vec<Value>),
}

/// A successful generation: its content, how it streams, and its usage.
#[derive(Clone, Debug)]
pub struct Success {
    pub(super) content: Content,
    pub(super) chunks: usize,
    pub(super) thoughts_tokens: Option<u64>,
    pub(super) finish_reason: String,
    pub(super) event_delay: Duration,
}

/// One scripted reply. Build with the constructor functions; most tests never match on it.
#[derive(Clone, Debug)]
pub enum Reply {
    /// A success, rendered per route (JSON, SSE, JSON array, countTokens, embeddings).
    Success(Success),
    /// A raw JSON reply. `google_error` bodies are wrapped in an array on the non-SSE stream
    /// route, as Google does.
    Json {
        status: u16,
        body: Value,
        headers: Vec<(String, String)>,
        google_error: bool,
    },
    /// Raw events: SSE with `alt=sse`, a JSON array on the plain stream route, SSE elsewhere.
    Stream {
        events: Vec<Value>,
        event_delay: Duration,
        end: StreamEnd,
    },
    /// Wait before sending anything (headers included), then reply.
    Delay(Duration, Box<Reply>),
    /// Never answer.
    Hang,
}

impl Reply {
    /// A success whose text is `text`; streams split it into 3 chunks (see [`Reply::chunks`]).
    pub fn text(text: impl Into<String>) -> Reply {
        Reply::Success(Success {
            content: Content::Text(text.into()),
            chunks: 3,
            thoughts_tokens: None,
            finish_reason: "STOP".into(),
            event_delay: Duration::ZERO,
        })
    }

    /// A success made of arbitrary parts (function calls, thoughts…); streams send one part per
    /// event.
    pub fn parts(parts: Vec<Value>) -> Reply {
        Reply::Success(Success {
            content: Content::Parts(parts),
            chunks: 1,
            thoughts_tokens: None,
            finish_reason: "STOP".into(),
            event_delay: Duration::ZERO,
        })
    }

    /// A raw JSON reply with any status.
    pub fn json(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: Vec::new(),
            google_error: false,
        }
    }

    /// Raw stream events, ending cleanly.
    pub fn stream(events: Vec<Value>) -> Reply {
        Reply::Stream {
            events,
            event_delay: Duration::ZERO,
            end: StreamEnd::Eof,
        }
    }

    /// Raw stream events, then silence with the connection held open.
    pub fn stream_then_hang(events: Vec<Value>) -> Reply {
        Reply::Stream {
            events,
            event_delay: Duration::ZERO,
            end: StreamEnd::Hang,
        }
    }

    /// Raw stream events, then an abrupt close of the connection.
    pub fn stream_then_close(events: Vec<Value>) -> Reply {
        Reply::Stream {
            events,
            event_delay: Duration::ZERO,
            end: StreamEnd::Abort,
        }
    }

    /// `reply`, after `d` without sending headers.
    pub fn delay(d: Duration, reply: Reply) -> Reply {
        Reply::Delay(d, Box::new(reply))
    }

    /// Never answers; the client's drop is counted in `cancellations()`.
    pub fn hang() -> Reply {
        Reply::Hang
    }

    /// Streams split the text into `n` chunks (fewer if the text is shorter).
    pub fn chunks(mut self, n: usize) -> Reply {
        match &mut self {
            Reply::Success(s) => s.chunks = n.max(1),
            other => panic!("chunks() applies to Reply::text, not {other:?}"),
        }
        self
    }

    /// Adds `thoughtsTokenCount` to the usage.
    pub fn thoughts_tokens(mut self, n: u64) -> Reply {
        match &mut self {
            Reply::Success(s) => s.thoughts_tokens = Some(n),
            other => panic!("thoughts_tokens() applies to successes, not {other:?}"),
        }
        self
    }

    /// Replaces `STOP` as the finish reason.
    pub fn finish_reason(mut self, reason: &str) -> Reply {
        match &mut self {
            Reply::Success(s) => s.finish_reason = reason.to_string(),
            other => panic!("finish_reason() applies to successes, not {other:?}"),
        }
        self
    }

    /// Pause `d` between stream events.
    pub fn event_delay(mut self, d: Duration) -> Reply {
        match &mut self {
            Reply::Success(s) => s.event_delay = d,
            Reply::Stream { event_delay, .. } => *event_delay = d,
            other => panic!("event_delay() applies to streams, not {other:?}"),
        }
        self
    }

    /// Adds a response header to a JSON reply (e.g. `retry-after`).
    pub fn with_header(mut self, name: &str, value: &str) -> Reply {
        match &mut self {
            Reply::Json { headers, .. } => headers.push((name.into(), value.into())),
            other => panic!("with_header() applies to JSON replies, not {other:?}"),
        }
        self
    }

    /// The JSON body of a JSON reply (error presets included).
    pub fn body(&self) -> &Value {
        match self {
            Reply::Json { body, .. } => body,
            other => panic!("body() applies to JSON replies, not {other:?}"),
        }
    }
}
