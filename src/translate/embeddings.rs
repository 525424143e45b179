//! OpenAI `/v1/embeddings` ⇄ Gemini `embedContent` / `batchEmbedContents` (protocol.md §8).
//!
//! Owns parsing the OpenAI request (string or string-array input of at most `MAX_INPUTS` items,
//! as OpenAI; token-id input cannot be mapped and is refused), the Gemini bodies for one batch
//! of at most `MAX_BATCH` inputs, reading Gemini's vectors back, and the OpenAI response with
//! vectors as floats or as base64 of little-endian f32. Pure: the handler sends the batches and
//! collects the vectors in order.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{invalid, TranslateError};

/// Google: "BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch".
pub const MAX_BATCH: usize = 100;
/// OpenAI's own limit on inputs per request.
pub const MAX_INPUTS: usize = 2048;

/// A parsed embeddings request.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub inputs: Vec<String>,
    /// The input was one string (not a list): one `embedContent` call.
    pub single: bool,
    pub dimensions: Option<u32>,
    pub encoding: Encoding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Float,
    Base64,
}

#[derive(Deserialize)]
struct Raw {
    model: String,
    input: Value,
    #[serde(default)]
    dimensions: Option<Value>,
    #[serde(default)]
    encoding_format: Option<String>,
}

/// `input` with more than `MAX_INPUTS` items (OpenAI answers the same 400).
fn too_many(n: usize) -> TranslateError {
    invalid(
        &format!("`input` has {n} items; at most {MAX_INPUTS} are allowed"),
        "input".into(),
    )
}

/// Parses `{input, model, dimensions?, encoding_format?, user?}`; anything unmappable is
/// `InvalidRequest` naming the field.
pub fn parse_request(body: &[u8]) -> Result<EmbeddingsRequest, TranslateError> {
    let raw: Raw = serde_json::from_slice(body).map_err(|e| TranslateError::InvalidRequest {
        message: format!("invalid request body: {}", crate::excerpt::serde_error(&e)),
        param: None,
    })?;
    if raw.model.trim().is_empty() {
        return Err(invalid("`model` must not be empty", "model".into()));
    }
    let token_ids = || {
        invalid(
            "token-id input is not supported by Gemini embeddings; send the text as a string or an array of strings",
            "input".into(),
        )
    };
    let (inputs, single) = match raw.input {
        Value::String(s) => (vec![s], true),
        Value::Array(items) => {
            // Refused before a single item is looked at (or copied).
            if items.len() > MAX_INPUTS {
                return Err(too_many(items.len()));
            }
            let mut inputs = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => inputs.push(s),
                    Value::Number(_) | Value::Array(_) => return Err(token_ids()),
                    _ => {
                        return Err(invalid(
                            "`input` must be a string or an array of strings",
                            "input".into(),
                        ))
                    }
                }
            }
            (inputs, false)
        }
        _ => {
            return Err(invalid(
                "`input` must be a string or an array of strings",
                "input".into(),
            ))
        }
    };
    if inputs.is_empty() {
        return Err(invalid("`input` must not be empty", "input".into()));
    }

    if let Some(i) = inputs.iter().position(|s| s.is_empty()) {
        return Err(invalid(
            "`input` must not contain empty strings",
            if single {
                "input".into()
            } else {
                format!("input[{i}]")
            },
        ));
    }
    let dimensions = match raw.dimensions {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(d) if (1..=u64::from(u32::MAX)).contains(&d) => Some(d as u32),
            _ => {
                return Err(invalid(
                    "`dimensions` must be a positive integer",
                    "dimensions".into(),
                ))
            }
        },
    };
    let encoding = match raw.encoding_format.as_deref() {
        None | Some("float") => Encoding::Float,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            return Err(invalid(
                &format!(
                    "unknown encoding_format `{}`; expected `float` or `base64`",
                    crate::excerpt::excerpt(other)
                ),
                "encoding_format".into(),
            ))
        }
    };
    Ok(EmbeddingsRequest {
        model: raw.model,
        inputs,
        single,
        dimensions,
        encoding,
    })
}

/// The body for `:embedContent` (one text) or `:batchEmbedContents` (a batch of at most
/// `MAX_BATCH` texts) on `model` (bare id).
pub fn gemini_body(model: &str, texts: &[String], batch: bool, dimensions: Option<u32>) -> Vec<u8> {
    let one = |text: &str| {
        let mut r = json!({"content": {"parts": [{"text": text}]}});
        if batch {
            r["model"] = json!(format!("models/{model}"));
        }
        if let Some(d) = dimensions {
            r["outputDimensionality"] = json!(d);
        }
        r
    };
    let body = if batch {
        json!({"requests": texts.iter().map(|t| one(t)).collect::<Vec<_>>()})
    } else {
        one(texts.first().map_or("", String::as_str))
    };
    body.to_string().into_bytes()
}

#[derive(Deserialize)]
struct Vector {
    #[serde(default)]
    values: Vec<f64>,
}

#[derive(Deserialize)]
struct GeminiEmbeddings {
    #[serde(default)]
    embedding: Option<Vector>,
    #[serde(default)]
    embeddings: Option<Vec<Vector>>,
}

