//! Anthropic Messages request → Gemini `GenerateContentRequest`.
//!
//! Owns the Anthropic side of the mapping: `system` (string or text blocks, and `system`-role
//! messages) into the system instruction; content blocks into parts (`tool_result` into
//! `functionResponse` named after its `tool_use`); a `thinking` block's `signature` back onto
//! the Gemini part that follows it (the thought signature Gemini 3 validates; only one this
//! proxy issued, `response::ours`); tools, tool choice, sampling and thinking settings. The turn rules Gemini enforces, media checks and the
//! signature stand-in are shared with the chat mapping (`translate::request`). Pure: no fetch,
//! log or clock; what the caller should know (a server tool left out) comes back as `notes`.

use std::borrow::Cow;
use std::collections::HashMap;

use super::wire::{Block, BlockSource, Blocks, MessagesRequest, Source};
use crate::excerpt::excerpt;
use crate::translate::chat::request::{
    bare_model, check_base64, empty_object, finish_turns, is_gemini3, normalise_mime, push_turn,
    result_from_text, safety_settings, text_part, thinking_config,
};
use crate::translate::gemini::{
    Blob, FunctionCall, FunctionCallingConfig, FunctionDeclaration, FunctionResponse,
    GenerateContentRequest, GenerationConfig, GoogleSearch, Json, Part, ThinkingConfig, Tool,
    ToolConfig, ToolResult,
};
use crate::translate::{invalid, schema, Extras, Target, TranslateError};

/// Efforts `output_config.effort` may name (Anthropic's, and the chat mapping's).
const EFFORTS: [&str; 7] = ["none", "minimal", "low", "medium", "high", "xhigh", "max"];

/// A built Gemini request and what the caller may want to log about it.
pub struct Built<'a> {
    pub body: GenerateContentRequest<'a>,
    /// Things asked for that Gemini cannot do and were left out (a server tool).
    pub notes: Vec<String>,
}

pub fn build<'a>(
    req: &'a MessagesRequest<'_>,
    target: &Target<'a>,
    extras: &Extras<'_>,
) -> Result<Built<'a>, TranslateError> {
    let model = bare_model(target.model);
    let mut out = GenerateContentRequest::default();
    let mut notes = Vec::new();
    let mut system: Vec<Part<'a>> = Vec::new();
    if let Some(blocks) = &req.system {
        text_blocks(blocks, "system", &mut system)?;
    }
    // Tool results name only the `tool_use` id; Gemini wants the function name.
    let mut call_names: HashMap<&'a str, &'a str> = HashMap::new();

    for (i, msg) in req.messages.iter().enumerate() {
        let at = |j: usize| format!("messages[{i}].content[{j}]");
        match msg.role.as_str() {
            "system" => text_blocks(&msg.content, &format!("messages[{i}].content"), &mut system)?,
            "user" => {
                let parts = user_parts(&msg.content, &call_names, extras, &at)?;
                push_turn(&mut out.contents, "user", parts);
            }
            "assistant" => {
                let parts = assistant_parts(&msg.content, &mut call_names, extras, &at)?;
                push_turn(&mut out.contents, "model", parts);
            }
            other => {
                return Err(invalid(
                    &format!(
                        "unknown role `{}`: expected `user` or `assistant`",
                        excerpt(other)
                    ),
                    format!("messages[{i}].role"),
                ))
            }
        }
    }
    if out.contents.is_empty() {
        return Err(invalid(
            "`messages` holds nothing to send (no text, media or tool result)",
            "messages".into(),
        ));
    }
    finish_turns(&mut out, system, model);
    let (decls, web_search, config) = checked_tools(req, &mut notes)?;
    let has_functions = !decls.is_empty();
    if has_functions {
        out.tool_config = config;
        out.tools.push(Tool {
            function_declarations: decls,
            google_search: None,
        });
    } else if web_search {
        out.tools.push(Tool {
            function_declarations: Vec::new(),
            google_search: Some(GoogleSearch {}),
        });
    }
    out.generation_config = generation_config(req)?;
    out.generation_config.thinking_config = thinking(req, model, target)?;
    out.safety_settings = safety_settings(target);
    Ok(Built { body: out, notes })
}

