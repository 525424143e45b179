//! Gemini `GenerateContentResponse` → OpenAI `chat.completion`, plus the pieces the stream
//! translator shares: reading a body that may be a Google error, finish-reason and usage
//! mapping, tool-call ids.
//!
//! Ids and timestamps come from `ResponseCtx`; this module must not invent them from a clock or
//! a random source, so the same input always gives the same output.

use std::borrow::Cow;

use serde::Serialize;

use super::Translated;
use crate::translate::gemini::{
    GenerateContentResponse, GoogleError, GroundingMetadata, LogprobCandidate, LogprobsResult,
    ResponsePart, UsageMetadata,
};
use crate::translate::json::from_body;
use crate::translate::{ResponseCtx, TranslateError};

/// Parses one upstream body, turning Google's error shapes (`{"error":…}` or
/// `[{"error":…}]`) into `UpstreamError`. `raw` is always the object form.
pub(crate) fn parse(body: &[u8]) -> Result<GenerateContentResponse<'_>, TranslateError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        let items: Vec<serde_json::Value> = serde_json::from_slice(body).map_err(bad_upstream)?;
        let err = items.iter().find_map(|v| {
            let e = v.get("error")?;
            let parsed: GoogleError = serde_json::from_value(e.clone()).ok()?;
            Some((parsed, v))
        });
        return Err(match err {
            Some((e, v)) => upstream_error(e, serde_json::to_vec(v).unwrap_or_default()),
            None => TranslateError::BadUpstream {
                message: "expected a JSON object, got an array".into(),
            },
        });
    }
    let mut resp: GenerateContentResponse = from_body(body).map_err(bad_upstream)?;
    if let Some(e) = resp.error.take() {
        return Err(upstream_error(e, body.to_vec()));
    }
    Ok(resp)
}

fn bad_upstream(e: serde_json::Error) -> TranslateError {
    TranslateError::BadUpstream {
        message: e.to_string(),
    }
}

fn upstream_error(e: GoogleError, raw: Vec<u8>) -> TranslateError {
    TranslateError::UpstreamError {
        code: e.code.unwrap_or(500),
        status: e.status.unwrap_or_default(),
        message: e.message.unwrap_or_default(),
        raw,
    }
}

/// A legacy `functions` answer's call: the first (the request made `one_call`), as the
/// message's `function_call`; `calls` is left empty.
pub(crate) fn legacy_call<'a>(calls: &mut Vec<ToolCallOut<'a>>) -> Option<FunctionOut<'a>> {
    let first = calls.drain(..).next()?;
    Some(first.function)
}

/// A legacy `functions` answer ends `function_call` where a tools answer ends `tool_calls`.
pub(crate) fn legacy_finish(reason: &'static str) -> &'static str {
    if reason == "tool_calls" {
        "function_call"
    } else {
        reason
    }
}

/// protocol.md §6: never null; `tool_calls` only for a natural end after calls.
pub(crate) fn finish_reason(reason: &str, made_calls: bool) -> &'static str {
    match reason {
        "MAX_TOKENS" => "length",
        r if crate::translate::gemini::is_filtered(r) => "content_filter",
        _ if made_calls => "tool_calls",
        _ => "stop",
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct Usage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: PromptDetails,
    completion_tokens_details: CompletionDetails,
}

#[derive(Debug, Serialize)]
struct PromptDetails {
    cached_tokens: u64,
}

#[derive(Debug, Serialize)]
struct CompletionDetails {
    reasoning_tokens: u64,
}

/// OpenAI counts reasoning inside completion tokens; Gemini counts them apart. Sums saturate:
/// the counts are Google's numbers, not ours to trust.
pub(crate) fn usage(u: &UsageMetadata) -> Usage {
    let prompt_tokens = u
        .prompt_token_count
        .saturating_add(u.tool_use_prompt_token_count);
    let completion_tokens = u
        .candidates_token_count
        .saturating_add(u.thoughts_token_count);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: u
            .total_token_count
            .unwrap_or(prompt_tokens.saturating_add(completion_tokens)),
        prompt_tokens_details: PromptDetails {
            cached_tokens: u.cached_content_token_count,
        },
        completion_tokens_details: CompletionDetails {
            reasoning_tokens: u.thoughts_token_count,
        },
    }
}

