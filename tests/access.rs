//! Access control through the real binary (SPEC §4): client tokens and their model globs, the
//! open proxy, `/v1beta` credentials, the admin gate, IP rules through trusted proxies, and the
//! error shapes for bad input and unknown paths.

mod support;

use reqwest::{RequestBuilder, Response};
use serde_json::{json, Value};
use support::{config_for, fake_key, FakeGemini, Proxy, TestConfig, TEST_TOKEN};

const FLASH: &str = "gemini-2.5-flash";
const ADMIN: &str = "adm-0123456789abcdef-admin";
const CLINE: &str = "sk-cline-0123456789abcdef";

fn chat(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

fn gemini_body() -> Value {
    json!({ "contents": [{ "role": "user", "parts": [{ "text": "hi" }] }] })
}

fn base(fake: &FakeGemini) -> TestConfig {
    config_for(&fake.url(), &[fake_key(1)])
}

/// Clients seen through a trusted reverse proxy on loopback (`x-forwarded-for` counts), and
/// an admin token.
fn behind_a_proxy_with_an_admin_token(fake: &FakeGemini) -> TestConfig {
    base(fake)
        .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
        .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
}

/// A chat with `token` from client `ip`, as a trusted reverse proxy on loopback forwards it.
fn chat_via_proxy(proxy: &Proxy, ip: &str, token: &str) -> RequestBuilder {
    anon(proxy, reqwest::Method::POST, "/v1/chat/completions")
        .header("x-forwarded-for", ip)
        .bearer_auth(token)
        .json(&chat(FLASH))
}

async fn start(config: TestConfig) -> Proxy {
    Proxy::builder().config(config).start().await
}

/// A request to the proxy with no credentials at all.
fn anon(proxy: &Proxy, method: reqwest::Method, path: &str) -> RequestBuilder {
    support::client().request(method, format!("{}{path}", proxy.url()))
}

async fn send(req: RequestBuilder) -> (u16, Value) {
    let resp: Response = req.send().await.expect("request to the proxy");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn status_of(req: RequestBuilder) -> u16 {
    send(req).await.0
}

/// Asserts OpenAI's error shape with the given status and type.
fn assert_openai_error(got: &(u16, Value), status: u16, kind: &str) {
    let (code, body) = got;
    assert_eq!(*code, status, "body: {body}");
    let err = &body["error"];
    assert!(err["message"].is_string(), "no message: {body}");
    assert_eq!(err["type"], kind, "body: {body}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "{body}"
    );
}

/// Asserts Google's error shape `{"error":{"code","message","status"}}`.
fn assert_google_error(got: &(u16, Value), status: u16, google_status: &str) {
    let (code, body) = got;
    assert_eq!(*code, status, "body: {body}");
    let err = &body["error"];
    assert_eq!(err["code"], status, "body: {body}");
    assert!(err["message"].is_string(), "no message: {body}");
    assert_eq!(err["status"], google_status, "body: {body}");
    assert!(
        err.get("type").is_none(),
        "OpenAI field in a Google error: {body}"
    );
}

/// Requests that reached a model endpoint upstream (the lazy model list does not count).
fn generation_hits(fake: &FakeGemini) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.path.contains(':'))
        .count()
}

// ---------------------------------------------------------------------------------------------
// Client tokens

