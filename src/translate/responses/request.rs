//! Responses request → the chat request `translate::request` maps to Gemini.
//!
//! A Responses conversation is a chat conversation in other clothes: messages by role,
//! `function_call` items (assistant tool calls), `function_call_output` items (tool results),
//! `reasoning` items (whose `encrypted_content` carries Gemini 3 thought signatures back).
//! So this module reads the items into a `ChatRequest` borrowing from them, and the turn rules,
//! media checks, schema cleaning, effort mapping and signature stand-ins stay in one place.
//! `namespace` tools are flattened (`{namespace}__{name}`) and `custom` tools (freeform text
//! input) become functions of one string parameter, `input`; `Names` maps Gemini's calls back.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use super::super::{invalid, TranslateError};
use super::wire::{Item, Part, ResponsesRequest, ToolDef};
use super::{decode_signatures, serde_message};
use crate::excerpt::excerpt;
use crate::translate::chat::wire::{
    ChatRequest, Content, ContentPart, ExtraContent, FileRef, FunctionCall, FunctionDef,
    GoogleExtra, GoogleExtras, ImageUrl, JsonSchemaFormat, Message, ResponseFormat,
    ThinkingConfigIn, Tool, ToolCall, ToolChoice,
};

/// The separator of a flattened namespace tool name.
pub const NAMESPACE_SEP: &str = "__";

/// What the calls Gemini makes are on the Responses side.
#[derive(Debug, Clone, Default)]
pub struct Names {
    /// Flattened tool name → `(namespace, name)`.
    pub namespaced: HashMap<String, (String, String)>,
    /// Gemini names of `custom` tools: their calls are `custom_tool_call`s.
    pub custom: HashSet<String>,
    /// The hosted tools asked for that Gemini has no counterpart for (`file_search`, `mcp`…),
    /// left out: the caller says so in its debug log.
    pub left_out: Vec<String>,
}

/// The one parameter of a `custom` tool's function.
const CUSTOM_INPUT: &str = "input";

fn custom_schema() -> &'static RawValue {
    static SCHEMA: OnceLock<Box<RawValue>> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let schema = serde_json::json!({"type": "object", "properties": {CUSTOM_INPUT: {
            "type": "string",
            "description": "The whole input, as raw text in the format the tool describes"}},
            "required": [CUSTOM_INPUT]});
        RawValue::from_string(schema.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned())
    })
}

/// One conversation entry, read from an item.
#[derive(Debug)]
pub enum Entry<'a> {
    Message {
        role: Role,
        content: Body<'a>,
    },
    Call {
        call_id: Cow<'a, str>,
        name: Cow<'a, str>,
        /// Borrowed JSON text, or the object a custom call's input became.
        arguments: Option<Cow<'a, RawValue>>,
    },
    Output {
        call_id: Cow<'a, str>,
        output: Body<'a>,
    },
    /// Signatures from a reasoning item's `encrypted_content`, by call id.
    Reasoning(Vec<(String, String)>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
    System,
    Developer,
}

/// A string, or content parts.
#[derive(Debug)]
pub enum Body<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

fn parse_body<'a>(raw: Option<&'a RawValue>, param: &str) -> Result<Body<'a>, TranslateError> {
    let Some(raw) = raw else {
        return Ok(Body::Text(Cow::Borrowed("")));
    };
    let text = raw.get();
    let parsed = if text.starts_with('"') {
        serde_json::from_str::<super::super::json::CowStr>(text).map(|s| Body::Text(s.0))
    } else if text.starts_with('[') {
        serde_json::from_str::<Vec<Part>>(text).map(Body::Parts)
    } else {
        return Err(invalid(
            "expected a string or a list of content parts",
            param.into(),
        ));
    };
    parsed.map_err(|e| invalid(&format!("{param}: {}", serde_message(&e)), param.into()))
}

/// `input` (a string, or a list of items) as conversation entries. `field` names it in errors.
pub fn parse_input<'a>(
    input: Option<&'a RawValue>,
    field: &str,
) -> Result<Vec<Entry<'a>>, TranslateError> {
    let Some(raw) = input else {
        return Ok(Vec::new());
    };
    let text = raw.get();
    if text.starts_with('"') {
        let s = serde_json::from_str::<super::super::json::CowStr>(text)
            .map_err(|e| invalid(&serde_message(&e), field.into()))?;
        return Ok(vec![Entry::Message {
            role: Role::User,
            content: Body::Text(s.0),
        }]);
    }
    if !text.starts_with('[') {
        return Err(invalid(
            "`input` must be a string or a list of items",
            field.into(),
        ));
    }
    let items: Vec<Item> = serde_json::from_str(text)
        .map_err(|e| invalid(&format!("{field}: {}", serde_message(&e)), field.into()))?;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        if let Some(entry) = entry(item, &format!("{field}[{i}]"))? {
            out.push(entry);
        }
    }
    Ok(out)
}

