//! OpenAI Images API (`POST /v1/images/generations`) <-> Gemini image generation.
//!
//! Two upstream shapes, chosen by the model: Imagen models (`imagen-*`) answer `:predict`
//! (`instances[{prompt}]`, `parameters{sampleCount, aspectRatio}` → `predictions[{
//! bytesBase64Encoded, mimeType}]`), one call for all `n` images; every other model is a
//! Gemini image model answering `generateContent` with `responseModalities: ["IMAGE"]` and
//! `inlineData` parts, one call per image (image models make one candidate).
//!
//! `size` becomes an aspect ratio (1024x1024 → 1:1, 1536x1024 → 3:2, 1024x1536 → 2:3,
//! 1792x1024 → 16:9, 1024x1792 → 9:16, 1024x768 → 4:3, 768x1024 → 3:4, `auto` → the model's
//! default; anything else is a 400). Imagen has no 3:2 or 2:3: it gets the nearest it has
//! (4:3, 3:4). `response_format: "url"` gets a `data:` URL (the proxy stores no images);
//! `quality`, `style` and `user` are checked and otherwise ignored (Gemini has no such knobs
//! on every image model). Pure: no I/O, no clock (`created` comes in).

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::json;

use super::gemini::{
    Content, GenerateContentRequest, GenerationConfig, ImageConfig, Part, UsageMetadata,
};
use super::json::opt_str;
use super::{invalid, invalid_body, Target, TranslateError};

/// The most images one request may ask for (Imagen's `sampleCount` limit).
pub const MAX_N: u32 = 4;
/// The longest prompt, in characters.
pub const MAX_PROMPT_CHARS: usize = 32_000;

/// How the client wants each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `b64_json` (the default here, as for gpt-image-1).
    B64Json,
    /// `url`: a `data:` URL.
    Url,
}

/// A checked images request.
#[derive(Debug, Clone)]
pub struct ImagesRequest<'a> {
    pub model: Cow<'a, str>,
    pub prompt: Cow<'a, str>,
    pub n: u32,
    /// From `size`; `None`: the model's default.
    pub aspect_ratio: Option<&'static str>,
    pub format: Format,
}

#[derive(Deserialize)]
struct Wire<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    model: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    prompt: Option<Cow<'a, str>>,
    #[serde(default)]
    n: Option<u32>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    size: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    response_format: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    quality: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    style: Option<Cow<'a, str>>,
    /// Read so that a wrong type is still reported; not sent on.
    #[serde(default, borrow, deserialize_with = "opt_str")]
    #[allow(dead_code)]
    user: Option<Cow<'a, str>>,
}