/// The vectors of one Gemini answer, checked to be `expected` in number.
pub fn read_vectors(body: &[u8], expected: usize) -> Result<Vec<Vec<f64>>, TranslateError> {
    let parsed: GeminiEmbeddings =
        serde_json::from_slice(body).map_err(|e| TranslateError::BadUpstream {
            message: e.to_string(),
        })?;
    let vectors: Vec<Vec<f64>> = match (parsed.embedding, parsed.embeddings) {
        (_, Some(many)) => many.into_iter().map(|v| v.values).collect(),
        (Some(one), None) => vec![one.values],
        (None, None) => Vec::new(),
    };
    if vectors.len() != expected {
        return Err(TranslateError::BadUpstream {
            message: format!(
                "expected {expected} embeddings, Gemini returned {}",
                vectors.len()
            ),
        });
    }
    Ok(vectors)
}

/// The OpenAI `{object:"list", data, model, usage}` body. `model` is the name the client used.
pub fn openai_response(
    model: &str,
    vectors: &[Vec<f64>],
    encoding: Encoding,
    prompt_tokens: u64,
) -> Vec<u8> {
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, values)| {
            let embedding = match encoding {
                Encoding::Float => json!(values),
                Encoding::Base64 => {
                    let mut bytes = Vec::with_capacity(values.len() * 4);
                    for v in values {
                        bytes.extend_from_slice(&(*v as f32).to_le_bytes());
                    }
                    json!(super::base64::encode(&bytes))
                }
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
    .to_string()
    .into_bytes()
}

/// Gemini's embedding API reports no token usage: about four characters per token, at least
/// one token per input.
pub fn estimate_tokens(inputs: &[String]) -> u64 {
    inputs
        .iter()
        .map(|s| (s.chars().count() as u64).div_ceil(4).max(1))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<EmbeddingsRequest, Option<String>> {
        parse_request(v.to_string().as_bytes()).map_err(|e| match e {
            TranslateError::InvalidRequest { param, .. } => param,
            other => Some(format!("unexpected {other:?}")),
        })
    }

    #[test]
    fn inputs() {
        let check = |input: Value, expected: Result<(usize, bool), Option<&str>>| {
            let got = parse(json!({"model": "m", "input": input.clone()}))
                .map(|r| (r.inputs.len(), r.single));
            assert_eq!(got, expected.map_err(|p| p.map(str::to_owned)), "{input}");
        };
        check(json!("hello"), Ok((1, true)));
        check(json!(["a", "b"]), Ok((2, false)));
        check(json!([1, 2, 3]), Err(Some("input")));
        check(json!([[1, 2], [3]]), Err(Some("input")));
        check(json!([]), Err(Some("input")));
        check(json!(""), Err(Some("input")));
        check(json!(["a", ""]), Err(Some("input[1]")));
        check(json!({"text": "x"}), Err(Some("input")));
        check(json!(null), Err(Some("input")));
    }

    #[test]
    fn options() {
        let r = parse(
            json!({"model": "m", "input": "x", "dimensions": 768, "encoding_format": "base64"}),
        );
        assert_eq!(
            r.map(|r| (r.dimensions, r.encoding)),
            Ok((Some(768), Encoding::Base64))
        );
        let bad = |extra: Value| {
            let mut body = json!({"model": "m", "input": "x"});
            for (k, v) in extra.as_object().into_iter().flatten() {
                body[k] = v.clone();
            }
            parse(body).err().flatten()
        };
        assert_eq!(bad(json!({"dimensions": 0})).as_deref(), Some("dimensions"));
        assert_eq!(
            bad(json!({"dimensions": "768"})).as_deref(),
            Some("dimensions")
        );
        assert_eq!(
            bad(json!({"encoding_format": "int8"})).as_deref(),
            Some("encoding_format")
        );
        assert_eq!(bad(json!({"model": ""})).as_deref(), Some("model"));
    }

    #[test]
    fn bodies() {
        let texts = vec!["a".to_string(), "b".to_string()];
        let batch: Value =
            serde_json::from_slice(&gemini_body("gemini-embedding-001", &texts, true, Some(8)))
                .unwrap_or_default();
        assert_eq!(
            batch,
            json!({"requests": [
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "a"}]}, "outputDimensionality": 8},
                {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": "b"}]}, "outputDimensionality": 8},
            ]})
        );
        let one: Value =
            serde_json::from_slice(&gemini_body("m", &texts[..1], false, None)).unwrap_or_default();
        assert_eq!(one, json!({"content": {"parts": [{"text": "a"}]}}));
    }

    #[test]
    fn vectors_and_response() {
        let v = read_vectors(br#"{"embeddings":[{"values":[0.5]},{"values":[-1.0]}]}"#, 2);
        assert_eq!(v, Ok(vec![vec![0.5], vec![-1.0]]));
        assert!(read_vectors(br#"{"embedding":{"values":[1]}}"#, 2).is_err());
        let body: Value = serde_json::from_slice(&openai_response(
            "m",
            &[vec![1.0, -2.0]],
            Encoding::Base64,
            3,
        ))
        .unwrap_or_default();
        // 1.0f32 = 00 00 80 3f, -2.0f32 = 00 00 00 c0
        assert_eq!(body["data"][0]["embedding"], "AACAPwAAAMA=");
        assert_eq!(
            body["usage"],
            json!({"prompt_tokens": 3, "total_tokens": 3})
        );
        assert_eq!(estimate_tokens(&["abcde".into(), "x".into()]), 3);
    }
}