fn entry<'a>(item: Item<'a>, param: &str) -> Result<Option<Entry<'a>>, TranslateError> {
    let kind = item.kind.as_deref().unwrap_or("message");
    Ok(Some(match kind {
        "message" => {
            let role = match item.role.as_deref() {
                Some("user") => Role::User,
                Some("assistant") => Role::Assistant,
                Some("system") => Role::System,
                Some("developer") => Role::Developer,
                Some(other) => {
                    return Err(invalid(
                        &format!(
                            "unknown role `{}`; expected user, assistant, system or developer",
                            excerpt(other)
                        ),
                        format!("{param}.role"),
                    ))
                }
                None => return Err(invalid("a message needs `role`", format!("{param}.role"))),
            };
            Entry::Message {
                role,
                content: parse_body(item.content, &format!("{param}.content"))?,
            }
        }
        "function_call" => {
            let (Some(call_id), Some(name)) = (item.call_id, item.name) else {
                return Err(invalid(
                    "a function_call needs `call_id` and `name`",
                    param.into(),
                ));
            };
            let name = match item.namespace {
                Some(ns) if !ns.is_empty() => Cow::Owned(format!("{ns}{NAMESPACE_SEP}{name}")),
                _ => name,
            };
            Entry::Call {
                call_id,
                name,
                arguments: item.arguments.map(Cow::Borrowed),
            }
        }
        "custom_tool_call" => {
            let (Some(call_id), Some(name)) = (item.call_id, item.name) else {
                return Err(invalid(
                    "a custom_tool_call needs `call_id` and `name`",
                    param.into(),
                ));
            };
            let name = match item.namespace {
                Some(ns) if !ns.is_empty() => Cow::Owned(format!("{ns}{NAMESPACE_SEP}{name}")),
                _ => name,
            };
            let args = serde_json::json!({CUSTOM_INPUT: item.input.as_deref().unwrap_or("")});
            Entry::Call {
                call_id,
                name,
                arguments: RawValue::from_string(args.to_string()).ok().map(Cow::Owned),
            }
        }
        "function_call_output" | "custom_tool_call_output" => {
            let Some(call_id) = item.call_id else {
                return Err(invalid(
                    "a tool call output needs `call_id`",
                    format!("{param}.call_id"),
                ));
            };
            Entry::Output {
                call_id,
                output: parse_body(item.output, &format!("{param}.output"))?,
            }
        }
        "reasoning" => Entry::Reasoning(
            item.encrypted_content
                .as_deref()
                .map(decode_signatures)
                .unwrap_or_default(),
        ),
        // Hosted tools' items (web_search_call, item_reference, …) say nothing Gemini can use.
        _ => return Ok(None),
    }))
}

/// The function declarations the request's tools make, flattened, with the namespace map.
fn tools<'a>(
    defs: &'a [ToolDef<'a>],
    names: &mut Names,
    web_search: &mut bool,
) -> Result<Vec<Tool<'a>>, TranslateError> {
    let mut out = Vec::new();
    for (i, def) in defs.iter().enumerate() {
        match &*def.kind {
            "function" | "custom" => out.push(function(def, None, &format!("tools[{i}]"), names)?),
            "namespace" => {
                let ns = def.name.as_deref().unwrap_or("");
                for (j, inner) in def.tools.iter().flatten().enumerate() {
                    if inner.kind != "function" && inner.kind != "custom" {
                        continue;
                    }
                    let param = format!("tools[{i}].tools[{j}]");
                    let tool = function(inner, Some(ns), &param, names)?;
                    if let Some(f) = &tool.function {
                        let inner_name = inner.name.as_deref().unwrap_or("").to_string();
                        names
                            .namespaced
                            .insert(f.name.to_string(), (ns.to_string(), inner_name));
                    }
                    out.push(tool);
                }
            }
            k if k.starts_with("web_search") => *web_search = true,
            // file_search, computer_use, image_generation, local_shell…: not Gemini's.
            other => names.left_out.push(other.to_string()),
        }
    }
    Ok(out)
}

