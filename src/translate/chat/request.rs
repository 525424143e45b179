//! OpenAI chat request → Gemini `GenerateContentRequest`.
//!
//! Owns the turn rules Gemini enforces (system text apart, alternating user/model turns, a
//! user turn first) and the parameter mapping of protocol.md §5. It reads only the parsed
//! request and the target; it must not fetch, log or look at the clock, and it never forwards
//! a field it does not know. Media payloads are checked to be base64 (scanned, not decoded),
//! so that a bad one is the client's 400 before any key is used. The pieces every dialect
//! needs (turn rules, signature stand-in, media checks, thinking levels, safety) are
//! `pub(crate)` for `translate::anthropic`.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;

use super::wire::{
    ChatRequest, Content as MsgContent, ContentPart, Message, ResponseFormat, Stop,
    ThinkingConfigIn, ToolCall, ToolChoice,
};
use crate::excerpt::excerpt;
use crate::translate::base64::{encode as encode_base64, is_base64};
use crate::translate::gemini::{
    Blob, Content, FunctionCall, FunctionCallingConfig, FunctionDeclaration, FunctionResponse,
    GenerateContentRequest, GenerationConfig, GoogleSearch, Json, Part, SafetySetting,
    ThinkingConfig, Tool, ToolConfig, ToolResult,
};
use crate::translate::json::CowStr;
use crate::translate::{invalid, schema, Extras, Target, TranslateError};

/// Google's documented stand-in for a Gemini 3 thought signature we no longer have.
pub const SKIP_SIGNATURE: &str = "skip_thought_signature_validator";

pub(crate) const HARM_CATEGORIES: [&str; 4] = [
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
];

/// Gemini rejects a history that opens with a model turn; this stands in for the lost prompt.
const OPENING_USER_TEXT: &str = "Continue.";

/// The model id without the `models/` prefix some clients keep.
pub(crate) fn bare_model(model: &str) -> &str {
    model.strip_prefix("models/").unwrap_or(model)
}

