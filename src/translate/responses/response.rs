//! A whole Gemini `GenerateContentResponse` → a Responses `response` object.
//!
//! Output items in Gemini's order of parts: one `reasoning` item (thought text as summary, the
//! thought signatures of the calls that follow as `encrypted_content`), one `message` for the
//! answer text, one `function_call` per call. Only the first candidate is read (the Responses
//! API has no `n`).

use serde_json::{json, Value};

use super::super::TranslateError;
use super::{encode_signatures, incomplete_reason, usage, Ctx};
use crate::translate::chat::response::{append, parse, token_logprobs};

/// A translated whole answer.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The `response` object as the client gets it.
    pub response: Value,
    /// The output items as stored (reasoning keeps `encrypted_content`).
    pub output: Vec<Value>,
    /// `(call id, signature)` for the server-side cache.
    pub signatures: Vec<(String, String)>,
    /// Text or a call came back; without one the answer is empty (unless cut short, which
    /// is an `incomplete` response).
    pub has_output: bool,
    pub incomplete: bool,
}

pub fn from_gemini(body: &[u8], ctx: &Ctx) -> Result<Finished, TranslateError> {
    let mut resp = parse(body)?;
    ctx.tool_names.restore(&mut resp);
    let mut thoughts = None;
    let mut text = None;
    let mut calls = Vec::new();
    let mut signatures = Vec::new();
    let mut finish = None;
    let mut logprobs = Vec::new();
    if let Some(cand) = resp.candidates.into_iter().next() {
        finish = cand.finish_reason.map(|f| f.into_owned());
        logprobs = token_logprobs(cand.logprobs_result);
        for part in cand.content.map(|c| c.parts).unwrap_or_default() {
            if let Some(call) = part.function_call {
                let call_id = match call.id {
                    Some(id) if !id.is_empty() => id.into_owned(),
                    _ => ctx.call_id(calls.len()),
                };
                if let Some(sig) = part.thought_signature {
                    signatures.push((call_id.clone(), sig.into_owned()));
                }
                let arguments = call.args.map_or("{}", |a| a.get()).to_owned();
                calls.push((call_id, call.name.into_owned(), arguments));
            } else if let Some(t) = part.text {
                if part.thought == Some(true) {
                    append(&mut thoughts, t);
                } else {
                    append(&mut text, t);
                }
            }
        }
    }
    let blocked = resp
        .prompt_feedback
        .as_ref()
        .and_then(|f| f.block_reason.as_deref())
        .is_some();
    let incomplete = finish
        .as_deref()
        .and_then(incomplete_reason)
        .or(blocked.then_some("content_filter"));

    let mut output = Vec::new();
    if thoughts.is_some() || !signatures.is_empty() {
        let mut item = json!({
            "id": ctx.item_id("rs", output.len()), "type": "reasoning",
            "summary": thoughts.map_or(Vec::new(), |t| vec![json!({"type": "summary_text", "text": t})]),
        });
        if !signatures.is_empty() {
            item["encrypted_content"] = json!(encode_signatures(&signatures));
        }
        output.push(item);
    }
    let has_output = text.is_some() || !calls.is_empty();
    if let Some(text) = text {
        output.push(json!({
            "id": ctx.item_id("msg", output.len()), "type": "message", "role": "assistant",
            "status": if incomplete.is_some() { "incomplete" } else { "completed" },
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": logprobs}],
        }));
    }
    for (call_id, name, arguments) in &calls {
        output.push(ctx.tool_call(output.len(), call_id, name, arguments));
    }
    let client_output = output.iter().map(|i| ctx.for_client(i)).collect();
    let mut response = ctx.response(
        if incomplete.is_some() {
            "incomplete"
        } else {
            "completed"
        },
        client_output,
        Some(usage(&resp.usage_metadata.unwrap_or_default())),
    );
    if let Some(reason) = incomplete {
        response["incomplete_details"] = json!({"reason": reason});
    }
    Ok(Finished {
        response,
        output,
        signatures,
        has_output,
        incomplete: incomplete.is_some(),
    })
}