fn function<'a>(
    def: &'a ToolDef<'a>,
    namespace: Option<&str>,
    param: &str,
    names: &mut Names,
) -> Result<Tool<'a>, TranslateError> {
    let Some(name) = def.name.as_deref().filter(|n| !n.is_empty()) else {
        return Err(invalid(
            "a function tool needs `name`",
            format!("{param}.name"),
        ));
    };
    let name = match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => Cow::Owned(format!("{ns}{NAMESPACE_SEP}{name}")),
        None => Cow::Borrowed(name),
    };
    if def.kind == "custom" {
        names.custom.insert(name.to_string());
        // The input's format goes into the description: the model writes it as the string.
        let format = def
            .format
            .as_ref()
            .filter(|f| f.kind.as_deref() == Some("grammar"));
        let description = match format {
            Some(f) => Cow::Owned(format!(
                "{}\n\nThe `input` follows this {} grammar:\n{}",
                def.description.as_deref().unwrap_or(""),
                f.syntax.as_deref().unwrap_or(""),
                f.definition.as_deref().unwrap_or("")
            )),
            None => Cow::Borrowed(def.description.as_deref().unwrap_or("")),
        };
        return Ok(Tool {
            kind: Cow::Borrowed("function"),
            function: Some(FunctionDef {
                name,
                description: Some(description).filter(|d| !d.is_empty()),
                parameters: Some(custom_schema()),
            }),
        });
    }
    Ok(Tool {
        kind: Cow::Borrowed("function"),
        function: Some(FunctionDef {
            name,
            description: def.description.as_deref().map(Cow::Borrowed),
            parameters: def.parameters,
        }),
    })
}

/// The tool choice (`allowed_tools` as chat's `ToolChoice::Allowed`, whose functions are
/// named as declared: namespaced ones flattened), and whether it leaves the web search tool
/// callable (an `allowed_tools` list that does not name it does not).
type Choice = (Option<ToolChoice<'static>>, bool);

fn tool_choice(raw: &RawValue) -> Result<Choice, TranslateError> {
    let value: serde_json::Value = serde_json::from_str(raw.get())
        .map_err(|e| invalid(&serde_message(&e), "tool_choice".into()))?;
    if let Some(map) = value
        .as_object()
        .filter(|m| m.get("type").and_then(|t| t.as_str()) == Some("allowed_tools"))
    {
        let required = map.get("mode").and_then(|m| m.as_str()) == Some("required");
        let Some(listed) = map.get("tools").and_then(|t| t.as_array()) else {
            return Err(invalid(
                "tool_choice of type allowed_tools needs `tools`",
                "tool_choice.tools".into(),
            ));
        };
        let is_web_search = |tool: &&serde_json::Value| {
            tool.get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|k| k.starts_with("web_search"))
        };
        let web_search = listed.iter().any(|tool| is_web_search(&tool));
        let names = listed
            .iter()
            .filter(|tool| !is_web_search(tool))
            .filter_map(|tool| {
                let name = tool.get("name").and_then(|n| n.as_str())?;
                Some(Cow::Owned(
                    match tool.get("namespace").and_then(|n| n.as_str()) {
                        Some(ns) => format!("{ns}{NAMESPACE_SEP}{name}"),
                        None => name.to_string(),
                    },
                ))
            })
            .collect();
        return Ok((Some(ToolChoice::Allowed { required, names }), web_search));
    }
    Ok((one_tool_choice(&value)?, true))
}

fn one_tool_choice(
    value: &serde_json::Value,
) -> Result<Option<ToolChoice<'static>>, TranslateError> {
    Ok(match value {
        serde_json::Value::String(mode) => Some(ToolChoice::Mode(match mode.as_str() {
            "none" => "none",
            "required" => "required",
            "auto" => "auto",
            other => {
                return Err(invalid(
                    &format!(
                        "unknown tool_choice `{}`; expected auto, none or required",
                        excerpt(other)
                    ),
                    "tool_choice".into(),
                ))
            }
        })),
        serde_json::Value::Object(map) => match map.get("type").and_then(|t| t.as_str()) {
            Some("function" | "custom") => match map.get("name").and_then(|n| n.as_str()) {
                Some(name) => {
                    let name = match map.get("namespace").and_then(|n| n.as_str()) {
                        Some(ns) => format!("{ns}{NAMESPACE_SEP}{name}"),
                        None => name.to_string(),
                    };
                    Some(ToolChoice::Named(Cow::Owned(name)))
                }
                None => {
                    return Err(invalid(
                        "tool_choice of type function needs `name`",
                        "tool_choice.name".into(),
                    ))
                }
            },
            // A hosted tool named (web_search, file_search…): the model decides.
            _ => None,
        },
        serde_json::Value::Null => None,
        _ => {
            return Err(invalid(
                "tool_choice must be a string or an object",
                "tool_choice".into(),
            ))
        }
    })
}