/// Text blocks (or a string) into parts, for the system instruction: only text is allowed.
fn text_blocks<'a>(
    blocks: &'a Blocks<'_>,
    field: &str,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    match blocks {
        Blocks::Text(t) => {
            if !t.is_empty() {
                parts.push(text_part(Cow::Borrowed(t)));
            }
        }
        Blocks::List(list) => {
            for (j, b) in list.iter().enumerate() {
                match (b.kind.as_str(), &b.text) {
                    ("text", Some(t)) => {
                        if !t.is_empty() {
                            parts.push(text_part(Cow::Borrowed(t)));
                        }
                    }
                    ("text", None) => {
                        return Err(invalid(
                            "a text block needs `text`",
                            format!("{field}[{j}].text"),
                        ))
                    }
                    (other, _) => {
                        return Err(invalid(
                            &format!("a system block must be `text`, not `{}`", excerpt(other)),
                            format!("{field}[{j}].type"),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// A turn given as a plain string: one text part, none when empty.
fn string_turn(text: &str) -> Vec<Part<'_>> {
    if text.is_empty() {
        Vec::new()
    } else {
        vec![text_part(Cow::Borrowed(text))]
    }
}

fn user_parts<'a>(
    content: &'a Blocks<'_>,
    call_names: &HashMap<&'a str, &'a str>,
    extras: &Extras<'_>,
    at: &dyn Fn(usize) -> String,
) -> Result<Vec<Part<'a>>, TranslateError> {
    let list = match content {
        Blocks::Text(t) => return Ok(string_turn(t)),
        Blocks::List(list) => list,
    };
    // Gemini wants the function responses of a step together, before anything else said.
    let mut responses = Vec::new();
    let mut rest = Vec::new();
    for (j, b) in list.iter().enumerate() {
        match b.kind.as_str() {
            "tool_result" => tool_result(b, call_names, extras, &at(j), &mut responses, &mut rest)?,
            _ => media_or_text(b, extras, &at(j), &mut rest)?,
        }
    }
    responses.extend(rest);
    Ok(responses)
}

/// A `text`, `image`, `document` or `search_result` block (what a user turn or a tool result
/// may hold); thinking blocks in a user turn are dropped, anything else is a 400.
fn media_or_text<'a>(
    b: &'a Block<'_>,
    extras: &Extras<'_>,
    at: &str,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    match b.kind.as_str() {
        "text" => {
            let text = b
                .text
                .as_deref()
                .ok_or_else(|| invalid("a text block needs `text`", format!("{at}.text")))?;
            if !text.is_empty() {
                parts.push(text_part(Cow::Borrowed(text)));
            }
        }
        "image" => parts.push(media(b, extras, at)?),
        "document" => document(b, extras, at, parts)?,
        "search_result" => parts.push(text_part(Cow::Owned(search_result(b, at)?))),
        "thinking" | "redacted_thinking" => {}
        other => {
            return Err(invalid(
                &format!("unsupported content block type `{}` here", excerpt(other)),
                format!("{at}.type"),
            ))
        }
    }
    Ok(())
}

/// A document: its `title` and `context` as a text part before it (Gemini has no field for
/// them), then the document itself: a file (base64 or fetched URL), its text, or its own text
/// and image blocks (`source.type: "content"`).
fn document<'a>(
    b: &'a Block<'_>,
    extras: &Extras<'_>,
    at: &str,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let about: Vec<String> = [
        ("Document title", &b.title),
        ("Document context", &b.context),
    ]
    .into_iter()
    .filter_map(|(label, v)| {
        let v = v.as_deref().filter(|v| !v.is_empty())?;
        Some(format!("{label}: {v}"))
    })
    .collect();
    if !about.is_empty() {
        parts.push(text_part(Cow::Owned(about.join("\n"))));
    }
    let source = source_of(b, at)?;
    if source.kind != "content" {
        parts.push(media(b, extras, at)?);
        return Ok(());
    }
    let field = format!("{at}.source.content");
    match &source.content {
        None => return Err(invalid("a content source needs `content`", field)),
        Some(Blocks::Text(t)) => parts.extend(string_turn(t)),
        Some(Blocks::List(list)) => {
            for (k, inner) in list.iter().enumerate() {
                let inner_at = format!("{field}[{k}]");
                match inner.kind.as_str() {
                    "text" | "image" => media_or_text(inner, extras, &inner_at, parts)?,
                    other => {
                        return Err(invalid(
                            &format!(
                                "a content source holds text and image blocks, not `{}`",
                                excerpt(other)
                            ),
                            format!("{inner_at}.type"),
                        ))
                    }
                }
            }
        }
    }
    Ok(())
}

/// A `search_result` block (a tool's or the client's own retrieval) as text: its title, where
/// it is from, then its text blocks. Gemini has no citation source to give it.
fn search_result(b: &Block<'_>, at: &str) -> Result<String, TranslateError> {
    let mut text = String::new();
    if let Some(title) = b.title.as_deref().filter(|t| !t.is_empty()) {
        text.push_str("Search result: ");
        text.push_str(title);
        text.push('\n');
    }
    if let Some(BlockSource::Named(source)) = &b.source {
        text.push_str("Source: ");
        text.push_str(source);
        text.push('\n');
    }
    match &b.content {
        None => {
            return Err(invalid(
                "a search_result needs `content`",
                format!("{at}.content"),
            ))
        }
        Some(Blocks::Text(t)) => text.push_str(t),
        Some(Blocks::List(list)) => {
            for (k, inner) in list.iter().enumerate() {
                match (inner.kind.as_str(), inner.text.as_deref()) {
                    ("text", Some(t)) => {
                        text.push_str(t);
                        text.push('\n');
                    }
                    _ => {
                        return Err(invalid(
                            "a search_result's content holds text blocks only",
                            format!("{at}.content[{k}]"),
                        ))
                    }
                }
            }
        }
    }
    Ok(text.trim_end().to_owned())
}

/// An image's or document's `source`, which must be an object.
fn source_of<'s>(b: &'s Block<'_>, at: &str) -> Result<&'s Source<'s>, TranslateError> {
    b.source
        .as_ref()
        .and_then(BlockSource::object)
        .ok_or_else(|| {
            invalid(
                &format!("a {} block needs a `source` object", excerpt(&b.kind)),
                format!("{at}.source"),
            )
        })
}

fn media<'a>(b: &'a Block<'_>, extras: &Extras<'_>, at: &str) -> Result<Part<'a>, TranslateError> {
    let field = format!("{at}.source");
    let source = source_of(b, at)?;
    let blob = match source.kind.as_str() {
        "base64" => {
            let data = source
                .data
                .as_deref()
                .ok_or_else(|| invalid("a base64 source needs `data`", format!("{field}.data")))?;
            let mime = match (source.media_type.as_deref(), b.kind.as_str()) {
                (Some(m), _) => normalise_mime(m),
                (None, "document") => "application/pdf",
                (None, _) => {
                    return Err(invalid(
                        "a base64 source needs `media_type`",
                        format!("{field}.media_type"),
                    ))
                }
            };
            check_base64(data, format!("{field}.data"))?;
            Blob {
                mime_type: Cow::Borrowed(mime),
                data: Cow::Borrowed(data),
            }
        }
        "text" if b.kind == "document" => {
            let text = source.data.as_deref().unwrap_or("");
            return Ok(text_part(Cow::Borrowed(text)));
        }
        "url" => {
            let url = source.url.as_deref().unwrap_or("");
            let fetched = extras.media.and_then(|m| m.get(url)).ok_or_else(|| {
                invalid(
                    &format!(
                        "{} URLs must be http(s) URLs (fetched by the proxy); or send base64",
                        b.kind
                    ),
                    format!("{field}.url"),
                )
            })?;
            let (wanted, what) = if b.kind == "image" {
                ("image/", "an image")
            } else {
                ("application/pdf", "a PDF")
            };
            if !fetched.mime_type.starts_with(wanted) {
                return Err(invalid(
                    &format!(
                        "{} is {}, not {what}",
                        excerpt(url),
                        excerpt(&fetched.mime_type)
                    ),
                    format!("{field}.url"),
                ));
            }
            Blob {
                mime_type: Cow::Owned(normalise_mime(&fetched.mime_type).to_owned()),
                data: Cow::Owned(crate::translate::base64::encode(&fetched.bytes)),
            }
        }
        other => {
            return Err(invalid(
                &format!(
                    "unsupported {} source type `{}`: send base64 or a URL{}",
                    b.kind,
                    excerpt(other),
                    if b.kind == "image" {
                        ""
                    } else {
                        " (or text, or content blocks)"
                    }
                ),
                format!("{field}.type"),
            ))
        }
    };
    Ok(Part {
        inline_data: Some(blob),
        ..Part::default()
    })
}

