//! Gemini stream events → Anthropic Messages SSE events.
//!
//! The event order the anthropic SDKs expect: `message_start` and a `ping` first (with the
//! first upstream event), then per content block `content_block_start`, its deltas
//! (`text_delta`, `thinking_delta`, `signature_delta`, `input_json_delta`) and
//! `content_block_stop`, and at the upstream's clean end `message_delta` (stop reason, usage)
//! and `message_stop`. Each event is `event: <type>\ndata: <json>\n\n`. A thought signature
//! rides in a `thinking` block just before the block of its part (as in `response`). Nothing
//! is buffered: what an upstream event carries leaves with it; only a tool call's arguments
//! wait for their block, which Gemini sends whole.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use super::response::{empty_input, is_answer, stop_reason, tool_use_id, usage};
use crate::translate::chat::response::parse;
use crate::translate::gemini::UsageMetadata;
use crate::translate::{ResponseCtx, TranslateError};

/// Which kind of block is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Open {
    Text,
    Thinking,
}

pub struct StreamTranslator {
    ctx: ResponseCtx,
    started: bool,
    /// The open block (text or thinking); tool_use blocks open and close in one go.
    open: Option<Open>,
    /// The index the next block gets.
    next: u32,
    calls: u32,
    finish: Option<String>,
    usage: Option<UsageMetadata>,
    answered: bool,
    /// Gemini blocked the prompt (`promptFeedback.blockReason`): a `refusal`.
    blocked: bool,
    done: bool,
    signatures: Vec<(String, String)>,
}

