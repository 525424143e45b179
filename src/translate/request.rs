//! OpenAI chat request → Gemini `GenerateContentRequest`.
//!
//! Owns the turn rules Gemini enforces (system text apart, alternating user/model turns, a
//! user turn first) and the parameter mapping of protocol.md §5. It reads only the parsed
//! request and the target; it must not fetch, log or look at the clock, and it never forwards
//! a field it does not know.

use std::borrow::Cow;

use super::gemini::{Content, GenerateContentRequest, GenerationConfig, Part, SafetySetting};
use super::openai::{ChatRequest, Content as MsgContent, ContentPart, Message, Stop};
use super::{invalid, Target, TranslateError};

const HARM_CATEGORIES: [&str; 4] = [
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
    req: &'a ChatRequest,
    target: &Target<'a>,
) -> Result<GenerateContentRequest<'a>, TranslateError> {
    let model = bare_model(target.model);
    let mut out = GenerateContentRequest::default();
    let mut system: Vec<Part<'a>> = Vec::new();

    for (i, msg) in req.messages.iter().enumerate() {
        match msg {
            Message::System { content } | Message::Developer { content } => {
                // Gemini's system instruction is text only: other parts are dropped.
                text_parts(content, &mut system);
            }
            Message::User { content } => {
                let mut parts = Vec::new();
                user_parts(content, i, &mut parts)?;
                push_turn(&mut out.contents, "user", parts);
            }
            Message::Assistant { content, .. } => {
                let mut parts = Vec::new();
                text_parts(content, &mut parts);
                push_turn(&mut out.contents, "model", parts);
            }
            Message::Tool { .. } => {
                return Err(invalid(
                    "tool messages are not supported yet",
                    format!("messages[{i}]"),
                ));
            }
        }
    }
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
    if !system.is_empty() {
        out.system_instruction = Some(Content {
            role: None,
            parts: system,
        });
    }
    out.generation_config = generation_config(req, model)?;
    if let Some(threshold) = target.safety.filter(|t| !t.eq_ignore_ascii_case("default")) {
        out.safety_settings = HARM_CATEGORIES
            .iter()
            .map(|&category| SafetySetting {
                category,
                threshold,
            })
            .collect();
    }
    Ok(out)
}

fn generation_config<'a>(
    req: &'a ChatRequest,
    model: &str,
) -> Result<GenerationConfig<'a>, TranslateError> {
    let stop_sequences: Vec<&str> = match &req.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s.as_str()],
        Some(Stop::Many(all)) => all.iter().map(String::as_str).collect(),
    };
    if stop_sequences.len() > 5 {
        return Err(invalid(
            "Gemini accepts at most 5 stop sequences",
            "stop".into(),
        ));
    }
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

fn text_part(text: Cow<'_, str>) -> Part<'_> {
    Part {
        text: Some(text),
        ..Part::default()
    }
}

/// Appends the non-empty text of `content`; Gemini rejects empty text parts.
fn text_parts<'a>(content: &'a MsgContent, parts: &mut Vec<Part<'a>>) {
    match content {
        MsgContent::None => {}
        MsgContent::Text(t) => {
            if !t.is_empty() {
                parts.push(text_part(Cow::Borrowed(t)));
            }
        }
        MsgContent::Parts(ps) => {
            for p in ps {
                if let ContentPart::Text { text } = p {
                    if !text.is_empty() {
                        parts.push(text_part(Cow::Borrowed(text)));
                    }
                }
            }
        }
    }
}

fn user_parts<'a>(
    content: &'a MsgContent,
    i: usize,
    parts: &mut Vec<Part<'a>>,
) -> Result<(), TranslateError> {
    let MsgContent::Parts(ps) = content else {
        text_parts(content, parts);
        return Ok(());
    };
    for (j, p) in ps.iter().enumerate() {
        match p {
            ContentPart::Text { text } => {
                if !text.is_empty() {
                    parts.push(text_part(Cow::Borrowed(text)));
                }
            }
            ContentPart::Refusal {} => {}
            _ => {
                return Err(invalid(
                    "media content parts are not supported yet",
                    format!("messages[{i}].content[{j}]"),
                ))
            }
        }
    }
    Ok(())
}

/// Appends a turn, merging it into the previous one when the role repeats (Gemini wants
/// alternating turns) and dropping it when it has nothing to say.
fn push_turn<'a>(contents: &mut Vec<Content<'a>>, role: &'static str, parts: Vec<Part<'a>>) {
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
