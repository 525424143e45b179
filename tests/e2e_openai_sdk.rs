//! End to end with the official `openai` Python SDK against the real binary and the fake
//! upstream: chat, streams, tools on Gemini 3 (signatures checked by the fake), structured
//! output through the SDK's `parse`, embeddings in both encodings, models, errors, images
//! (`images.generate` on Imagen and a Gemini image model, chat `message.images`), and a
//! context cache made with google-genai and used through `extra_body`, always on the key that
//! made it. Needs the
//! SDK: `scripts/test.sh` installs it into a virtualenv and passes its interpreter in
//! `GEMINI_ROTATOR_E2E_PYTHON`; plain `cargo test` skips this (ignored).

#[path = "e2e/run.rs"]
mod run;
mod support;

use std::time::Duration;

use support::*;

const TOOL_MODEL: &str = "gemini-3-flash-preview";
const JSON_MODEL: &str = "gemini-2.5-pro";
/// Scripted for the legacy `functions` loop: a call, then the answer.
const LEGACY_MODEL: &str = "gemini-2.5-flash-lite";
const IMAGEN: &str = "imagen-4.0-generate-001";
const IMAGE_MODEL: &str = "gemini-2.5-flash-image";
const IMAGE_PROMPT: &str = "a lighthouse at dusk";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the openai SDK: run scripts/test.sh"]
async fn openai_python_sdk() {
    let expect = "The quick brown fox jumps over the lazy dog.";
    let json_answer = r#"{"city": {"name": "Paris", "country": "FR"}, "temp_c": 21}"#;
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text(expect).chunks(4));
    // Gemini 3 tool loop: call, answer, then a call in a stream; signatures are checked.
    fake.require_signatures(true);
    let call = |city: &str, signature: &str| {
        serde_json::json!({"functionCall": {"name": "get_weather", "args": {"city": city}},
                           "thoughtSignature": signature})
    };
    fake.on_model(TOOL_MODEL)
        .then(Reply::parts(vec![call("Paris", "sig-e2e-1")]))
        .then(Reply::text("21 degrees and sunny."))
        .then(Reply::parts(vec![call("Oslo", "sig-e2e-2")]));
    fake.on_model(JSON_MODEL).always(Reply::text(json_answer));
    fake.on_model(LEGACY_MODEL)
        .then(Reply::parts(vec![serde_json::json!(
            {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}}
        )]))
        .then(Reply::text("19 degrees."))
        .then(Reply::parts(vec![serde_json::json!(
            {"functionCall": {"name": "get_weather", "args": {"city": "Lima"}}}
        )]));
    // `on_any` above would answer text: the image model gets its picture explicitly.
    let image_b64 = fake_image_b64(IMAGE_MODEL, IMAGE_PROMPT, 0);
    fake.on_model(IMAGE_MODEL)
        .always(Reply::parts(vec![serde_json::json!(
            {"inlineData": {"mimeType": "image/png", "data": image_b64.clone()}}
        )]));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[fake_key(1), fake_key(2)]).set(
            "models.aliases",
            r#""fast" = { models = ["gemini-2.5-flash", "gemini-2.0-flash"] }"#,
        ))
        .start()
        .await;

    // Bounded: the script's own client timeouts are 20 s per call.
    run::passing(
        "openai_sdk.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_MODEL", "gemini-2.5-flash".to_string()),
            ("GR_ALIAS", "fast".to_string()),
            ("GR_EXPECT", expect.to_string()),
            ("GR_TOOL_MODEL", TOOL_MODEL.to_string()),
            ("GR_JSON_MODEL", JSON_MODEL.to_string()),
            ("GR_LEGACY_MODEL", LEGACY_MODEL.to_string()),
            ("GR_JSON", json_answer.to_string()),
            ("GR_EMBED_MODEL", "gemini-embedding-001".to_string()),
            ("GR_IMAGEN", IMAGEN.to_string()),
            ("GR_IMAGE_MODEL", IMAGE_MODEL.to_string()),
            ("GR_IMAGE_PROMPT", IMAGE_PROMPT.to_string()),
            ("GR_IMAGEN_B64_0", fake_image_b64(IMAGEN, IMAGE_PROMPT, 0)),
            ("GR_IMAGEN_B64_1", fake_image_b64(IMAGEN, IMAGE_PROMPT, 1)),
            ("GR_IMAGE_B64", image_b64),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    assert_eq!(fake.keys_in_url(), 0);
    // The legacy loop's result reached Gemini as the function's response.
    let legacy: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.model.as_deref() == Some(LEGACY_MODEL))
        .collect();
    assert_eq!(legacy.len(), 3);
    let turns = legacy[1].body.as_ref().map(|b| b["contents"].clone());
    assert_eq!(
        turns
            .as_ref()
            .map(|t| t[2]["parts"][0]["functionResponse"]["name"].clone()),
        Some(serde_json::json!("get_weather")),
        "{turns:?}"
    );
    // Every generation naming the cache went with the key that made it (0 403s).
    assert_eq!(fake.permission_denied(), 0);
    let cached: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| {
            r.body
                .as_ref()
                .is_some_and(|b| b.get("cachedContent").is_some())
        })
        .collect();
    assert_eq!(cached.len(), 4);
    let name = cached[0].body.as_ref().map(|b| b["cachedContent"].clone());
    let creator = name
        .as_ref()
        .and_then(|n| n.as_str())
        .and_then(|n| fake.owner_of(n));
    assert!(creator.is_some());
    assert!(cached.iter().all(|r| r.key == creator));
}