/// A `content_block_delta`'s delta: `text_delta`, `thinking_delta`, …
#[derive(Serialize)]
#[serde(tag = "type")]
enum Delta<'a> {
    #[serde(rename = "text_delta")]
    Text { text: &'a str },
    #[serde(rename = "thinking_delta")]
    Thinking { thinking: &'a str },
    #[serde(rename = "signature_delta")]
    Signature { signature: &'a str },
    #[serde(rename = "input_json_delta")]
    InputJson { partial_json: &'a str },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StartBlock<'a> {
    Text {
        text: &'static str,
    },
    Thinking {
        thinking: &'static str,
        signature: &'static str,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
}

impl StreamTranslator {
    pub fn new(ctx: ResponseCtx) -> Self {
        StreamTranslator {
            ctx,
            started: false,
            open: None,
            next: 0,
            calls: 0,
            finish: None,
            usage: None,
            answered: false,
            blocked: false,
            done: false,
            signatures: Vec::new(),
        }
    }

    /// One upstream event's data (a whole `GenerateContentResponse`): zero or more complete
    /// Anthropic SSE events, concatenated.
    pub fn on_event(&mut self, data: &[u8]) -> Result<Bytes, TranslateError> {
        let mut resp = parse(data)?;
        self.ctx.tool_names.restore(&mut resp);
        if resp.usage_metadata.is_some() {
            self.usage = resp.usage_metadata;
        }
        if resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some())
        {
            self.blocked = true;
        }
        let mut out = Vec::new();
        self.start(&mut out);
        let Some(cand) = resp.candidates.into_iter().next() else {
            return Ok(Bytes::from(out));
        };
        for part in cand.content.map(|c| c.parts).unwrap_or_default() {
            let signature = part.thought_signature.as_deref().filter(|s| !s.is_empty());
            if part.thought == Some(true) {
                let text = part.text.as_deref().unwrap_or("");
                self.open_block(&mut out, Open::Thinking);
                if !text.is_empty() {
                    event(
                        &mut out,
                        "content_block_delta",
                        &DeltaEvent::new(self.next - 1, Delta::Thinking { thinking: text }),
                    );
                }
                if let Some(sig) = signature {
                    self.sign_and_close(&mut out, sig);
                }
                continue;
            }
            if part.function_call.is_some() && self.ctx.one_call && self.calls > 0 {
                // `disable_parallel_tool_use`: Gemini cannot be told, so later calls are dropped.
                continue;
            }
            if let Some(call) = &part.function_call {
                let id = tool_use_id(&self.ctx, call.id.as_deref(), self.calls);
                self.calls += 1;
                self.answered = true;
                if let Some(sig) = signature {
                    self.signatures.push((id.clone(), sig.to_string()));
                    self.open_block(&mut out, Open::Thinking);
                    self.sign_and_close(&mut out, sig);
                }
                self.close(&mut out);
                let index = self.next;
                self.next += 1;
                event(
                    &mut out,
                    "content_block_start",
                    &StartEvent {
                        kind: "content_block_start",
                        index,
                        content_block: StartBlock::ToolUse {
                            id: &id,
                            name: &call.name,
                            input: empty_input(),
                        },
                    },
                );
                let args = call
                    .args
                    .filter(|a| a.get().starts_with('{'))
                    .map_or("{}", |a| a.get());
                event(
                    &mut out,
                    "content_block_delta",
                    &DeltaEvent::new(index, Delta::InputJson { partial_json: args }),
                );
                stop_event(&mut out, index);
                continue;
            }
            let Some(text) = part.text.as_deref().filter(|t| !t.is_empty()) else {
                continue;
            };
            self.answered = true;
            if self.open != Some(Open::Text) {
                if let Some(sig) = signature {
                    self.open_block(&mut out, Open::Thinking);
                    self.sign_and_close(&mut out, sig);
                }
            }
            self.open_block(&mut out, Open::Text);
            event(
                &mut out,
                "content_block_delta",
                &DeltaEvent::new(self.next - 1, Delta::Text { text }),
            );
        }
        if let Some(reason) = cand.finish_reason {
            self.finish = Some(reason.into_owned());
        }
        Ok(Bytes::from(out))
    }

    /// The upstream ended cleanly: the open block's stop, `message_delta` and `message_stop`.
    pub fn finish(&mut self) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        self.done = true;
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out);
        #[derive(Serialize)]
        struct MessageDelta {
            stop_reason: &'static str,
            stop_sequence: Option<()>,
        }
        #[derive(Serialize)]
        struct Event {
            #[serde(rename = "type")]
            kind: &'static str,
            delta: MessageDelta,
            usage: super::response::Usage,
        }
        event(
            &mut out,
            "message_delta",
            &Event {
                kind: "message_delta",
                delta: MessageDelta {
                    stop_reason: self.stop_reason(),
                    stop_sequence: None,
                },
                usage: usage(&self.usage.unwrap_or_default()),
            },
        );
        event(
            &mut out,
            "message_stop",
            &serde_json::json!({"type": "message_stop"}),
        );
        Bytes::from(out)
    }

    /// The stream is an answer to close normally: some text or tool call went out, or it
    /// stops at the token limit or on a refusal (`response::is_answer`).
    pub fn is_answer(&self) -> bool {
        is_answer(self.answered, self.stop_reason())
    }

    fn stop_reason(&self) -> &'static str {
        stop_reason(self.finish.as_deref(), self.calls > 0, self.blocked)
    }

    /// `(tool_use id, thought signature)` pairs seen since the last call.
    pub fn take_signatures(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.signatures)
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        #[derive(Serialize)]
        struct Message<'a> {
            id: &'a str,
            #[serde(rename = "type")]
            kind: &'static str,
            role: &'static str,
            model: &'a str,
            content: [(); 0],
            stop_reason: Option<()>,
            stop_sequence: Option<()>,
            usage: super::response::Usage,
        }
        #[derive(Serialize)]
        struct Event<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            message: Message<'a>,
        }
        let mut first = usage(&self.usage.unwrap_or_default());
        first.output_tokens = 0;
        event(
            out,
            "message_start",
            &Event {
                kind: "message_start",
                message: Message {
                    id: &self.ctx.id,
                    kind: "message",
                    role: "assistant",
                    model: &self.ctx.model,
                    content: [],
                    stop_reason: None,
                    stop_sequence: None,
                    usage: first,
                },
            },
        );
        event(out, "ping", &serde_json::json!({"type": "ping"}));
    }

    /// Makes `kind` the open block, closing another one first.
    fn open_block(&mut self, out: &mut Vec<u8>, kind: Open) {
        if self.open == Some(kind) {
            return;
        }
        self.close(out);
        let index = self.next;
        self.next += 1;
        self.open = Some(kind);
        let content_block = match kind {
            Open::Text => StartBlock::Text { text: "" },
            Open::Thinking => StartBlock::Thinking {
                thinking: "",
                signature: "",
            },
        };
        event(
            out,
            "content_block_start",
            &StartEvent {
                kind: "content_block_start",
                index,
                content_block,
            },
        );
    }

    /// The open thinking block gets `sig` and closes.
    fn sign_and_close(&mut self, out: &mut Vec<u8>, sig: &str) {
        let signature = super::response::issued(sig);
        event(
            out,
            "content_block_delta",
            &DeltaEvent::new(
                self.next - 1,
                Delta::Signature {
                    signature: &signature,
                },
            ),
        );
        self.close(out);
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            stop_event(out, self.next - 1);
        }
    }
}

#[derive(Serialize)]
struct StartEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    content_block: StartBlock<'a>,
}

#[derive(Serialize)]
struct DeltaEvent<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    index: u32,
    delta: Delta<'a>,
}

impl<'a> DeltaEvent<'a> {
    fn new(index: u32, delta: Delta<'a>) -> Self {
        DeltaEvent {
            kind: "content_block_delta",
            index,
            delta,
        }
    }
}

fn stop_event(out: &mut Vec<u8>, index: u32) {
    #[derive(Serialize)]
    struct Stop {
        #[serde(rename = "type")]
        kind: &'static str,
        index: u32,
    }
    let stop = Stop {
        kind: "content_block_stop",
        index,
    };
    event(out, "content_block_stop", &stop);
}

/// One SSE event: `event: <name>\ndata: <json>\n\n`.
fn event(out: &mut Vec<u8>, name: &str, data: &impl Serialize) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    // Strings, numbers and raw JSON always serialise.
    let _ = serde_json::to_writer(&mut *out, data);
    out.extend_from_slice(b"\n\n");
}

/// A final `error` event with Anthropic's error body (built by `error.rs`).
pub fn error_event(body: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: error\ndata: {body}\n\n"))
}