pub(crate) fn build<'a>(
    req: &'a ChatRequest<'_>,
    target: &Target<'a>,
    extras: &Extras<'_>,
) -> Result<GenerateContentRequest<'a>, TranslateError> {
    let model = bare_model(target.model);
    let mut out = GenerateContentRequest::default();
    let mut system: Vec<Part<'a>> = Vec::new();
    // Tool results name only the call id; Gemini wants the function name. (A B-tree: a few
    // short keys compare faster than SipHash hashes them, and many still cost log n.)
    let mut call_names: BTreeMap<&'a str, &'a str> = BTreeMap::new();

    for (i, msg) in req.messages.iter().enumerate() {
        match msg {
            Message::System { content } | Message::Developer { content } => {
                // Gemini's system instruction is text only: other parts are dropped.
                text_parts(content, &mut system);
            }
            Message::User { content } => {
                let mut parts = Vec::new();
                user_parts(content, i, extras, &mut parts)?;
                push_turn(&mut out.contents, "user", parts);
            }
            Message::Assistant {
                content,
                tool_calls,
            } => {
                let mut parts = Vec::new();
                text_parts(content, &mut parts);
                for call in tool_calls.iter().flatten() {
                    // A legacy `function_call` has no id: its result names the function.
                    if !call.id.is_empty() {
                        call_names.insert(&call.id, &call.function.name);
                    }
                    parts.push(function_call_part(call, extras));
                }
                push_turn(&mut out.contents, "model", parts);
            }
            Message::Tool {
                content,
                tool_call_id,
                name,
            } => {
                let name = call_names.get(&**tool_call_id).copied().or(name.as_deref());
                let part = match name {
                    Some(name) => Part {
                        function_response: Some(FunctionResponse {
                            id: Some(&**tool_call_id).filter(|id| !id.is_empty()),
                            name,
                            response: tool_result(content),
                        }),
                        ..Part::default()
                    },
                    // A result whose call was cut from the history (context truncation) has
                    // no function to answer; keep what it said as text rather than fail.
                    None => text_part(Cow::Owned(format!(
                        "Result of tool call {tool_call_id}: {}",
                        joined_text(content)
                    ))),
                };
                push_turn(&mut out.contents, "user", vec![part]);
            }
        }
    }
    let system = if out.contents.is_empty() {
        // Gemini refuses a request with no contents ("contents is not specified"): a chat of
        // system text alone is asked as the user's turn; one with nothing to send is refused
        // here, before a key is spent on Google's 400.
        if system.is_empty() {
            return Err(invalid(
                "`messages` holds nothing to send (no text, media or tool result)",
                "messages".into(),
            ));
        }
        push_turn(&mut out.contents, "user", system);
        Vec::new()
    } else {
        system
    };
    finish_turns(&mut out, system, model);
    out.tools = function_tools(req)?;
    let has_functions = !out.tools.is_empty();
    if req.web_search_options.is_some() {
        out.tools.push(Tool {
            function_declarations: Vec::new(),
            google_search: Some(GoogleSearch {}),
        });
    }
    if has_functions {
        out.tool_config = req.tool_choice.as_ref().map(|choice| ToolConfig {
            function_calling_config: match choice {
                ToolChoice::Mode(m) => FunctionCallingConfig {
                    mode: match *m {
                        "none" => "NONE",
                        "required" => "ANY",
                        _ => "AUTO",
                    },
                    allowed_function_names: None,
                },
                ToolChoice::Allowed { required, .. } => FunctionCallingConfig {
                    mode: if *required { "ANY" } else { "AUTO" },
                    allowed_function_names: None,
                },
                ToolChoice::Named(name) => FunctionCallingConfig {
                    mode: "ANY",
                    allowed_function_names: Some([&**name]),
                },
            },
        });
    }
    out.generation_config = generation_config(req, model)?;
    let google = req.google();
    out.cached_content = cached_content(req)?.map(Cow::Borrowed);
    out.generation_config.response_modalities = response_modalities(req, model)?;
    out.generation_config.thinking_config = match google.and_then(|g| g.thinking_config.as_ref()) {
        // Google's compat layer takes one or the other; an alias's effort yields to it.
        Some(_) if req.reasoning_effort.is_some() => {
            return Err(invalid(
                "reasoning_effort and google.thinking_config cannot be used together: send one",
                "reasoning_effort".into(),
            ));
        }
        Some(config) => Some(client_thinking_config(config)?),
        None => match req.reasoning_effort.as_deref().or(target.reasoning_effort) {
            Some(effort) => thinking_config(model, effort)?,
            None => None,
        },
    };
    match &req.response_format {
        None | Some(ResponseFormat::Text) => {}
        Some(ResponseFormat::JsonObject) => {
            out.generation_config.response_mime_type = Some("application/json");
        }
        Some(ResponseFormat::JsonSchema { json_schema }) => {
            out.generation_config.response_mime_type = Some("application/json");
            out.generation_config.response_json_schema =
                json_schema.schema.map(|s| Json(schema::clean(s)));
        }
    }
    out.safety_settings = safety_settings(target);
    Ok(out)
}

/// `google.cached_content`, checked to be a cache's name (`cachedContents/…`). Whether the
/// caller may use it, and on which key, is the handler's to decide before translating.
pub fn cached_content<'a>(req: &'a ChatRequest<'_>) -> Result<Option<&'a str>, TranslateError> {
    let Some(name) = req.google().and_then(|g| g.cached_content.as_deref()) else {
        return Ok(None);
    };
    let id = name.strip_prefix("cachedContents/").unwrap_or("");
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(invalid(
            &format!(
                "google.cached_content must name a context cache (`cachedContents/…`), not '{}'",
                excerpt(name)
            ),
            "google.cached_content".into(),
        ));
    }
    Ok(Some(name))
}

/// Whether `model` is one of Gemini's image-output models (`gemini-2.5-flash-image`,
/// `gemini-3-pro-image-preview`, `gemini-2.0-flash-preview-image-generation`): a Gemini model
/// with `-image` in its name.
pub fn is_image_model(model: &str) -> bool {
    let model = bare_model(model);
    model.starts_with("gemini") && model.contains("-image")
}

