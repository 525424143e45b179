//! Image generation as Google does it: Gemini image models (`gemini-*-image*`) answer
//! `generateContent` with `inlineData {mimeType, data}` parts (and a text part when text is
//! among the `responseModalities`); Imagen models answer `:predict` with
//! `predictions[{bytesBase64Encoded, mimeType}]`. The request fields are checked as Google
//! does: image output asked of a text-only model, a bad `sampleCount` or an aspect ratio the
//! model has not are 400 INVALID_ARGUMENT. The image bytes are deterministic (`fake_image`),
//! so tests compare what reached the client with what the fake made.

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::errors::google_error;
use super::replies::Reply;

/// The aspect ratios Imagen takes.
const IMAGEN_RATIOS: &[&str] = &["1:1", "3:4", "4:3", "9:16", "16:9"];
/// The aspect ratios Gemini's image models take.
const GEMINI_RATIOS: &[&str] = &[
    "1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9",
];
/// Bytes of a fake image (a PNG signature, then filler derived from what was asked).
pub const FAKE_IMAGE_BYTES: usize = 6000;

pub fn is_image_model(model: &str) -> bool {
    model.starts_with("gemini") && model.contains("-image")
}

/// The bytes of image `index` the fake makes for `prompt` on `model`.
pub fn fake_image(model: &str, prompt: &str, index: usize) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let seed = format!("{model}|{prompt}|{index}|");
    while out.len() < FAKE_IMAGE_BYTES {
        out.extend_from_slice(seed.as_bytes());
        out.push((out.len() % 251) as u8);
    }
    out.truncate(FAKE_IMAGE_BYTES);
    out
}

/// `fake_image` as Google sends it: standard base64 with padding.
pub fn fake_image_b64(model: &str, prompt: &str, index: usize) -> String {
    base64(&fake_image(model, prompt, index))
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

fn invalid(message: &str) -> Response<FakeBody> {
    json_response(400, &google_error(400, "INVALID_ARGUMENT", message, vec![]))
}

fn modalities(body: &Value) -> Option<Vec<String>> {
    let config = body
        .get("generationConfig")
        .or_else(|| body.get("generation_config"))?;
    let list = config
        .get("responseModalities")
        .or_else(|| config.get("response_modalities"))?;
    Some(
        list.as_array()?
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_ascii_uppercase)
            .collect(),
    )
}

/// The last user text of a generate body: what the picture is of.
fn prompt_of(body: &Value) -> String {
    body["contents"]
        .as_array()
        .and_then(|c| c.iter().rev().find(|c| c["role"] != "model"))
        .and_then(|c| c["parts"].as_array())
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Google's refusal of a generate body's image fields, if any: image output from a model
/// that makes none, an aspect ratio the model has not.
pub(super) fn refuse_generate(model: &str, body: Option<&Value>) -> Option<Response<FakeBody>> {
    let body = body?;
    let wants_image = modalities(body).is_some_and(|m| m.iter().any(|m| m == "IMAGE"));
    if wants_image && !is_image_model(model) {
        return Some(invalid(
            "Model does not support the requested response modalities: image",
        ));
    }
    if let Some(ratio) = body["generationConfig"]["imageConfig"]["aspectRatio"].as_str() {
        if !GEMINI_RATIOS.contains(&ratio) {
            return Some(invalid(&format!("Unsupported aspect ratio: {ratio}")));
        }
    }
    None
}

/// The default answer of an image model: its picture as an `inlineData` part, after a text
/// part when text is among the modalities (or none are given). `None` for other models.
pub(super) fn default_reply(model: &str, body: Option<&Value>) -> Option<Reply> {
    if !is_image_model(model) {
        return None;
    }
    let body = body?;
    let asked = modalities(body);
    let text = asked.as_ref().is_none_or(|m| m.iter().any(|m| m == "TEXT"));
    let image = asked
        .as_ref()
        .is_none_or(|m| m.iter().any(|m| m == "IMAGE"));
    let prompt = prompt_of(body);
    let mut parts = Vec::new();
    if text {
        parts.push(json!({"text": format!("Here is {prompt}.")}));
    }
    if image {
        parts.push(json!({"inlineData": {
            "mimeType": "image/png",
            "data": fake_image_b64(model, &prompt, 0),
        }}));
    }
    Some(Reply::parts(parts))
}

/// Google's refusal of a `:predict` body, if any.
pub(super) fn refuse_predict(model: &str, body: Option<&Value>) -> Option<Response<FakeBody>> {
    if !model.starts_with("imagen") {
        return Some(json_response(
            404,
            &google_error(
                404,
                "NOT_FOUND",
                &format!("models/{model} is not found for API version v1beta, or is not supported for predict."),
                vec![],
            ),
        ));
    }
    let Some(body) = body else {
        return Some(invalid("Invalid JSON payload received."));
    };
    let prompt = body["instances"][0]["prompt"].as_str().unwrap_or("");
    if prompt.is_empty() {
        return Some(invalid("Missing prompt in instances[0]."));
    }
    let count = body["parameters"]["sampleCount"].as_u64().unwrap_or(4);
    if !(1..=4).contains(&count) {
        return Some(invalid("sampleCount must be between 1 and 4."));
    }
    if let Some(ratio) = body["parameters"].get("aspectRatio") {
        if !ratio.as_str().is_some_and(|r| IMAGEN_RATIOS.contains(&r)) {
            return Some(invalid(&format!("Unsupported aspect ratio: {ratio}")));
        }
    }
    None
}

/// The success of `:predict`: `sampleCount` images (Google's default is 4).
pub(super) fn predict(model: &str, body: Option<&Value>) -> Response<FakeBody> {
    let body = body.cloned().unwrap_or(Value::Null);
    let prompt = body["instances"][0]["prompt"].as_str().unwrap_or("");
    let count = body["parameters"]["sampleCount"].as_u64().unwrap_or(4) as usize;
    let predictions: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "bytesBase64Encoded": fake_image_b64(model, prompt, i),
                "mimeType": "image/png",
            })
        })
        .collect();
    json_response(200, &json!({ "predictions": predictions }))
}
