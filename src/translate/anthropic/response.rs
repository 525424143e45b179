//! Gemini `GenerateContentResponse` → Anthropic `message`, plus what the stream translator
//! shares with it: stop reasons, usage, tool-use ids.
//!
//! Gemini's thought signature (on a `functionCall` or text part) leaves in a `thinking` block
//! just before the block of its part: the thoughts of that step when Gemini sent them, an empty
//! `thinking` otherwise. Ids come from `ResponseCtx`; nothing here reads a clock or a random
//! source.

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::translate::chat::response::parse;
use crate::translate::gemini::UsageMetadata;
use crate::translate::{ResponseCtx, TranslateError};

/// A translated whole answer.
#[derive(Debug)]
pub struct Whole {
    /// The Anthropic `message` JSON.
    pub body: Vec<u8>,
    /// `(tool_use id, thought signature)` for the server-side signature cache.
    pub signatures: Vec<(String, String)>,
    /// The client gets `body`: some text or tool call came back, or the answer stopped the
    /// way Anthropic's own can with any content, even none (`max_tokens`, `refusal`). Else
    /// (thoughts alone at a clean stop, a malformed call) there is nothing to give.
    pub answered: bool,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum BlockOut<'a> {
    Text {
        text: Cow<'a, str>,
    },
    Thinking {
        thinking: Cow<'a, str>,
        #[serde(serialize_with = "serialize_signature")]
        signature: Cow<'a, str>,
    },
    ToolUse {
        id: String,
        name: Cow<'a, str>,
        input: &'a RawValue,
    },
}

/// What starts a thinking block's `signature` that this proxy issued, Gemini's thought
/// signature behind it. Not a base64 character, so no Anthropic signature starts so: a
/// signature without it (a session begun on Anthropic and resumed here) is foreign and never
/// reaches Gemini, which would refuse it; the call gets the remembered or stand-in signature.
const ISSUED: &str = "gr1.";

/// The client's form of Gemini's signature `sig`.
pub(crate) fn issued(sig: &str) -> String {
    format!("{ISSUED}{sig}")
}

/// Gemini's signature inside a thinking block's `signature`, when this proxy issued it.
pub(crate) fn ours(signature: &str) -> Option<&str> {
    signature.strip_prefix(ISSUED).filter(|s| !s.is_empty())
}

fn serialize_signature<S: serde::Serializer>(sig: &str, s: S) -> Result<S::Ok, S::Error> {
    if sig.is_empty() {
        s.serialize_str("")
    } else {
        s.serialize_str(&issued(sig))
    }
}

#[derive(Debug, Default, Serialize)]
pub(crate) struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// Anthropic counts cache reads apart from `input_tokens`, and thinking inside output.
pub(crate) fn usage(u: &UsageMetadata) -> Usage {
    let prompt = u.prompt_token_count + u.tool_use_prompt_token_count;
    Usage {
        input_tokens: prompt.saturating_sub(u.cached_content_token_count),
        output_tokens: u.candidates_token_count + u.thoughts_token_count,
        cache_creation_input_tokens: 0,
        cache_read_input_tokens: u.cached_content_token_count,
    }
}

/// Gemini's finish reason as Anthropic's `stop_reason`; a prompt Gemini blocked (no candidate,
/// `promptFeedback.blockReason`) is a `refusal`. Gemini does not say which stop sequence
/// ended the text, so a stop is always `end_turn`.
pub(crate) fn stop_reason(finish: Option<&str>, made_calls: bool, blocked: bool) -> &'static str {
    match finish {
        None if blocked => "refusal",
        Some("MAX_TOKENS") => "max_tokens",
        Some(r) if crate::translate::gemini::is_filtered(r) => "refusal",
        _ if made_calls => "tool_use",
        _ => "end_turn",
    }
}

/// Whether a translated answer goes to the client: it has text or a tool call, or it stopped
/// at the token limit or on a refusal, which Anthropic answers with whatever content there is
/// (thinking only, or nothing). Claude Code retries an error here again and again, but
/// reads `max_tokens` and `refusal` for what they are.
pub(crate) fn is_answer(has_output: bool, stop: &str) -> bool {
    has_output || matches!(stop, "max_tokens" | "refusal")
}