/// Gemini's `responseModalities`: the request's `modalities` (`text`, `image`) when given;
/// else text and image for an image model (so its pictures come back), else Gemini's
/// default (empty: text).
pub(crate) fn response_modalities(
    req: &ChatRequest<'_>,
    model: &str,
) -> Result<Vec<&'static str>, TranslateError> {
    let Some(asked) = &req.modalities else {
        return Ok(if is_image_model(model) {
            vec!["TEXT", "IMAGE"]
        } else {
            Vec::new()
        });
    };
    let mut out = Vec::new();
    for m in asked {
        let mapped = match m.as_str() {
            "text" => "TEXT",
            "image" => "IMAGE",
            other => {
                return Err(invalid(
                    &format!(
                        "modalities: '{}' is not supported (use \"text\" and \"image\")",
                        excerpt(other)
                    ),
                    "modalities".into(),
                ))
            }
        };
        if !out.contains(&mapped) {
            out.push(mapped);
        }
    }
    // Text always comes first, as Google's samples write it.
    out.sort_unstable_by_key(|m| *m != "TEXT");
    Ok(out)
}

/// Whether the answer may carry images (the request asked, or the model makes them).
pub fn wants_images(req: &ChatRequest<'_>, model: &str) -> bool {
    response_modalities(req, model).is_ok_and(|m| m.contains(&"IMAGE"))
}

/// `upstream.safety` as Gemini's settings: one threshold for every category; none for
/// `default`.
pub(crate) fn safety_settings<'a>(target: &Target<'a>) -> Vec<SafetySetting<'a>> {
    match target.safety.filter(|t| !t.eq_ignore_ascii_case("default")) {
        Some(threshold) => HARM_CATEGORIES
            .iter()
            .map(|&category| SafetySetting {
                category,
                threshold,
            })
            .collect(),
        None => Vec::new(),
    }
}

/// The turn rules every dialect's history needs before it goes to Gemini: a user turn first,
/// Gemini 3's signature stand-in where a client dropped one, the system text apart.
pub(crate) fn finish_turns<'a>(
    out: &mut GenerateContentRequest<'a>,
    system: Vec<Part<'a>>,
    model: &str,
) {
    if out
        .contents
        .first()
        .is_some_and(|c| c.role == Some("model"))
    {
        out.contents.insert(
            0,
            Content {
                role: Some("user"),
                parts: vec![text_part(Cow::Borrowed(OPENING_USER_TEXT))],
            },
        );
    }
    if is_gemini3(model) {
        fill_missing_signatures(&mut out.contents);
    }
    if !system.is_empty() {
        out.system_instruction = Some(Content {
            role: None,
            parts: system,
        });
    }
}

fn function_call_part<'a>(call: &'a ToolCall<'_>, extras: &Extras<'_>) -> Part<'a> {
    let args = call_args(call.function.arguments);
    let signature = match call.thought_signature() {
        Some(sig) => Some(Cow::Borrowed(sig)),
        None => extras
            .signatures
            .and_then(|lookup| lookup(&call.id))
            .map(Cow::Owned),
    };
    Part {
        function_call: Some(FunctionCall {
            id: Some(&*call.id).filter(|id| !id.is_empty()),
            name: &call.function.name,
            args,
        }),
        thought_signature: signature,
        ..Part::default()
    }
}

/// `arguments` is JSON text per the spec; Gemini wants an object, and a model that wrote
/// broken JSON is better answered with {} than with a 400 the client cannot fix.
fn call_args(arguments: Option<&RawValue>) -> Json<'_> {
    let Some(raw) = arguments else {
        return empty_object();
    };
    let text = raw.get();
    let json = if text.starts_with('"') {
        match serde_json::from_str::<CowStr>(text) {
            Ok(CowStr(Cow::Borrowed(s))) => serde_json::from_str(s).ok().map(Cow::Borrowed),
            Ok(CowStr(Cow::Owned(s))) => RawValue::from_string(s).ok().map(Cow::Owned),
            Err(_) => None,
        }
    } else {
        Some(Cow::Borrowed(raw))
    };
    match json {
        Some(json) if json.get().starts_with('{') => Json(json),
        _ => empty_object(),
    }
}

