//! The dashboard through the real binary: login (cookie attributes, never the token), the page
//! behind a session, the state endpoint's shape and gate, the cross-site rule for requests the
//! cookie alone authenticates, logout, and (ignored unless run by `scripts/ui-test.sh`) the page
//! itself in headless Chromium.

mod support;

use std::time::Duration;

use reqwest::header::{CONTENT_SECURITY_POLICY, CONTENT_TYPE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use support::*;

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";
const ADMIN: &str = "adm-0123456789abcdef-admin";

/// No redirects followed, so the login's 303 and its cookie can be seen.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

fn anon(proxy: &Proxy, method: Method, path: &str) -> RequestBuilder {
    client().request(method, format!("{}{path}", proxy.url()))
}

/// Three keys: key 3 serves only PRO. Static models FLASH and PRO; an admin token.
fn config(fake: &FakeGemini) -> TestConfig {
    let keys = fake_keys(3);
    config_for(&fake.url(), &keys)
        .set(
            "pool",
            &format!(
                r#"keys = ["{}", "{}", {{ key = "{}", name = "pro-only", models = ["{PRO}"] }}]"#,
                keys[0], keys[1], keys[2]
            ),
        )
        .set("models", r#"list = "static""#)
        .set("models", &format!(r#"static = ["{FLASH}", "{PRO}"]"#))
        .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
}

async fn start_with(config: TestConfig) -> Proxy {
    Proxy::builder().config(config).start().await
}

/// Posts the login form; returns (status, Set-Cookie, body).
async fn login(proxy: &Proxy, token: &str) -> (StatusCode, Option<String>, String) {
    let resp = anon(proxy, Method::POST, "/dashboard/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("login request");
    let status = resp.status();
    let cookie = resp
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status == StatusCode::SEE_OTHER {
        assert_eq!(
            resp.headers().get(LOCATION).and_then(|v| v.to_str().ok()),
            Some("/dashboard")
        );
    }
    (status, cookie, resp.text().await.unwrap_or_default())
}

/// Logs in with the admin token; returns the `Cookie` header value to send back.
async fn session(proxy: &Proxy) -> String {
    let (status, cookie, body) = login(proxy, ADMIN).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "login: {body}");
    let cookie = cookie.expect("login sets a cookie");
    cookie
        .split(';')
        .next()
        .expect("cookie pair")
        .trim()
        .to_string()
}

async fn json_of(req: RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request to the proxy");
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn text_of(req: RequestBuilder) -> (StatusCode, String) {
    let resp = req.send().await.expect("request to the proxy");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

fn chat_body(model: &str) -> Value {
    json!({ "model": model, "messages": [{ "role": "user", "content": "hi" }] })
}

// ---------------------------------------------------------------------------------------------
// Login, page, logout

#[tokio::test]
async fn login_with_an_admin_token_sets_a_session_cookie_without_the_token() {
    let fake = FakeGemini::start().await;
    let proxy = start_with(config(&fake)).await;

    let (status, cookie, _) = login(&proxy, ADMIN).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    let cookie = cookie.expect("Set-Cookie");
    let (pair, attributes) = cookie.split_once("; ").expect("cookie attributes");
    let id = pair.strip_prefix("gr_session=").expect("cookie name");
    assert_eq!(id.len(), 64, "{cookie}");
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit()), "{cookie}");
    assert_eq!(
        attributes,
        "Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
    );
    assert!(!cookie.contains(ADMIN), "the token leaked into the cookie");

    // A second login is a different session.
    let other = session(&proxy).await;
    assert_ne!(other, pair);

    let (status, page) =
        text_of(anon(&proxy, Method::GET, "/dashboard").header(COOKIE, pair)).await;
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard/dashboard.js"), "{page}");
    assert!(!page.contains("id=\"login-form\""), "{page}");
}

#[tokio::test]
async fn a_wrong_token_gets_the_login_form_again_with_401() {
    let fake = FakeGemini::start().await;
    let proxy = start_with(config(&fake)).await;
    for token in ["wrong-token", TEST_TOKEN, "", "adm-0123456789abcdef-admiN"] {
        let (status, cookie, body) = login(&proxy, token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "token {token:?}");
        assert_eq!(cookie, None, "token {token:?}");
        assert!(body.contains("id=\"login-form\""), "{body}");
        assert!(body.contains("That is not an admin token."), "{body}");
    }
    // Percent-encoded form values are decoded like a browser sends them.
    let encoded = ADMIN.replace('-', "%2D");
    let (status, _, _) = login(&proxy, &encoded).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn the_page_needs_a_session_and_is_self_contained() {
    let fake = FakeGemini::start().await;
    let proxy = start_with(config(&fake)).await;

    let page = |cookie: Option<&str>| {
        let req = anon(&proxy, Method::GET, "/dashboard");
        match cookie {
            Some(c) => req.header(COOKIE, c),
            None => req,
        }
    };
    for cookie in [
        None,
        Some("gr_session=0123"),
        Some(&*format!("gr_session={}", "a".repeat(64))),
    ] {
        let resp = page(cookie).send().await.expect("GET /dashboard");
        assert_eq!(resp.status(), 200, "{cookie:?}");
        let csp = resp
            .headers()
            .get(CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(csp.contains("script-src 'self'"), "{csp}");
        let body = resp.text().await.unwrap_or_default();
        assert!(body.contains(r#"action="/dashboard/login""#), "{body}");
        assert!(!body.contains("dashboard.js"), "{body}");
    }

    let (status, js) = text_of(anon(&proxy, Method::GET, "/dashboard/dashboard.js")).await;
    assert_eq!(status, 200);
    assert!(js.contains("/dashboard/api/state"));
    let (status, css) = text_of(anon(&proxy, Method::GET, "/dashboard/dashboard.css")).await;
    assert_eq!(status, 200);
    assert!(css.contains("content-visibility"));
    let (status, _) = json_of(anon(&proxy, Method::GET, "/dashboard/nope.js")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let fake = FakeGemini::start().await;
    let proxy = start_with(config(&fake)).await;
    let cookie = session(&proxy).await;
    let state = || anon(&proxy, Method::GET, "/dashboard/api/state").header(COOKIE, &cookie);
    assert_eq!(json_of(state()).await.0, 200);

    let resp = anon(&proxy, Method::POST, "/dashboard/logout")
        .header(COOKIE, &cookie)
        .header("x-dashboard", "1")
        .send()
        .await
        .expect("logout");
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers().get(SET_COOKIE).and_then(|v| v.to_str().ok()),
        Some("gr_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
    );
    assert_eq!(json_of(state()).await.0, 401);
    let (_, page) = text_of(anon(&proxy, Method::GET, "/dashboard").header(COOKIE, &cookie)).await;
    assert!(page.contains("id=\"login-form\""), "{page}");
}

/// The Set-Cookie of a login (or, with a session `cookie`, a logout) sent with `header`.
async fn set_cookie_with(
    proxy: &Proxy,
    path: &str,
    cookie: Option<&str>,
    header: (&str, &str),
) -> String {
    let mut req = anon(proxy, Method::POST, path)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-dashboard", "1")
        .header(header.0, header.1)
        .body(format!("token={ADMIN}"));
    if let Some(cookie) = cookie {
        req = req.header(COOKIE, cookie);
    }
    let resp = req.send().await.expect("request");
    resp.headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn behind_a_trusted_https_proxy_the_cookie_is_secure() {
    let fake = FakeGemini::start().await;
    let proxy =
        start_with(config(&fake).set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)).await;
    let login = "/dashboard/login";
    for https in [
        ("x-forwarded-proto", "https"),
        ("x-forwarded-proto", "http, https"),
        ("forwarded", r#"for=203.0.113.9;proto=https"#),
    ] {
        let cookie = set_cookie_with(&proxy, login, None, https).await;
        assert!(cookie.ends_with("; Secure"), "{https:?}: {cookie}");
        let pair = cookie.split(';').next().unwrap_or_default().to_string();
        let cleared = set_cookie_with(&proxy, "/dashboard/logout", Some(&pair), https).await;
        assert!(
            cleared.starts_with("gr_session=;") && cleared.ends_with("; Secure"),
            "{cleared}"
        );
    }
    // Plain HTTP at the front: a Secure cookie would never come back, so none.
    let cookie = set_cookie_with(&proxy, login, None, ("x-forwarded-proto", "http")).await;
    assert!(
        cookie.starts_with("gr_session=") && !cookie.contains("Secure"),
        "{cookie}"
    );

    // From a peer that is not a trusted proxy the header means nothing.
    let direct = start_with(config(&fake)).await;
    let cookie = set_cookie_with(&direct, login, None, ("x-forwarded-proto", "https")).await;
    assert!(
        cookie.starts_with("gr_session=") && !cookie.contains("Secure"),
        "{cookie}"
    );
}

#[tokio::test]
async fn without_admin_tokens_only_loopback_can_log_in() {
    let fake = FakeGemini::start().await;
    let base = config(&fake).unset("auth", "admin_tokens");
    let proxy = start_with(base.clone()).await;
    let (status, cookie, _) = login(&proxy, "").await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert!(cookie.is_some());

    // The same from a (trusted-proxy-forwarded) remote address is refused.
    let proxy = start_with(base.set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)).await;
    let resp = anon(&proxy, Method::POST, "/dashboard/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-for", "203.0.113.7")
        .body("token=anything")
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().get(SET_COOKIE).is_none());
}

// ---------------------------------------------------------------------------------------------
// State endpoint

#[tokio::test]
async fn state_endpoint_gate() {
    let fake = FakeGemini::start().await;
    let proxy = start_with(config(&fake)).await;
    let cookie = session(&proxy).await;
    let state = || anon(&proxy, Method::GET, "/dashboard/api/state");

    let (status, body) = json_of(state()).await;
    assert_eq!(status, 401, "no credentials: {body}");
    assert_eq!(body["error"]["type"], "authentication_error");
    let (status, body) = json_of(state().bearer_auth(TEST_TOKEN)).await;
    assert_eq!(status, 403, "client token: {body}");
    assert_eq!(body["error"]["type"], "permission_error");
    let (status, _) = json_of(state().bearer_auth(ADMIN)).await;
    assert_eq!(status, 200, "admin token");
    let (status, _) = json_of(state().header(COOKIE, &cookie)).await;
    assert_eq!(status, 200, "session cookie");
    let forged = format!("gr_session={}", "0".repeat(64));
    let (status, _) = json_of(state().header(COOKIE, forged)).await;
    assert_eq!(status, 401, "forged cookie");
}

/// Chats on FLASH (each answered 200) until `key` has been tried at least once; how many.
async fn chat_until_hit(fake: &FakeGemini, proxy: &Proxy, key: &str) -> u64 {
    let mut chats = 0;
    while fake.hits(key, FLASH) == 0 {
        assert!(chats < 10, "{key} never picked for {FLASH}");
        let (status, body) =
            json_of(proxy.post("/v1/chat/completions").json(&chat_body(FLASH))).await;
        assert_eq!(status, 200, "{body}");
        chats += 1;
    }
    chats
}

#[tokio::test]
async fn state_shows_every_key_and_model_with_traffic() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    fake.on(&keys[1], FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("3600s")));
    let proxy = start_with(config(&fake)).await;

    // Until key 2 has taken its 429 (the client never sees it: another key answers).
    let chats = chat_until_hit(&fake, &proxy, &keys[1]).await;
    let (status, _) = json_of(proxy.post("/v1/chat/completions").body("{not json")).await;
    assert_eq!(status, 400);

    let (status, s) =
        json_of(anon(&proxy, Method::GET, "/dashboard/api/state").bearer_auth(ADMIN)).await;
    assert_eq!(status, 200, "{s}");
    let text = s.to_string();
    for key in &keys {
        assert!(!text.contains(key.as_str()), "a raw key in the state");
    }
    assert_eq!(s["models"], json!([FLASH, PRO]));
    assert_eq!(s["total_keys"], 3);
    // The pool's count: a key is available when it is usable for at least one model (key 2
    // cools on FLASH only and may still serve PRO, issue #14 item 16).
    assert_eq!(s["available_keys"], 3);
    let rows = s["keys"].as_array().expect("keys");
    assert_eq!(rows.len(), 3);
    let masked: Vec<&str> = rows
        .iter()
        .map(|k| k["key"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(masked, ["AIza****0001", "AIza****0002", "AIza****0003"]);
    assert_eq!(rows[2]["name"], "pro-only");

    let cell = |row: usize, col: usize| &rows[row]["cells"][col];
    assert_eq!(cell(0, 0)["state"], "ok");
    assert_eq!(cell(1, 0)["state"], "cooling", "{s}");
    let left = cell(1, 0)["left_s"].as_u64().expect("left_s");
    assert!((3000..=3600).contains(&left), "left_s {left}");
    assert_eq!(cell(1, 0)["error"], "rate_limited", "{s}");
    assert_eq!(cell(1, 1), &json!({"state": "ok"}));
    assert_eq!(cell(2, 0), &json!({"state": "not_allowed"}));
    assert_eq!(cell(2, 1)["state"], "ok");

    assert_eq!(
        s["usable"],
        json!([
            {"model": FLASH, "usable": 1, "allowed": 2},
            {"model": PRO, "usable": 3, "allowed": 3},
        ])
    );

    // Traffic: the chats and the bad request; not the dashboard's own calls.
    let minutes = s["traffic"].as_array().expect("traffic");
    assert_eq!(minutes.len(), 60);
    let sum = |field: &str| {
        minutes
            .iter()
            .map(|m| m[field].as_u64().unwrap_or(0))
            .sum::<u64>()
    };
    assert_eq!(sum("requests"), chats + 1);
    assert_eq!(sum("errors"), 1);
    let starts: Vec<u64> = minutes
        .iter()
        .map(|m| m["start"].as_u64().unwrap_or(0))
        .collect();
    assert!(starts.windows(2).all(|w| w[1] == w[0] + 60), "{starts:?}");

    assert_eq!(s["config"]["last_reload"]["ok"], true);
    assert!(s["config"]["hash"].as_str().is_some_and(|h| !h.is_empty()));
}

// ---------------------------------------------------------------------------------------------
// Cross-site rule

#[tokio::test]
async fn cookie_authenticated_changes_need_the_dashboard_header() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    fake.on(&keys[0], FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("3600s")));
    let proxy = start_with(config(&fake)).await;
    let cookie = session(&proxy).await;
    while fake.hits(&keys[0], FLASH) == 0 {
        let (status, _) = json_of(proxy.post("/v1/chat/completions").json(&chat_body(FLASH))).await;
        assert_eq!(status, 200);
    }
    let key1_flash = || async {
        let (_, s) =
            json_of(anon(&proxy, Method::GET, "/dashboard/api/state").header(COOKIE, &cookie))
                .await;
        s["keys"][0]["cells"][0]["state"].clone()
    };
    assert_eq!(key1_flash().await, "cooling");

    let reset = || {
        anon(&proxy, Method::POST, "/reset-api-key-health")
            .header(CONTENT_TYPE, "application/json")
            .body(r#"{"api_key_pattern":"AIza****0001"}"#)
    };
    // The cookie alone, as a cross-site form would send it: refused, nothing reset.
    let (status, body) = json_of(reset().header(COOKIE, &cookie)).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "cross_site_request", "{body}");
    let (status, _) = json_of(
        reset()
            .header(COOKIE, &cookie)
            .header("x-dashboard", "true"),
    )
    .await;
    assert_eq!(status, 403, "only `x-dashboard: 1` counts");
    let (status, _) =
        json_of(anon(&proxy, Method::POST, "/admin/reset-keys").header(COOKIE, &cookie)).await;
    assert_eq!(status, 403);
    let (status, _) =
        json_of(anon(&proxy, Method::POST, "/admin/reload").header(COOKIE, &cookie)).await;
    assert_eq!(status, 403);
    assert_eq!(key1_flash().await, "cooling");

    // With the header, as the page sends it.
    let (status, body) = json_of(reset().header(COOKIE, &cookie).header("x-dashboard", "1")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reset_count"], 1);
    assert_eq!(key1_flash().await, "ok");

    // An admin token next to the cookie needs no header (it is not ambient authority).
    let (status, _) = json_of(
        anon(&proxy, Method::POST, "/admin/reset-keys")
            .header(COOKIE, &cookie)
            .bearer_auth(ADMIN),
    )
    .await;
    assert_eq!(status, 200);
}

// ---------------------------------------------------------------------------------------------
// Headless Chromium

/// Runs `tests/ui/dashboard_ui.py` (selenium + Debian's chromium) against two proxies: three
/// keys with one cooling (logs in, sees the grid, resets the cooled key, sees it usable, saves
/// a screenshot) and 1,000 keys (the page renders every row). `scripts/ui-test.sh` installs
/// what it needs and sets `GEMINI_ROTATOR_UI_PYTHON`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "needs chromium and selenium: run scripts/ui-test.sh"]
async fn dashboard_in_chromium() {
    let Ok(python) = std::env::var("GEMINI_ROTATOR_UI_PYTHON") else {
        // `cargo test -- --include-ignored` (scripts/test.sh) reaches here; the real run is
        // scripts/ui-test.sh, which .ci/run calls.
        eprintln!("SKIPPED dashboard_in_chromium: GEMINI_ROTATOR_UI_PYTHON is not set (run scripts/ui-test.sh)");
        return;
    };
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    fake.on(&keys[1], FLASH)
        .always(Reply::quota_per_minute(FLASH, Some("3600s")));
    let small = start_with(config(&fake)).await;
    chat_until_hit(&fake, &small, &keys[1]).await;
    // Once cooled, key 2 may answer again when reset.
    fake.on(&keys[1], FLASH).clear();
    // Some traffic for the charts, one of it an error.
    for _ in 0..5 {
        let _ = json_of(small.post("/v1/chat/completions").json(&chat_body(PRO))).await;
    }
    let _ = json_of(small.post("/v1/chat/completions").body("{not json")).await;

    let many = fake_keys(1000);
    let big = start_with(
        config_for(&fake.url(), &many)
            .set("models", r#"list = "static""#)
            .set(
                "models",
                r#"static = ["gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-2.0-flash"]"#,
            )
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#)),
    )
    .await;

    let root = env!("CARGO_MANIFEST_DIR");
    let script = format!("{root}/tests/ui/dashboard_ui.py");
    let artifacts = format!("{root}/target/artifacts");
    let (small_url, big_url) = (small.url(), big.url());
    // Bounded: the script's own waits are at most 60 s each.
    let output = support::run_script(
        python,
        script,
        vec![
            ("GR_URL", small_url),
            ("GR_BIG_URL", big_url),
            ("GR_ADMIN_TOKEN", ADMIN.to_string()),
            ("GR_COOLED_KEY", "AIza****0002".to_string()),
            ("GR_MODEL", FLASH.to_string()),
            ("GR_ARTIFACTS", artifacts),
        ],
        Duration::from_secs(300),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "dashboard UI checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