/// OpenAI's `choices[].logprobs`: `{content: [{token, logprob, bytes, top_logprobs}], refusal}`.
#[derive(Debug, Serialize)]
pub(crate) struct LogprobsOut<'a> {
    content: Vec<TokenLogprob<'a>>,
    refusal: Option<()>,
}

#[derive(Debug, Serialize)]
struct TokenLogprob<'a> {
    token: Cow<'a, str>,
    logprob: f64,
    bytes: Vec<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_logprobs: Option<Vec<TokenLogprob<'a>>>,
}

impl<'a> TokenLogprob<'a> {
    fn new(c: LogprobCandidate<'a>, top: Option<Vec<TokenLogprob<'a>>>) -> Self {
        TokenLogprob {
            bytes: c.token.as_bytes().to_vec(),
            token: c.token,
            logprob: c.log_probability,
            top_logprobs: top,
        }
    }
}

/// Gemini's `logprobsResult` (chosen token per step, top candidates per step) in OpenAI's shape.
pub(crate) fn logprobs(result: Option<LogprobsResult<'_>>) -> Option<LogprobsOut<'_>> {
    let result = result?;
    let mut tops = result.top_candidates.into_iter();
    let content = result
        .chosen_candidates
        .into_iter()
        .map(|chosen| {
            let top = tops
                .next()
                .map(|t| {
                    t.candidates
                        .into_iter()
                        .map(|c| TokenLogprob::new(c, None))
                        .collect()
                })
                .unwrap_or_default();
            TokenLogprob::new(chosen, Some(top))
        })
        .collect();
    Some(LogprobsOut {
        content,
        refusal: None,
    })
}

/// The tokens of Gemini's `logprobsResult` as OpenAI's list (`[{token, logprob, bytes,
/// top_logprobs}]`, the Responses API's `output_text.logprobs`); none: an empty list.
pub(crate) fn token_logprobs(result: Option<LogprobsResult<'_>>) -> Vec<serde_json::Value> {
    logprobs(result)
        .and_then(|l| serde_json::to_value(l.content).ok())
        .and_then(|v| match v {
            serde_json::Value::Array(tokens) => Some(tokens),
            _ => None,
        })
        .unwrap_or_default()
}

/// The prefix for ids of tool calls Gemini left unnamed: `call_<ctx.id suffix>_`.
pub(crate) fn call_id_prefix(ctx: &ResponseCtx) -> String {
    let suffix = ctx.id.strip_prefix("chatcmpl-").unwrap_or(&ctx.id);
    format!("call_{suffix}_")
}

#[derive(Debug, Serialize)]
pub(crate) struct ToolCallOut<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    pub id: Cow<'a, str>,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub function: FunctionOut<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_content: Option<ExtraOut<'a>>,
}

impl ToolCallOut<'_> {
    /// `(id, signature)` when Gemini signed this call, for a server-side cache.
    pub fn signature(&self) -> Option<(String, String)> {
        let sig = &self.extra_content.as_ref()?.google.thought_signature;
        Some((self.id.clone().into_owned(), sig.clone().into_owned()))
    }
}

#[derive(Debug, Serialize)]
pub(crate) struct FunctionOut<'a> {
    pub name: Cow<'a, str>,
    pub arguments: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct ExtraOut<'a> {
    google: SignatureOut<'a>,
}

#[derive(Debug, Serialize)]
struct SignatureOut<'a> {
    thought_signature: Cow<'a, str>,
}

