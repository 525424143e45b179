//! End to end with the official `openai` Python SDK's Responses API against the real binary
//! and the fake upstream: `responses.create` whole and streamed, the accumulating stream
//! helper, `retrieve`/`delete`, `input_tokens.count`, a function-tool loop on Gemini 3 through
//! `previous_response_id` and statelessly (encrypted reasoning, signatures checked by the
//! fake), a 429 on the first key that the SDK never sees, and every key out as the SDK's
//! `RateLimitError`. Needs the SDK: `scripts/test.sh` installs it and passes its interpreter in
//! `GEMINI_ROTATOR_E2E_PYTHON`; plain `cargo test` skips this (ignored).

#[path = "e2e/run.rs"]
mod run;
mod support;

use std::time::Duration;

use support::*;

const MODEL: &str = "gemini-2.5-flash";
const TOOL_MODEL: &str = "gemini-3-flash-preview";
const LIMITED_MODEL: &str = "gemini-2.5-pro";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the openai SDK: run scripts/test.sh"]
async fn openai_python_sdk_responses() {
    let expect = "The quick brown fox jumps over the lazy dog.";
    let fake = FakeGemini::start().await;
    let keys = [fake_key(1), fake_key(2)];
    fake.on_model(MODEL).always(Reply::text(expect).chunks(4));
    fake.on(&keys[0], MODEL)
        .then(Reply::quota_per_minute(MODEL, Some("1s")));
    fake.require_signatures(true);
    let call = |city: &str, signature: &str| {
        serde_json::json!({"functionCall": {"name": "get_weather", "args": {"city": city}},
                           "thoughtSignature": signature})
    };
    fake.on_model(TOOL_MODEL)
        .then(Reply::parts(vec![call("Paris", "sig-resp-1")]))
        .then(Reply::text("21 degrees and sunny."))
        .then(Reply::parts(vec![
            serde_json::json!({"text": "Oslo is north.", "thought": true}),
            call("Oslo", "sig-resp-2"),
        ]))
        .then(Reply::text("Cold in Oslo.").chunks(2));
    fake.on_model(LIMITED_MODEL)
        .always(Reply::quota_per_minute(LIMITED_MODEL, Some("30s")));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &keys).set("models", r#"list = "static""#))
        .start()
        .await;

    // Bounded: the script's own client timeouts are 20 s per call.
    run::passing(
        "responses_sdk.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_MODEL", MODEL.to_string()),
            ("GR_EXPECT", expect.to_string()),
            ("GR_TOOL_MODEL", TOOL_MODEL.to_string()),
            ("GR_LIMITED_MODEL", LIMITED_MODEL.to_string()),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    // The first key's 429 was met (its first hit), and the SDK never saw it.
    assert!(fake.hits(&keys[0], MODEL) >= 1);
    assert_eq!(fake.keys_in_url(), 0);
}

/// The OpenAI Agents SDK (`openai-agents`): an agent with a function tool on Gemini 3, run
/// whole and streamed over the Responses API.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the openai-agents SDK: run scripts/test.sh"]
async fn openai_agents_sdk() {
    let fake = FakeGemini::start().await;
    fake.require_signatures(true);
    let call = |city: &str, signature: &str| {
        serde_json::json!({"functionCall": {"name": "get_weather", "args": {"city": city}},
                           "thoughtSignature": signature})
    };
    fake.on_model(TOOL_MODEL)
        .then(Reply::parts(vec![call("Paris", "sig-agent-1")]))
        .then(Reply::text("21 degrees and sunny."))
        .then(Reply::parts(vec![call("Oslo", "sig-agent-2")]))
        .then(Reply::text("Cold in Oslo.").chunks(2));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[fake_key(1)]).set("models", r#"list = "static""#))
        .start()
        .await;
    run::passing(
        "agents_sdk.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_TOOL_MODEL", TOOL_MODEL.to_string()),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    assert_eq!(fake.hits_for_model(TOOL_MODEL), 4);
}
