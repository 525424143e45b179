//! Shared support for the integration tests: `FakeGemini` (a loopback Gemini upstream speaking
//! the real wire format), `Proxy` (the real binary in a temp config home), the kubelet's volume
//! layout and `..data` swap (`kubelet`), plus small helpers.
//!
//! Each test file does `mod support;` and uses part of it, hence `allow(dead_code, unused_imports)` (the re-exports).
#![allow(dead_code, unused_imports)]

pub mod fake_gemini;
pub mod kubelet;
pub mod proxy;
pub mod redis;

pub use fake_gemini::{
    chunk_with_parts, default_text, fake_embedding, fake_image, fake_image_b64, fnv1a,
    google_error, mask, model_object, text_chunk, FakeGemini, LiveSession, RecordedRequest, Reply,
    StreamEnd, FAKE_IMAGE_BYTES, FNV_START, LIVE_PROMPT_TOKENS, LIVE_RESPONSE_TOKENS,
};
pub use kubelet::{kubelet_init, kubelet_update};
pub use proxy::{
    config_for, fake_key, fake_keys, run_check, Proxy, Signal, TestConfig, TEST_TOKEN,
};

/// Creates a context cache of a short text for `model` through the native route as `token`
/// (it must succeed): its name.
pub async fn create_cache(proxy: &Proxy, token: &str, model: &str) -> String {
    let created = client()
        .post(format!("{}/v1beta/cachedContents", proxy.url()))
        .header("x-goog-api-key", token)
        .json(&serde_json::json!({
            "model": format!("models/{model}"),
            "contents": [{"role": "user", "parts": [{"text": "a long document"}]}],
            "ttl": "600s",
        }))
        .send()
        .await
        .expect("create cache");
    assert_eq!(created.status().as_u16(), 200);
    let cache: serde_json::Value = created.json().await.unwrap_or_default();
    cache["name"].as_str().expect("cache name").to_string()
}

/// Runs `python script` with `envs`, its output captured; kills it after `limit` (every wait in
/// a test is bounded). The e2e SDK scripts (`tests/e2e/run.rs`) and the browser tests use it.
pub async fn run_script(
    python: String,
    script: String,
    envs: Vec<(&'static str, String)>,
    limit: std::time::Duration,
) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let mut child = std::process::Command::new(python)
            .arg(script)
            .envs(envs)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start python");
        let deadline = std::time::Instant::now() + limit;
        while child.try_wait().ok().flatten().is_none() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let _ = child.kill();
        child.wait_with_output().expect("python output")
    })
    .await
    .expect("join")
}

/// Data payloads of an SSE body, per the SSE spec: events end at a blank line (LF, CRLF or CR),
/// `data:` lines are joined with `\n`, comment lines (`:`) and other fields are ignored, and a
/// trailing event without its blank line is dropped.
pub fn sse_data(body: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Option<String> = None;
    let normalized = body.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        if line.is_empty() {
            if let Some(d) = data.take() {
                events.push(d);
            }
            continue;
        }
        if let Some(value) = line.strip_prefix("data:") {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            }
        }
    }
    events
}

/// The function names a Gemini request body declares (its first tool's), in order.
pub fn declared_names(gemini_body: &serde_json::Value) -> Vec<String> {
    gemini_body["tools"][0]["functionDeclarations"]
        .as_array()
        .expect("declarations")
        .iter()
        .map(|d| d["name"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A reqwest client for tests: no proxy from the environment, bounded timeouts.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// Starts the proxy in front of `fake` with `keys` and a static model list (so it never asks
/// the fake for models), after `tweak` edits the config.
pub async fn start(
    fake: &FakeGemini,
    keys: &[String],
    tweak: impl FnOnce(TestConfig) -> TestConfig,
) -> Proxy {
    Proxy::builder()
        .config(tweak(
            config_for(&fake.url(), keys).set("models", r#"list = "static""#),
        ))
        .start()
        .await
}

/// POSTs `body` as JSON to `path` with the test client token: the status and the JSON answer
/// (`Null` when the answer is not JSON).
pub async fn post_json(
    proxy: &Proxy,
    path: &str,
    body: &serde_json::Value,
) -> (u16, serde_json::Value) {
    let response = proxy.post(path).json(body).send().await.expect("request");
    let status = response.status().as_u16();
    (
        status,
        response.json().await.unwrap_or(serde_json::Value::Null),
    )
}

/// A one-message chat for `model` as `token`: only the status (0 when the request failed).
pub async fn chat_status_as(proxy: &Proxy, token: &str, model: &str) -> u16 {
    client()
        .post(format!("{}/v1/chat/completions", proxy.url()))
        .bearer_auth(token)
        .json(&serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// A loopback URL nothing may fetch: `assert_unfetched` fails if anything connected to it.
/// (A fetch made while answering a request waits in the listener's backlog once the answer
/// is in, so a short wait after it sees it.)
pub struct Unfetched {
    listener: tokio::net::TcpListener,
    pub url: String,
}

impl Unfetched {
    pub async fn new(path: &str) -> Unfetched {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}/{path}", listener.local_addr().expect("addr"));
        Unfetched { listener, url }
    }

    pub async fn assert_unfetched(&self) {
        let waited = std::time::Duration::from_millis(200);
        let accepted = tokio::time::timeout(waited, self.listener.accept()).await;
        assert!(accepted.is_err(), "{} was fetched", self.url);
    }
}