fn tool_result<'a>(
    b: &'a Block<'_>,
    call_names: &HashMap<&'a str, &'a str>,
    extras: &Extras<'_>,
    at: &str,
    responses: &mut Vec<Part<'a>>,
    rest: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let id = b.tool_use_id.as_deref().ok_or_else(|| {
        invalid(
            "a tool_result needs `tool_use_id`",
            format!("{at}.tool_use_id"),
        )
    })?;
    // The result's text; its images and documents follow the responses as parts of their own.
    let mut text: Cow<'a, str> = Cow::Borrowed("");
    match &b.content {
        None => {}
        Some(Blocks::Text(t)) => text = Cow::Borrowed(t),
        Some(Blocks::List(list)) => {
            for (k, inner) in list.iter().enumerate() {
                let inner_at = format!("{at}.content[{k}]");
                let said = match (inner.kind.as_str(), &inner.text) {
                    ("text", Some(t)) => Cow::Borrowed(t.as_str()),
                    // A tool's retrieval result is what the tool answered: part of the response.
                    ("search_result", _) => Cow::Owned(search_result(inner, &inner_at)?),
                    _ => {
                        media_or_text(inner, extras, &inner_at, rest)?;
                        continue;
                    }
                };
                if text.is_empty() {
                    text = said;
                } else {
                    let joined = text.to_mut();
                    joined.push('\n');
                    joined.push_str(&said);
                }
            }
        }
    }
    let Some(name) = call_names.get(id).copied() else {
        // A result whose call was cut from the history (context truncation) answers no
        // function; keep what it said as text rather than fail.
        rest.push(text_part(Cow::Owned(format!(
            "Result of tool call {id}: {text}"
        ))));
        return Ok(());
    };
    let response = if b.is_error == Some(true) {
        let body = serde_json::json!({ "error": text }).to_string();
        match serde_json::value::RawValue::from_string(body) {
            Ok(raw) => ToolResult::Object(Json(Cow::Owned(raw))),
            Err(_) => ToolResult::Output(text),
        }
    } else {
        result_from_text(text)
    };
    responses.push(Part {
        function_response: Some(FunctionResponse {
            id: Some(id).filter(|id| !id.is_empty()),
            name,
            response,
        }),
        ..Part::default()
    });
    Ok(())
}