pub(crate) fn empty_object() -> Json<'static> {
    // Parsing a literal cannot fail.
    Json(Cow::Borrowed(
        serde_json::from_str("{}").unwrap_or(RawValue::NULL),
    ))
}

/// Gemini 3 validates signatures for the current turn only (since the last user text), and
/// only on the first function call of each step; where the client dropped it, the stand-in
/// keeps the request valid. A user turn of function responses with only media beside them (a
/// tool's screenshot) is a step of the current turn, not a new prompt.
fn fill_missing_signatures(contents: &mut [Content<'_>]) {
    let prompt = |c: &Content<'_>| {
        c.role == Some("user")
            && (c.parts.iter().any(|p| p.text.is_some())
                || c.parts.iter().all(|p| p.function_response.is_none()))
    };
    let current = contents.iter().rposition(prompt).map_or(0, |i| i + 1);
    for content in &mut contents[current..] {
        if content.role != Some("model") {
            continue;
        }
        if let Some(first) = content.parts.iter_mut().find(|p| p.function_call.is_some()) {
            if first.thought_signature.is_none() {
                first.thought_signature = Some(Cow::Borrowed(SKIP_SIGNATURE));
            }
        }
    }
}

/// A tool result as Gemini's `response` object: a JSON object as is, anything else wrapped.
fn tool_result<'a>(content: &'a MsgContent<'_>) -> ToolResult<'a> {
    result_from_text(joined_text(content))
}

/// A tool's result text as Gemini's `response`: a JSON object as is, anything else wrapped.
pub(crate) fn result_from_text(text: Cow<'_, str>) -> ToolResult<'_> {
    if text.trim_start().starts_with('{') {
        let json = match &text {
            Cow::Borrowed(s) => serde_json::from_str(s).ok().map(Cow::Borrowed),
            Cow::Owned(s) => RawValue::from_string(s.clone()).ok().map(Cow::Owned),
        };
        if let Some(json) = json {
            return ToolResult::Object(Json(json));
        }
    }
    ToolResult::Output(text)
}

fn joined_text<'a>(content: &'a MsgContent<'_>) -> Cow<'a, str> {
    match content {
        MsgContent::None => Cow::Borrowed(""),
        MsgContent::Text(t) => Cow::Borrowed(&**t),
        MsgContent::Parts(ps) => {
            let mut acc: Cow<'a, str> = Cow::Borrowed("");
            for p in ps {
                if let ContentPart::Text { text } = p {
                    if acc.is_empty() {
                        acc = Cow::Borrowed(&**text);
                    } else {
                        acc.to_mut().push_str(text);
                    }
                }
            }
            acc
        }
    }
}

/// The request's function tools as Gemini gets them (an `allowed_tools` choice keeps only the
/// tools it names), with a named tool choice checked against them.
fn function_tools<'a>(req: &'a ChatRequest<'_>) -> Result<Vec<Tool<'a>>, TranslateError> {
    let mut tools = tools(req)?;
    if let Some(ToolChoice::Allowed { names, .. }) = &req.tool_choice {
        // Gemini's AUTO has no list of callable functions: the others are not declared.
        for tool in &mut tools {
            tool.function_declarations
                .retain(|d| names.iter().any(|n| **n == *d.name));
        }
        tools.retain(|t| !t.function_declarations.is_empty());
    }
    if let Some(ToolChoice::Named(name)) = &req.tool_choice {
        let declared = tools
            .iter()
            .flat_map(|t| &t.function_declarations)
            .any(|d| d.name == &**name);
        if !declared {
            return Err(invalid(
                &format!(
                    "tool_choice names `{}`, which is not one of `tools`",
                    excerpt(name)
                ),
                "tool_choice".into(),
            ));
        }
    }
    Ok(tools)
}

/// The tools and the tool choice checked alone, as `build` checks them: for a caller about to
/// do work (fetch media) that a refusal of them would waste.
pub fn check_tools(req: &ChatRequest<'_>) -> Result<(), TranslateError> {
    function_tools(req).map(drop)
}

fn tools<'a>(req: &'a ChatRequest<'_>) -> Result<Vec<Tool<'a>>, TranslateError> {
    let Some(tools) = &req.tools else {
        return Ok(Vec::new());
    };
    let mut seen = crate::translate::tool_name::Declared::default();
    let mut decls = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        if tool.kind != "function" {
            return Err(invalid(
                &format!("unsupported tool type `{}`", excerpt(&tool.kind)),
                format!("tools[{i}].type"),
            ));
        }
        let Some(f) = &tool.function else {
            return Err(invalid(
                "a function tool needs `function`",
                format!("tools[{i}].function"),
            ));
        };
        // Gemini rejects duplicate declarations; the first one wins.
        if !seen.declare(&f.name, || format!("tools[{i}].function.name"))? {
            continue;
        }
        decls.push(FunctionDeclaration {
            name: &f.name,
            description: f.description.as_deref().filter(|d| !d.is_empty()),
            parameters_json_schema: f
                .parameters
                .filter(|s| !schema::is_empty_object(s))
                .map(|s| Json(schema::clean(s))),
        });
    }
    if decls.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Tool {
        function_declarations: decls,
        google_search: None,
    }])
}