/// Parses and checks a request: a 400 (`InvalidRequest`, naming the parameter) for anything
/// Gemini could not do, before any upstream call.
pub fn parse_request(body: &[u8]) -> Result<ImagesRequest<'_>, TranslateError> {
    let wire: Wire = serde_json::from_slice(body)
        .map_err(|e| invalid_body(&e, |field| matches!(field, "model" | "prompt")))?;
    let model = wire.model.filter(|m| !m.trim().is_empty()).ok_or_else(|| {
        invalid(
            "`model` is required (an Imagen or Gemini image model)",
            "model".into(),
        )
    })?;
    let prompt = wire
        .prompt
        .filter(|p| !p.trim().is_empty())
        .ok_or_else(|| invalid("`prompt` must be a non-empty string", "prompt".into()))?;
    if prompt.chars().count() > MAX_PROMPT_CHARS {
        return Err(invalid(
            &format!("`prompt` is longer than {MAX_PROMPT_CHARS} characters"),
            "prompt".into(),
        ));
    }
    let n = wire.n.unwrap_or(1);
    if !(1..=MAX_N).contains(&n) {
        return Err(invalid(
            &format!("`n` must be between 1 and {MAX_N}"),
            "n".into(),
        ));
    }
    let aspect_ratio = match wire.size.as_deref() {
        None | Some("auto") => None,
        Some(size) => Some(aspect_ratio(size).ok_or_else(|| {
            invalid(
                &format!(
                    "size '{}' is not supported: use 1024x1024, 1536x1024, 1024x1536, \
                     1792x1024, 1024x1792, 1024x768, 768x1024 or auto",
                    crate::excerpt::excerpt(size)
                ),
                "size".into(),
            )
        })?),
    };
    let format = match wire.response_format.as_deref() {
        None | Some("b64_json") => Format::B64Json,
        Some("url") => Format::Url,
        Some(other) => {
            return Err(invalid(
                &format!(
                    "response_format '{}' is not supported: use b64_json or url",
                    crate::excerpt::excerpt(other)
                ),
                "response_format".into(),
            ))
        }
    };
    if let Some(q) = wire.quality.as_deref() {
        if !matches!(q, "auto" | "standard" | "hd" | "low" | "medium" | "high") {
            return Err(invalid(
                &format!(
                    "quality '{}' is not one of auto, standard, hd, low, medium, high",
                    crate::excerpt::excerpt(q)
                ),
                "quality".into(),
            ));
        }
    }
    if let Some(s) = wire.style.as_deref() {
        if !matches!(s, "vivid" | "natural") {
            return Err(invalid(
                &format!(
                    "style '{}' is not one of vivid, natural",
                    crate::excerpt::excerpt(s)
                ),
                "style".into(),
            ));
        }
    }
    Ok(ImagesRequest {
        model,
        prompt,
        n,
        aspect_ratio,
        format,
    })
}

/// OpenAI's sizes as Gemini's aspect ratios.
pub fn aspect_ratio(size: &str) -> Option<&'static str> {
    Some(match size {
        "1024x1024" | "512x512" | "256x256" => "1:1",
        "1536x1024" => "3:2",
        "1024x1536" => "2:3",
        "1792x1024" => "16:9",
        "1024x1792" => "9:16",
        "1024x768" => "4:3",
        "768x1024" => "3:4",
        _ => return None,
    })
}

/// Imagen models go through `:predict`; the rest through `generateContent`.
pub fn is_imagen(model: &str) -> bool {
    model
        .strip_prefix("models/")
        .unwrap_or(model)
        .starts_with("imagen")
}

/// The aspect ratios Imagen takes: 3:2 and 2:3 become the nearest it has.
fn imagen_ratio(ratio: &'static str) -> &'static str {
    match ratio {
        "3:2" => "4:3",
        "2:3" => "3:4",
        other => other,
    }
}

/// The `:predict` body for an Imagen model: all `n` images in one call.
pub fn imagen_body(req: &ImagesRequest<'_>) -> Vec<u8> {
    let mut parameters = json!({ "sampleCount": req.n });
    if let Some(ratio) = req.aspect_ratio {
        parameters["aspectRatio"] = json!(imagen_ratio(ratio));
    }
    json!({ "instances": [{ "prompt": req.prompt }], "parameters": parameters })
        .to_string()
        .into_bytes()
}

/// The `generateContent` body for one image from a Gemini image model.
pub fn gemini_body(
    req: &ImagesRequest<'_>,
    target: &Target<'_>,
) -> Result<Vec<u8>, TranslateError> {
    let body = GenerateContentRequest {
        contents: vec![Content {
            role: Some("user"),
            parts: vec![Part {
                text: Some(Cow::Borrowed(&req.prompt)),
                ..Part::default()
            }],
        }],
        safety_settings: super::chat::request::safety_settings(target),
        generation_config: GenerationConfig {
            response_modalities: vec!["IMAGE"],
            image_config: req.aspect_ratio.map(|r| ImageConfig {
                aspect_ratio: Some(r),
            }),
            ..GenerationConfig::default()
        },
        ..GenerateContentRequest::default()
    };
    serde_json::to_vec(&body).map_err(|e| TranslateError::InvalidRequest {
        message: e.to_string(),
        param: None,
    })
}

/// One generated image: base64 as Google sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub b64: String,
    pub mime_type: String,
    /// Imagen's enhanced prompt, when it rewrote the client's.
    pub revised_prompt: Option<String>,
}