/// An assistant turn: text and tool calls, each carrying the signature of the `thinking`
/// block just before it (or, for a tool call, the one the proxy remembered by its id).
fn assistant_parts<'a>(
    content: &'a Blocks<'_>,
    call_names: &mut HashMap<&'a str, &'a str>,
    extras: &Extras<'_>,
    at: &dyn Fn(usize) -> String,
) -> Result<Vec<Part<'a>>, TranslateError> {
    let list = match content {
        Blocks::Text(t) => return Ok(string_turn(t)),
        Blocks::List(list) => list,
    };
    let mut parts = Vec::new();
    let mut signature: Option<&'a str> = None;
    for (j, b) in list.iter().enumerate() {
        match b.kind.as_str() {
            // Only a signature this proxy issued goes back to Gemini (`response::ours`).
            "thinking" => signature = b.signature.as_deref().and_then(super::response::ours),
            "redacted_thinking" => {}
            "text" => {
                let text = b.text.as_deref().unwrap_or("");
                if text.is_empty() {
                    continue;
                }
                parts.push(Part {
                    text: Some(Cow::Borrowed(text)),
                    thought_signature: signature.take().map(Cow::Borrowed),
                    ..Part::default()
                });
            }
            "tool_use" => {
                let id = b.id.as_deref().unwrap_or("");
                let name =
                    b.name.as_deref().filter(|n| !n.is_empty()).ok_or_else(|| {
                        invalid("a tool_use needs `name`", format!("{}.name", at(j)))
                    })?;
                if !id.is_empty() {
                    call_names.insert(id, name);
                }
                let signature = match signature.take() {
                    Some(sig) => Some(Cow::Borrowed(sig)),
                    None => extras
                        .signatures
                        .filter(|_| !id.is_empty())
                        .and_then(|lookup| lookup(id))
                        .map(Cow::Owned),
                };
                let args = match b.input {
                    Some(raw) if raw.get().trim_start().starts_with('{') => {
                        Json(Cow::Borrowed(raw))
                    }
                    _ => empty_object(),
                };
                parts.push(Part {
                    function_call: Some(FunctionCall {
                        id: Some(id).filter(|id| !id.is_empty()),
                        name,
                        args,
                    }),
                    thought_signature: signature,
                    ..Part::default()
                });
            }
            // Anthropic's own server tools ran on Anthropic's side; Gemini has nothing to replay.
            "server_tool_use" | "web_search_tool_result" => {}
            other => {
                return Err(invalid(
                    &format!(
                        "unsupported content block type `{}` in an assistant message",
                        excerpt(other)
                    ),
                    format!("{}.type", at(j)),
                ))
            }
        }
    }
    Ok(parts)
}