#[tokio::test]
async fn client_tokens_and_model_globs() {
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake).set(
        "auth",
        &format!(
            r#"tokens = ["{TEST_TOKEN}", {{ name = "cline", token = "{CLINE}", models = ["gemini-2.5-*"] }}]"#
        ),
    ))
    .await;
    let post = |token: Option<&str>, model: &str| {
        let req = anon(&proxy, reqwest::Method::POST, "/v1/chat/completions").json(&chat(model));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    };

    let none = send(post(None, FLASH)).await;
    assert_openai_error(&none, 401, "authentication_error");
    let wrong = send(post(Some("sk-wrong-0123456789abcdef"), FLASH)).await;
    assert_openai_error(&wrong, 401, "authentication_error");
    assert_eq!(
        fake.total_hits(),
        0,
        "refused requests must not reach upstream"
    );

    let (ok, body) = send(post(Some(TEST_TOKEN), FLASH)).await;
    assert_eq!(ok, 200, "{body}");
    let (ok, body) = send(post(Some(CLINE), FLASH)).await;
    assert_eq!(ok, 200, "{body}");

    let before = fake.total_hits();
    let denied = send(post(Some(CLINE), "gemini-3-pro-preview")).await;
    assert_openai_error(&denied, 403, "permission_error");
    assert_eq!(denied.1["error"]["param"], "model", "{}", denied.1);
    assert_eq!(
        fake.total_hits(),
        before,
        "a refused model must not reach upstream"
    );
    let streaming = post(Some(CLINE), "gemini-3-pro-preview").json(&json!({
        "model": "gemini-3-pro-preview",
        "stream": true,
        "messages": [{ "role": "user", "content": "hi" }],
    }));
    assert_openai_error(&send(streaming).await, 403, "permission_error");
    let native = anon(
        &proxy,
        reqwest::Method::POST,
        "/v1beta/models/gemini-3-pro-preview:generateContent",
    )
    .header("x-goog-api-key", CLINE)
    .json(&gemini_body());
    assert_google_error(&send(native).await, 403, "PERMISSION_DENIED");
    assert_eq!(
        fake.total_hits(),
        before,
        "a refused model must not reach upstream"
    );
    assert_eq!(fake.hits_for_model("gemini-3-pro-preview"), 0);
}

#[tokio::test]
async fn no_tokens_means_open_with_a_warning() {
    let fake = FakeGemini::start().await;
    // Without `auth.open = true` an empty token list is refused (tests/trust.rs).
    let proxy = start(
        base(&fake)
            .set("auth", "tokens = []")
            .set("auth", "open = true"),
    )
    .await;

    let (status, body) =
        send(anon(&proxy, reqwest::Method::POST, "/v1/chat/completions").json(&chat(FLASH))).await;
    assert_eq!(status, 200, "{body}");
    let warned = proxy
        .logs()
        .lines()
        .any(|l| l.contains("WARN") && l.to_lowercase().contains("token"));
    assert!(warned, "no warning about the open proxy:\n{}", proxy.logs());
}

#[tokio::test]
async fn v1beta_accepts_three_credential_forms_and_never_forwards_them() {
    let key = fake_key(1);
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake)).await;
    let path = format!("/v1beta/models/{FLASH}:generateContent");
    let post = |suffix: &str| {
        anon(&proxy, reqwest::Method::POST, &format!("{path}{suffix}")).json(&gemini_body())
    };

    let forms = [
        ("bearer", post("").bearer_auth(TEST_TOKEN)),
        (
            "x-goog-api-key",
            post("").header("x-goog-api-key", TEST_TOKEN),
        ),
        ("?key=", post(&format!("?key={TEST_TOKEN}"))),
    ];
    for (name, req) in forms {
        let (status, body) = send(req).await;
        assert_eq!(status, 200, "{name}: {body}");
    }

    let missing = send(post("")).await;
    assert_google_error(&missing, 401, "UNAUTHENTICATED");
    let wrong = send(post("").header("x-goog-api-key", "sk-wrong-0123456789abcdef")).await;
    assert_google_error(&wrong, 401, "UNAUTHENTICATED");
    let wrong_query = send(post("?key=sk-wrong-0123456789abcdef")).await;
    assert_google_error(&wrong_query, 401, "UNAUTHENTICATED");

    let requests = fake.requests();
    assert_eq!(requests.len(), 3, "one upstream call per accepted request");
    for r in &requests {
        assert_eq!(r.header("x-goog-api-key").as_deref(), Some(key.as_str()));
        assert!(
            r.query.as_deref().is_none_or(|q| !q.contains(TEST_TOKEN)),
            "{r:?}"
        );
        for (name, value) in &r.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            assert!(
                !value.contains(TEST_TOKEN),
                "client token upstream in {name}"
            );
        }
    }
    assert_eq!(fake.keys_in_url(), 0, "a key travelled in a URL");
}