/// What one Gemini image answer made.
#[derive(Debug, Default)]
pub struct Generated {
    pub images: Vec<Image>,
    pub usage: Option<UsageMetadata>,
}

/// The images of a `generateContent` answer (thought images left out). No image is an error:
/// a 400 when Gemini blocked the prompt or the picture, else `EmptyAnswer`.
pub fn read_gemini(body: &[u8]) -> Result<Generated, TranslateError> {
    let resp = super::chat::response::parse(body)?;
    let mut out = Generated {
        usage: resp.usage_metadata,
        ..Generated::default()
    };
    let mut finish = None;
    let mut said = String::new();
    for cand in resp.candidates {
        finish = finish.or(cand.finish_reason);
        for part in cand.content.map(|c| c.parts).unwrap_or_default() {
            if part.thought == Some(true) {
                continue;
            }
            if let Some(blob) = part.inline_data {
                if let Some(image) = image(&blob.data, blob.mime_type.as_deref(), None) {
                    out.images.push(image);
                }
            } else if let Some(text) = part.text {
                if said.len() < 200 {
                    said.push_str(&text);
                }
            }
        }
    }
    if !out.images.is_empty() {
        return Ok(out);
    }
    if let Some(reason) = resp.prompt_feedback.and_then(|f| f.block_reason) {
        return Err(invalid(
            &format!("Gemini blocked the prompt ({reason}); no image was generated"),
            "prompt".into(),
        ));
    }
    let finish = finish.as_deref().unwrap_or("none");
    if is_filtered(finish) {
        return Err(invalid(
            &format!("Gemini generated no image (finish reason {finish}): the prompt or the picture was filtered"),
            "prompt".into(),
        ));
    }
    let said = if said.is_empty() {
        String::new()
    } else {
        format!("; it said: {}", crate::excerpt::excerpt(&said))
    };
    Err(TranslateError::EmptyAnswer {
        message: format!("Gemini returned no image (finish reason {finish}){said}"),
    })
}

use super::gemini::is_filtered;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Predicted<'a> {
    #[serde(default, borrow)]
    predictions: Vec<Prediction<'a>>,
    #[serde(default)]
    error: Option<super::gemini::GoogleError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Prediction<'a> {
    #[serde(default, borrow, deserialize_with = "opt_str")]
    bytes_base64_encoded: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    mime_type: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    rai_filtered_reason: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "opt_str")]
    prompt: Option<Cow<'a, str>>,
}

/// The images of an Imagen `:predict` answer. None is an error: a 400 when Imagen filtered
/// them (its `raiFilteredReason`), else `EmptyAnswer`.
pub fn read_imagen(body: &[u8]) -> Result<Vec<Image>, TranslateError> {
    let predicted: Predicted =
        serde_json::from_slice(body).map_err(|e| TranslateError::BadUpstream {
            message: e.to_string(),
        })?;
    if let Some(e) = predicted.error {
        return Err(TranslateError::UpstreamError {
            code: e.code.unwrap_or(500),
            status: e.status.unwrap_or_default(),
            message: e.message.unwrap_or_default(),
            raw: body.to_vec(),
        });
    }
    let mut filtered = None;
    let mut out = Vec::new();
    for p in predicted.predictions {
        match p.bytes_base64_encoded {
            Some(data) => out.extend(image(
                &data,
                p.mime_type.as_deref(),
                p.prompt.map(Cow::into_owned),
            )),
            None => filtered = filtered.or(p.rai_filtered_reason),
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    match filtered {
        Some(reason) => Err(invalid(
            &format!(
                "Imagen generated no image: {}",
                crate::excerpt::excerpt(&reason)
            ),
            "prompt".into(),
        )),
        None => Err(TranslateError::EmptyAnswer {
            message: "Imagen returned no image".into(),
        }),
    }
}

/// An image whose payload is base64 and whose type is an image type; anything else is not
/// passed on as one.
fn image(data: &str, mime_type: Option<&str>, revised_prompt: Option<String>) -> Option<Image> {
    let mime_type = mime_type.unwrap_or("image/png");
    let sane = mime_type.strip_prefix("image/").is_some_and(|sub| {
        !sub.is_empty()
            && sub.len() <= 32
            && sub
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
    });
    (sane && !data.is_empty() && super::base64::is_base64(data)).then(|| Image {
        b64: data.to_owned(),
        mime_type: mime_type.to_owned(),
        revised_prompt,
    })
}

#[derive(Serialize)]
struct ImagesResponse<'a> {
    created: u64,
    data: Vec<Datum<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<Usage>,
}

#[derive(Serialize)]
struct Datum<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    b64_json: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    revised_prompt: Option<&'a str>,
}