/// protocol.md §1 and §5: Gemini 3 takes a level, 2.5 a budget within its model's range; other
/// families have no thinking switch, so the effort is ignored there.
pub(crate) fn thinking_config(
    model: &str,
    effort: &str,
) -> Result<Option<ThinkingConfig>, TranslateError> {
    const EFFORTS: [&str; 7] = ["none", "minimal", "low", "medium", "high", "xhigh", "max"];
    if !EFFORTS.contains(&effort) {
        return Err(invalid(
            &format!(
                "unknown reasoning_effort `{}`; expected one of {EFFORTS:?}",
                excerpt(effort)
            ),
            "reasoning_effort".into(),
        ));
    }
    let flash = model.contains("flash");
    let config = if model.starts_with("gemini-3") {
        let has_medium = flash || model.starts_with("gemini-3.1-pro");
        let level = match effort {
            "none" | "minimal" if flash => "minimal",
            "none" | "minimal" | "low" => "low",
            "medium" if has_medium => "medium",
            _ => "high",
        };
        ThinkingConfig {
            thinking_level: Some(level),
            include_thoughts: Some(true),
            ..ThinkingConfig::default()
        }
    } else if model.starts_with("gemini-2.5") {
        let pro = model.contains("pro");
        let max = if pro { 32768 } else { 24576 };
        let budget = match effort {
            "none" if flash => 0,
            "none" => 128,
            "minimal" | "low" => 1024,
            "medium" => 8192,
            _ => max,
        };
        ThinkingConfig {
            thinking_budget: Some(budget),
            include_thoughts: Some(true),
            ..ThinkingConfig::default()
        }
    } else {
        return Ok(None);
    };
    Ok(Some(config))
}

/// `google.thinking_config` as the client wrote it: Gemini judges the values for its model.
fn client_thinking_config(config: &ThinkingConfigIn) -> Result<ThinkingConfig, TranslateError> {
    const LEVELS: [&str; 4] = ["minimal", "low", "medium", "high"];
    let thinking_level = match config.thinking_level.as_deref() {
        None => None,
        Some(level) => Some(
            *LEVELS
                .iter()
                .find(|l| l.eq_ignore_ascii_case(level))
                .ok_or_else(|| {
                    invalid(
                        &format!(
                            "unknown thinking_level `{}`; expected one of {LEVELS:?}",
                            excerpt(level)
                        ),
                        "google.thinking_config.thinking_level".into(),
                    )
                })?,
        ),
    };
    Ok(ThinkingConfig {
        thinking_budget: config.thinking_budget,
        thinking_level,
        include_thoughts: config.include_thoughts,
    })
}

