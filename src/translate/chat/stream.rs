//! Gemini stream events → OpenAI `chat.completion.chunk` SSE events.
//!
//! Owns the per-stream state the OpenAI format needs and Gemini does not give per event: the
//! role on the first delta, tool-call ordinals across chunks, one finish per choice, and the
//! last cumulative usage held back for a single trailing usage chunk. It runs once per
//! upstream event, so the fixed chunk prefix is serialised once and each event is parsed once.
//! It must not buffer content: whatever an event carries is emitted with it.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;

use super::response::{self, append, FunctionOut, ImageOut, LogprobsOut, ToolCallOut};
use crate::translate::gemini::UsageMetadata;
use crate::translate::{ResponseCtx, TranslateError};

/// Gemini allows at most 8 candidates; more than this is a broken upstream, not a reason to
/// allocate.
const MAX_CHOICES: usize = 16;

/// Translates a Gemini SSE stream to OpenAI chunks, one upstream event at a time.
pub struct StreamTranslator {
    /// `data: {"id":…,"object":"chat.completion.chunk","created":…,"model":…,"choices":[`
    prefix: Vec<u8>,
    call_prefix: String,
    /// `ResponseCtx::single_call`: a choice's calls after its first are dropped.
    one_call: bool,
    /// `ResponseCtx::legacy_functions`: the call goes out as `delta.function_call`.
    legacy_functions: bool,
    /// `ResponseCtx::tool_names`.
    tool_names: crate::translate::tool_name::ToolNames,
    include_usage: bool,
    choices: Vec<ChoiceState>,
    usage: Option<UsageMetadata>,
    calls: u32,
    /// Text or a tool call has been emitted (thoughts alone do not answer).
    answered: bool,
    done: bool,
    signatures: Vec<(String, String)>,
}

#[derive(Debug, Default, Clone, Copy)]
struct ChoiceState {
    started: bool,
    finished: bool,
    calls: u32,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    finish_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    logprobs: Option<LogprobsOut<'a>>,
}

#[derive(Default, Serialize)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    /// A legacy `functions` request's call, whole in one chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut<'a>>,
    /// Images as OpenRouter streams them (each whole, in the event that carried it).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<ImageOut>,
}

