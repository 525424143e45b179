//! `POST /v1/embeddings` against the fake upstream: batching over Google's 100-request limit
//! in order, dimensions, float and base64 encodings, token-id input refused, aliases, and a
//! failed batch retried on another key.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-embedding-001";

async fn embed(proxy: &Proxy, body: &Value) -> (u16, Value) {
    post_json(proxy, "/v1/embeddings", body).await
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_f64)
                .map(|f| f as f32)
                .collect()
        })
        .unwrap_or_default()
}

/// Standard base64 (with padding) to bytes; enough for the proxy's output.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            other => panic!("not base64: {other}"),
        }
    };
    let mut out = Vec::new();
    for chunk in text.as_bytes().chunks(4) {
        let pad = chunk.iter().filter(|&&c| c == b'=').count();
        let n = chunk
            .iter()
            .map(|&c| if c == b'=' { 0 } else { value(c) })
            .fold(0u32, |acc, v| (acc << 6) | v);
        let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&bytes[..3 - pad]);
    }
    out
}

fn f32_le(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[tokio::test]
async fn two_hundred_fifty_inputs_come_back_in_order() {
    let fake = FakeGemini::builder().embedding_dims(8).start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let inputs: Vec<String> = (0..250).map(|i| format!("sentence number {i}")).collect();
    let (status, body) = embed(&proxy, &json!({"model": MODEL, "input": inputs})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], MODEL);
    let data = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 250);
    for (i, item) in data.iter().enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], i);
        assert_eq!(
            floats(&item["embedding"]),
            fake_embedding(&inputs[i], 8),
            "input {i} got another input's vector"
        );
    }
    let expected_tokens: u64 = inputs.iter().map(|s| (s.len() as u64).div_ceil(4)).sum();
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": expected_tokens, "total_tokens": expected_tokens})
    );
    // Batches of at most 100, in order (the fake refuses more than 100, as Google does).
    let batches: Vec<Value> = fake
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(":batchEmbedContents"))
        .filter_map(|r| r.body)
        .collect();
    let sizes: Vec<usize> = batches
        .iter()
        .map(|b| b["requests"].as_array().map_or(0, Vec::len))
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert_eq!(
        batches[1]["requests"][0],
        json!({"model": format!("models/{MODEL}"), "content": {"parts": [{"text": "sentence number 100"}]}})
    );
}

#[tokio::test]
async fn single_string_dimensions_and_base64() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let (status, float) = embed(
        &proxy,
        &json!({"model": MODEL, "input": "hello world", "dimensions": 16,
                "encoding_format": "float", "user": "someone"}),
    )
    .await;
    assert_eq!(status, 200, "{float}");
    let seen = fake.last_request().expect("upstream call");
    assert!(
        seen.path.ends_with(&format!("{MODEL}:embedContent")),
        "{}",
        seen.path
    );
    assert_eq!(
        seen.body,
        Some(json!({"content": {"parts": [{"text": "hello world"}]}, "outputDimensionality": 16}))
    );
    let values = floats(&float["data"][0]["embedding"]);
    assert_eq!(values, fake_embedding("hello world", 16));

    let (status, b64) = embed(
        &proxy,
        &json!({"model": MODEL, "input": "hello world", "dimensions": 16,
                "encoding_format": "base64"}),
    )
    .await;
    assert_eq!(status, 200, "{b64}");
    let text = b64["data"][0]["embedding"].as_str().unwrap_or_default();
    assert_eq!(f32_le(&base64_decode(text)), values);
}

#[tokio::test]
async fn unmappable_input_is_a_400_before_any_upstream_call() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    for (input, param) in [
        (json!([101, 2023, 102]), "input"),
        (json!([[101, 2023], [102]]), "input"),
        (json!([]), "input"),
        (json!(["ok", ""]), "input[1]"),
    ] {
        let (status, body) = embed(&proxy, &json!({"model": MODEL, "input": input})).await;
        assert_eq!(status, 400, "{input}: {body}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(body["error"]["param"], param, "{body}");
    }
    let (status, body) = embed(
        &proxy,
        &json!({"model": MODEL, "input": "x", "encoding_format": "int8"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn aliases_resolve_and_a_failed_batch_moves_to_another_key() {
    let (k1, k2) = (fake_key(1), fake_key(2));
    let fake = FakeGemini::builder().embedding_dims(4).start().await;
    // First batch fine; the second batch's first attempt fails.
    fake.on_model(MODEL)
        .then(Reply::text(""))
        .then(Reply::internal());
    let proxy = start(&fake, &[k1.clone(), k2.clone()], |c| {
        c.set(
            "models.aliases",
            &format!(r#""text-embedding-3-small" = "{MODEL}""#),
        )
    })
    .await;
    let inputs: Vec<String> = (0..150).map(|i| format!("t{i}")).collect();
    let (status, body) = embed(
        &proxy,
        &json!({"model": "text-embedding-3-small", "input": inputs}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model"], "text-embedding-3-small");
    let data = body["data"].as_array().cloned().unwrap_or_default();
    assert_eq!(data.len(), 150);
    assert_eq!(floats(&data[149]["embedding"]), fake_embedding("t149", 4));
    assert_eq!(fake.hits_for_model(MODEL), 3, "two batches, one retried");
    assert!(fake.hits(&k1, MODEL) >= 1 && fake.hits(&k2, MODEL) >= 1);
}
