//! Server-sent events: an incremental parser for upstream (Gemini) streams.
//!
//! It owns framing only: splitting bytes into events per the SSE spec (any chunk split, `\n`,
//! `\r\n` or `\r` line ends, multi-line `data`), and recognising the bare JSON that Google sends
//! for errors without `data:` framing. It must not interpret event payloads (that is
//! `translate`'s job) and does no I/O. Work per byte is constant: nothing is rescanned. Items
//! are handed to a callback as they complete (`push_each`): an event whose one `data` line lies
//! whole in the chunk is a slice of it, copied nowhere; only an event spanning chunks, with
//! several `data` lines, or bare JSON is assembled in the parser's buffers.

/// One item from an upstream stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SseItem {
    /// The data of one event (multi-line data joined with `\n`).
    Data(Vec<u8>),
    /// JSON that arrived without SSE framing (Google sends errors this way).
    Bare(Vec<u8>),
}

/// One item as [`SseParser::push_each`] hands it out: borrowed from the chunk when the event
/// lay whole in it, else from the parser's buffer. Valid until the next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event<'a> {
    /// The data of one event (multi-line data joined with `\n`).
    Data(&'a [u8]),
    /// JSON that arrived without SSE framing.
    Bare(&'a [u8]),
}

impl<'a> Event<'a> {
    /// The item's bytes, whichever kind it is.
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Event::Data(b) | Event::Bare(b) => b,
        }
    }

    /// The item, owned.
    pub fn to_item(self) -> SseItem {
        match self {
            Event::Data(b) => SseItem::Data(b.to_vec()),
            Event::Bare(b) => SseItem::Bare(b.to_vec()),
        }
    }
}

/// Incremental SSE parser: feed it chunks as they arrive, in any split.
#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line, when a chunk ended inside it.
    line: Vec<u8>,
    /// The previous chunk ended with `\r`: a leading `\n` in the next one belongs to it.
    after_cr: bool,
    /// Data of the event being built; `has_data` distinguishes "no data line" from "empty data".
    data: Vec<u8>,
    has_data: bool,
    /// Unframed JSON being collected until its brackets balance.
    bare: Option<Bare>,
}

#[derive(Debug, Default)]
struct Bare {
    text: Vec<u8>,
    depth: JsonDepth,
}

impl Bare {
    /// Adds one line and tells whether the JSON value is now complete.
    fn feed(&mut self, line: &[u8]) -> bool {
        if !self.text.is_empty() {
            self.text.push(b'\n');
        }
        self.text.extend_from_slice(line);
        for &b in line {
            self.depth.step(b);
        }
        self.depth.depth() == 0
    }
}

/// The bracket depth of JSON text read byte by byte, without parsing it: brackets inside
/// strings (escapes included) do not count, and a stray closer never takes it below zero.
#[derive(Debug, Default)]
pub(crate) struct JsonDepth {
    depth: u32,
    in_string: bool,
    escaped: bool,
}

/// What one byte did to a [`JsonDepth`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bracket {
    Open,
    Close,
    None,
}

impl JsonDepth {
    pub(crate) fn step(&mut self, b: u8) -> Bracket {
        if self.in_string {
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
            }
            return Bracket::None;
        }
        match b {
            b'"' => {
                self.in_string = true;
                Bracket::None
            }
            b'{' | b'[' => {
                self.depth += 1;
                Bracket::Open
            }
            b'}' | b']' => {
                self.depth = self.depth.saturating_sub(1);
                Bracket::Close
            }
            _ => Bracket::None,
        }
    }

    pub(crate) fn depth(&self) -> u32 {
        self.depth
    }
}

impl SseParser {
    pub fn new() -> Self {
        SseParser::default()
    }