impl StreamTranslator {
    pub fn new(ctx: ResponseCtx, include_usage: bool) -> Self {
        #[derive(Serialize)]
        struct Head<'a> {
            id: &'a str,
            object: &'static str,
            created: u64,
            model: &'a str,
        }
        let head = Head {
            id: &ctx.id,
            object: "chat.completion.chunk",
            created: ctx.created,
            model: &ctx.model,
        };
        let mut prefix = b"data: ".to_vec();
        // Serialising plain strings and numbers cannot fail.
        let _ = serde_json::to_writer(&mut prefix, &head);
        prefix.pop(); // the closing brace: choices follow
        prefix.extend_from_slice(b",\"choices\":[");
        StreamTranslator {
            prefix,
            call_prefix: response::call_id_prefix(&ctx),
            one_call: ctx.single_call(),
            legacy_functions: ctx.legacy_functions,
            tool_names: ctx.tool_names,
            include_usage,
            choices: Vec::new(),
            usage: None,
            calls: 0,
            answered: false,
            done: false,
            signatures: Vec::new(),
        }
    }

    /// One upstream event's data (a whole `GenerateContentResponse` JSON). Returns zero or more
    /// complete OpenAI SSE events (`data: …\n\n`), concatenated.
    pub fn on_event(&mut self, data: &[u8]) -> Result<Bytes, TranslateError> {
        let mut resp = response::parse(data)?;
        self.tool_names.restore(&mut resp);
        if resp.usage_metadata.is_some() {
            self.usage = resp.usage_metadata;
        }
        let mut out = Vec::new();
        if resp.candidates.is_empty()
            && resp
                .prompt_feedback
                .as_ref()
                .is_some_and(|f| f.block_reason.is_some())
        {
            let state = self.state(0)?;
            if !state.finished {
                let role = (!state.started).then_some("assistant");
                *state = ChoiceState {
                    started: true,
                    finished: true,
                    calls: state.calls,
                };
                let delta = Delta {
                    role,
                    ..Delta::default()
                };
                self.write_chunk(&mut out, 0, delta, Some("content_filter"), None);
            }
        }
        for (pos, cand) in resp.candidates.into_iter().enumerate() {
            let index = cand.index.unwrap_or(pos as u32);
            let mut delta = Delta::default();
            let mut calls = self.state(index as usize)?.calls;
            let logprobs = response::logprobs(cand.logprobs_result);
            for mut part in cand.content.map(|c| c.parts).unwrap_or_default() {
                if part.inline_data.is_some() {
                    delta.images.extend(response::image(&part));
                } else if part.function_call.is_some() {
                    if self.one_call && calls > 0 {
                        continue;
                    }
                    if let Some(mut tc) =
                        response::tool_call(&mut part, &self.call_prefix, self.calls)
                    {
                        tc.index = Some(calls);
                        self.signatures.extend(tc.signature());
                        calls += 1;
                        self.calls += 1;
                        delta.tool_calls.push(tc);
                    }
                } else if let Some(t) = part.text {
                    if part.thought == Some(true) {
                        append(&mut delta.reasoning_content, t);
                    } else {
                        append(&mut delta.content, t);
                    }
                }
            }
            self.answered |=
                delta.content.is_some() || !delta.tool_calls.is_empty() || !delta.images.is_empty();
            let answered = self.answered;
            let legacy = self.legacy_functions;
            let state = self.state(index as usize)?;
            state.calls = calls;
            // A finish before any text or tool call is held back: the stream is an empty
            // answer, which ends with an error event (relay), not with a `stop` first.
            let finish = match &cand.finish_reason {
                Some(r) if !state.finished && answered => {
                    state.finished = true;
                    Some(response::finish_reason(r, calls > 0))
                }
                _ => None,
            };
            let finish = if legacy {
                delta.function_call = response::legacy_call(&mut delta.tool_calls);
                finish.map(response::legacy_finish)
            } else {
                finish
            };
            let has_delta = delta.content.is_some()
                || delta.reasoning_content.is_some()
                || !delta.tool_calls.is_empty()
                || delta.function_call.is_some()
                || !delta.images.is_empty();
            if !has_delta && finish.is_none() {
                continue;
            }
            if !state.started {
                state.started = true;
                delta.role = Some("assistant");
            }
            self.write_chunk(&mut out, index, delta, finish, logprobs);
        }
        Ok(Bytes::from(out))
    }

    /// The upstream ended cleanly: the finish chunk if not yet sent, the usage chunk when asked
    /// for, and `data: [DONE]`.
    pub fn finish(&mut self) -> Bytes {
        if self.done {
            return Bytes::new();
        }
        self.done = true;
        let mut out = Vec::new();
        if self.choices.is_empty() {
            self.choices.push(ChoiceState::default());
        }
        for i in 0..self.choices.len() {
            let state = self.choices[i];
            if state.finished {
                continue;
            }
            self.choices[i].finished = true;
            let delta = Delta {
                role: (!state.started).then_some("assistant"),
                ..Delta::default()
            };
            let reason = match (state.calls > 0, self.legacy_functions) {
                (true, false) => "tool_calls",
                (true, true) => "function_call",
                (false, _) => "stop",
            };
            self.write_chunk(&mut out, i as u32, delta, Some(reason), None);
        }
        if self.include_usage {
            out.extend_from_slice(&self.prefix);
            out.extend_from_slice(b"],\"usage\":");
            let usage = response::usage(&self.usage.unwrap_or_default());
            let _ = serde_json::to_writer(&mut out, &usage);
            out.extend_from_slice(b"}\n\n");
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        Bytes::from(out)
    }

    /// Whether any text or tool call has been emitted so far (thoughts do not count). A stream
    /// that ends without one is an empty answer, which SPEC §5 wants reported as an error.
    pub fn has_output(&self) -> bool {
        self.answered
    }

    /// `(tool call id, thought signature)` pairs seen since the last call, for a server-side
    /// signature cache.
    pub fn take_signatures(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.signatures)
    }

    fn state(&mut self, index: usize) -> Result<&mut ChoiceState, TranslateError> {
        if index >= MAX_CHOICES {
            return Err(TranslateError::BadUpstream {
                message: format!("candidate index {index} out of range"),
            });
        }
        if self.choices.len() <= index {
            self.choices.resize(index + 1, ChoiceState::default());
        }
        Ok(&mut self.choices[index])
    }

    fn write_chunk(
        &self,
        out: &mut Vec<u8>,
        index: u32,
        delta: Delta<'_>,
        finish_reason: Option<&'static str>,
        logprobs: Option<LogprobsOut<'_>>,
    ) {
        out.extend_from_slice(&self.prefix);
        let choice = ChunkChoice {
            index,
            delta,
            finish_reason,
            logprobs,
        };
        // Strings, numbers and `Value`s always serialise.
        let _ = serde_json::to_writer(&mut *out, &choice);
        out.extend_from_slice(b"]}\n\n");
    }
}
