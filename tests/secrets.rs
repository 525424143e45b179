//! No secret leaves the proxy: the real binary at `logging.level = "trace"` (to stderr and to a
//! log file), a mixed run that touches every path a key or a token travels (chat whole and
//! streamed, a 429 failover, an `API_KEY_INVALID` key, the `/v1beta` passthrough with `?key=`
//! and `x-goog-api-key`, wrong tokens, a dashboard login, reloads good and bad), then every
//! byte the proxy wrote (stderr, stdout, the log files) and every response it gave (status,
//! headers, body; `/metrics`, `/status`, `/stats`, `/explain`, `/dashboard/api/state` among
//! them) is searched for every key and token: whole, and every substring long enough to count
//! as a leak.

mod support;

use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{RequestBuilder, Response};
use serde_json::json;
use support::{config_for, FakeGemini, Proxy, Reply, Signal};

const FLASH: &str = "gemini-2.5-flash";

/// Made-up keys in Google's shape (39 characters of its alphabet), each with FAKE and its own
/// word in it, sharing nothing past `AIzaSyFAKE-`.
const KEY_MAIN: &str = "AIzaSyFAKE-main-Qw7Lk2Vb9Xc4Nm1Pz8Rt5Yh";
const KEY_429: &str = "AIzaSyFAKE-quota-Bv3Hn8Tq1Wm6Zr4Xe9Lc2P";
const KEY_INVALID: &str = "AIzaSyFAKE-dead-Mr5Ct2Qz9Ow1Ux7Ie4Vb8Nh";
/// From `keys.txt` (Google's newer `AQ.` format).
const KEY_FILE: &str = "AQ.FAKE-file-Ab8RN6Kp2Wd9Ty4Ls1Ve7Mx3Hq";
/// A client token named `cline` in the config, one in `tokens.txt`, one added by a reload.
const TOKEN_CLINE: &str = "sk-cline-FAKE-7fQ2mX9vL4pR8tZ1wN6b";
const TOKEN_FILE: &str = "sk-tf-FAKE-Gh4Yt8Rq2Lp6Zm1Xv9Cw3N";
const TOKEN_RELOADED: &str = "sk-rl-FAKE-Px3Mb8Vt1Qz6Lw9Hk2Jc7R";
const ADMIN_TOKEN: &str = "adm-FAKE-Xy7Pq2Lm9Rt4Vb8Nc1Zk5H";
/// Presented, never configured: a client's typo must not be logged either.
const WRONG_TOKEN: &str = "sk-wr-FAKE-Uq6Fz1Ob8Ei3Ya7Tm2Kx9L";

const KEYS: [&str; 4] = [KEY_MAIN, KEY_429, KEY_INVALID, KEY_FILE];
const TOKENS: [&str; 5] = [
    TOKEN_CLINE,
    TOKEN_FILE,
    TOKEN_RELOADED,
    ADMIN_TOKEN,
    WRONG_TOKEN,
];

/// A run of this many characters of a key anywhere is a leak. Key masks show the first and
/// the last four characters, apart (`AIza****t5Yh`), so 8 is the bound.
const KEY_WINDOW: usize = 8;
/// The same for tokens, whose masks show at most their first four characters and a hash id
/// (`sk-c…#3fa9c2`).
const TOKEN_WINDOW: usize = 8;

/// Everything the proxy answered, as text: `== what: status`, the headers, the body.
#[derive(Default)]
struct Transcript(Vec<String>);