    /// Feeds one chunk and returns its complete items, owned (a convenience over
    /// [`push_each`](Self::push_each), which copies nothing).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        self.push_each(chunk, |event| out.push(event.to_item()));
        out
    }

    /// End of stream: whatever complete item remains, owned.
    pub fn finish(&mut self) -> Vec<SseItem> {
        let mut out = Vec::new();
        self.finish_each(|event| out.push(event.to_item()));
        out
    }

    /// Feeds one chunk, handing each item it completes to `emit` as it is found. An event
    /// whose single `data` line lies whole in `chunk` is a slice of it (no copy); only an event
    /// that spans chunks or has several `data` lines, and bare JSON, are assembled in the
    /// parser's buffers.
    pub fn push_each(&mut self, chunk: &[u8], mut emit: impl FnMut(Event<'_>)) {
        let mut pos = 0;
        // An empty chunk (transports deliver them) must not forget a pending `\r`.
        if self.after_cr && !chunk.is_empty() {
            self.after_cr = false;
            if chunk[0] == b'\n' {
                pos = 1;
            }
        }
        // The data of the event being built while it is still a slice of `chunk`.
        let mut pending = None;
        while let Some(i) = memchr::memchr2(b'\n', b'\r', &chunk[pos..]) {
            let end = pos + i;
            let mut next = end + 1;
            if chunk[end] == b'\r' {
                match chunk.get(next) {
                    Some(b'\n') => next += 1,
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                let mut at = Here {
                    chunk,
                    line_at: Some(pos),
                    pending: &mut pending,
                };
                self.on_line(&chunk[pos..end], &mut at, &mut emit);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[pos..end]);
                let mut at = Here {
                    chunk,
                    line_at: None,
                    pending: &mut pending,
                };
                self.on_line(&line, &mut at, &mut emit);
                line.clear();
                // Keep the allocation for the next split line.
                self.line = line;
            }
            pos = next;
        }
        // The event goes on in the next chunk: its data moves to the parser's buffer.
        if let Some(range) = pending {
            self.data.extend_from_slice(&chunk[range]);
        }
        self.line.extend_from_slice(&chunk[pos..]);
    }

    /// End of stream: whatever complete item remains, handed to `emit`.
    pub fn finish_each(&mut self, mut emit: impl FnMut(Event<'_>)) {
        let mut pending = None;
        let mut at = Here {
            chunk: &[],
            line_at: None,
            pending: &mut pending,
        };
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut at, &mut emit);
        }
        self.after_cr = false;
        if let Some(bare) = self.bare.take() {
            // Unbalanced JSON is still worth handing over: the caller reports it as unreadable.
            if !bare.text.iter().all(u8::is_ascii_whitespace) {
                emit(Event::Bare(&bare.text));
            }
        }
        self.dispatch(&mut at, &mut emit);
    }

    fn dispatch(&mut self, at: &mut Here<'_, '_>, emit: &mut impl FnMut(Event<'_>)) {
        if !self.has_data {
            return;
        }
        self.has_data = false;
        match at.pending.take() {
            Some(range) => emit(Event::Data(&at.chunk[range])),
            None => {
                emit(Event::Data(&self.data));
                if self.data.capacity() > KEEP_BUFFER {
                    self.data = Vec::new();
                } else {
                    self.data.clear();
                }
            }
        }
    }

    fn on_line(&mut self, line: &[u8], at: &mut Here<'_, '_>, emit: &mut impl FnMut(Event<'_>)) {
        if let Some(bare) = &mut self.bare {
            if bare.feed(line) {
                if let Some(done) = self.bare.take() {
                    emit(Event::Bare(&done.text));
                }
            }
            return;
        }
        if line.is_empty() {
            self.dispatch(at, emit);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    if let Some(range) = at.pending.take() {
                        self.data.extend_from_slice(&at.chunk[range]);
                    }
                    self.data.push(b'\n');
                    self.data.extend_from_slice(value);
                } else if let Some(line_at) = at.line_at {
                    // `value` ends the line: where it starts in the chunk follows.
                    let end = line_at + line.len();
                    *at.pending = Some(end - value.len()..end);
                } else {
                    self.data.extend_from_slice(value);
                }
                self.has_data = true;
            }
            b"event" | b"id" | b"retry" => {}
            _ => {
                let start = line.iter().position(|b| !b.is_ascii_whitespace());
                if let Some(i) = start.filter(|&i| matches!(line[i], b'{' | b'[')) {
                    // An unframed JSON value ends any event in progress: it is not its data.
                    self.dispatch(at, emit);
                    let mut bare = Bare::default();
                    if bare.feed(&line[i..]) {
                        emit(Event::Bare(&bare.text));
                    } else {
                        self.bare = Some(bare);
                    }
                }
                // Other unknown fields are ignored, as the SSE spec says.
            }
        }
    }
}

/// A data buffer grown past this by one large event is let go after it, not kept for the
/// stream's life.
const KEEP_BUFFER: usize = 64 * 1024;