/// gpt-image-1's usage object, from Gemini's token counts (Imagen reports none).
#[derive(Serialize)]
struct Usage {
    input_tokens: u64,
    output_tokens: u64,
    total_tokens: u64,
    input_tokens_details: InputDetails,
}

#[derive(Serialize)]
struct InputDetails {
    text_tokens: u64,
    image_tokens: u64,
}

/// The OpenAI images response: `{created, data: [{b64_json | url, revised_prompt?}], usage?}`.
/// `usage` is the sum over the calls that made the images, when they reported any.
pub fn openai_response(
    created: u64,
    images: &[Image],
    format: Format,
    usage: &[UsageMetadata],
) -> Vec<u8> {
    let data = images
        .iter()
        .map(|image| Datum {
            b64_json: (format == Format::B64Json).then_some(image.b64.as_str()),
            url: (format == Format::Url)
                .then(|| format!("data:{};base64,{}", image.mime_type, image.b64)),
            revised_prompt: image.revised_prompt.as_deref(),
        })
        .collect();
    let usage = (!usage.is_empty()).then(|| {
        let input: u64 = usage
            .iter()
            .map(|u| u.prompt_token_count)
            .fold(0, u64::saturating_add);
        let output: u64 = usage
            .iter()
            .map(|u| {
                u.candidates_token_count
                    .saturating_add(u.thoughts_token_count)
            })
            .fold(0, u64::saturating_add);
        Usage {
            input_tokens: input,
            output_tokens: output,
            total_tokens: input.saturating_add(output),
            input_tokens_details: InputDetails {
                text_tokens: input,
                image_tokens: 0,
            },
        }
    });
    // Strings and numbers always serialise.
    serde_json::to_vec(&ImagesResponse {
        created,
        data,
        usage,
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: serde_json::Value) -> Result<ImagesRequest<'static>, TranslateError> {
        let bytes: &'static [u8] = Box::leak(body.to_string().into_bytes().into_boxed_slice());
        parse_request(bytes)
    }

    fn param(r: Result<ImagesRequest<'static>, TranslateError>) -> Option<String> {
        match r {
            Err(TranslateError::InvalidRequest { param, .. }) => param,
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn requests_are_checked() {
        let ok = parse(json!({"model": "imagen-4.0-generate-001", "prompt": "a cat"})).unwrap();
        assert_eq!(
            (ok.n, ok.aspect_ratio, ok.format),
            (1, None, Format::B64Json)
        );
        let ok = parse(
            json!({"model": "m", "prompt": "p", "n": 4, "size": "1536x1024",
                              "response_format": "url", "quality": "hd", "user": "u"}),
        )
        .unwrap();
        assert_eq!(
            (ok.n, ok.aspect_ratio, ok.format),
            (4, Some("3:2"), Format::Url)
        );
        let cases = [
            (json!({"prompt": "p"}), "model"),
            (json!({"model": "m"}), "prompt"),
            (json!({"model": "m", "prompt": "  "}), "prompt"),
            (json!({"model": "m", "prompt": "p", "n": 0}), "n"),
            (json!({"model": "m", "prompt": "p", "n": 5}), "n"),
            (
                json!({"model": "m", "prompt": "p", "size": "1000x1000"}),
                "size",
            ),
            (
                json!({"model": "m", "prompt": "p", "response_format": "png"}),
                "response_format",
            ),
            (
                json!({"model": "m", "prompt": "p", "quality": "ultra"}),
                "quality",
            ),
            (
                json!({"model": "m", "prompt": "p", "style": "odd"}),
                "style",
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                param(parse(body.clone())).as_deref(),
                Some(expected),
                "{body}"
            );
        }
        assert!(parse_request(b"{not json").is_err());
        assert!(parse_request(br#"{"model": "m", "prompt": "p", "n": "two"}"#).is_err());
    }

    #[test]
    fn sizes_map_to_aspect_ratios() {
        for (size, ratio) in [
            ("1024x1024", "1:1"),
            ("1536x1024", "3:2"),
            ("1024x1536", "2:3"),
            ("1792x1024", "16:9"),
            ("1024x1792", "9:16"),
        ] {
            assert_eq!(aspect_ratio(size), Some(ratio));
        }
        assert_eq!(aspect_ratio("2048x2048"), None);
        let req = parse(
            json!({"model": "imagen-4.0-generate-001", "prompt": "p", "n": 2,
                               "size": "1536x1024"}),
        )
        .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&imagen_body(&req)).unwrap();
        assert_eq!(
            body,
            json!({"instances": [{"prompt": "p"}],
                   "parameters": {"sampleCount": 2, "aspectRatio": "4:3"}})
        );
        let target = Target {
            model: "gemini-2.5-flash-image",
            ..Target::default()
        };
        let body: serde_json::Value =
            serde_json::from_slice(&gemini_body(&req, &target).unwrap()).unwrap();
        assert_eq!(
            body,
            json!({"contents": [{"role": "user", "parts": [{"text": "p"}]}],
                   "generationConfig": {"responseModalities": ["IMAGE"],
                                        "imageConfig": {"aspectRatio": "3:2"}}})
        );
    }

    #[test]
    fn answers_are_read() {
        let gemini = json!({"candidates": [{"content": {"parts": [
            {"inlineData": {"mimeType": "image/png", "data": "aGVsbG8="}, "thought": true},
            {"inlineData": {"mimeType": "image/png", "data": "aGk="}},
            {"inlineData": {"mimeType": "text/html", "data": "aGk="}},
        ]}, "finishReason": "STOP"}], "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 1290}});
        let got = read_gemini(gemini.to_string().as_bytes()).unwrap();
        assert_eq!(got.images.len(), 1);
        assert_eq!(got.images[0].b64, "aGk=");
        let blocked = json!({"candidates": [{"finishReason": "IMAGE_SAFETY"}]});
        assert!(matches!(
            read_gemini(blocked.to_string().as_bytes()),
            Err(TranslateError::InvalidRequest { .. })
        ));
        let text_only = json!({"candidates": [{"content": {"parts": [{"text": "no"}]}, "finishReason": "STOP"}]});
        assert!(matches!(
            read_gemini(text_only.to_string().as_bytes()),
            Err(TranslateError::EmptyAnswer { .. })
        ));
        let imagen = json!({"predictions": [
            {"bytesBase64Encoded": "aGk=", "mimeType": "image/png"},
            {"raiFilteredReason": "filtered"},
        ]});
        let got = read_imagen(imagen.to_string().as_bytes()).unwrap();
        assert_eq!(got.len(), 1);
        let filtered = json!({"predictions": [{"raiFilteredReason": "filtered"}]});
        assert!(matches!(
            read_imagen(filtered.to_string().as_bytes()),
            Err(TranslateError::InvalidRequest { .. })
        ));
        let out: serde_json::Value =
            serde_json::from_slice(&openai_response(7, &got, Format::Url, &[])).unwrap();
        assert_eq!(
            out,
            json!({"created": 7, "data": [{"url": "data:image/png;base64,aGk="}]})
        );
    }
}
