//! Server-sent events: an incremental parser for upstream (Gemini) streams.
//!
//! It owns framing only: splitting bytes into events per the SSE spec (any chunk split, `\n`,
//! `\r\n` or `\r` line ends, multi-line `data`), and recognising the bare JSON that Google sends
//! for errors without `data:` framing. It must not interpret event payloads (that is
//! `translate`'s job) and does no I/O. Work per byte is constant: nothing is rescanned.

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

    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseItem> {
        let mut out = Vec::new();
        let mut rest = chunk;
        // An empty chunk (transports deliver them) must not forget a pending `\r`.
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (head, tail) = rest.split_at(pos);
            let is_cr = tail[0] == b'\r';
            rest = &tail[1..];
            if is_cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
            if self.line.is_empty() {
                self.on_line(head, &mut out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                self.on_line(&line, &mut out);
                line.clear();
                // Keep the allocation for the next split line.
                self.line = line;
            }
        }
        self.line.extend_from_slice(rest);
        out
    }

    /// End of stream: whatever complete item remains.
    pub fn finish(&mut self) -> Vec<SseItem> {
        let mut out = Vec::new();
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.on_line(&line, &mut out);
        }
        self.after_cr = false;
        if let Some(bare) = self.bare.take() {
            // Unbalanced JSON is still worth handing over: the caller reports it as unreadable.
            if !bare.text.iter().all(u8::is_ascii_whitespace) {
                out.push(SseItem::Bare(bare.text));
            }
        }
        self.dispatch(&mut out);
        out
    }

    fn dispatch(&mut self, out: &mut Vec<SseItem>) {
        if self.has_data {
            self.has_data = false;
            out.push(SseItem::Data(std::mem::take(&mut self.data)));
        }
    }

    fn on_line(&mut self, line: &[u8], out: &mut Vec<SseItem>) {
        if let Some(bare) = &mut self.bare {
            if bare.feed(line) {
                if let Some(done) = self.bare.take() {
                    out.push(SseItem::Bare(done.text));
                }
            }
            return;
        }
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &line[line.len()..]),
        };
        match field {
            b"data" => {
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" | b"id" | b"retry" => {}
            _ => {
                let start = line.iter().position(|b| !b.is_ascii_whitespace());
                if let Some(i) = start.filter(|&i| matches!(line[i], b'{' | b'[')) {
                    // An unframed JSON value ends any event in progress: it is not its data.
                    self.dispatch(out);
                    let mut bare = Bare::default();
                    if bare.feed(&line[i..]) {
                        out.push(SseItem::Bare(bare.text));
                    } else {
                        self.bare = Some(bare);
                    }
                }
                // Other unknown fields are ignored, as the SSE spec says.
            }
        }
    }
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
}
