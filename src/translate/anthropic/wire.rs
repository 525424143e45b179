//! Anthropic Messages API request types, as clients (Claude Code above all) really send them.
//!
//! Lenient where Anthropic's clients add fields often (every unknown field is ignored and never
//! forwarded: `metadata`, `context_management`, `cache_control`, `defer_loading`, `citations`,
//! and whatever comes next) and strict where a wrong type would silently change meaning (a
//! string `max_tokens`, a number `text`): those are the client's 400. Content blocks are one
//! flat struct read straight from the body (no tagged-enum buffering), so tool inputs and
//! schemas stay raw JSON slices of the body. Mapping lives in `request.rs`.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// `POST /v1/messages` (and `/v1/messages/count_tokens`, which has no `max_tokens`).
#[derive(Debug, Deserialize)]
pub struct MessagesRequest<'a> {
    pub model: String,
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    #[serde(default, borrow)]
    pub system: Option<Blocks<'a>>,
    /// Signed, so that a negative value gets the range error naming it (`parse`).
    #[serde(default)]
    pub max_tokens: Option<i64>,
    #[serde(default)]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    pub stream: Option<bool>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub top_k: Option<i64>,
    #[serde(default, borrow)]
    pub tools: Option<Vec<ToolDef<'a>>>,
    #[serde(default)]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default)]
    pub thinking: Option<Thinking>,
    #[serde(default)]
    pub output_config: Option<OutputConfig>,
    /// Read only so that a wrong type is still the client's 400; nothing maps to Gemini.
    #[serde(default)]
    pub metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub context_management: Option<IgnoredAny>,
    #[serde(default)]
    pub service_tier: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Message<'a> {
    pub role: String,
    #[serde(borrow)]
    pub content: Blocks<'a>,
}

/// A string (one text block) or a list of content blocks.
#[derive(Debug)]
pub enum Blocks<'a> {
    Text(String),
    List(Vec<Block<'a>>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Blocks<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Blocks<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list of content blocks")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Blocks<'a>, E> {
                Ok(Blocks::Text(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Blocks<'a>, E> {
                Ok(Blocks::Text(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Blocks<'a>, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(block) = seq.next_element::<Block<'a>>()? {
                    blocks.push(block);
                }
                Ok(Blocks::List(blocks))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// One content block, every type's fields side by side; `kind` says which apply.
#[derive(Debug, Default, Deserialize)]
pub struct Block<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    /// `text`
    #[serde(default)]
    pub text: Option<String>,
    /// `image`, `document` (an object), `search_result` (a string: where the result is from)
    #[serde(default, borrow)]
    pub source: Option<BlockSource<'a>>,
    /// `document`, `search_result`
    #[serde(default)]
    pub title: Option<String>,
    /// `document`: what the document is about, said beside it.
    #[serde(default)]
    pub context: Option<String>,
    /// `tool_use` (also `server_tool_use`)
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default, borrow)]
    pub input: Option<&'a RawValue>,
    /// `tool_result`
    #[serde(default)]
    pub tool_use_id: Option<String>,
    #[serde(default, borrow)]
    pub content: Option<Blocks<'a>>,
    #[serde(default)]
    pub is_error: Option<bool>,
    /// `thinking`
    #[serde(default)]
    pub thinking: Option<String>,
    #[serde(default)]
    pub signature: Option<String>,
    /// `redacted_thinking`
    #[serde(default)]
    pub data: Option<String>,
}

/// A block's `source`: an object for images and documents, a string for a `search_result`.
#[derive(Debug)]
pub enum BlockSource<'a> {
    Object(Source<'a>),
    Named(String),
}

impl<'a> BlockSource<'a> {
    /// The object form, which images and documents need.
    pub fn object(&self) -> Option<&Source<'a>> {
        match self {
            BlockSource::Object(s) => Some(s),
            BlockSource::Named(_) => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for BlockSource<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = BlockSource<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a source object or a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BlockSource<'a>, E> {
                Ok(BlockSource::Named(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<BlockSource<'a>, E> {
                Ok(BlockSource::Named(v))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<BlockSource<'a>, A::Error> {
                Source::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(BlockSource::Object)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An image or document source: `base64` (`media_type`, `data`), `url` (fetched by the
/// proxy), `text` (documents: `data` is the text), `content` (documents: a string or text and
/// image blocks), `file` (`file_id`: not supported here).
#[derive(Debug, Default, Deserialize)]
pub struct Source<'a> {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub media_type: Option<String>,
    #[serde(default)]
    pub data: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    pub file_id: Option<String>,
    #[serde(default, borrow)]
    pub content: Option<Blocks<'a>>,
}

/// A client tool (`type` absent or `custom`, with `input_schema`) or a server tool
/// (`web_search_20250305`, `bash_20250124`, …).
#[derive(Debug, Deserialize)]
pub struct ToolDef<'a> {
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default, borrow)]
    pub input_schema: Option<&'a RawValue>,
}

#[derive(Debug, Deserialize)]
pub struct ToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub disable_parallel_tool_use: Option<bool>,
}

/// `{type: "enabled", budget_tokens}`, `{type: "disabled"}`, `{type: "adaptive"}` (and types
/// added since, such as `between_tools`); `display: "omitted"` asks for signatures only.
#[derive(Debug, Deserialize)]
pub struct Thinking {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub budget_tokens: Option<i64>,
    #[serde(default)]
    pub display: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct OutputConfig {
    #[serde(default)]
    pub effort: Option<String>,
}