fn parts<'a>(body: &'a Body<'_>, param: &str) -> Result<Content<'a>, TranslateError> {
    Ok(match body {
        Body::Text(t) => Content::Text(Cow::Borrowed(t)),
        Body::Parts(ps) => {
            let mut out = Vec::with_capacity(ps.len());
            for (j, p) in ps.iter().enumerate() {
                let kind = p.kind.as_deref().unwrap_or("input_text");
                match kind {
                    "input_text" | "output_text" | "text" | "summary_text" | "reasoning_text" => {
                        if let Some(text) = &p.text {
                            out.push(ContentPart::Text {
                                text: Cow::Borrowed(text),
                            });
                        }
                    }
                    "refusal" => out.push(ContentPart::Refusal),
                    "input_image" => {
                        let Some(url) = &p.image_url else {
                            return Err(invalid(
                                "input_image needs `image_url` (a data: or http(s) URL); \
                                 file_id is not supported",
                                format!("{param}[{j}].image_url"),
                            ));
                        };
                        out.push(ContentPart::ImageUrl {
                            image_url: ImageUrl {
                                url: Cow::Borrowed(url),
                            },
                        });
                    }
                    "input_file" => {
                        // A `file_url` is fetched by the proxy as an image URL is (a PDF or an
                        // image, inlined).
                        let url = p
                            .file_url
                            .as_deref()
                            .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
                        if let (None, Some(url)) = (&p.file_data, url) {
                            out.push(ContentPart::ImageUrl {
                                image_url: ImageUrl {
                                    url: Cow::Borrowed(url),
                                },
                            });
                            continue;
                        }
                        if p.file_data.is_none() {
                            return Err(invalid(
                                "input_file needs `file_data` (a base64 data URL) or an http(s) \
                                 `file_url`; file_id is not supported",
                                format!("{param}[{j}].file_data"),
                            ));
                        }
                        out.push(ContentPart::File {
                            file: FileRef {
                                file_data: p.file_data.as_deref().map(Cow::Borrowed),
                                file_id: None,
                                filename: p.filename.as_deref().map(Cow::Borrowed),
                            },
                        });
                    }
                    // input_audio and future part types: nothing Gemini is sent.
                    _ => {}
                }
            }
            Content::Parts(out)
        }
    })
}

/// What `to_chat` needs besides the request and its conversation.
pub struct Shaping<'a> {
    /// The Gemini model this request goes to.
    pub model: &'a str,
    /// The alias's effort, if any (the request's own wins).
    pub alias_effort: Option<&'a str>,
}