/// A Gemini `functionCall` part as an OpenAI tool call. `n` numbers calls without a Gemini id.
pub(crate) fn tool_call<'a>(
    part: &mut ResponsePart<'a>,
    prefix: &str,
    n: u32,
) -> Option<ToolCallOut<'a>> {
    let call = part.function_call.take()?;
    // Gemini's args object, as the JSON text it sent.
    let arguments = call.args.map_or("{}", |args| args.get()).to_owned();
    Some(ToolCallOut {
        index: None,
        id: match call.id {
            Some(id) if !id.is_empty() => id,
            _ => Cow::Owned(format!("{prefix}{n}")),
        },
        kind: "function",
        function: FunctionOut {
            name: call.name,
            arguments,
        },
        extra_content: part.thought_signature.take().map(|s| ExtraOut {
            google: SignatureOut {
                thought_signature: s,
            },
        }),
    })
}

/// OpenRouter's image output (`message.images[]`, `delta.images[]`), which Cline and other
/// clients read: `{"type": "image_url", "image_url": {"url": "data:image/png;base64,…"}}`.
#[derive(Debug, Serialize)]
pub(crate) struct ImageOut {
    #[serde(rename = "type")]
    kind: &'static str,
    image_url: ImageUrl,
}

#[derive(Debug, Serialize)]
struct ImageUrl {
    url: String,
}

/// A Gemini `inlineData` image part as an OpenAI image; thought images (a model's drafts) and
/// anything that is not a base64 image are left out.
pub(crate) fn image(part: &ResponsePart<'_>) -> Option<ImageOut> {
    if part.thought == Some(true) {
        return None;
    }
    let url = part.inline_data.as_ref()?.image_data_url()?;
    Some(ImageOut {
        kind: "image_url",
        image_url: ImageUrl { url },
    })
}

/// Appends `text` to an accumulator that stays borrowed while there is only one piece.
pub(crate) fn append<'a>(acc: &mut Option<Cow<'a, str>>, text: Cow<'a, str>) {
    if text.is_empty() {
        return;
    }
    match acc {
        None => *acc = Some(text),
        Some(a) => a.to_mut().push_str(&text),
    }
}

#[derive(Serialize)]
struct Completion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: Vec<Choice<'a>>,
    usage: Usage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: MessageOut<'a>,
    finish_reason: &'static str,
    logprobs: Option<LogprobsOut<'a>>,
}

#[derive(Serialize)]
struct MessageOut<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    /// A legacy `functions` request's call (`ResponseCtx::legacy_functions`).
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<FunctionOut<'a>>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    annotations: Vec<Annotation<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    images: Vec<ImageOut>,
}

/// OpenAI's `url_citation`: a web source and the characters of `content` it supports.
#[derive(Debug, Serialize)]
struct Annotation<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url_citation: UrlCitation<'a>,
}

#[derive(Debug, Serialize)]
struct UrlCitation<'a> {
    start_index: usize,
    end_index: usize,
    url: Cow<'a, str>,
    title: Cow<'a, str>,
}

/// Gemini's grounding as OpenAI annotations. Gemini counts bytes within one part; OpenAI counts
/// characters of the whole `content`, so each part's start in `text` (`part_starts`, by part
/// index; `None` for parts that are not answer text) turns one into the other.
fn annotations<'a>(
    grounding: Option<GroundingMetadata<'a>>,
    text: &str,
    part_starts: &[Option<usize>],
) -> Vec<Annotation<'a>> {
    let Some(grounding) = grounding else {
        return Vec::new();
    };
    let chars_before = |byte: usize| {
        let mut b = byte.min(text.len());
        while !text.is_char_boundary(b) {
            b -= 1;
        }
        text[..b].chars().count()
    };
    let mut out = Vec::new();
    for support in &grounding.grounding_supports {
        let Some(seg) = &support.segment else {
            continue;
        };
        let Some(Some(start)) = part_starts.get(seg.part_index) else {
            continue;
        };
        let (start_index, end_index) = (
            chars_before(start + seg.start_index),
            chars_before(start + seg.end_index),
        );
        for &chunk in &support.grounding_chunk_indices {
            let Some(web) = grounding
                .grounding_chunks
                .get(chunk)
                .and_then(|c| c.web.as_ref())
            else {
                continue;
            };
            let Some(url) = &web.uri else { continue };
            out.push(Annotation {
                kind: "url_citation",
                url_citation: UrlCitation {
                    start_index,
                    end_index,
                    url: url.clone(),
                    title: web.title.clone().unwrap_or(Cow::Borrowed("")),
                },
            });
        }
    }
    out
}

