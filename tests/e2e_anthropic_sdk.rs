//! End to end with the official `anthropic` Python SDK against the real binary and the fake
//! upstream (issue #17): `messages.create`, `messages.stream`, a tool loop on Gemini 3 (thought
//! signatures checked by the fake), extended thinking, `count_tokens`, a glob alias for a
//! `claude-*` name, failover the SDK never sees, and the SDK's own error types (rate limit,
//! authentication, bad request). Needs the SDK: `scripts/test.sh` installs it into a virtualenv
//! and passes its interpreter in `GEMINI_ROTATOR_E2E_PYTHON`; plain `cargo test` skips this.

#[path = "e2e/run.rs"]
mod run;
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const TOOL_MODEL: &str = "gemini-3-flash-preview";
const THINK_MODEL: &str = "gemini-2.5-pro";
const LIMITED: &str = "gemini-2.0-flash";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the anthropic SDK: run scripts/test.sh"]
async fn anthropic_python_sdk() {
    let expect = "The quick brown fox jumps over the lazy dog.";
    let (k1, k2) = (fake_key(1), fake_key(2));
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text(expect).chunks(4));
    // The first key is out of quota for the main model: the SDK must not notice.
    fake.on(&k1, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    fake.require_signatures(true);
    let call = |city: &str, signature: &str| {
        json!({"functionCall": {"name": "get_weather", "args": {"location": city}},
               "thoughtSignature": signature})
    };
    fake.on_model(TOOL_MODEL)
        .then(Reply::parts(vec![call("Paris", "c2lnLWExLTE=")]))
        .then(Reply::text("21 degrees and sunny."))
        .then(Reply::parts(vec![call("Oslo", "c2lnLWExLTI=")]))
        .then(Reply::text("Cold."));
    fake.on_model(THINK_MODEL).always(Reply::parts(vec![
        json!({"text": "Pondering.", "thought": true}),
        json!({"text": expect}),
    ]));
    fake.on_model(LIMITED)
        .always(Reply::quota_per_minute(LIMITED, Some("20s")));
    let proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &[&k1, &k2])
                .set("models", r#"list = "static""#)
                .set(
                    "models",
                    &format!(r#"static = ["{MODEL}", "{TOOL_MODEL}"]"#),
                )
                .set("models.aliases", &format!(r#""claude-*" = "{MODEL}""#)),
        )
        .start()
        .await;

    // Bounded: the script's own client timeouts are 20 s per call.
    run::passing(
        "anthropic_sdk.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_MODEL", MODEL.to_string()),
            ("GR_CLAUDE", "claude-sonnet-4-5-20250929".to_string()),
            ("GR_EXPECT", expect.to_string()),
            ("GR_TOOL_MODEL", TOOL_MODEL.to_string()),
            ("GR_THINK_MODEL", THINK_MODEL.to_string()),
            ("GR_LIMITED_MODEL", LIMITED.to_string()),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    assert_eq!(fake.keys_in_url(), 0);
}