fn generation_config<'a>(
    req: &'a ChatRequest<'_>,
    model: &str,
) -> Result<GenerationConfig<'a>, TranslateError> {
    let stop_sequences: Vec<&str> = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![&**s],
        Some(Stop::Many(all)) => all.iter().map(|s| &**s).collect(),
    };
    if stop_sequences.len() > 5 {
        return Err(invalid(
            "Gemini accepts at most 5 stop sequences",
            "stop".into(),
        ));
    }
    // OpenAI's ranges, which Gemini shares (candidateCount is at most 8): a value outside
    // them is refused here, as OpenAI refuses it, instead of by Google's 400.
    let ranges = [
        ("temperature", req.temperature, 0.0, 2.0),
        ("top_p", req.top_p, 0.0, 1.0),
        ("presence_penalty", req.presence_penalty, -2.0, 2.0),
        ("frequency_penalty", req.frequency_penalty, -2.0, 2.0),
        ("n", req.n.map(f64::from), 1.0, 8.0),
        ("top_logprobs", req.top_logprobs.map(f64::from), 0.0, 20.0),
    ];
    crate::translate::check_ranges(&ranges)?;
    // LiteLLM drops penalties for Gemini 3, which rejects them.
    let penalties = !is_gemini3(model);
    Ok(GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_completion_tokens.or(req.max_tokens),
        stop_sequences,
        candidate_count: req.n,
        seed: req.seed,
        presence_penalty: req.presence_penalty.filter(|_| penalties),
        frequency_penalty: req.frequency_penalty.filter(|_| penalties),
        response_logprobs: req.logprobs.filter(|&l| l),
        logprobs: req.top_logprobs.filter(|_| req.logprobs == Some(true)),
        ..GenerationConfig::default()
    })
}

pub(crate) fn is_gemini3(model: &str) -> bool {
    bare_model(model).starts_with("gemini-3")
}

pub(crate) fn text_part(text: Cow<'_, str>) -> Part<'_> {
    Part {
        text: Some(text),
        ..Part::default()
    }
}

/// Appends the non-empty text of `content`; Gemini rejects empty text parts.
fn text_parts<'a>(content: &'a MsgContent<'_>, parts: &mut Vec<Part<'a>>) {
    match content {
        MsgContent::None => {}
        MsgContent::Text(t) => {
            if !t.is_empty() {
                parts.push(text_part(Cow::Borrowed(&**t)));
            }
        }
        MsgContent::Parts(ps) => {
            for p in ps {
                if let ContentPart::Text { text } = p {
                    if !text.is_empty() {
                        parts.push(text_part(Cow::Borrowed(&**text)));
                    }
                }
            }
        }
    }
}

fn user_parts<'a>(
    content: &'a MsgContent<'_>,
    i: usize,
    extras: &Extras<'_>,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let MsgContent::Parts(ps) = content else {
        text_parts(content, parts);
        return Ok(());
    };
    for (j, p) in ps.iter().enumerate() {
        let param = || format!("messages[{i}].content[{j}]");
        let blob = match p {
            ContentPart::Text { text } => {
                if !text.is_empty() {
                    parts.push(text_part(Cow::Borrowed(&**text)));
                }
                continue;
            }
            ContentPart::Refusal => continue,
            ContentPart::ImageUrl { image_url } => {
                let url = &*image_url.url;
                if url.starts_with("data:") {
                    let field = param() + ".image_url.url";
                    let blob = data_url(url, None).ok_or_else(|| {
                        invalid("image_url is not a base64 data URL", field.clone())
                    })?;
                    check_base64(&blob.data, field)?;
                    blob
                } else if url.starts_with("http://") || url.starts_with("https://") {
                    let fetched = extras.media.and_then(|m| m.get(url)).ok_or_else(|| {
                        invalid(
                            "image URLs must be fetched first; send a data: URL",
                            param() + ".image_url.url",
                        )
                    })?;
                    Blob {
                        mime_type: Cow::Owned(normalise_mime(&fetched.mime_type).to_owned()),
                        data: Cow::Owned(encode_base64(&fetched.bytes)),
                    }
                } else {
                    return Err(invalid(
                        "image_url must be a data: or http(s) URL",
                        param() + ".image_url.url",
                    ));
                }
            }
            ContentPart::InputAudio { input_audio } => {
                check_base64(&input_audio.data, param() + ".input_audio.data")?;
                Blob {
                    mime_type: match &*input_audio.format {
                        "wav" => Cow::Borrowed("audio/wav"),
                        "mp3" => Cow::Borrowed("audio/mp3"),
                        other => Cow::Owned(format!("audio/{other}")),
                    },
                    data: Cow::Borrowed(&*input_audio.data),
                }
            }
            ContentPart::File { file } => {
                if file.file_id.is_some() {
                    return Err(invalid(
                        "file_id is not supported; send file_data",
                        param() + ".file.file_id",
                    ));
                }
                let guess = file.filename.as_deref().and_then(mime_from_filename);
                let blob = match file.file_data.as_deref() {
                    Some(d) if d.starts_with("data:") => data_url(d, guess),
                    // Some clients send bare base64; the file name must then say what it is.
                    Some(d) => guess.map(|m| Blob {
                        mime_type: Cow::Borrowed(m),
                        data: Cow::Borrowed(d),
                    }),
                    None => None,
                };
                let field = param() + ".file.file_data";
                let blob = blob.ok_or_else(|| {
                    invalid(
                        "file needs file_data as a base64 data URL (or base64 with a known filename)",
                        field.clone(),
                    )
                })?;
                check_base64(&blob.data, field)?;
                blob
            }
        };
        parts.push(Part {
            inline_data: Some(blob),
            ..Part::default()
        });
    }
    Ok(())
}