/// The tools and the tool choice checked alone, as `build` checks them: for a caller about to
/// do work (fetch media) that a refusal of them would waste.
pub fn check_tools(req: &MessagesRequest<'_>) -> Result<(), TranslateError> {
    checked_tools(req, &mut Vec::new()).map(drop)
}

/// The function declarations, whether web search was asked for, and the tool choice, checked
/// with or without functions (a `tool` choice must name a declared one).
type CheckedTools<'a> = (Vec<FunctionDeclaration<'a>>, bool, Option<ToolConfig<'a>>);

fn checked_tools<'a>(
    req: &'a MessagesRequest<'_>,
    notes: &mut Vec<String>,
) -> Result<CheckedTools<'a>, TranslateError> {
    let (decls, web_search) = tools(req, notes)?;
    let config = tool_config(req, &decls)?;
    Ok((decls, web_search, config))
}

/// Function declarations (client tools), and whether a web search server tool was asked for.
fn tools<'a>(
    req: &'a MessagesRequest<'_>,
    notes: &mut Vec<String>,
) -> Result<(Vec<FunctionDeclaration<'a>>, bool), TranslateError> {
    let mut decls = Vec::new();
    let mut web_search = false;
    let mut seen = crate::translate::tool_name::Declared::default();
    for (i, tool) in req.tools.iter().flatten().enumerate() {
        let kind = tool.kind.as_deref().unwrap_or("custom");
        if kind.starts_with("web_search") {
            web_search = true;
            continue;
        }
        if kind != "custom" {
            notes.push(format!(
                "server tool `{}` ({}) has no Gemini counterpart: left out",
                excerpt(&tool.name),
                excerpt(kind)
            ));
            continue;
        }
        if tool.name.is_empty() {
            return Err(invalid("a tool needs a `name`", format!("tools[{i}].name")));
        }
        // Gemini rejects duplicate declarations; the first one wins.
        if !seen.declare(&tool.name, || format!("tools[{i}].name"))? {
            continue;
        }
        decls.push(FunctionDeclaration {
            name: &tool.name,
            description: tool.description.as_deref().filter(|d| !d.is_empty()),
            parameters_json_schema: tool
                .input_schema
                .filter(|s| !schema::is_empty_object(s))
                .map(|s| Json(schema::clean(s))),
        });
    }
    if web_search && !decls.is_empty() {
        notes.push(
            "web_search is left out: Gemini does not ground with Google Search while it may call \
             functions"
                .into(),
        );
        web_search = false;
    }
    Ok((decls, web_search))
}