impl Transcript {
    /// Records a response whole (a stream is read to its end) and returns status and body.
    async fn record(&mut self, what: &str, response: Response) -> (u16, String) {
        let status = response.status().as_u16();
        let mut text = format!("== {what}: {status}\n");
        for (name, value) in response.headers() {
            text.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        let body = response.text().await.unwrap_or_default();
        text.push_str(&body);
        self.0.push(text);
        (status, body)
    }

    async fn send(&mut self, what: &str, request: RequestBuilder) -> (u16, String) {
        let response = request.send().await.expect("a request to the proxy");
        self.record(what, response).await
    }
}

/// No redirects followed, so the login's 303 and its cookie are seen.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

fn chat(stream: bool) -> serde_json::Value {
    json!({
        "model": FLASH,
        "stream": stream,
        "stream_options": {"include_usage": stream},
        "messages": [{"role": "user", "content": "Say hello"}],
    })
}

fn config(fake: &FakeGemini, log_dir: &std::path::Path) -> String {
    config_for(&fake.url(), &[KEY_MAIN, KEY_429, KEY_INVALID])
        .set("pool", r#"key_files = ["keys.txt"]"#)
        .set(
            "auth",
            &format!(r#"tokens = [{{ name = "cline", token = "{TOKEN_CLINE}" }}]"#),
        )
        .set("auth", r#"token_files = ["tokens.txt"]"#)
        .set("auth", &format!(r#"admin_tokens = ["{ADMIN_TOKEN}"]"#))
        .set("models", r#"list = "static""#)
        .set("models", &format!(r#"static = ["{FLASH}"]"#))
        .set("logging", r#"level = "trace""#)
        // Outside the watched config folder: the proxy's own writes are no config change.
        .set(
            "logging",
            &format!("directory = {}", toml_str(&log_dir.display().to_string())),
        )
        .render()
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// Every place in `haystack` where a run of `window` characters of `secret` appears.
fn leaks(haystack: &str, secret: &str, window: usize) -> Vec<String> {
    let mut found = Vec::new();
    for start in 0..=secret.len().saturating_sub(window) {
        let piece = &secret[start..start + window];
        if let Some(at) = haystack.find(piece) {
            let mut from = at.saturating_sub(60);
            while !haystack.is_char_boundary(from) {
                from -= 1;
            }
            let mut to = (at + window + 60).min(haystack.len());
            while !haystack.is_char_boundary(to) {
                to += 1;
            }
            found.push(format!("{piece:?} in …{}…", &haystack[from..to]));
            break;
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_or_token_in_logs_responses_or_admin_views() {
    let fake = FakeGemini::start().await;
    // The second key is out of quota once; the third is not a valid key at all.
    fake.on_key(KEY_429)
        .then(Reply::quota_per_minute(FLASH, Some("30s")));
    fake.on_key(KEY_INVALID).always(Reply::api_key_invalid());
    let log_dir = tempfile::tempdir().expect("a log folder");
    let mut proxy = Proxy::builder()
        .config(config(&fake, log_dir.path()))
        .file("keys.txt", &format!("# the file's key\n{KEY_FILE}\n"))
        .file("tokens.txt", &format!("{TOKEN_FILE}\n"))
        .start()
        .await;
    let url = |path: &str| format!("{}{path}", proxy.url());
    let http = client();
    let mut seen = Transcript::default();

    // Chat, whole and streamed, under both client tokens: four keys in rotation, one answering
    // 429 and one API_KEY_INVALID, so failover and disabling both happen.
    for (i, token) in [
        TOKEN_CLINE,
        TOKEN_FILE,
        TOKEN_CLINE,
        TOKEN_FILE,
        TOKEN_CLINE,
    ]
    .iter()
    .enumerate()
    {
        let (status, body) = seen
            .send(
                "chat",
                http.post(url("/v1/chat/completions"))
                    .bearer_auth(token)
                    .json(&chat(false)),
            )
            .await;
        assert_eq!(status, 200, "chat {i}: {body}");
        let (status, body) = seen
            .send(
                "chat stream",
                http.post(url("/v1/chat/completions"))
                    .bearer_auth(token)
                    .json(&chat(true)),
            )
            .await;
        assert_eq!(status, 200, "chat stream {i}: {body}");
        assert!(body.contains("[DONE]"), "{body}");
    }
    assert!(fake.hits_for_key(KEY_429) >= 1, "the 429 key was tried");
    assert!(
        fake.hits_for_key(KEY_INVALID) >= 1,
        "the invalid key was tried"
    );
    assert!(fake.hits_for_key(KEY_FILE) >= 1, "the file's key was used");

    // The native API, authenticated the ways Google SDKs do.
    let generate = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
    let (status, body) = seen
        .send(
            "v1beta ?key=",
            http.post(url(&format!(
                "/v1beta/models/{FLASH}:generateContent?key={TOKEN_CLINE}"
            )))
            .json(&generate),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = seen
        .send(
            "v1beta x-goog-api-key stream",
            http.post(url(&format!(
                "/v1beta/models/{FLASH}:streamGenerateContent?alt=sse"
            )))
            .header("x-goog-api-key", TOKEN_FILE)
            .json(&generate),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = seen
        .send(
            "v1beta models ?key=",
            http.get(url(&format!("/v1beta/models?key={TOKEN_FILE}&pageSize=5"))),
        )
        .await;
    assert_eq!(status, 200);

    // Wrong credentials, every way they can come.
    let (status, _) = seen
        .send(
            "wrong bearer",
            http.post(url("/v1/chat/completions"))
                .bearer_auth(WRONG_TOKEN)
                .json(&chat(false)),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = seen
        .send(
            "wrong ?key=",
            http.post(url(&format!(
                "/v1beta/models/{FLASH}:generateContent?key={WRONG_TOKEN}"
            )))
            .json(&generate),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = seen
        .send(
            "wrong x-goog-api-key",
            http.get(url("/v1beta/models"))
                .header("x-goog-api-key", WRONG_TOKEN),
        )
        .await;
    assert_eq!(status, 401);
    let (status, _) = seen
        .send(
            "client token on admin",
            http.get(url("/status")).bearer_auth(TOKEN_CLINE),
        )
        .await;
    assert!(status == 401 || status == 403, "{status}");
    let (status, _) = seen
        .send(
            "wrong dashboard login",
            http.post(url("/dashboard/login"))
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(format!("token={WRONG_TOKEN}")),
        )
        .await;
    assert_ne!(status, 303, "a wrong token logged in");

    // The dashboard: a login, then its state with the session cookie.
    let login = http
        .post(url("/dashboard/login"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN_TOKEN}"))
        .send()
        .await
        .expect("login");
    let cookie = login
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|c| c.split(';').next())
        .map(str::to_string)
        .expect("login sets a cookie");
    let (status, _) = seen.record("dashboard login", login).await;
    assert_eq!(status, 303);
    let (status, body) = seen
        .send(
            "dashboard state",
            http.get(url("/dashboard/api/state"))
                .header(COOKIE, &cookie),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // A good reload (a token added to tokens.txt), a rejected one (a duplicate key, a short
    // token: problems that name secrets), and the good config back.
    let good = std::fs::read_to_string(proxy.path("config.toml")).expect("the config");
    proxy.write_file("tokens.txt", &format!("{TOKEN_FILE}\n{TOKEN_RELOADED}\n"));
    let (status, body) = seen
        .send(
            "reload",
            http.post(url("/admin/reload")).bearer_auth(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = seen
        .send(
            "chat after reload",
            http.post(url("/v1/chat/completions"))
                .bearer_auth(TOKEN_RELOADED)
                .json(&chat(false)),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let bad = good.replace(
        &format!("keys = [\"{KEY_MAIN}\""),
        &format!("keys = [\"{KEY_MAIN}\", \"{KEY_MAIN}\", \"{KEY_FILE}\""),
    );
    assert_ne!(bad, good, "the bad config differs");
    proxy.write_file("config.toml", &bad);
    let (status, body) = seen
        .send(
            "bad reload",
            http.post(url("/admin/reload")).bearer_auth(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    proxy.write_file("config.toml", &good);
    let (status, body) = seen
        .send(
            "reload back",
            http.post(url("/admin/reload")).bearer_auth(ADMIN_TOKEN),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    proxy.signal(Signal::Hup);

    // Every admin view, after all that.
    for path in [
        "/metrics",
        "/status",
        "/stats",
        &format!("/explain?model={FLASH}"),
        "/dashboard/api/state",
        "/api-key-recommendations",
        "/ip-config",
        "/health",
        "/v1/models",
    ] {
        let (status, body) = seen
            .send(path, http.get(url(path)).bearer_auth(ADMIN_TOKEN))
            .await;
        assert_eq!(status, 200, "{path}: {body}");
    }

    // Stop the proxy so the file writer flushes, then gather every byte it wrote.
    proxy.signal(Signal::Term);
    assert!(
        proxy.wait_exit(Duration::from_secs(20)).await.is_some(),
        "the proxy did not stop"
    );
    let output = proxy.logs();
    assert!(output.contains("TRACE"), "not at trace level:\n{output}");
    let mut files = String::new();
    for entry in std::fs::read_dir(log_dir.path()).expect("the log folder") {
        let path = entry.expect("an entry").path();
        files.push_str(&String::from_utf8_lossy(
            &std::fs::read(&path).expect("a log file"),
        ));
    }
    assert!(
        files.contains("request"),
        "no request lines in the log files"
    );
    let responses = seen.0.join("\n");
    // The run really produced the outcomes whose logging matters.
    for outcome in [r#"outcome="rate_limited""#, r#"outcome="key_invalid""#] {
        assert!(output.contains(outcome), "no {outcome} in the logs");
    }
    assert!(
        output.contains("config change rejected"),
        "the bad reload was not logged"
    );

    let mut found = Vec::new();
    for (name, haystack) in [
        ("stderr/stdout", &output),
        ("log files", &files),
        ("responses", &responses),
    ] {
        for key in KEYS {
            for leak in leaks(haystack, key, KEY_WINDOW) {
                found.push(format!("{name}: key {leak}"));
            }
        }
        for token in TOKENS {
            for leak in leaks(haystack, token, TOKEN_WINDOW) {
                found.push(format!("{name}: token {leak}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "{} leaks:\n{}",
        found.len(),
        found.join("\n")
    );
    // The search can fail: the secrets' masked forms are there.
    assert!(output.contains("AIza****"), "no masked key in the logs");
}

#[test]
fn the_search_finds_a_leak() {
    assert!(leaks(&format!("x {KEY_MAIN} y"), KEY_MAIN, KEY_WINDOW).len() == 1);
    assert!(leaks("…Vb9Xc4Nm…", KEY_MAIN, KEY_WINDOW).len() == 1);
    assert!(leaks("AIza****t5Yh", KEY_MAIN, KEY_WINDOW).is_empty());
    assert!(leaks("sk-c…#3fa9c2", TOKEN_CLINE, TOKEN_WINDOW).is_empty());
    assert!(leaks("sk-cline", TOKEN_CLINE, TOKEN_WINDOW).len() == 1);
}
