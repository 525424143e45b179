//! OpenAI Chat Completions request types, as clients really send them.
//!
//! Lenient where clients differ (unknown fields are ignored and never forwarded, `null` means
//! absent, content may be a string or parts) and strict where a wrong type would silently change
//! meaning (a string `temperature` is an error). These types only describe the wire; mapping to
//! Gemini lives in `request.rs`. They borrow from the request body: strings without escapes,
//! and tool schemas and call arguments as raw JSON, are never copied.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::translate::json::{opt_str, read_tagged, CowStr, TaggedFields};

#[derive(Debug, Clone, Deserialize)]
pub struct ChatRequest<'a> {
    #[serde(borrow)]
    pub model: Cow<'a, str>,
    #[serde(borrow)]
    pub messages: Vec<Message<'a>>,
    #[serde(default, deserialize_with = "null_as_false")]
    pub stream: bool,
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub reasoning_effort: Option<Cow<'a, str>>,
    #[serde(default)]
    pub temperature: Option<f64>,
    #[serde(default)]
    pub top_p: Option<f64>,
    #[serde(default)]
    pub max_tokens: Option<u32>,
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, borrow)]
    pub stop: Option<Stop<'a>>,
    #[serde(default)]
    pub n: Option<u32>,
    #[serde(default)]
    pub seed: Option<i64>,
    #[serde(default)]
    pub presence_penalty: Option<f64>,
    #[serde(default)]
    pub frequency_penalty: Option<f64>,
    #[serde(default, borrow)]
    pub response_format: Option<ResponseFormat<'a>>,
    #[serde(default, borrow)]
    pub tools: Option<Vec<Tool<'a>>>,
    #[serde(default, borrow)]
    pub tool_choice: Option<ToolChoice<'a>>,
    /// The legacy spelling of `tools` (OpenAI's deprecated function calling); `parse` turns
    /// it into `tools` and sets `legacy_functions`.
    #[serde(default, borrow)]
    pub functions: Option<Vec<FunctionDef<'a>>>,
    /// The legacy spelling of `tool_choice`: `"none"`, `"auto"` or `{"name": …}`.
    #[serde(default, borrow)]
    pub function_call: Option<&'a RawValue>,
    /// The request declared `functions`: the answer names its call `function_call`.
    #[serde(skip)]
    pub legacy_functions: bool,
    /// Gemini has no switch for it; read only so that a wrong type is still reported.
    #[serde(default)]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub user: Option<Cow<'a, str>>,
    /// Search models' option; present (even `{}`) means "ground the answer with a web search".
    /// Its settings (`search_context_size`, `user_location`) have no Gemini counterpart.
    #[serde(default)]
    pub web_search_options: Option<IgnoredAny>,
    /// Output modalities (`["text", "image"]`, as OpenAI and OpenRouter spell them).
    #[serde(default)]
    pub modalities: Option<Vec<String>>,
    /// Google's compat-layer extras: the openai SDK's `extra_body={"google": …}` puts them here.
    #[serde(default, borrow)]
    pub google: Option<GoogleExtras<'a>>,
    /// …and Google's own Python samples nest a second `extra_body`.
    #[serde(default, borrow)]
    pub extra_body: Option<ExtraBody<'a>>,
    /// The body's length, for sizing the Gemini body.
    #[serde(skip)]
    pub(crate) body_len: usize,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StreamOptions {
    #[serde(default, deserialize_with = "null_as_false")]
    pub include_usage: bool,
}

impl<'a> ChatRequest<'a> {
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    /// `google` from either place it is sent.
    pub fn google(&self) -> Option<&GoogleExtras<'a>> {
        self.google
            .as_ref()
            .or_else(|| self.extra_body.as_ref()?.google.as_ref())
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExtraBody<'a> {
    #[serde(default, borrow)]
    pub google: Option<GoogleExtras<'a>>,
}

/// `{thinking_config, cached_content}` as Google's OpenAI-compatible endpoint takes them.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct GoogleExtras<'a> {
    #[serde(default)]
    pub thinking_config: Option<ThinkingConfigIn>,
    /// `cachedContents/…`: a context cache made through the native API with this proxy. The
    /// handler checks that the caller owns it and pins the request to the key that made it.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub cached_content: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ThinkingConfigIn {
    /// Tokens; -1 lets the model decide, 0 turns thinking off where the model allows it.
    #[serde(default)]
    pub thinking_budget: Option<i32>,
    #[serde(default)]
    pub thinking_level: Option<String>,
    #[serde(default)]
    pub include_thoughts: Option<bool>,
}

