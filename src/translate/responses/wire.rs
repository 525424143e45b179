//! OpenAI Responses API request types, as Codex CLI, the Agents SDK and the openai SDK send
//! them.
//!
//! Lenient where clients differ (unknown fields and unknown item or tool types are ignored and
//! never forwarded; items may come with or without `type`; `null` means absent) and strict
//! where a wrong type would change meaning (a string `temperature` is an error). Items are one
//! flat struct, read for their `type` by `request.rs`: that keeps serde's error messages
//! naming the field at fault. Tool schemas and call arguments stay raw JSON, borrowed.

use std::borrow::Cow;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::super::json::opt_str;

#[derive(Debug, Deserialize)]
pub struct ResponsesRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    /// A string or a list of items; kept raw, read by `parse_input` (and stored as is).
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub instructions: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub tools: Option<Vec<ToolDef<'a>>>,
    /// `"auto" | "none" | "required"` or an object; read by `request::tool_choice`.
    #[serde(default, borrow)]
    pub tool_choice: Option<&'a RawValue>,
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default, borrow)]
    pub text: Option<TextConfig<'a>>,
    #[serde(default, borrow)]
    pub reasoning: Option<ReasoningConfig<'a>>,
    #[serde(default)]
    pub max_output_tokens: Option<u32>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub stream: Option<bool>,
    /// Default true: the response is kept for `previous_response_id` and `GET`.
    #[serde(default)]
    pub store: Option<bool>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub previous_response_id: Option<Cow<'a, str>>,
    #[serde(default)]
    pub include: Option<Vec<String>>,
    /// Alternatives per token, with `include: ["message.output_text.logprobs"]` (0 to 20).
    #[serde(default)]
    pub top_logprobs: Option<i64>,
    /// Echoed back; otherwise ignored.
    #[serde(default, borrow)]
    pub metadata: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub user: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub prompt_cache_key: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub service_tier: Option<Cow<'a, str>>,
    #[serde(default)]
    pub client_metadata: Option<IgnoredAny>,
    #[serde(default)]
    pub truncation: Option<IgnoredAny>,
}

impl ResponsesRequest<'_> {
    pub fn stream(&self) -> bool {
        self.stream == Some(true)
    }

    pub fn store(&self) -> bool {
        self.store != Some(false)
    }

    /// `include: ["message.output_text.logprobs"]`: the answer text's tokens carry their
    /// log probabilities (Gemini's `responseLogprobs`).
    pub fn include_logprobs(&self) -> bool {
        self.include
            .iter()
            .flatten()
            .any(|i| i == "message.output_text.logprobs")
    }

    /// `include: ["reasoning.encrypted_content"]`: reasoning items carry the thought
    /// signatures back to the client.
    pub fn include_encrypted(&self) -> bool {
        self.include
            .iter()
            .flatten()
            .any(|i| i == "reasoning.encrypted_content")
    }
}

/// One tool; `function`, `custom` (freeform input, as Codex's `apply_patch`), `namespace`
/// (holding function and custom tools) and `web_search*` mean something to Gemini, other
/// hosted tools are ignored.
#[derive(Debug, Deserialize)]
pub struct ToolDef<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub description: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
    /// Gemini validates arguments against the schema anyway.
    #[serde(default)]
    pub strict: Option<bool>,
    /// A namespace's own tools.
    #[serde(default, borrow)]
    pub tools: Option<Vec<ToolDef<'a>>>,
    /// A `custom` tool's input format: `{type: "text"}` or `{type: "grammar", syntax,
    /// definition}`.
    #[serde(default, borrow)]
    pub format: Option<CustomFormat<'a>>,
}

#[derive(Debug, Deserialize)]
pub struct CustomFormat<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "opt_str")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub syntax: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub definition: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
pub struct TextConfig<'a> {
    #[serde(default, borrow)]
    pub format: Option<TextFormat<'a>>,
}

/// `{type: "text" | "json_object" | "json_schema", name?, schema?, strict?}`.
#[derive(Debug, Deserialize)]
pub struct TextFormat<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub schema: Option<&'a RawValue>,
    #[serde(default)]
    pub strict: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct ReasoningConfig<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub effort: Option<Cow<'a, str>>,
    /// `auto | concise | detailed`: thoughts are asked for and returned as summary text.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub summary: Option<Cow<'a, str>>,
    /// The older spelling of `summary`.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub generate_summary: Option<Cow<'a, str>>,
}

/// One input item, every kind's fields in one struct (`type` may be absent: a message).
#[derive(Debug, Default, Deserialize)]
pub struct Item<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "opt_str")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub role: Option<Cow<'a, str>>,
    /// A message's content: a string or a list of parts.
    #[serde(default, borrow)]
    pub content: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub call_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub name: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub namespace: Option<Cow<'a, str>>,
    /// A function call's arguments: JSON text in a string. Kept raw.
    #[serde(default, borrow)]
    pub arguments: Option<&'a RawValue>,
    /// A custom tool call's freeform input.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub input: Option<Cow<'a, str>>,
    /// A function call's output: a string or a list of parts.
    #[serde(default, borrow)]
    pub output: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub encrypted_content: Option<Cow<'a, str>>,
}

/// One content part of a message or of a tool output.
#[derive(Debug, Default, Deserialize)]
pub struct Part<'a> {
    #[serde(rename = "type", default, borrow, deserialize_with = "opt_str")]
    pub kind: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub text: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub image_url: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub file_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub file_data: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub file_url: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub filename: Option<Cow<'a, str>>,
}