pub(crate) fn translate(body: &[u8], ctx: &ResponseCtx) -> Result<Translated, TranslateError> {
    let mut resp = parse(body)?;
    ctx.tool_names.restore(&mut resp);
    let mut signatures = Vec::new();
    let mut has_output = false;
    let prefix = call_id_prefix(ctx);
    let mut calls = 0u32;
    let mut choices = Vec::with_capacity(resp.candidates.len().max(1));
    for (pos, cand) in resp.candidates.into_iter().enumerate() {
        let mut text: Option<Cow<str>> = None;
        let mut reasoning = None;
        let mut tool_calls = Vec::new();
        let mut images = Vec::new();
        // Where each answer-text part starts in `text`, for grounding offsets (only then).
        let grounded = cand.grounding_metadata.is_some();
        let mut part_starts = Vec::new();
        for mut part in cand.content.map(|c| c.parts).unwrap_or_default() {
            let mut start = None;
            if part.inline_data.is_some() {
                images.extend(image(&part));
            } else if part.function_call.is_some() {
                if ctx.single_call() && !tool_calls.is_empty() {
                    continue;
                }
                if let Some(tc) = tool_call(&mut part, &prefix, calls) {
                    calls += 1;
                    tool_calls.push(tc);
                }
            } else if let Some(t) = part.text {
                if part.thought == Some(true) {
                    append(&mut reasoning, t);
                } else {
                    start = Some(text.as_deref().map_or(0, str::len));
                    append(&mut text, t);
                }
            }
            if grounded {
                part_starts.push(start);
            }
        }
        let annotations = annotations(
            cand.grounding_metadata,
            text.as_deref().unwrap_or(""),
            &part_starts,
        );
        let made_calls = !tool_calls.is_empty();
        has_output |= made_calls || text.is_some() || !images.is_empty();
        signatures.extend(tool_calls.iter().filter_map(ToolCallOut::signature));
        let mut finish = finish_reason(cand.finish_reason.as_deref().unwrap_or("STOP"), made_calls);
        let function_call = if ctx.legacy_functions {
            finish = legacy_finish(finish);
            legacy_call(&mut tool_calls)
        } else {
            None
        };
        let logprobs = logprobs(cand.logprobs_result);
        choices.push(Choice {
            index: cand.index.unwrap_or(pos as u32),
            message: MessageOut {
                role: "assistant",
                content: match text {
                    None if made_calls => None,
                    None => Some(Cow::Borrowed("")),
                    t => t,
                },
                reasoning_content: reasoning,
                tool_calls,
                function_call,
                refusal: None,
                annotations,
                images,
            },
            finish_reason: finish,
            logprobs,
        });
    }
    if choices.is_empty() {
        let blocked = resp
            .prompt_feedback
            .as_ref()
            .is_some_and(|f| f.block_reason.is_some());
        choices.push(Choice {
            index: 0,
            message: MessageOut {
                role: "assistant",
                content: Some(Cow::Borrowed("")),
                reasoning_content: None,
                tool_calls: Vec::new(),
                function_call: None,
                refusal: None,
                annotations: Vec::new(),
                images: Vec::new(),
            },
            finish_reason: if blocked { "content_filter" } else { "stop" },
            logprobs: None,
        });
    }
    let out = Completion {
        id: &ctx.id,
        object: "chat.completion",
        created: ctx.created,
        model: &ctx.model,
        choices,
        usage: usage(&resp.usage_metadata.unwrap_or_default()),
    };
    let body = serde_json::to_vec(&out).map_err(|e| TranslateError::BadUpstream {
        message: e.to_string(),
    })?;
    Ok(Translated {
        body,
        signatures,
        has_output,
    })
}