/// One message, by `role`.
#[derive(Debug, Clone)]
pub enum Message<'a> {
    System {
        content: Content<'a>,
    },
    Developer {
        content: Content<'a>,
    },
    User {
        content: Content<'a>,
    },
    Assistant {
        content: Content<'a>,
        tool_calls: Option<Vec<ToolCall<'a>>>,
    },
    Tool {
        content: Content<'a>,
        tool_call_id: Cow<'a, str>,
        /// Not in the OpenAI spec, but some older clients send it.
        name: Option<Cow<'a, str>>,
    },
}

/// Message content: `null`, a string, or an array of parts.
#[derive(Debug, Clone, Default)]
pub enum Content<'a> {
    #[default]
    None,
    Text(Cow<'a, str>),
    Parts(Vec<ContentPart<'a>>),
}

/// One content part, by `type`.
#[derive(Debug, Clone)]
pub enum ContentPart<'a> {
    Text {
        text: Cow<'a, str>,
    },
    ImageUrl {
        image_url: ImageUrl<'a>,
    },
    InputAudio {
        input_audio: InputAudio<'a>,
    },
    File {
        file: FileRef<'a>,
    },
    /// Assistant history may carry refusals; they are not sent back to the model.
    Refusal,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ImageUrl<'a> {
    #[serde(borrow)]
    pub url: Cow<'a, str>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct InputAudio<'a> {
    #[serde(borrow)]
    pub data: Cow<'a, str>,
    #[serde(borrow)]
    pub format: Cow<'a, str>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct FileRef<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub file_data: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub file_id: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub filename: Option<Cow<'a, str>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ToolCall<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow)]
    pub function: FunctionCall<'a>,
    /// Google's carrier for Gemini 3 thought signatures: `{google: {thought_signature}}`.
    #[serde(default, borrow)]
    pub extra_content: Option<ExtraContent<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionCall<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    /// A JSON string per the spec; some clients send the object itself. Kept raw.
    #[serde(default, borrow)]
    pub arguments: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExtraContent<'a> {
    #[serde(default, borrow)]
    pub google: Option<GoogleExtra<'a>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct GoogleExtra<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub thought_signature: Option<Cow<'a, str>>,
}

impl ToolCall<'_> {
    pub fn thought_signature(&self) -> Option<&str> {
        self.extra_content
            .as_ref()?
            .google
            .as_ref()?
            .thought_signature
            .as_deref()
    }
}

#[derive(Debug, Clone)]
pub enum Stop<'a> {
    One(Cow<'a, str>),
    Many(Vec<Cow<'a, str>>),
}

/// `response_format`, by `type`.
#[derive(Debug, Clone)]
pub enum ResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat<'a> },
}

#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub name: Option<Cow<'a, str>>,
    /// Kept raw; `request` cleans it while copying.
    #[serde(default, borrow)]
    pub schema: Option<&'a RawValue>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Tool<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(default, borrow)]
    pub function: Option<FunctionDef<'a>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FunctionDef<'a> {
    #[serde(borrow)]
    pub name: Cow<'a, str>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    pub description: Option<Cow<'a, str>>,
    /// Kept raw; `request` cleans it while copying.
    #[serde(default, borrow)]
    pub parameters: Option<&'a RawValue>,
}

#[derive(Debug, Clone)]
pub enum ToolChoice<'a> {
    /// `"auto"`, `"none"` or `"required"`.
    Mode(&'static str),
    /// `{type: "function", function: {name}}`.
    Named(Cow<'a, str>),
    /// `{type: "allowed_tools", allowed_tools: {mode, tools: [{type: "function", function:
    /// {name}}]}}`: only these functions may be called (`required`: one must be).
    Allowed {
        required: bool,
        names: Vec<Cow<'a, str>>,
    },
}

fn null_as_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

// Hand-written visitors instead of `#[serde(untagged)]`: untagged enums report only "did not
// match any variant", which tells a client nothing. Tagged objects go through `read_tagged`
// rather than `#[serde(tag)]`, which would buffer (and copy) every message before reading it.

/// A visitor for `T` that borrows from the input for `'a`.
struct Of<'a, T>(PhantomData<&'a T>);

impl<T> Of<'_, T> {
    fn new() -> Self {
        Of(PhantomData)
    }
}

#[derive(Default)]
struct MessageFields<'a> {
    content: Content<'a>,
    tool_calls: Option<Vec<ToolCall<'a>>>,
    tool_call_id: Option<Cow<'a, str>>,
    name: Option<Cow<'a, str>>,
    /// An assistant turn's legacy call.
    function_call: Option<FunctionCall<'a>>,
}