/// Where the line being read lies: its offset in `chunk` when it lies whole there (`None` for
/// a line joined across chunks, or at `finish`), and the current event's data while it is
/// still a slice of `chunk`.
struct Here<'c, 'p> {
    chunk: &'c [u8],
    line_at: Option<usize>,
    pending: &'p mut Option<std::ops::Range<usize>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> SseItem {
        SseItem::Data(s.as_bytes().to_vec())
    }
    fn b(s: &str) -> SseItem {
        SseItem::Bare(s.as_bytes().to_vec())
    }

    /// Feeds `input` whole, then in every two-way split, then byte by byte: all must agree.
    fn check(input: &str, expected: &[SseItem]) {
        let bytes = input.as_bytes();
        let run = |parts: &[&[u8]]| {
            let mut p = SseParser::new();
            let mut got = Vec::new();
            for part in parts {
                got.extend(p.push(part));
            }
            got.extend(p.finish());
            got
        };
        assert_eq!(run(&[bytes]), expected, "whole input {input:?}");
        for i in 0..=bytes.len() {
            let (a, c) = bytes.split_at(i);
            assert_eq!(run(&[a, c]), expected, "split at {i} of {input:?}");
        }
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&singles), expected, "byte by byte {input:?}");
    }

    #[test]
    fn framing() {
        check("data: {\"a\":1}\n\n", &[d("{\"a\":1}")]);
        check("data:{\"a\":1}\r\n\r\n", &[d("{\"a\":1}")]);
        check("data: x\r\rdata: y\r\r", &[d("x"), d("y")]);
        check("data: a\ndata: b\n\n", &[d("a\nb")]);
        check("data:  two spaces\n\n", &[d(" two spaces")]);
        check("data\n\n", &[d("")]);
        check(
            ": keep-alive\n\nevent: message\nid: 7\nretry: 10\ndata: x\n\n",
            &[d("x")],
        );
        check("data: last without blank", &[d("last without blank")]);
        check("data: last\r\n", &[d("last")]);
        check("\n\n\r\n", &[]);
        check("data: a\r\n\r\ndata: b\r\n\r\n", &[d("a"), d("b")]);
    }

    #[test]
    fn bare_json() {
        check(
            "{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"a } b\"\n  }\n}\n",
            &[b(
                "{\n  \"error\": {\n    \"code\": 429,\n    \"message\": \"a } b\"\n  }\n}",
            )],
        );
        check(
            "[{\r\n  \"error\": {\"code\": 500}\r\n}\r\n]",
            &[b("[{\n  \"error\": {\"code\": 500}\n}\n]")],
        );
        check(
            "data: x\n\n{\"error\":{\"message\":\"q\\\"}\"}}\ndata: y\n\n",
            &[d("x"), b("{\"error\":{\"message\":\"q\\\"}\"}}"), d("y")],
        );
        check("{\"error\": {\"code\": 5", &[b("{\"error\": {\"code\": 5")]);
        check("garbage line\n\n", &[]);
    }

    /// Every three-way split of `input` (empty parts included) gives the whole input's items.
    fn check_three_way(input: &[u8]) {
        let whole = {
            let mut p = SseParser::new();
            let mut got = p.push(input);
            got.extend(p.finish());
            got
        };
        for i in 0..=input.len() {
            for j in i..=input.len() {
                let mut p = SseParser::new();
                let mut got = Vec::new();
                for part in [&input[..i], &input[i..j], &input[j..]] {
                    got.extend(p.push(part));
                }
                got.extend(p.finish());
                assert_eq!(got, whole, "split at {i}, {j}");
            }
        }
    }

    #[test]
    fn three_way_splits() {
        check_three_way(
            b"data: a\r\n\r\ndata: b\ndata: c\n\n: c\r{\"error\":\r\n{}}\rdata:d\r\rdata: e",
        );
        check_three_way(b"event: x\ndata: {\"a\":\"\\\"\"}\r\n\r\n\r\ndata\n\n[1,\n2]\n");
    }

    /// Events that lie whole in a chunk are slices of it; the rest come from the parser.
    #[test]
    fn whole_events_are_borrowed_from_the_chunk() {
        let chunk: &[u8] = b"data: one\r\n\r\nid: 1\ndata: two\n\ndata: a\ndata: b\n\ndata: spans";
        let range = chunk.as_ptr_range();
        let mut p = SseParser::new();
        let mut got = Vec::new();
        p.push_each(chunk, |event| {
            let borrowed = range.contains(&event.bytes().as_ptr());
            got.push((event.to_item(), borrowed));
        });
        assert_eq!(
            got,
            vec![(d("one"), true), (d("two"), true), (d("a\nb"), false)]
        );
        let mut tail = Vec::new();
        p.push_each(b" on\n\n", |event| tail.push(event.to_item()));
        assert_eq!(tail, vec![d("spans on")]);
        // An empty value at the chunk's end, and an event cut right after its data line.
        let mut p = SseParser::new();
        let mut got = p.push(b"data:\n\ndata: x\n");
        got.extend(p.push(b"\n"));
        assert_eq!(got, vec![d(""), d("x")]);
    }

    /// A huge event is assembled across many chunks; the buffer is let go after it.
    #[test]
    fn huge_event_across_chunks() {
        let big = "x".repeat(3 * KEEP_BUFFER);
        let input = format!("data: {big}\r\n\r\ndata: small\r\n\r\n");
        let mut p = SseParser::new();
        let mut got = Vec::new();
        for part in input.as_bytes().chunks(1000) {
            got.extend(p.push(part));
        }
        got.extend(p.finish());
        assert_eq!(got, vec![d(&big), d("small")]);
        assert!(p.data.capacity() <= KEEP_BUFFER);
    }
}