/// The chat request for `conversation` (history first, then this request's input) under the
/// request's settings; `names` gets the namespace map.
pub fn to_chat<'a>(
    req: &'a ResponsesRequest<'a>,
    conversation: &'a [Entry<'a>],
    shaping: &Shaping<'_>,
    body_len: usize,
    names: &mut Names,
) -> Result<ChatRequest<'a>, TranslateError> {
    let mut messages = Vec::with_capacity(conversation.len() + 1);
    if let Some(instructions) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(Message::System {
            content: Content::Text(Cow::Borrowed(instructions)),
        });
    }
    let signatures: HashMap<&str, &str> = conversation
        .iter()
        .filter_map(|e| match e {
            Entry::Reasoning(sigs) => Some(sigs),
            _ => None,
        })
        .flatten()
        .map(|(id, sig)| (id.as_str(), sig.as_str()))
        .collect();
    for (i, entry) in conversation.iter().enumerate() {
        let param = format!("input[{i}].content");
        match entry {
            Entry::Message { role, content } => {
                let content = parts(content, &param)?;
                messages.push(match role {
                    Role::User => Message::User { content },
                    Role::System => Message::System { content },
                    Role::Developer => Message::Developer { content },
                    Role::Assistant => Message::Assistant {
                        content,
                        tool_calls: None,
                    },
                });
            }
            Entry::Call {
                call_id,
                name,
                arguments,
            } => {
                let call = ToolCall {
                    id: Cow::Borrowed(call_id),
                    function: FunctionCall {
                        name: Cow::Borrowed(name),
                        arguments: arguments.as_deref(),
                    },
                    extra_content: signatures.get(&**call_id).map(|sig| ExtraContent {
                        google: Some(GoogleExtra {
                            thought_signature: Some(Cow::Borrowed(*sig)),
                        }),
                    }),
                };
                // Consecutive calls join one model turn (the chat mapping merges the turns).
                match messages.last_mut() {
                    Some(Message::Assistant {
                        tool_calls: Some(calls),
                        ..
                    }) => calls.push(call),
                    _ => messages.push(Message::Assistant {
                        content: Content::None,
                        tool_calls: Some(vec![call]),
                    }),
                }
            }
            Entry::Output { call_id, output } => messages.push(Message::Tool {
                content: parts(output, &format!("input[{i}].output"))?,
                tool_call_id: Cow::Borrowed(call_id),
                name: None,
            }),
            Entry::Reasoning(_) => {}
        }
    }
    if messages
        .iter()
        .all(|m| matches!(m, Message::System { .. } | Message::Developer { .. }))
    {
        return Err(invalid(
            "`input` must hold at least one message or item",
            "input".into(),
        ));
    }

    let mut web_search = false;
    let tools = match &req.tools {
        Some(defs) => tools(defs, names, &mut web_search)?,
        None => Vec::new(),
    };
    let (tool_choice, web_search_allowed) = match req.tool_choice {
        Some(raw) => tool_choice(raw)?,
        None => (None, true),
    };
    // With `allowed_tools`, chat's builder declares only the allowed functions; web search
    // goes where no function is left to declare.
    let functions_left = match &tool_choice {
        Some(ToolChoice::Allowed { names, .. }) => tools
            .iter()
            .any(|t| t.function.as_ref().is_some_and(|f| names.contains(&f.name))),
        _ => !tools.is_empty(),
    };
    let web_search = web_search && web_search_allowed && !functions_left;
    let tools = (!tools.is_empty()).then_some(tools);
    let response_format = match req.text.as_ref().and_then(|t| t.format.as_ref()) {
        None => None,
        Some(f) => match &*f.kind {
            "text" => Some(ResponseFormat::Text),
            "json_object" => Some(ResponseFormat::JsonObject),
            "json_schema" => Some(ResponseFormat::JsonSchema {
                json_schema: JsonSchemaFormat {
                    name: f.name.as_deref().map(Cow::Borrowed),
                    schema: f.schema,
                },
            }),
            other => {
                return Err(invalid(
                    &format!(
                        "unknown text.format type `{}`; expected text, json_object or json_schema",
                        excerpt(other)
                    ),
                    "text.format.type".into(),
                ))
            }
        },
    };
    let effort = req.reasoning.as_ref().and_then(|r| r.effort.as_deref());
    let summary = req
        .reasoning
        .as_ref()
        .and_then(|r| r.summary.as_deref().or(r.generate_summary.as_deref()))
        .filter(|s| *s != "none");
    // A summary asked for without an effort: thoughts on at the model's own level, where the
    // model thinks at all.
    let thinks = shaping.model.starts_with("gemini-2.5") || shaping.model.starts_with("gemini-3");
    let google =
        (summary.is_some() && effort.is_none() && shaping.alias_effort.is_none() && thinks).then(
            || GoogleExtras {
                thinking_config: Some(ThinkingConfigIn {
                    include_thoughts: Some(true),
                    ..ThinkingConfigIn::default()
                }),
                cached_content: None,
            },
        );
    Ok(ChatRequest {
        model: Cow::Borrowed(&req.model),
        messages,
        stream: req.stream(),
        stream_options: None,
        reasoning_effort: effort.map(Cow::Borrowed),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: None,
        max_completion_tokens: req.max_output_tokens,
        stop: None,
        n: None,
        seed: None,
        presence_penalty: None,
        frequency_penalty: None,
        response_format,
        tools,
        tool_choice,
        functions: None,
        function_call: None,
        legacy_functions: false,
        parallel_tool_calls: req.parallel_tool_calls,
        logprobs: req.include_logprobs().then_some(true),
        top_logprobs: req
            .top_logprobs
            .and_then(|n| u32::try_from(n).ok())
            .filter(|&n| n > 0),
        user: None,
        // Gemini before 3 refuses built-in tools beside functions, and Gemini 3 only with
        // server-side tool invocations replayed: with function tools, web_search is dropped.
        web_search_options: web_search.then_some(IgnoredAny),
        google,
        extra_body: None,
        modalities: None,
        body_len,
    })
}
