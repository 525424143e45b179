//! Gemini `v1beta` wire types: the request we build and the response we read.
//!
//! Request types borrow from the parsed OpenAI request so that text, base64 payloads and raw
//! JSON (schemas, call arguments, tool results) are written out without copies; every optional
//! field is skipped when absent, because Gemini rejects fields it does not know. Response types read only what translation needs and
//! ignore the rest. No mapping logic lives here.

use std::borrow::Cow;

use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;

use super::json::opt_str;

/// A JSON value written verbatim: borrowed from the client's body, or built once.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Json<'a>(pub Cow<'a, RawValue>);

impl PartialEq for Json<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

// ---------- request ----------

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentRequest<'a> {
    pub contents: Vec<Content<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_instruction: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_config: Option<ToolConfig<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub safety_settings: Vec<SafetySetting<'a>>,
    #[serde(skip_serializing_if = "GenerationConfig::is_empty")]
    pub generation_config: GenerationConfig<'a>,
    /// `cachedContents/…`: a context cache of the key the request is pinned to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_content: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Serialize)]
pub struct Content<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    pub parts: Vec<Part<'a>>,
}

/// A part holds exactly one data field; `thought_signature` is a sibling of it.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Part<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inline_data: Option<Blob<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_call: Option<FunctionCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function_response: Option<FunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<Cow<'a, str>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Blob<'a> {
    pub mime_type: Cow<'a, str>,
    /// Base64, passed through from the client's data URL.
    pub data: Cow<'a, str>,
}

#[derive(Debug, Serialize)]
pub struct FunctionCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(serialize_with = "super::tool_name::serialize")]
    pub name: &'a str,
    pub args: Json<'a>,
}

#[derive(Debug, Serialize)]
pub struct FunctionResponse<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<&'a str>,
    #[serde(serialize_with = "super::tool_name::serialize")]
    pub name: &'a str,
    pub response: ToolResult<'a>,
}

/// A tool's result as Gemini's `response` object.
#[derive(Debug)]
pub enum ToolResult<'a> {
    /// The result was a JSON object: sent as is.
    Object(Json<'a>),
    /// Anything else: `{"output": text}`.
    Output(Cow<'a, str>),
}

impl Serialize for ToolResult<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ToolResult::Object(json) => json.serialize(s),
            ToolResult::Output(text) => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("output", text)?;
                map.end()
            }
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Tool<'a> {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub function_declarations: Vec<FunctionDeclaration<'a>>,
    /// Grounding with Google Search (`web_search_options` on the OpenAI side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub google_search: Option<GoogleSearch>,
}

/// `{}`: Google Search with its defaults.
#[derive(Debug, Default, Serialize)]
pub struct GoogleSearch {}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionDeclaration<'a> {
    #[serde(serialize_with = "super::tool_name::serialize")]
    pub name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters_json_schema: Option<Json<'a>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ToolConfig<'a> {
    pub function_calling_config: FunctionCallingConfig<'a>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FunctionCallingConfig<'a> {
    pub mode: &'static str,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "super::tool_name::serialize_allowed"
    )]
    pub allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Debug, Serialize)]
pub struct SafetySetting<'a> {
    pub category: &'static str,
    pub threshold: &'a str,
}

#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub candidate_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_logprobs: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_json_schema: Option<Json<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_config: Option<ThinkingConfig>,
    /// Anthropic's `top_k` (issue #17).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    /// `["TEXT", "IMAGE"]` for image output; empty: Gemini's default (text).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub response_modalities: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig>,
}

/// Image output settings of Gemini's image models.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aspect_ratio: Option<&'static str>,
}

impl GenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        *self == GenerationConfig::default()
    }
}

#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThinkingConfig {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_budget: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking_level: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub include_thoughts: Option<bool>,
}

/// Whether Gemini's finish reason says the answer was blocked (safety, recitation, a block
/// list, prohibited content, personal data, an image filter): every dialect's content filter.
pub(crate) fn is_filtered(finish: &str) -> bool {
    finish.starts_with("IMAGE_")
        || matches!(
            finish,
            "SAFETY" | "PROHIBITED_CONTENT" | "BLOCKLIST" | "SPII" | "RECITATION"
        )
}

