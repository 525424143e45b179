//! Gemini stream events → the Responses event sequence.
//!
//! `response.created` and `response.in_progress` open the stream; then one item at a time,
//! each opened (`output_item.added`, its part or summary part), filled (text and summary
//! deltas; a function call's arguments in one delta) and closed (`….done`,
//! `output_item.done`); `response.completed` (or `response.incomplete`) carries the whole
//! response with usage. Every event has the next `sequence_number`; output indexes count
//! items. Nothing is held back: an event's text goes out with it. A thought signature arrives
//! on its call's part, so the reasoning item open at that point carries it in
//! `encrypted_content` (or a bare reasoning item is emitted just before the call).

use bytes::Bytes;
use serde_json::{json, Value};

use super::super::gemini::UsageMetadata;
use super::super::TranslateError;
use super::{encode_signatures, incomplete_reason, usage, Ctx};
use crate::translate::chat::response::{parse, token_logprobs};

enum Open {
    None,
    Reasoning {
        id: String,
        text: String,
    },
    /// `logprobs`: the text's tokens so far (empty unless asked for).
    Message {
        id: String,
        text: String,
        logprobs: Vec<Value>,
    },
}

pub struct ResponsesStream {
    ctx: Ctx,
    seq: u64,
    started: bool,
    open: Open,
    /// Closed items, stored form.
    output: Vec<Value>,
    usage: Option<UsageMetadata>,
    finish: Option<String>,
    blocked: bool,
    answered: bool,
    calls: usize,
    signatures: Vec<(String, String)>,
    done: bool,
    /// The completed output, once, for the response store.
    finished: Option<(Value, Vec<Value>)>,
}

impl ResponsesStream {
    pub fn new(ctx: Ctx) -> Self {
        ResponsesStream {
            ctx,
            seq: 0,
            started: false,
            open: Open::None,
            output: Vec::new(),
            usage: None,
            finish: None,
            blocked: false,
            answered: false,
            calls: 0,
            signatures: Vec::new(),
            done: false,
            finished: None,
        }
    }

    fn emit(&mut self, out: &mut Vec<u8>, kind: &str, mut event: Value) {
        event["type"] = json!(kind);
        event["sequence_number"] = json!(self.seq);
        self.seq += 1;
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // A `Value` always serialises.
        let _ = serde_json::to_writer(&mut *out, &event);
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        let response = self.ctx.response("in_progress", Vec::new(), None);
        self.emit(out, "response.created", json!({"response": response}));
        let response = self.ctx.response("in_progress", Vec::new(), None);
        self.emit(out, "response.in_progress", json!({"response": response}));
    }

    fn index(&self) -> usize {
        self.output.len()
    }