impl<'a> TaggedFields<'a> for MessageFields<'a> {
    const TAG: &'static str = "role";
    const NAMES: &'static [&'static str] = &[
        "content",
        "tool_calls",
        "tool_call_id",
        "name",
        "function_call",
    ];
    fn read<'de: 'a, D: Deserializer<'de>>(
        &mut self,
        role: &str,
        i: usize,
        value: D,
    ) -> Result<(), D::Error> {
        match (i, role) {
            (0, _) => self.content = Content::deserialize(value)?,
            (1, "assistant") => self.tool_calls = Option::deserialize(value)?,
            (2, "tool") => self.tool_call_id = Some(CowStr::deserialize(value)?.0),
            (3, "tool" | "function") => {
                self.name = Option::<CowStr>::deserialize(value)?.map(|s| s.0);
            }
            (4, "assistant") => self.function_call = Option::deserialize(value)?,
            _ => {
                IgnoredAny::deserialize(value)?;
            }
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Of<'a, Message<'a>> {
    type Value = Message<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a message object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Message<'a>, A::Error> {
        const ROLES: &[&str] = &[
            "system",
            "developer",
            "user",
            "assistant",
            "tool",
            "function",
        ];
        let (role, m) = read_tagged::<MessageFields, A>(map)?;
        let content = m.content;
        Ok(match &*role {
            "system" => Message::System { content },
            "developer" => Message::Developer { content },
            "user" => Message::User { content },
            // The legacy `function_call` is a call without an id; its result (a `function`
            // message) is paired with it by name.
            "assistant" => Message::Assistant {
                content,
                tool_calls: m.tool_calls.or_else(|| {
                    let function = m.function_call?;
                    Some(vec![ToolCall {
                        id: Cow::Borrowed(""),
                        function,
                        extra_content: None,
                    }])
                }),
            },
            "function" => Message::Tool {
                content,
                tool_call_id: Cow::Borrowed(""),
                name: Some(m.name.ok_or_else(|| de::Error::missing_field("name"))?),
            },
            "tool" => Message::Tool {
                content,
                tool_call_id: m
                    .tool_call_id
                    .ok_or_else(|| de::Error::missing_field("tool_call_id"))?,
                name: m.name,
            },
            other => return Err(de::Error::unknown_variant(other, ROLES)),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Message<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Of::<Message>::new())
    }
}

#[derive(Default)]
struct PartFields<'a> {
    text: Option<Cow<'a, str>>,
    image_url: Option<ImageUrl<'a>>,
    input_audio: Option<InputAudio<'a>>,
    file: Option<FileRef<'a>>,
}

impl<'a> TaggedFields<'a> for PartFields<'a> {
    const TAG: &'static str = "type";
    const NAMES: &'static [&'static str] = &["text", "image_url", "input_audio", "file"];
    fn read<'de: 'a, D: Deserializer<'de>>(
        &mut self,
        kind: &str,
        i: usize,
        value: D,
    ) -> Result<(), D::Error> {
        // Each variant reads the field named like it.
        if Self::NAMES[i] != kind {
            IgnoredAny::deserialize(value)?;
            return Ok(());
        }
        match i {
            0 => self.text = Some(CowStr::deserialize(value)?.0),
            1 => self.image_url = Some(ImageUrl::deserialize(value)?),
            2 => self.input_audio = Some(InputAudio::deserialize(value)?),
            _ => self.file = Some(FileRef::deserialize(value)?),
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Of<'a, ContentPart<'a>> {
    type Value = ContentPart<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a content part object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ContentPart<'a>, A::Error> {
        const TYPES: &[&str] = &["text", "image_url", "input_audio", "file", "refusal"];
        let (kind, p) = read_tagged::<PartFields, A>(map)?;
        let missing = |field| de::Error::missing_field(field);
        Ok(match &*kind {
            "text" => ContentPart::Text {
                text: p.text.ok_or_else(|| missing("text"))?,
            },
            "image_url" => ContentPart::ImageUrl {
                image_url: p.image_url.ok_or_else(|| missing("image_url"))?,
            },
            "input_audio" => ContentPart::InputAudio {
                input_audio: p.input_audio.ok_or_else(|| missing("input_audio"))?,
            },
            "file" => ContentPart::File {
                file: p.file.ok_or_else(|| missing("file"))?,
            },
            "refusal" => ContentPart::Refusal,
            other => return Err(de::Error::unknown_variant(other, TYPES)),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ContentPart<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Of::<ContentPart>::new())
    }
}

#[derive(Default)]
struct FormatFields<'a> {
    json_schema: Option<JsonSchemaFormat<'a>>,
}

impl<'a> TaggedFields<'a> for FormatFields<'a> {
    const TAG: &'static str = "type";
    const NAMES: &'static [&'static str] = &["json_schema"];
    fn read<'de: 'a, D: Deserializer<'de>>(
        &mut self,
        kind: &str,
        _: usize,
        value: D,
    ) -> Result<(), D::Error> {
        if kind == "json_schema" {
            self.json_schema = Some(JsonSchemaFormat::deserialize(value)?);
        } else {
            IgnoredAny::deserialize(value)?;
        }
        Ok(())
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Of<'a, ResponseFormat<'a>> {
    type Value = ResponseFormat<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a response_format object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ResponseFormat<'a>, A::Error> {
        const TYPES: &[&str] = &["text", "json_object", "json_schema"];
        let (kind, f) = read_tagged::<FormatFields, A>(map)?;
        Ok(match &*kind {
            "text" => ResponseFormat::Text,
            "json_object" => ResponseFormat::JsonObject,
            "json_schema" => ResponseFormat::JsonSchema {
                json_schema: f
                    .json_schema
                    .ok_or_else(|| de::Error::missing_field("json_schema"))?,
            },
            other => return Err(de::Error::unknown_variant(other, TYPES)),
        })
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ResponseFormat<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(Of::<ResponseFormat>::new())
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Of<'a, Content<'a>> {
    type Value = Content<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string, null, or an array of content parts")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Content<'a>, E> {
        Ok(Content::Text(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Content<'a>, E> {
        Ok(Content::Text(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Content<'a>, E> {
        Ok(Content::Text(Cow::Owned(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Content<'a>, E> {
        Ok(Content::None)
    }
    fn visit_none<E: de::Error>(self) -> Result<Content<'a>, E> {
        Ok(Content::None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Content<'a>, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Content<'a>, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(1));
        while let Some(p) = seq.next_element()? {
            parts.push(p);
        }
        Ok(Content::Parts(parts))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Of::<Content>::new())
    }
}

impl<'de: 'a, 'a> Visitor<'de> for Of<'a, Stop<'a>> {
    type Value = Stop<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Stop<'a>, E> {
        Ok(Stop::One(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Stop<'a>, E> {
        Ok(Stop::One(Cow::Owned(v.to_owned())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Stop<'a>, A::Error> {
        let mut all = Vec::new();
        while let Some(CowStr(s)) = seq.next_element()? {
            all.push(s);
        }
        Ok(Stop::Many(all))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Stop<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Of::<Stop>::new())
    }
}

/// `{type: "function", function: {name}}`.
#[derive(Deserialize)]
struct Named<'a> {
    #[serde(default, borrow)]
    function: Option<NamedFn<'a>>,
    #[serde(default, borrow)]
    allowed_tools: Option<AllowedTools<'a>>,
}
#[derive(Deserialize)]
struct AllowedTools<'a> {
    #[serde(borrow)]
    mode: Cow<'a, str>,
    #[serde(borrow)]
    tools: Vec<AllowedTool<'a>>,
}
#[derive(Deserialize)]
struct AllowedTool<'a> {
    #[serde(default, borrow)]
    function: Option<NamedFn<'a>>,
}
#[derive(Deserialize)]
struct NamedFn<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
}
impl<'de: 'a, 'a> Visitor<'de> for Of<'a, ToolChoice<'a>> {
    type Value = ToolChoice<'a>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "\"auto\", \"none\", \"required\", {\"type\":\"function\",\"function\":{\"name\":…}} or {\"type\":\"allowed_tools\",\"allowed_tools\":{\"mode\":…,\"tools\":[…]}}",
        )
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ToolChoice<'a>, E> {
        match v {
            "auto" => Ok(ToolChoice::Mode("auto")),
            "none" => Ok(ToolChoice::Mode("none")),
            "required" => Ok(ToolChoice::Mode("required")),
            other => Err(E::invalid_value(de::Unexpected::Str(other), &self)),
        }
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ToolChoice<'a>, A::Error> {
        let named = Named::deserialize(de::value::MapAccessDeserializer::new(map))?;
        match (named.function, named.allowed_tools) {
            (Some(function), _) => Ok(ToolChoice::Named(function.name)),
            (None, Some(allowed)) => Ok(ToolChoice::Allowed {
                required: match &*allowed.mode {
                    "required" => true,
                    "auto" => false,
                    other => {
                        return Err(de::Error::invalid_value(de::Unexpected::Str(other), &self))
                    }
                },
                names: allowed
                    .tools
                    .into_iter()
                    .filter_map(|t| t.function.map(|f| f.name))
                    .collect(),
            }),
            (None, None) => Err(de::Error::missing_field("function")),
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ToolChoice<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Of::<ToolChoice>::new())
    }
}