// ---------------------------------------------------------------------------------------------
// Admin gate

#[tokio::test]
async fn admin_gate_without_admin_tokens_is_loopback_only() {
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake).set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)).await;

    assert_eq!(
        status_of(proxy.get("/status")).await,
        200,
        "loopback client"
    );
    let remote = send(
        proxy
            .get("/status")
            .header("x-forwarded-for", "203.0.113.7"),
    )
    .await;
    assert_openai_error(&remote, 403, "permission_error");
}

#[tokio::test]
async fn admin_gate_with_admin_tokens() {
    let fake = FakeGemini::start().await;
    let proxy = start(behind_a_proxy_with_an_admin_token(&fake)).await;
    let status = || anon(&proxy, reqwest::Method::GET, "/status");

    assert_openai_error(&send(status()).await, 401, "authentication_error");
    assert_openai_error(&send(proxy.get("/status")).await, 403, "permission_error");
    assert_eq!(status_of(status().bearer_auth(ADMIN)).await, 200);
    let remote = status()
        .bearer_auth(ADMIN)
        .header("x-forwarded-for", "203.0.113.7");
    assert_eq!(
        status_of(remote).await,
        200,
        "admin token from a remote address"
    );
}

#[tokio::test]
async fn an_address_that_keeps_presenting_wrong_tokens_is_locked_out() {
    use reqwest::Method;
    let fake = FakeGemini::start().await;
    let proxy = start(behind_a_proxy_with_an_admin_token(&fake)).await;
    let chat_from = |ip: &str, token: &str| chat_via_proxy(&proxy, ip, token);
    let guesser = "203.0.113.7";

    let login_from = |ip: &str, token: &str| {
        anon(&proxy, Method::POST, "/dashboard/login")
            .header("x-forwarded-for", ip)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
    };
    // Ten wrong guesses, on the API and at the dashboard's login, are told they are wrong...
    for i in 0..5 {
        let got = send(chat_from(guesser, &format!("sk-guess-{i:04}"))).await;
        assert_openai_error(&got, 401, "authentication_error");
        let login = login_from(guesser, &format!("adm-guess-{i:04}"));
        assert_eq!(status_of(login).await, 401, "login guess {i}");
    }
    // ...then even the right token is not looked at, with a wait to honour.
    let resp = chat_from(guesser, TEST_TOKEN).send().await.expect("chat");
    assert_eq!(resp.status().as_u16(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert_openai_error(&(429, body.clone()), 429, "rate_limit_error");
    assert_eq!(
        body["error"]["code"], "too_many_failed_credentials",
        "{body}"
    );

    // Every gate, each in its API's shape: native Gemini, admin, the dashboard login.
    let native = anon(
        &proxy,
        Method::POST,
        &format!("/v1beta/models/{FLASH}:generateContent"),
    )
    .header("x-forwarded-for", guesser)
    .header("x-goog-api-key", TEST_TOKEN)
    .json(&gemini_body());
    assert_google_error(&send(native).await, 429, "RESOURCE_EXHAUSTED");
    let admin = anon(&proxy, Method::GET, "/status")
        .header("x-forwarded-for", guesser)
        .bearer_auth(ADMIN);
    assert_openai_error(&send(admin).await, 429, "rate_limit_error");
    let login = login_from(guesser, ADMIN).send().await.expect("login");
    assert_eq!(login.status().as_u16(), 429);
    assert!(login.headers().get("set-cookie").is_none(), "no session");

    // Other addresses are not affected, and loopback (this machine) is never locked out.
    assert_eq!(status_of(chat_from("198.51.100.2", TEST_TOKEN)).await, 200);
    for i in 0..15 {
        let wrong = anon(&proxy, Method::POST, "/v1/chat/completions")
            .bearer_auth(format!("sk-guess-{i:04}"))
            .json(&chat(FLASH));
        assert_eq!(status_of(wrong).await, 401, "loopback guess {i}");
    }
    assert_eq!(
        status_of(proxy.post("/v1/chat/completions").json(&chat(FLASH))).await,
        200
    );
    assert_eq!(
        generation_hits(&fake),
        2,
        "nothing locked out reached Google"
    );
}

#[tokio::test]
async fn the_token_lockout_can_be_turned_off() {
    let fake = FakeGemini::start().await;
    let proxy = start(
        base(&fake)
            .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set("access", "max_token_failures = 0"),
    )
    .await;
    let chat_as = |token: &str| chat_via_proxy(&proxy, "203.0.113.7", token);
    for i in 0..15 {
        assert_eq!(status_of(chat_as(&format!("sk-guess-{i:04}"))).await, 401);
    }
    assert_eq!(status_of(chat_as(TEST_TOKEN)).await, 200);
}

// ---------------------------------------------------------------------------------------------
// IP rules

#[tokio::test]
async fn ip_allow_list_spares_probes_and_ignores_untrusted_headers() {
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake).set("access", r#"allow = ["10.0.0.0/8"]"#)).await;

    let refused = send(proxy.get("/v1/models")).await;
    assert_openai_error(&refused, 403, "permission_error");
    for probe in ["/livez", "/readyz"] {
        let status = status_of(anon(&proxy, reqwest::Method::GET, probe)).await;
        assert_eq!(status, 200, "{probe} must answer anyone");
    }
    // `/health` is not a kubelet probe: the IP rules apply to it (issue #14, item 11).
    let health = send(anon(&proxy, reqwest::Method::GET, "/health")).await;
    assert_openai_error(&health, 403, "permission_error");
    // The peer is not a trusted proxy: its X-Forwarded-For is not believed.
    let spoofed = proxy
        .get("/v1/models")
        .header("x-forwarded-for", "10.1.2.3");
    assert_eq!(status_of(spoofed).await, 403);
    let spoofed = proxy.get("/v1/models").header("x-real-ip", "10.1.2.3");
    assert_eq!(status_of(spoofed).await, 403);
    assert_eq!(generation_hits(&fake), 0);
}

#[tokio::test]
async fn ip_rules_through_a_trusted_proxy() {
    let fake = FakeGemini::start().await;
    // Each header is believed only when `server.real_ip_header` names it.
    let cases = [
        ("x-forwarded-for", "10.2.3.4", 200),
        // deny is checked before allow
        ("x-forwarded-for", "10.1.2.3", 403),
        // right to left: 192.0.2.1 is the first untrusted hop, whatever the client claims before it
        ("x-forwarded-for", "10.9.9.9, 192.0.2.1", 403),
        ("x-forwarded-for", "192.0.2.1, 10.9.9.9", 200),
        ("x-forwarded-for", "10.9.9.9, 127.0.0.1", 200),
        ("forwarded", "for=10.2.3.4", 200),
        ("forwarded", "for=10.1.2.3;proto=https", 403),
        ("forwarded", r#"for="10.2.3.4:4711""#, 200),
        ("x-real-ip", "10.2.3.4", 200),
        ("x-real-ip", "192.0.2.1", 403),
        ("x-forwarded-for", "::ffff:10.2.3.4", 200),
    ];
    for header in ["x-forwarded-for", "forwarded", "x-real-ip"] {
        let proxy = start(
            base(&fake)
                .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
                .set("server", &format!(r#"real_ip_header = "{header}""#))
                .set("access", r#"allow = ["10.0.0.0/8"]"#)
                .set("access", r#"deny = ["10.1.0.0/16"]"#),
        )
        .await;
        let from = |name: &str, value: &str| proxy.get("/v1/models").header(name, value);
        for (name, value, want) in cases.iter().filter(|(name, _, _)| *name == header) {
            assert_eq!(status_of(from(name, value)).await, *want, "{name}: {value}");
        }
        // No forwarding header: the trusted peer itself (127.0.0.1) is the client.
        assert_eq!(status_of(proxy.get("/v1/models")).await, 403);
    }
}

#[tokio::test]
async fn ip_rules_single_addresses_and_ipv6() {
    let fake = FakeGemini::start().await;

    let only_v4 = start(base(&fake).set("access", r#"allow = ["127.0.0.1"]"#)).await;
    assert_eq!(status_of(only_v4.get("/v1/models")).await, 200);
    drop(only_v4);

    let only_v6 = start(base(&fake).set("access", r#"allow = ["::1"]"#)).await;
    assert_eq!(
        status_of(only_v6.get("/v1/models")).await,
        403,
        "IPv4 client, IPv6 rule"
    );
    drop(only_v6);

    // A real IPv6 client on ::1.
    let v6 = start(
        base(&fake)
            .set("server", r#"listen = "[::1]:0""#)
            .set("access", r#"allow = ["::1"]"#),
    )
    .await;
    assert!(v6.addr().is_ipv6(), "listening on {}", v6.addr());
    assert_eq!(
        status_of(v6.get("/v1/models")).await,
        200,
        "::1 client, ::1 rule"
    );
    drop(v6);

    let v6_nets = |header: &str| {
        base(&fake)
            .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set("server", &format!(r#"real_ip_header = "{header}""#))
            .set("access", r#"allow = ["2001:db8::/32"]"#)
    };
    let xff = start(v6_nets("x-forwarded-for")).await;
    let from = |name: &str, value: &str| xff.get("/v1/models").header(name, value);
    assert_eq!(status_of(from("x-forwarded-for", "2001:db8::5")).await, 200);
    assert_eq!(status_of(from("x-forwarded-for", "2001:db9::5")).await, 403);
    drop(xff);
    let forwarded = start(v6_nets("forwarded")).await;
    let from = |name: &str, value: &str| forwarded.get("/v1/models").header(name, value);
    assert_eq!(
        status_of(from("forwarded", r#"for="[2001:db8::5]:443""#)).await,
        200
    );
}

#[tokio::test]
async fn ip_wildcards_allow_everyone() {
    let fake = FakeGemini::start().await;
    for rule in ["*", "all"] {
        let proxy = start(
            base(&fake)
                .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
                .set("access", &format!(r#"allow = ["{rule}"]"#)),
        )
        .await;
        for xff in ["203.0.113.7", "2001:db8::1", "10.1.2.3"] {
            let req = proxy.get("/v1/models").header("x-forwarded-for", xff);
            assert_eq!(status_of(req).await, 200, "allow {rule}, client {xff}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Bad input and unknown paths

#[tokio::test]
async fn bad_chat_input_is_a_400_without_upstream_calls() {
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake)).await;

    let raw = |body: &str| {
        proxy
            .post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(body.to_string())
    };
    let cases: Vec<(&str, RequestBuilder)> = vec![
        (
            "malformed JSON",
            raw(r#"{"model": "gemini-2.5-flash", "messages": ["#),
        ),
        ("not JSON", raw("hello")),
        ("empty body", raw("")),
        ("JSON array", raw("[]")),
        (
            "messages as a string",
            raw(r#"{"model":"gemini-2.5-flash","messages":"hi"}"#),
        ),
        (
            "missing model",
            raw(r#"{"messages":[{"role":"user","content":"hi"}]}"#),
        ),
        ("missing messages", raw(r#"{"model":"gemini-2.5-flash"}"#)),
        (
            "empty messages",
            raw(r#"{"model":"gemini-2.5-flash","messages":[]}"#),
        ),
        (
            "model as a number",
            raw(r#"{"model":7,"messages":[{"role":"user","content":"hi"}]}"#),
        ),
    ];
    for (name, req) in cases {
        let got = send(req).await;
        assert_eq!(got.0, 400, "{name}: {}", got.1);
        assert_openai_error(&got, 400, "invalid_request_error");
    }
    assert_eq!(fake.total_hits(), 0, "bad input reached upstream");
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods() {
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake)).await;

    let unknown = send(proxy.get("/v1/nope")).await;
    assert_openai_error(&unknown, 404, "invalid_request_error");
    let unknown = send(proxy.get("/definitely/not/here")).await;
    assert_openai_error(&unknown, 404, "invalid_request_error");

    // Outside the native API's paths, a Google-shaped 404 from the proxy itself (everything
    // under /v1beta passes through to Google, which answers its own 404).
    let google = send(proxy.get("/upload/unknown")).await;
    assert_google_error(&google, 404, "NOT_FOUND");

    let wrong_method = send(proxy.get("/v1/chat/completions")).await;
    assert_openai_error(&wrong_method, 405, "invalid_request_error");
    assert_eq!(fake.total_hits(), 0);
}

// ---------------------------------------------------------------------------------------------
// Web pages (`server.cors_origins`)

/// A browser's preflight for a POST from `origin` that sends a token and JSON.
fn preflight(proxy: &Proxy, path: &str, origin: &str) -> RequestBuilder {
    anon(proxy, reqwest::Method::OPTIONS, path)
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization, content-type, x-stainless-os",
        )
}

/// A page's chat from `origin`, with `token` when one is given.
async fn chat_from(proxy: &Proxy, origin: &str, token: Option<&str>) -> Response {
    let req = anon(proxy, reqwest::Method::POST, "/v1/chat/completions")
        .header("origin", origin)
        .json(&chat(FLASH));
    match token {
        Some(token) => req.bearer_auth(token),
        None => req,
    }
    .send()
    .await
    .expect("chat")
}

fn header(resp: &Response, name: &str) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[tokio::test]
async fn only_listed_web_pages_may_call_the_api_from_a_browser() {
    const PAGE: &str = "https://chat.example.com";
    let fake = FakeGemini::start().await;
    // Off by default: a preflight is refused and no answer names an origin.
    let closed = start(base(&fake)).await;
    let resp = preflight(&closed, "/v1/chat/completions", PAGE)
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    let resp = chat_from(&closed, PAGE, Some(TEST_TOKEN)).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    fake.reset_counters();

    let open = start(base(&fake).set(
        "server",
        &format!(r#"cors_origins = ["{PAGE}/", "http://localhost:3000"]"#),
    ))
    .await;
    // The listed page's preflight: answered without a credential, for each dialect's route.
    for path in [
        "/v1/chat/completions",
        "/v1/messages",
        "/v1/responses",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
        "/upload/v1beta/files",
    ] {
        let resp = preflight(&open, path, PAGE)
            .send()
            .await
            .expect("preflight");
        assert_eq!(resp.status().as_u16(), 204, "{path}");
        assert_eq!(
            header(&resp, "access-control-allow-origin").as_deref(),
            Some(PAGE)
        );
        assert_eq!(
            header(&resp, "access-control-allow-headers").as_deref(),
            Some("authorization, content-type, x-stainless-os")
        );
        assert!(header(&resp, "access-control-allow-methods").is_some_and(|m| m.contains("POST")));
        assert_eq!(header(&resp, "access-control-allow-credentials"), None);
        assert!(header(&resp, "vary").is_some_and(|v| v.contains("origin")));
        assert_eq!(header(&resp, "access-control-allow-private-network"), None);
    }
    // A public page calling a proxy on this machine: Chromium's private network question.
    let resp = preflight(&open, "/v1/chat/completions", PAGE)
        .header("access-control-request-private-network", "true")
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-private-network").as_deref(),
        Some("true")
    );
    assert_eq!(generation_hits(&fake), 0, "a preflight reached Google");
    // Another page, and routes that are not the client API, get nothing.
    let resp = preflight(&open, "/v1/chat/completions", "https://evil.example.com")
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status().as_u16(), 405);
    assert_eq!(header(&resp, "access-control-allow-origin"), None);
    for path in [
        "/admin/reload",
        "/status",
        "/metrics",
        "/dashboard/api/state",
    ] {
        let resp = preflight(&open, path, PAGE)
            .send()
            .await
            .expect("preflight");
        assert_eq!(header(&resp, "access-control-allow-origin"), None, "{path}");
    }
    // The real request: readable by the page, errors too, with the headers SDKs read.
    let resp = chat_from(&open, PAGE, Some(TEST_TOKEN)).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some(PAGE)
    );
    assert!(header(&resp, "access-control-expose-headers")
        .is_some_and(|h| h.contains("x-request-id") && h.contains("retry-after")));
    let resp = chat_from(
        &open,
        "http://localhost:3000",
        Some("sk-wrong-token-0123456789"),
    )
    .await;
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("http://localhost:3000")
    );
    // A token is still needed: CORS opens nothing.
    assert_eq!(chat_from(&open, PAGE, None).await.status().as_u16(), 401);
    // An admin answer to a listed page names no origin.
    let resp = anon(&open, reqwest::Method::GET, "/status")
        .header("origin", PAGE)
        .send()
        .await
        .expect("status");
    assert_eq!(header(&resp, "access-control-allow-origin"), None);

    // The IP rules come first: a refused address gets no answer to its preflight.
    let ruled = start(
        base(&fake)
            .set(
                "server",
                &format!(
                    r#"trusted_proxies = ["127.0.0.1/32"]
cors_origins = ["{PAGE}"]"#
                ),
            )
            .set("access", r#"allow = ["10.0.0.0/8"]"#),
    )
    .await;
    for (ip, status) in [("10.1.2.3", 204), ("192.0.2.7", 403)] {
        let resp = preflight(&ruled, "/v1/chat/completions", PAGE)
            .header("x-forwarded-for", ip)
            .send()
            .await
            .expect("preflight");
        assert_eq!(resp.status().as_u16(), status, "{ip}");
        assert_eq!(
            header(&resp, "access-control-allow-origin").is_some(),
            status == 204,
            "{ip}"
        );
    }

    // `["*"]`: any page, with `*`.
    let any = start(base(&fake).set("server", r#"cors_origins = ["*"]"#)).await;
    let resp = preflight(&any, "/v1/messages", "https://anywhere.example")
        .send()
        .await
        .expect("preflight");
    assert_eq!(resp.status().as_u16(), 204);
    assert_eq!(
        header(&resp, "access-control-allow-origin").as_deref(),
        Some("*")
    );
}

/// The page a browser loads from `origin`: on load it calls the proxy as a chat UI would (a
/// chat, a streamed chat, the Anthropic SDK's headers) and writes what it saw into `#out`.
fn chat_ui_page(proxy: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out"></pre><script>
const PROXY = "{proxy}", TOKEN = "{TEST_TOKEN}";
const chat = (stream) => fetch(PROXY + "/v1/chat/completions", {{
  method: "POST",
  headers: {{"Authorization": "Bearer " + TOKEN, "Content-Type": "application/json"}},
  body: JSON.stringify({{model: "{FLASH}", stream, messages: [{{role: "user", content: "hi"}}]}}),
}});
(async () => {{
  const out = {{}};
  try {{
    const r = await chat(false);
    out.status = r.status;
    out.requestId = r.headers.get("x-request-id");
    out.text = (await r.json()).choices[0].message.content;
    const s = await chat(true);
    out.streamed = (await s.text()).includes("[DONE]");
    const m = await fetch(PROXY + "/v1/messages", {{
      method: "POST",
      headers: {{"x-api-key": TOKEN, "anthropic-version": "2023-06-01", "content-type": "application/json",
        "anthropic-dangerous-direct-browser-access": "true"}},
      body: JSON.stringify({{model: "{FLASH}", max_tokens: 16, messages: [{{role: "user", content: "hi"}}]}}),
    }});
    out.messages = m.status;
    const bad = await fetch(PROXY + "/v1/chat/completions", {{method: "POST",
      headers: {{"Authorization": "Bearer sk-wrong-token-0123456789", "Content-Type": "application/json"}},
      body: "{{}}"}});
    out.badToken = bad.status;
  }} catch (e) {{
    out.error = String(e);
  }}
  document.getElementById("out").textContent = JSON.stringify(out);
}})();
</script></body></html>"#
    )
}

/// Serves `page` for every request on a loopback port of its own: the page's origin.
async fn serve_page(page: String) -> (String, tokio::task::JoinHandle<()>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the page's port");
    let origin = format!("http://{}", listener.local_addr().expect("page address"));
    let task = tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    page.len()
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.write_all(page.as_bytes()).await;
            });
        }
    });
    (origin, task)
}

/// A chat UI page on a listed origin calls the proxy from a real browser (Chromium's own
/// preflights and CORS checks); the same page on another origin is blocked by the browser.
/// `scripts/ui-test.sh` installs what it needs and sets `GEMINI_ROTATOR_UI_PYTHON`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs chromium and selenium: run scripts/ui-test.sh"]
async fn web_pages_call_the_api_in_chromium() {
    let Ok(python) = std::env::var("GEMINI_ROTATOR_UI_PYTHON") else {
        eprintln!("SKIPPED web_pages_call_the_api_in_chromium: GEMINI_ROTATOR_UI_PYTHON is not set (run scripts/ui-test.sh)");
        return;
    };
    let fake = FakeGemini::start().await;
    // The pages name the proxy's port, known once it runs, and the proxy names the page's
    // origin: it starts closed, and the origin list arrives by a live reload.
    let proxy = start(base(&fake)).await;
    let page = chat_ui_page(&proxy.url());
    let (listed, _listed_task) = serve_page(page.clone()).await;
    let (other, _other_task) = serve_page(page).await;
    let config = base(&fake).set("server", &format!(r#"cors_origins = ["{listed}"]"#));
    proxy.write_file("config.toml", &config.to_string());
    let mut applied = false;
    for _ in 0..100 {
        let resp = preflight(&proxy, "/v1/chat/completions", &listed)
            .send()
            .await
            .expect("preflight");
        if resp.status().as_u16() == 204 {
            applied = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(applied, "the origin list was never applied");

    let script = format!("{}/tests/ui/cors_pages.py", env!("CARGO_MANIFEST_DIR"));
    let pages = format!("{listed}/ {other}/");
    // Bounded: the script waits at most 30 s per page.
    let output = support::run_script(
        python,
        script,
        vec![("GR_PAGES", pages)],
        std::time::Duration::from_secs(180),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "the pages did not finish\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let result = |origin: &str| -> Value {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(&format!("RESULT {origin}/ ")))
            .and_then(|j| serde_json::from_str(j).ok())
            .unwrap_or(Value::Null)
    };
    let seen = result(&listed);
    assert_eq!(seen["status"], 200, "{seen}");
    assert!(
        seen["text"].as_str().is_some_and(|t| !t.is_empty()),
        "{seen}"
    );
    assert!(
        seen["requestId"].as_str().is_some_and(|id| !id.is_empty()),
        "{seen}"
    );
    assert_eq!(seen["streamed"], true, "{seen}");
    assert_eq!(seen["messages"], 200, "{seen}");
    assert_eq!(seen["badToken"], 401, "{seen}");
    assert!(seen.get("error").is_none(), "{seen}");
    // The browser itself refuses the other page: its fetch fails, nothing is read.
    let blocked = result(&other);
    assert!(
        blocked["error"]
            .as_str()
            .is_some_and(|e| e.contains("Failed to fetch")),
        "{blocked}"
    );
    assert!(blocked.get("status").is_none(), "{blocked}");
}

#[tokio::test]
async fn the_root_says_what_this_is_without_a_token() {
    let fake = FakeGemini::start().await;
    let proxy = start(base(&fake)).await;
    // A browser, a load balancer's default health check, Claude Code's HEAD at start.
    let (status, body) = send(anon(&proxy, reqwest::Method::GET, "/")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["service"], "gemini-rotator");
    assert_eq!(body["dashboard"], "/dashboard");
    assert_eq!(
        status_of(anon(&proxy, reqwest::Method::HEAD, "/")).await,
        200
    );
    assert_eq!(
        status_of(anon(&proxy, reqwest::Method::POST, "/")).await,
        405
    );
    assert_eq!(fake.total_hits(), 0);
    // The IP rules still apply.
    let ruled = start(
        base(&fake)
            .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set("access", r#"allow = ["10.0.0.0/8"]"#),
    )
    .await;
    let (status, _) =
        send(anon(&ruled, reqwest::Method::GET, "/").header("x-forwarded-for", "192.0.2.7")).await;
    assert_eq!(status, 403);
}