    /// Closes the open item; a reasoning item takes `signatures` as its encrypted content.
    fn close(&mut self, out: &mut Vec<u8>, signatures: &[(String, String)]) {
        let index = self.index();
        match std::mem::replace(&mut self.open, Open::None) {
            Open::None => {}
            Open::Reasoning { id, text } => {
                let part = json!({"type": "summary_text", "text": text});
                self.emit(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({
                    "item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                self.emit(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({
                    "item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                );
                let mut item = json!({"id": id, "type": "reasoning", "summary": [part]});
                if !signatures.is_empty() {
                    item["encrypted_content"] = json!(encode_signatures(signatures));
                }
                self.done_item(out, item);
            }
            Open::Message { id, text, logprobs } => {
                let part = json!({"type": "output_text", "text": text, "annotations": [],
                                  "logprobs": logprobs});
                self.emit(
                    out,
                    "response.output_text.done",
                    json!({
                    "item_id": id, "output_index": index, "content_index": 0, "text": text,
                    "logprobs": logprobs}),
                );
                self.emit(
                    out,
                    "response.content_part.done",
                    json!({
                    "item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
                let status = if self.cut_short().is_some() {
                    "incomplete"
                } else {
                    "completed"
                };
                let item = json!({"id": id, "type": "message", "role": "assistant",
                                  "status": status, "content": [part]});
                self.done_item(out, item);
            }
        }
    }

    fn done_item(&mut self, out: &mut Vec<u8>, item: Value) {
        let index = self.index();
        let client = self.ctx.for_client(&item);
        self.emit(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": client}),
        );
        self.output.push(item);
    }

    fn thought(&mut self, out: &mut Vec<u8>, delta: &str) {
        if !matches!(self.open, Open::Reasoning { .. }) {
            self.close(out, &[]);
            let id = self.ctx.item_id("rs", self.index());
            let index = self.index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index,
                "item": {"id": id, "type": "reasoning", "summary": []}}),
            );
            self.emit(
                out,
                "response.reasoning_summary_part.added",
                json!({
                "item_id": id, "output_index": index, "summary_index": 0,
                "part": {"type": "summary_text", "text": ""}}),
            );
            self.open = Open::Reasoning {
                id,
                text: String::new(),
            };
        }
        let index = self.index();
        if let Open::Reasoning { id, text } = &mut self.open {
            text.push_str(delta);
            let event = json!({"item_id": id, "output_index": index, "summary_index": 0,
                               "delta": delta});
            self.emit(out, "response.reasoning_summary_text.delta", event);
        }
    }

    /// Answer text; `logprobs`: its tokens' (the event's, on its first text part).
    fn text(&mut self, out: &mut Vec<u8>, delta: &str, logprobs: Vec<Value>) {
        if !matches!(self.open, Open::Message { .. }) {
            self.close(out, &[]);
            let id = self.ctx.item_id("msg", self.index());
            let index = self.index();
            self.emit(
                out,
                "response.output_item.added",
                json!({"output_index": index,
                "item": {"id": id, "type": "message", "role": "assistant",
                         "status": "in_progress", "content": []}}),
            );
            self.emit(
                out,
                "response.content_part.added",
                json!({
                "item_id": id, "output_index": index, "content_index": 0,
                "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            );
            self.open = Open::Message {
                id,
                text: String::new(),
                logprobs: Vec::new(),
            };
        }
        let index = self.index();
        if let Open::Message {
            id,
            text,
            logprobs: all,
        } = &mut self.open
        {
            text.push_str(delta);
            all.extend(logprobs.iter().cloned());
            let event = json!({"item_id": id, "output_index": index, "content_index": 0,
                               "delta": delta, "logprobs": logprobs});
            self.emit(out, "response.output_text.delta", event);
        }
    }

    fn call(
        &mut self,
        out: &mut Vec<u8>,
        call_id: String,
        name: &str,
        arguments: &str,
        signature: Option<String>,
    ) {
        let signed: Vec<(String, String)> = signature
            .map(|s| (call_id.clone(), s))
            .into_iter()
            .collect();
        self.signatures.extend(signed.iter().cloned());
        if matches!(self.open, Open::Reasoning { .. }) {
            self.close(out, &signed);
        } else {
            self.close(out, &[]);
            if !signed.is_empty() {
                let id = self.ctx.item_id("rs", self.index());
                let index = self.index();
                let item = json!({"id": id, "type": "reasoning", "summary": [],
                                  "encrypted_content": encode_signatures(&signed)});
                let client = self.ctx.for_client(&item);
                self.emit(
                    out,
                    "response.output_item.added",
                    json!({"output_index": index,
                                                                     "item": client}),
                );
                self.done_item(out, item);
            }
        }
        let index = self.index();
        let item = self.ctx.tool_call(index, &call_id, name, arguments);
        let id = item["id"].clone();
        let mut added = item.clone();
        added["status"] = json!("in_progress");
        let (delta, done) = if self.ctx.is_custom(name) {
            added["input"] = json!("");
            let input = item["input"].clone();
            (
                ("response.custom_tool_call_input.delta", input.clone()),
                (
                    "response.custom_tool_call_input.done",
                    json!({
                    "item_id": id, "output_index": index, "input": input}),
                ),
            )
        } else {
            added["arguments"] = json!("");
            (
                ("response.function_call_arguments.delta", json!(arguments)),
                (
                    "response.function_call_arguments.done",
                    // The name as the item says it (a namespaced tool's own name).
                    json!({
                    "item_id": id, "output_index": index, "arguments": arguments,
                    "name": item["name"]}),
                ),
            )
        };
        let added = json!({"output_index": index, "item": added});
        self.emit(out, "response.output_item.added", added);
        let delta_event = json!({"item_id": id, "output_index": index, "delta": delta.1});
        self.emit(out, delta.0, delta_event);
        self.emit(out, done.0, done.1);
        self.done_item(out, item);
        self.answered = true;
    }

    /// One upstream event's data (a whole `GenerateContentResponse` JSON): zero or more
    /// Responses SSE events, concatenated.
    pub fn on_event(&mut self, data: &[u8]) -> Result<Bytes, TranslateError> {
        let mut resp = parse(data)?;
        self.ctx.tool_names.restore(&mut resp);
        if resp.usage_metadata.is_some() {
            self.usage = resp.usage_metadata;
        }
        self.blocked |= resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
        let mut out = Vec::new();
        self.start(&mut out);
        if let Some(cand) = resp.candidates.into_iter().next() {
            if let Some(f) = cand.finish_reason {
                self.finish = Some(f.into_owned());
            }
            let mut logprobs = Some(token_logprobs(cand.logprobs_result));
            for part in cand.content.map(|c| c.parts).unwrap_or_default() {
                if let Some(call) = part.function_call {
                    let call_id = match call.id {
                        Some(id) if !id.is_empty() => id.into_owned(),
                        _ => self.ctx.call_id(self.calls),
                    };
                    self.calls += 1;
                    let arguments = call.args.map_or("{}", |a| a.get()).to_owned();
                    let signature = part.thought_signature.map(|s| s.into_owned());
                    self.call(&mut out, call_id, &call.name, &arguments, signature);
                } else if let Some(t) = part.text.filter(|t| !t.is_empty()) {
                    if part.thought == Some(true) {
                        self.thought(&mut out, &t);
                    } else {
                        self.answered = true;
                        self.text(&mut out, &t, logprobs.take().unwrap_or_default());
                    }
                }
            }
        }
        Ok(Bytes::from(out))
    }

    fn cut_short(&self) -> Option<&'static str> {
        self.finish
            .as_deref()
            .and_then(incomplete_reason)
            .or(self.blocked.then_some("content_filter"))
    }

    /// The upstream ended cleanly: open items closed, then `response.completed` (or
    /// `response.incomplete` when Gemini cut the answer short). No text and no call, and not
    /// cut short: `EmptyAnswer`, for the relay's error event.
    pub fn finish(&mut self) -> Result<Bytes, TranslateError> {
        if self.done {
            return Ok(Bytes::new());
        }
        let cut_short = self.cut_short();
        if !self.answered && cut_short.is_none() {
            return Err(TranslateError::EmptyAnswer {
                message: "Gemini ended the stream without an answer (blocked, thoughts only, or \
                          the token limit was reached before any text)"
                    .into(),
            });
        }
        self.done = true;
        let mut out = Vec::new();
        self.start(&mut out);
        self.close(&mut out, &[]);
        let client: Vec<Value> = self.output.iter().map(|i| self.ctx.for_client(i)).collect();
        let (status, kind) = match cut_short {
            Some(_) => ("incomplete", "response.incomplete"),
            None => ("completed", "response.completed"),
        };
        let mut response =
            self.ctx
                .response(status, client, Some(usage(&self.usage.unwrap_or_default())));
        if let Some(reason) = cut_short {
            response["incomplete_details"] = json!({"reason": reason});
        }
        self.finished = Some((response.clone(), self.output.clone()));
        self.emit(&mut out, kind, json!({"response": response}));
        Ok(Bytes::from(out))
    }

    /// The final event for a stream that failed: `response.failed` with the error (after
    /// `response.created` if nothing was sent yet).
    pub fn failed(&self, error: Value) -> Bytes {
        let mut this = ResponsesStream {
            ctx: self.ctx.clone(),
            seq: self.seq,
            started: self.started,
            open: Open::None,
            output: Vec::new(),
            usage: None,
            finish: None,
            blocked: false,
            answered: false,
            calls: 0,
            signatures: Vec::new(),
            done: true,
            finished: None,
        };
        let mut out = Vec::new();
        this.start(&mut out);
        let client: Vec<Value> = self.output.iter().map(|i| self.ctx.for_client(i)).collect();
        let mut response = self.ctx.response("failed", client, None);
        response["error"] = error;
        this.emit(&mut out, "response.failed", json!({"response": response}));
        Bytes::from(out)
    }

    /// Whether any text or call went out (thoughts do not count).
    pub fn has_output(&self) -> bool {
        self.answered
    }

    /// `(call id, signature)` pairs seen since the last call, for the signature cache.
    pub fn take_signatures(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.signatures)
    }

    /// The completed `response` (client form) and its output items (stored form), once,
    /// after a clean `finish`.
    pub fn take_finished(&mut self) -> Option<(Value, Vec<Value>)> {
        self.finished.take()
    }
}
