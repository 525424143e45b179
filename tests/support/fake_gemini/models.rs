//! The models surface: the default catalog, realistic Model objects, `models.list` (pages of
//! `pageSize` with `fakePage<N>` tokens) and `models.get`.

use std::collections::HashMap;

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::errors::{google_error, invalid_json};
use super::{lock, Reply, Shared};

/// Models served when the builder is given none: chat, embedding and odd ones, enough for
/// pagination tests with small page sizes.
pub const DEFAULT_MODELS: &[&str] = &[
    "gemini-2.5-pro",
    "gemini-2.5-flash",
    "gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gemini-2.0-flash-lite",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-flash-latest",
    "gemma-3-27b-it",
    "gemini-embedding-001",
    "text-embedding-004",
    "imagen-4.0-generate-001",
];

/// A realistic Gemini Model object for `id` (without the `models/` prefix).
pub fn model_object(id: &str) -> Value {
    let embedding = id.contains("embedding");
    let imagen = id.starts_with("imagen");
    let methods: &[&str] = if embedding {
        &[
            "embedContent",
            "batchEmbedContents",
            "countTextTokens",
            "countTokens",
        ]
    } else if imagen {
        &["predict"]
    } else {
        &[
            "generateContent",
            "countTokens",
            "createCachedContent",
            "batchGenerateContent",
        ]
    };
    let display: String = id
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect::<String>(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ");
    let mut m = json!({
        "name": format!("models/{id}"),
        "baseModelId": id,
        "version": "001",
        "displayName": display,
        "description": format!("Fake {display} for tests"),
        "inputTokenLimit": if embedding { 2048 } else { 1_048_576 },
        "outputTokenLimit": if embedding { 1 } else { 65_536 },
        "supportedGenerationMethods": methods,
    });
    if !embedding && !imagen {
        m["temperature"] = json!(1.0);
        m["topP"] = json!(0.95);
        m["topK"] = json!(64);
        m["maxTemperature"] = json!(2.0);
        m["thinking"] = json!(id.contains("2.5") || id.contains("gemini-3"));
    }
    m
}

pub(super) fn list_models(shared: &Shared, query: &HashMap<String, String>) -> Response<FakeBody> {
    let page_size = match query.get("pageSize").map(|s| s.parse::<i64>()) {
        None => 50,
        Some(Ok(n)) if n <= 0 => 50,
        Some(Ok(n)) => n.min(1000) as usize,
        Some(Err(_)) => {
            return invalid_json("Invalid value at 'page_size' (TYPE_INT32), \"x\"");
        }
    };
    let start = match query.get("pageToken").filter(|t| !t.is_empty()) {
        None => 0,
        Some(token) => match token
            .strip_prefix("fakePage")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) => n,
            None => return json_response(400, Reply::bad_request("Invalid page token.").body()),
        },
    };
    let models = lock(&shared.models);
    let end = (start + page_size).min(models.len());
    let page: Vec<Value> = models.get(start..end).unwrap_or(&[]).to_vec();
    let mut body = json!({ "models": page });
    if end < models.len() {
        body["nextPageToken"] = json!(format!("fakePage{end}"));
    }
    json_response(200, &body)
}

/// `models.get`: the catalog's Model object, or Google's 404.
pub(super) fn get_model(shared: &Shared, model: &str) -> Response<FakeBody> {
    let found = lock(&shared.models)
        .iter()
        .find(|m| m["name"] == json!(format!("models/{model}")))
        .cloned();
    match found {
        Some(m) => json_response(200, &m),
        None => json_response(
            404,
            &google_error(
                404,
                "NOT_FOUND",
                &format!("models/{model} is not found for API version v1beta."),
                vec![],
            ),
        ),
    }
}
