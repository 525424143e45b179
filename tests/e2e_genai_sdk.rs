//! End to end with Google's `google-genai` Python SDK pointed at the proxy's `/v1beta`
//! (`http_options.base_url`): generate, stream, count tokens, embed, models, a Gemini 3 tool
//! turn whose signature the fake checks, and a refused token. Needs the SDK: `scripts/test.sh`
//! installs it into a virtualenv and passes its interpreter in `GEMINI_ROTATOR_E2E_PYTHON`;
//! plain `cargo test` skips this (ignored).

#[path = "e2e/run.rs"]
mod run;
mod support;

use std::time::Duration;

use serde_json::json;
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const TOOL_MODEL: &str = "gemini-3-pro-preview";

#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the google-genai SDK: run scripts/test.sh"]
async fn google_genai_python_sdk() {
    let expect = "Pack my box with five dozen liquor jugs.";
    let tool_answer = "21 degrees in Paris.";
    let (k1, k2) = (fake_key(1), fake_key(2));
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text(expect).chunks(3));
    fake.require_signatures(true);
    fake.on_model(TOOL_MODEL)
        .then(Reply::parts(vec![json!({
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            // Signatures are base64 (the SDK decodes them to bytes).
            "thoughtSignature": "c2lnLWdlbmFpLTE="})]))
        .then(Reply::text(tool_answer));
    // The first key is out of quota for the chat model: the SDK must not notice.
    fake.on(&k1, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[&k1, &k2]))
        .start()
        .await;

    run::passing(
        "genai_sdk.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_MODEL", MODEL.to_string()),
            ("GR_EXPECT", expect.to_string()),
            ("GR_TOOL_MODEL", TOOL_MODEL.to_string()),
            ("GR_TOOL_ANSWER", tool_answer.to_string()),
            ("GR_EMBED_MODEL", "gemini-embedding-001".to_string()),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    assert_eq!(fake.keys_in_url(), 0);
    // Every upstream call carried a pool key, never the client's token.
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() != Some(TEST_TOKEN)));
    // The v1alpha client's generations went to Google's v1alpha.
    let alpha: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.path.starts_with("/v1alpha/"))
        .map(|r| r.path.clone())
        .collect();
    assert!(
        alpha.iter().any(|p| p.ends_with(":generateContent"))
            && alpha.iter().any(|p| p.ends_with(":streamGenerateContent")),
        "{alpha:?}"
    );
}

/// Files and caches through the pool (issue #18): `files.upload` (resumable, through the
/// proxy's upload URL), generation with the file and with a cache made from it, each call on
/// the key that created the file and no 403 from Google (a second file uploaded right after
/// the first joins its upload group: one generation names both); another token sees nothing
/// of it.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the google-genai SDK: run scripts/test.sh"]
async fn google_genai_files_and_caches() {
    const OTHER_TOKEN: &str = "sk-test-token-OTHER-0123456789";
    const ROUNDS: usize = 10;
    let expect = "The file says hello.";
    let keys = fake_keys(3);
    let fake = FakeGemini::start().await;
    fake.on_any().always(Reply::text(expect).chunks(2));
    let proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &keys)
                .set("models", r#"list = "static""#)
                .set(
                    "auth",
                    &format!(
                        r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#
                    ),
                ),
        )
        .start()
        .await;

    run::passing(
        "genai_files.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_OTHER_TOKEN", OTHER_TOKEN.to_string()),
            ("GR_MODEL", MODEL.to_string()),
            ("GR_EXPECT", expect.to_string()),
            ("GR_ROUNDS", ROUNDS.to_string()),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    assert_eq!(
        fake.permission_denied(),
        0,
        "a call reached another project"
    );
    // Every generation naming the file (or its cache) ran on the key that uploaded it.
    let requests = fake.requests();
    let creator = requests
        .iter()
        .find(|r| {
            r.path.starts_with("/upload/")
                && r.query.as_deref().is_some_and(|q| q.contains("upload_id"))
        })
        .and_then(|r| r.key.clone())
        .expect("an upload chunk");
    let with_file: Vec<_> = requests
        .iter()
        .filter(|r| {
            r.path.contains(":generateContent") || r.path.contains(":streamGenerateContent")
        })
        .filter(|r| {
            let body = String::from_utf8_lossy(&r.raw_body);
            body.contains("files/") || body.contains("cachedContents/")
        })
        .collect();
    assert!(with_file.len() > ROUNDS, "{}", with_file.len());
    assert!(
        with_file
            .iter()
            .all(|r| r.key.as_deref() == Some(creator.as_str())),
        "a call naming the file was rotated"
    );
    assert_eq!(fake.keys_in_url(), 0);
    assert!(requests
        .iter()
        .all(|r| r.key.as_deref() != Some(TEST_TOKEN) && r.key.as_deref() != Some(OTHER_TOKEN)));
}