/// Refuses a media payload that Gemini could not decode, naming `field`: a 400 before any key
/// is used, instead of Google's 400 after one was.
pub(crate) fn check_base64(data: &str, field: String) -> Result<(), TranslateError> {
    if is_base64(data) {
        return Ok(());
    }
    Err(TranslateError::InvalidRequest {
        message: format!(
            "{field}: the payload is not valid base64 (the standard or the URL-safe alphabet, \
             '=' padding only at the end)"
        ),
        param: Some(field),
    })
}

/// `data:<mime>[;param]*;base64,<data>`; the payload is passed through without decoding.
fn data_url<'a>(url: &'a str, fallback_mime: Option<&'static str>) -> Option<Blob<'a>> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let mut fields = meta.split(';');
    let mime = fields.next().unwrap_or("");
    if !fields.any(|f| f.eq_ignore_ascii_case("base64")) {
        return None;
    }
    let mime = match mime {
        "" | "application/octet-stream" => fallback_mime?,
        m => normalise_mime(m),
    };
    Some(Blob {
        mime_type: Cow::Borrowed(mime),
        data: Cow::Borrowed(data),
    })
}

pub(crate) fn normalise_mime(mime: &str) -> &str {
    if mime.eq_ignore_ascii_case("image/jpg") {
        "image/jpeg"
    } else {
        mime
    }
}

fn mime_from_filename(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
    Some(match ext.as_str() {
        "pdf" => "application/pdf",
        "txt" => "text/plain",
        "md" => "text/markdown",
        "html" | "htm" => "text/html",
        "csv" => "text/csv",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "wav" => "audio/wav",
        "mp3" => "audio/mp3",
        "mp4" => "video/mp4",
        _ => return None,
    })
}

/// Every http(s) media URL in the request, for the caller to fetch (with its SSRF rules) and
/// hand back through `Extras::media`.
pub(crate) fn remote_media_urls<'a>(req: &'a ChatRequest<'_>) -> Vec<&'a str> {
    let mut urls = Vec::new();
    for msg in &req.messages {
        if let Message::User {
            content: MsgContent::Parts(ps),
        } = msg
        {
            for p in ps {
                if let ContentPart::ImageUrl { image_url } = p {
                    let url = &*image_url.url;
                    if url.starts_with("http://") || url.starts_with("https://") {
                        urls.push(url);
                    }
                }
            }
        }
    }
    urls
}

/// Appends a turn, merging it into the previous one when the role repeats (Gemini wants
/// alternating turns) and dropping it when it has nothing to say.
pub(crate) fn push_turn<'a>(
    contents: &mut Vec<Content<'a>>,
    role: &'static str,
    parts: Vec<Part<'a>>,
) {
    if parts.is_empty() {
        return;
    }
    match contents.last_mut() {
        Some(last) if last.role == Some(role) => last.parts.extend(parts),
        _ => contents.push(Content {
            role: Some(role),
            parts,
        }),
    }
}