fn tool_config<'a>(
    req: &'a MessagesRequest<'_>,
    decls: &[FunctionDeclaration<'_>],
) -> Result<Option<ToolConfig<'a>>, TranslateError> {
    let Some(choice) = &req.tool_choice else {
        return Ok(None);
    };
    let (mode, name) = match choice.kind.as_str() {
        "auto" => ("AUTO", None),
        "any" => ("ANY", None),
        "none" => ("NONE", None),
        "tool" => {
            let name = choice
                .name
                .as_deref()
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    invalid(
                        "tool_choice of type `tool` needs `name`",
                        "tool_choice.name".into(),
                    )
                })?;
            if !decls.iter().any(|d| d.name == name) {
                return Err(invalid(
                    &format!(
                        "tool_choice names `{}`, which is not one of the declared tools",
                        excerpt(name)
                    ),
                    "tool_choice.name".into(),
                ));
            }
            ("ANY", Some([name]))
        }
        other => {
            return Err(invalid(
                &format!(
                    "unknown tool_choice type `{}`: expected auto, any, tool or none",
                    excerpt(other)
                ),
                "tool_choice.type".into(),
            ))
        }
    };
    Ok(Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode,
            allowed_function_names: name,
        },
    }))
}

fn generation_config<'a>(
    req: &'a MessagesRequest<'_>,
) -> Result<GenerationConfig<'a>, TranslateError> {
    let stop_sequences: Vec<&str> = req
        .stop_sequences
        .iter()
        .flatten()
        .map(String::as_str)
        .filter(|s| !s.is_empty())
        .collect();
    if stop_sequences.len() > 5 {
        return Err(invalid(
            "Gemini accepts at most 5 stop sequences",
            "stop_sequences".into(),
        ));
    }
    Ok(GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        // Ranges were checked in `parse`; a `top_k` of 0 restricts nothing.
        top_k: req
            .top_k
            .filter(|&k| k > 0)
            .and_then(|k| u32::try_from(k).ok()),
        max_output_tokens: req.max_tokens.and_then(|n| u32::try_from(n).ok()),
        stop_sequences,
        ..GenerationConfig::default()
    })
}