/// The Interactions API and batch jobs through the pool (issue #18 item 5): a streamed
/// `interactions.create`, follow-ups with `previous_interaction_id`, `get` (resumed after an
/// event), `delete`, an uploaded file in a `document` block; `batches.create` polled with `batches.get`, `batches.list` showing only
/// the caller's; a second token sees neither. Every call naming an interaction or a batch ran
/// on the key that created it, and Google answered no 403.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the google-genai SDK: run scripts/test.sh"]
async fn google_genai_interactions_and_batches() {
    const OTHER_TOKEN: &str = "sk-test-token-OTHER-0123456789";
    const TURNS: usize = 8;
    let keys = fake_keys(3);
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &keys)
                .set("models", r#"list = "static""#)
                .set(
                    "auth",
                    &format!(
                        r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#
                    ),
                ),
        )
        .start()
        .await;

    run::passing(
        "genai_interactions.py",
        vec![
            ("GR_BASE_URL", proxy.url()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_OTHER_TOKEN", OTHER_TOKEN.to_string()),
            ("GR_MODEL", MODEL.to_string()),
            ("GR_TURNS", TURNS.to_string()),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    assert_eq!(
        fake.permission_denied(),
        0,
        "a call reached another project"
    );
    let requests = fake.requests();
    // The conversation's every turn, and every read of it, on the key that started it.
    let pinned: Vec<_> = requests
        .iter()
        .filter(|r| {
            r.path.starts_with("/v1beta/interactions/")
                || r.body
                    .as_ref()
                    .is_some_and(|b| b.get("previous_interaction_id").is_some())
        })
        .collect();
    assert!(pinned.len() > TURNS, "{}", pinned.len());
    let first = pinned[0].key.clone();
    assert!(
        pinned.iter().all(|r| r.key == first),
        "an interaction call was rotated"
    );
    // Each batch read on the key that made the batch.
    for read in requests
        .iter()
        .filter(|r| r.path.starts_with("/v1beta/batches/"))
    {
        let name = read.path.trim_start_matches("/v1beta/");
        assert_eq!(
            fake.owner_of(name),
            read.key.clone(),
            "{name} read on another key"
        );
    }
    assert!(requests
        .iter()
        .all(|r| r.key.as_deref() != Some(TEST_TOKEN) && r.key.as_deref() != Some(OTHER_TOKEN)));
}

/// The Live API through the pool (issue #18): `aio.live.connect` for one text turn on the client
/// token (google-genai's default `v1`, and `v1beta`), `aio.auth_tokens.create` minting an
/// ephemeral token on a pool key and a session with it (`v1alpha`, Constrained), and a wrong
/// token refused. The first key is out of quota for the model: the SDK must not notice.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs the google-genai SDK: run scripts/test.sh"]
async fn google_genai_live() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    fake.on(&keys[0], MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("30s")));
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &keys).set("models", r#"list = "static""#))
        .start()
        .await;
    let expect: Vec<String> = keys.iter().map(|k| default_text(MODEL, k)).collect();
    run::passing(
        "genai_live.py",
        vec![
            ("GR_PROXY", proxy.addr().to_string()),
            ("GR_TOKEN", TEST_TOKEN.to_string()),
            ("GR_MODEL", MODEL.to_string()),
            ("GR_EXPECT", expect.join("|")),
        ],
        Duration::from_secs(120),
        || proxy.logs(),
    )
    .await;
    let sessions = fake.live_sessions();
    // Three sessions served on the second key, each after the first key's quota close (the
    // first one), or straight away once the first key rests.
    let served: Vec<_> = sessions
        .iter()
        .filter(|s| s.closed_with.is_none())
        .collect();
    assert_eq!(served.len(), 3, "{sessions:#?}");
    assert!(
        served
            .iter()
            .all(|s| s.key.as_deref() == Some(keys[1].as_str())),
        "{sessions:#?}"
    );
    assert!(
        served.iter().any(|s| s.ephemeral.is_some()),
        "{sessions:#?}"
    );
    // No client credential reached Google.
    for s in &sessions {
        assert!(s
            .headers
            .get("x-goog-api-key")
            .is_none_or(|k| keys.iter().any(|key| k == key.as_str())));
        assert_ne!(s.key.as_deref(), Some(TEST_TOKEN));
    }
    assert_eq!(fake.keys_in_url(), 0);
}