// ---------- response ----------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GenerateContentResponse<'a> {
    #[serde(default, borrow)]
    pub candidates: Vec<Candidate<'a>>,
    #[serde(default, borrow)]
    pub prompt_feedback: Option<PromptFeedback<'a>>,
    #[serde(default)]
    pub usage_metadata: Option<UsageMetadata>,
    /// Set when the body is an error object rather than a response.
    #[serde(default)]
    pub error: Option<GoogleError>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate<'a> {
    #[serde(default, borrow)]
    pub content: Option<ResponseContent<'a>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub finish_reason: Option<Cow<'a, str>>,
    #[serde(default)]
    pub index: Option<u32>,
    #[serde(default, borrow)]
    pub logprobs_result: Option<LogprobsResult<'a>>,
    /// With the `googleSearch` tool: the web sources and which text each one supports.
    #[serde(default, borrow)]
    pub grounding_metadata: Option<GroundingMetadata<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingMetadata<'a> {
    #[serde(default, borrow)]
    pub grounding_chunks: Vec<GroundingChunk<'a>>,
    #[serde(default)]
    pub grounding_supports: Vec<GroundingSupport>,
}

#[derive(Debug, Default, Deserialize)]
pub struct GroundingChunk<'a> {
    #[serde(default, borrow)]
    pub web: Option<WebSource<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct WebSource<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub uri: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub title: Option<Cow<'a, str>>,
}

/// A stretch of the answer and the chunks that support it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GroundingSupport {
    #[serde(default)]
    pub segment: Option<Segment>,
    #[serde(default)]
    pub grounding_chunk_indices: Vec<usize>,
}

/// Byte offsets into one part's text (`part_index`, 0 when absent); the end is exclusive.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    #[serde(default)]
    pub part_index: usize,
    #[serde(default)]
    pub start_index: usize,
    #[serde(default)]
    pub end_index: usize,
}

/// Per-token log probabilities (`responseLogprobs`): the chosen token at each step and, with
/// `logprobs: k`, the k most likely ones.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogprobsResult<'a> {
    #[serde(default, borrow)]
    pub top_candidates: Vec<TopCandidates<'a>>,
    #[serde(default, borrow)]
    pub chosen_candidates: Vec<LogprobCandidate<'a>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct TopCandidates<'a> {
    #[serde(default, borrow)]
    pub candidates: Vec<LogprobCandidate<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogprobCandidate<'a> {
    #[serde(default, borrow)]
    pub token: Cow<'a, str>,
    #[serde(default)]
    pub log_probability: f64,
}

#[derive(Debug, Default, Deserialize)]
pub struct ResponseContent<'a> {
    #[serde(default, borrow)]
    pub parts: Vec<ResponsePart<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponsePart<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub text: Option<Cow<'a, str>>,
    #[serde(default)]
    pub thought: Option<bool>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub thought_signature: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub function_call: Option<ResponseFunctionCall<'a>>,
    /// An image (or other media) the model made: base64 `data` with its `mimeType`.
    #[serde(default, borrow)]
    pub inline_data: Option<ResponseBlob<'a>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResponseBlob<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub mime_type: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub data: Cow<'a, str>,
}

impl ResponseBlob<'_> {
    /// `data:{mime};base64,{data}` when this is an image whose payload is base64 (anything
    /// else is not shown to the client as an image).
    pub fn image_data_url(&self) -> Option<String> {
        let mime = self.mime_type.as_deref().unwrap_or("image/png");
        let sane = mime.strip_prefix("image/").is_some_and(|sub| {
            !sub.is_empty()
                && sub.len() <= 32
                && sub
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
        });
        if !sane || self.data.is_empty() || !super::base64::is_base64(&self.data) {
            return None;
        }
        let mut url = String::with_capacity(mime.len() + self.data.len() + 13);
        url.push_str("data:");
        url.push_str(mime);
        url.push_str(";base64,");
        url.push_str(&self.data);
        Some(url)
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ResponseFunctionCall<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Cow<'a, str>,
    /// Kept raw: it becomes OpenAI's `arguments` string as is.
    #[serde(default, borrow)]
    pub args: Option<&'a RawValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromptFeedback<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub block_reason: Option<Cow<'a, str>>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UsageMetadata {
    #[serde(default)]
    pub prompt_token_count: u64,
    #[serde(default)]
    pub cached_content_token_count: u64,
    #[serde(default)]
    pub candidates_token_count: u64,
    #[serde(default)]
    pub thoughts_token_count: u64,
    #[serde(default)]
    pub tool_use_prompt_token_count: u64,
    #[serde(default)]
    pub total_token_count: Option<u64>,
}

#[derive(Debug, Default, Clone, Deserialize)]
pub struct GoogleError {
    #[serde(default)]
    pub code: Option<u16>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

/// `totalTokens` of a `countTokens` answer; an answer that is not one is `BadUpstream`.
pub fn total_tokens(body: &[u8]) -> Result<u64, super::TranslateError> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Counted {
        #[serde(default)]
        total_tokens: u64,
    }
    serde_json::from_slice::<Counted>(body)
        .map(|c| c.total_tokens)
        .map_err(|e| super::TranslateError::BadUpstream {
            message: e.to_string(),
        })
}