/// `thinking` and `output_config.effort` → Gemini's thinking config:
/// - `{type: enabled, budget_tokens}`: Gemini 2.5 gets the budget (within its model's range),
///   Gemini 3 the level the budget amounts to (up to 2048 low, up to 16384 medium, else
///   high); thoughts are included either way.
/// - `{type: adaptive}`: Gemini's own dynamic thinking, thoughts included; with
///   `output_config.effort` the effort's level or budget (as `reasoning_effort` on chat).
/// - `{type: disabled}`: as little thinking as the model allows, no thoughts.
/// - any other type (`between_tools`, whatever comes next): as `adaptive`.
/// - `display: "omitted"`: thoughts not included (thought signatures still come back).
/// - absent: the effort if one is given (request, then alias), else Gemini's defaults.
fn thinking(
    req: &MessagesRequest<'_>,
    model: &str,
    target: &Target<'_>,
) -> Result<Option<ThinkingConfig>, TranslateError> {
    let effort = match req.output_config.as_ref().and_then(|o| o.effort.as_deref()) {
        Some(e) if !EFFORTS.contains(&e) => {
            return Err(invalid(
                &format!(
                    "unknown output_config.effort `{}`; expected one of {EFFORTS:?}",
                    excerpt(e)
                ),
                "output_config.effort".into(),
            ))
        }
        Some(e) => Some(e),
        None => target.reasoning_effort,
    };
    let by_effort = |effort: &str| thinking_config(model, effort);
    let Some(thinking) = &req.thinking else {
        return match effort {
            Some(e) => by_effort(e),
            None => Ok(None),
        };
    };
    let config = match thinking.kind.as_str() {
        "enabled" => {
            let budget = thinking.budget_tokens.ok_or_else(|| {
                invalid(
                    "thinking of type `enabled` needs `budget_tokens`",
                    "thinking.budget_tokens".into(),
                )
            })?;
            if model.starts_with("gemini-2.5") {
                let (min, max) = if model.contains("pro") {
                    (128, 32768)
                } else if model.contains("lite") {
                    (512, 24576)
                } else {
                    (1, 24576)
                };
                let budget = i32::try_from(budget.max(0))
                    .unwrap_or(i32::MAX)
                    .clamp(min, max);
                Some(ThinkingConfig {
                    thinking_budget: Some(budget),
                    include_thoughts: Some(true),
                    ..ThinkingConfig::default()
                })
            } else {
                by_effort(match budget {
                    ..=2048 => "low",
                    2049..=16384 => "medium",
                    _ => "high",
                })?
            }
        }
        "disabled" => {
            return Ok(by_effort("none")?.map(|mut c| {
                c.include_thoughts = None;
                c
            }))
        }
        // `adaptive`, and types Anthropic added since (`between_tools`): Gemini's own dynamic
        // thinking, or the effort's.
        _ => match effort {
            Some(e) => by_effort(e)?,
            None if model.starts_with("gemini-2.5") || is_gemini3(model) => Some(ThinkingConfig {
                include_thoughts: Some(true),
                ..ThinkingConfig::default()
            }),
            None => None,
        },
    };
    // `display: "omitted"`: no thought text; the signatures come back anyway.
    Ok(config.map(|mut c| {
        if thinking.display.as_deref() == Some("omitted") {
            c.include_thoughts = None;
        }
        c
    }))
}

/// Every http(s) image and document URL in the request (user turns, tool results and
/// documents' content), for the caller to fetch and hand back through `Extras::media`.
pub fn remote_media_urls<'a>(req: &'a MessagesRequest<'_>) -> Vec<&'a str> {
    fn walk<'a>(blocks: &'a Blocks<'_>, urls: &mut Vec<&'a str>, depth: usize) {
        let Blocks::List(list) = blocks else { return };
        for b in list {
            let source = b.source.as_ref().and_then(BlockSource::object);
            match (b.kind.as_str(), source) {
                ("image" | "document", Some(source)) if source.kind == "url" => {
                    if let Some(url) = source.url.as_deref() {
                        if url.starts_with("http://") || url.starts_with("https://") {
                            urls.push(url);
                        }
                    }
                }
                ("document", Some(source)) if depth < 2 => {
                    if let Some(inner) = &source.content {
                        walk(inner, urls, depth + 1);
                    }
                }
                ("tool_result", _) if depth < 2 => {
                    if let Some(inner) = &b.content {
                        walk(inner, urls, depth + 1);
                    }
                }
                _ => {}
            }
        }
    }
    let mut urls = Vec::new();
    for msg in req.messages.iter().filter(|m| m.role == "user") {
        walk(&msg.content, &mut urls, 0);
    }
    urls
}