/// The id of the `n`th tool call of an answer Gemini left without an id:
/// `toolu_<message id suffix>_<n>`.
pub(crate) fn tool_use_id(ctx: &ResponseCtx, gemini_id: Option<&str>, n: u32) -> String {
    match gemini_id {
        Some(id) if !id.is_empty() => id.to_string(),
        _ => {
            let suffix = ctx.id.strip_prefix("msg_").unwrap_or(&ctx.id);
            format!("toolu_{suffix}_{n}")
        }
    }
}

pub(crate) fn empty_input() -> &'static RawValue {
    // Parsing a literal cannot fail.
    serde_json::from_str("{}").unwrap_or(RawValue::NULL)
}

#[derive(Serialize)]
struct MessageOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<BlockOut<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<()>,
    usage: Usage,
}

pub fn translate(body: &[u8], ctx: &ResponseCtx) -> Result<Whole, TranslateError> {
    let mut resp = parse(body)?;
    ctx.tool_names.restore(&mut resp);
    let mut content: Vec<BlockOut<'_>> = Vec::new();
    let mut signatures = Vec::new();
    let mut calls = 0u32;
    let mut finish = None;
    let blocked = resp
        .prompt_feedback
        .as_ref()
        .is_some_and(|f| f.block_reason.is_some());
    if let Some(cand) = resp.candidates.into_iter().next() {
        finish = cand.finish_reason;
        for part in cand.content.map(|c| c.parts).unwrap_or_default() {
            if part.thought == Some(true) {
                let text = part.text.unwrap_or_default();
                match content.last_mut() {
                    Some(BlockOut::Thinking {
                        thinking,
                        signature,
                    }) if signature.is_empty() => {
                        thinking.to_mut().push_str(&text);
                        if let Some(sig) = part.thought_signature {
                            *signature = sig;
                        }
                    }
                    _ => content.push(BlockOut::Thinking {
                        thinking: text,
                        signature: part.thought_signature.unwrap_or_default(),
                    }),
                }
                continue;
            }
            let signature = part.thought_signature;
            if part.function_call.is_some() && ctx.one_call && calls > 0 {
                // `disable_parallel_tool_use`: Gemini cannot be told, so later calls are dropped.
                continue;
            }
            if let Some(call) = part.function_call {
                let id = tool_use_id(ctx, call.id.as_deref(), calls);
                calls += 1;
                if let Some(sig) = signature {
                    signatures.push((id.clone(), sig.to_string()));
                    sign(&mut content, sig);
                }
                content.push(BlockOut::ToolUse {
                    id,
                    name: call.name,
                    input: call
                        .args
                        .filter(|a| a.get().starts_with('{'))
                        .unwrap_or_else(|| empty_input()),
                });
            } else if let Some(text) = part.text.filter(|t| !t.is_empty()) {
                if let Some(sig) = signature {
                    sign(&mut content, sig);
                }
                match content.last_mut() {
                    Some(BlockOut::Text { text: acc }) => acc.to_mut().push_str(&text),
                    _ => content.push(BlockOut::Text { text }),
                }
            }
        }
    }
    let has_output = content
        .iter()
        .any(|b| !matches!(b, BlockOut::Thinking { .. }));
    let stop = stop_reason(finish.as_deref(), calls > 0, blocked);
    let message = MessageOut {
        id: &ctx.id,
        kind: "message",
        role: "assistant",
        model: &ctx.model,
        content,
        stop_reason: stop,
        stop_sequence: None,
        usage: usage(&resp.usage_metadata.unwrap_or_default()),
    };
    let body = serde_json::to_vec(&message).map_err(|e| TranslateError::BadUpstream {
        message: e.to_string(),
    })?;
    Ok(Whole {
        body,
        signatures,
        answered: is_answer(has_output, stop),
    })
}

/// Puts `sig` on the thinking block just before (the thoughts of this step), or opens an
/// empty one to carry it.
fn sign<'a>(content: &mut Vec<BlockOut<'a>>, sig: Cow<'a, str>) {
    match content.last_mut() {
        Some(BlockOut::Thinking { signature, .. }) if signature.is_empty() => *signature = sig,
        _ => content.push(BlockOut::Thinking {
            thinking: Cow::Borrowed(""),
            signature: sig,
        }),
    }
}
