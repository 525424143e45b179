//! embedContent and batchEmbedContents: deterministic fake vectors (`fake_embedding`), the
//! size from `outputDimensionality` or the fake's default, and Google's 100-request batch limit.

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::{Ctx, Reply};

/// Deterministic embedding of `text` with `dims` values in [-1, 1].
pub fn fake_embedding(text: &str, dims: usize) -> Vec<f32> {
    // FNV-1a, so the same text always embeds the same way across runs and processes.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (0..dims as u64)
        .map(|i| {
            let v = h.wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)) >> 33;
            ((v % 2001) as f32 - 1000.0) / 1000.0
        })
        .collect()
}

fn content_text(v: &Value) -> String {
    v.pointer("/content/parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// Google's refusal of a batch over 100 requests, if it is one.
pub(super) fn refuse_batch(body: Option<&Value>) -> Option<Response<FakeBody>> {
    let n = body
        .and_then(|b| b.get("requests"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if n > 100 {
        return Some(json_response(
            400,
            Reply::bad_request(
                "* BatchEmbedContentsRequest.requests: at most 100 requests can be in one batch\n",
            )
            .body(),
        ));
    }
    None
}

/// The embedContent answer: one vector for the content's text.
pub(super) fn embed(ctx: &Ctx, dims: usize) -> Response<FakeBody> {
    let body = ctx.body.clone().unwrap_or(Value::Null);
    let d = body
        .get("outputDimensionality")
        .and_then(Value::as_u64)
        .map_or(dims, |d| d as usize);
    let values = fake_embedding(&content_text(&body), d);
    json_response(200, &json!({ "embedding": { "values": values } }))
}

/// The batchEmbedContents answer: one vector per request, each with its own size.
pub(super) fn batch_embed(ctx: &Ctx, dims: usize) -> Response<FakeBody> {
    let requests = ctx
        .body
        .as_ref()
        .and_then(|b| b.get("requests"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|r| {
            let d = r
                .get("outputDimensionality")
                .and_then(Value::as_u64)
                .map_or(dims, |d| d as usize);
            json!({ "values": fake_embedding(&content_text(r), d) })
        })
        .collect();
    json_response(200, &json!({ "embeddings": embeddings }))
}
