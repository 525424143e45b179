//! Server-sent events: an incremental parser for upstream streams. (Stub.)

/// One item from an upstream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// The data of one event (multi-line data joined with `\n`).
    Data(Vec<u8>),
    /// JSON that arrived without SSE framing (Google sends errors this way).
    Bare(Vec<u8>),
}

/// Incremental SSE parser: feed it chunks as they arrive, in any split.
#[derive(Debug, Default)]
pub struct SseParser {}

impl SseParser {
    pub fn new() -> Self {
        SseParser {}
    }

    pub fn push(&mut self, _chunk: &[u8]) -> Vec<SseItem> {
        Vec::new()
    }

    /// End of stream: whatever complete item remains.
    pub fn finish(&mut self) -> Vec<SseItem> {
        Vec::new()
    }
}
