//! Trust boundaries through the real binary (issue #14, items 6, 7, 9, 10, 11): no edit and no
//! header opens the proxy. Zero client tokens is refused at start and on reload unless
//! `auth.open`; loopback privilege comes from the TCP peer and a loopback `Host` only; trusted
//! proxies name the one header they set; a dashboard session ends with its admin token; an
//! empty allow list is refused; world-readable secret files are warned about; `/health` obeys
//! the IP rules.

mod support;

use std::path::Path;
use std::time::Duration;

use reqwest::header::{CONTENT_TYPE, COOKIE, HOST, SET_COOKIE};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{json, Value};
use support::{config_for, fake_key, run_check, FakeGemini, Proxy, TestConfig, TEST_TOKEN};

const FLASH: &str = "gemini-2.5-flash";
const ADMIN_A: &str = "adm-aaaaaaaaaaaaaaaa-admin";
const ADMIN_B: &str = "adm-bbbbbbbbbbbbbbbb-admin";
const FILE_TOKEN: &str = "sk-from-the-secret-000000001";
/// How long a reload or a log line may take to show.
const APPLY: Duration = Duration::from_secs(10);

fn base(fake: &FakeGemini) -> TestConfig {
    config_for(&fake.url(), &[fake_key(1)])
}

/// No redirects followed, so a login's 303 and its cookie can be seen.
fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

/// A request with no credentials at all.
fn anon(proxy: &Proxy, method: Method, path: &str) -> RequestBuilder {
    client().request(method, format!("{}{path}", proxy.url()))
}

fn chat() -> Value {
    json!({ "model": FLASH, "messages": [{ "role": "user", "content": "hi" }] })
}

async fn status_of(req: RequestBuilder) -> u16 {
    req.send()
        .await
        .expect("request to the proxy")
        .status()
        .as_u16()
}

async fn reload(proxy: &Proxy, admin: Option<&str>) -> (u16, Value) {
    let mut req = anon(proxy, Method::POST, "/admin/reload");
    if let Some(token) = admin {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.expect("reload");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

// ---------------------------------------------------------------------------------------------
// 6. Zero client tokens

#[tokio::test]
async fn zero_client_tokens_do_not_start() {
    let fake = FakeGemini::start().await;
    let mut proxy = Proxy::builder()
        .config(base(&fake).set("auth", "tokens = []"))
        .spawn();
    let status = proxy.wait_exit(APPLY).await.expect("the proxy must exit");
    assert_eq!(status.code(), Some(1), "{}", proxy.logs());
    let logs = proxy.logs();
    assert!(
        logs.contains("auth.tokens") && logs.contains("auth.open = true"),
        "the refusal must name the field and the fix:\n{logs}"
    );
}

#[tokio::test]
async fn a_reload_to_zero_tokens_is_rejected_and_the_tokens_keep_working() {
    let fake = FakeGemini::start().await;
    // As in Kubernetes: client tokens live in a Secret's tokens.txt.
    let config = base(&fake)
        .set("auth", "tokens = []")
        .set("auth", r#"token_files = ["tokens.txt"]"#);
    let proxy = Proxy::builder()
        .config(&config)
        .file("tokens.txt", &format!("{FILE_TOKEN}\n"))
        .start()
        .await;
    let chat_as = |token: Option<&str>| {
        let req = anon(&proxy, Method::POST, "/v1/chat/completions").json(&chat());
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    };
    assert_eq!(status_of(chat_as(Some(FILE_TOKEN))).await, 200);
    assert_eq!(status_of(chat_as(None)).await, 401);

    // A bad edit empties the Secret: rejected like any bad config, the proxy stays closed.
    proxy.write_file("tokens.txt", "# all tokens removed\n");
    let (status, body) = reload(&proxy, None).await;
    assert_eq!(status, 422, "{body}");
    let error = body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("auth.tokens") && error.contains("auth.open = true"),
        "{error}"
    );
    assert_eq!(status_of(chat_as(None)).await, 401, "no open relay");
    assert_eq!(
        status_of(chat_as(Some(FILE_TOKEN))).await,
        200,
        "the running config keeps serving"
    );

    // Opening it on purpose applies, with a loud warning at each load that installs it.
    let warning = "the proxy is OPEN";
    assert_eq!(proxy.logs().matches(warning).count(), 0);
    proxy.write_file("config.toml", &config.set("auth", "open = true").render());
    let (status, body) = reload(&proxy, None).await;
    assert_eq!((status, &body["applied"]), (200, &json!(true)), "{body}");
    assert!(proxy.wait_for_log(warning, APPLY).await, "{}", proxy.logs());
    assert!(
        proxy
            .logs()
            .lines()
            .any(|l| l.contains("WARN") && l.contains(warning)),
        "{}",
        proxy.logs()
    );
    assert_eq!(status_of(chat_as(None)).await, 200);
    let (status, _) = reload(&proxy, None).await;
    assert_eq!(status, 200);
    assert!(proxy.wait_for_log_count(warning, 2, APPLY).await);
}

// ---------------------------------------------------------------------------------------------
// 7. Loopback privilege and the forwarding header

#[tokio::test]
async fn a_forwarded_loopback_address_gets_no_admin_and_no_lockout_exemption() {
    let fake = FakeGemini::start().await;
    // No admin token; the reverse proxy in front runs on this machine.
    let proxy = Proxy::builder()
        .config(base(&fake).set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#))
        .start()
        .await;
    let status = || anon(&proxy, Method::GET, "/status");

    assert_eq!(status_of(status()).await, 200, "this machine, directly");
    for xff in ["127.0.0.1", "::1", "203.0.113.7, 127.0.0.1"] {
        let forwarded = status().header("x-forwarded-for", xff);
        assert_eq!(status_of(forwarded).await, 403, "X-Forwarded-For: {xff}");
    }
    let login = anon(&proxy, Method::POST, "/dashboard/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .header("x-forwarded-for", "127.0.0.1")
        .body("token=");
    let resp = login.send().await.expect("login");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(SET_COOKIE).is_none());

    // A guesser claiming to be 127.0.0.1 is locked out like any other address (the refused
    // login above was its first failure)...
    let guess = |token: String| {
        anon(&proxy, Method::POST, "/v1/chat/completions")
            .header("x-forwarded-for", "127.0.0.1")
            .bearer_auth(token)
            .json(&chat())
    };
    for i in 0..9 {
        assert_eq!(status_of(guess(format!("sk-guess-{i:04}"))).await, 401);
    }
    assert_eq!(status_of(guess(TEST_TOKEN.to_string())).await, 429);
    // ...while this machine itself, the TCP peer, never is.
    for i in 0..12 {
        let wrong = anon(&proxy, Method::POST, "/v1/chat/completions")
            .bearer_auth(format!("sk-guess-{i:04}"))
            .json(&chat());
        assert_eq!(status_of(wrong).await, 401);
    }
    assert_eq!(
        status_of(proxy.post("/v1/chat/completions").json(&chat())).await,
        200
    );
}

#[tokio::test]
async fn only_a_loopback_host_gets_the_tokenless_admin() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder().config(base(&fake)).start().await;
    let port = proxy.addr().port();
    let status_with_host = |host: String| anon(&proxy, Method::GET, "/status").header(HOST, host);

    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "localhost".to_string(),
        format!("[::1]:{port}"),
    ] {
        assert_eq!(
            status_of(status_with_host(host.clone())).await,
            200,
            "{host}"
        );
    }
    // DNS rebinding: a page on evil.example, its name resolved to 127.0.0.1.
    for host in [
        format!("evil.example:{port}"),
        "evil.example".to_string(),
        format!("localhost.evil.example:{port}"),
    ] {
        assert_eq!(
            status_of(status_with_host(host.clone())).await,
            403,
            "{host}"
        );
    }
    let login = anon(&proxy, Method::POST, "/dashboard/login")
        .header(HOST, format!("evil.example:{port}"))
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body("token=");
    let resp = login.send().await.expect("login");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get(SET_COOKIE).is_none());

    // A local reverse proxy that is not in trusted_proxies forwards for someone else.
    for (name, value) in [
        ("x-forwarded-for", "203.0.113.7"),
        ("forwarded", "for=203.0.113.7"),
        ("x-real-ip", "203.0.113.7"),
    ] {
        let req = anon(&proxy, Method::GET, "/status").header(name, value);
        assert_eq!(status_of(req).await, 403, "{name}");
    }
}

#[tokio::test]
async fn trusted_proxies_name_the_one_header_they_set() {
    let fake = FakeGemini::start().await;
    let config = |header: &str| {
        base(&fake)
            .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set("server", &format!(r#"real_ip_header = "{header}""#))
            .set("access", r#"allow = ["10.0.0.0/8"]"#)
    };
    let proxy = Proxy::builder().config(config("x-real-ip")).start().await;
    let from = |name: &str, value: &str| proxy.get("/v1/models").header(name, value);
    assert_eq!(status_of(from("x-real-ip", "10.2.3.4")).await, 200);
    // Another kind of header is what a client sent through the proxy: ignored, so the client
    // is the proxy itself (127.0.0.1), which the rules do not allow.
    assert_eq!(status_of(from("x-forwarded-for", "10.2.3.4")).await, 403);
    assert_eq!(status_of(from("forwarded", "for=10.2.3.4")).await, 403);
    let both = proxy
        .get("/v1/models")
        .header("x-real-ip", "203.0.113.9")
        .header("x-forwarded-for", "10.2.3.4");
    assert_eq!(status_of(both).await, 403);
    drop(proxy);

    let proxy = Proxy::builder()
        .config(config("CF-Connecting-IP"))
        .start()
        .await;
    let from = |name: &str, value: &str| proxy.get("/v1/models").header(name, value);
    assert_eq!(status_of(from("cf-connecting-ip", "10.2.3.4")).await, 200);
    assert_eq!(status_of(from("x-real-ip", "10.2.3.4")).await, 403);
    assert_eq!(status_of(from("x-forwarded-for", "10.2.3.4")).await, 403);
}

// ---------------------------------------------------------------------------------------------
// 9. Sessions end with their token

async fn login(proxy: &Proxy, token: &str) -> String {
    let resp = anon(proxy, Method::POST, "/dashboard/login")
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .expect("login");
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let cookie = resp
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .expect("login sets a cookie");
    cookie.split(';').next().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_reload_that_removes_an_admin_token_ends_its_sessions() {
    let fake = FakeGemini::start().await;
    let config = base(&fake);
    let proxy = Proxy::builder()
        .config(config.clone().set(
            "auth",
            &format!(r#"admin_tokens = ["{ADMIN_A}", "{ADMIN_B}"]"#),
        ))
        .start()
        .await;
    let (by_a, by_b) = (login(&proxy, ADMIN_A).await, login(&proxy, ADMIN_B).await);
    let state = |cookie: &str| {
        anon(&proxy, Method::GET, "/dashboard/api/state").header(COOKIE, cookie.to_string())
    };
    assert_eq!(status_of(state(&by_a)).await, 200);
    assert_eq!(status_of(state(&by_b)).await, 200);

    proxy.write_file(
        "config.toml",
        &config
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN_B}"]"#))
            .render(),
    );
    let (status, body) = reload(&proxy, Some(ADMIN_B)).await;
    assert_eq!(status, 200, "{body}");

    assert_eq!(status_of(state(&by_a)).await, 401, "A's session ended");
    let page = anon(&proxy, Method::GET, "/dashboard")
        .header(COOKIE, by_a.clone())
        .send()
        .await
        .expect("page");
    let page = page.text().await.unwrap_or_default();
    assert!(page.contains("id=\"login-form\""), "the login form again");
    assert_eq!(status_of(state(&by_b)).await, 200, "B's session goes on");
}

// ---------------------------------------------------------------------------------------------
// 10. No config fails open by accident

#[test]
fn an_empty_allow_list_is_a_config_error_naming_the_fix() {
    let config = config_for("http://127.0.0.1:9", &[fake_key(1)])
        .set("access", "allow = []")
        .render();
    let (code, stdout, stderr) = run_check(
        &["--config", "{dir}/config.toml", "--check"],
        &[("config.toml", &config)],
    );
    assert_eq!(code, 1, "stdout: {stdout}\nstderr: {stderr}");
    assert!(
        stderr.contains("access.allow") && stderr.contains(r#"allow = ["*"]"#),
        "{stderr}"
    );
}

#[cfg(unix)]
#[tokio::test]
async fn secret_files_every_user_may_read_are_warned_about() {
    let fake = FakeGemini::start().await;
    let config = base(&fake)
        .set("auth", r#"token_files = ["tokens.txt"]"#)
        .set("pool", "keys = []")
        .set("pool", r#"key_files = ["keys.txt"]"#);
    let key = fake_key(1);
    let prepare = |modes: [u32; 3]| {
        move |dir: &Path| {
            chmod(dir, 0o755);
            for (name, mode) in ["config.toml", "keys.txt", "tokens.txt"].iter().zip(modes) {
                chmod(&dir.join(name), mode);
            }
        }
    };
    let warned = |logs: &str, file: &str| {
        logs.lines()
            .any(|l| l.contains("WARN") && l.contains(file) && l.contains("every user"))
    };

    let open = Proxy::builder()
        .config(&config)
        .file("keys.txt", &format!("{key}\n"))
        .file("tokens.txt", &format!("{FILE_TOKEN}\n"))
        .prepare(prepare([0o644, 0o644, 0o644]))
        .start()
        .await;
    let logs = open.logs();
    for file in ["config.toml", "keys.txt", "tokens.txt"] {
        assert!(warned(&logs, file), "no warning for {file}:\n{logs}");
    }
    for secret in [key.as_str(), FILE_TOKEN, TEST_TOKEN] {
        assert!(!logs.contains(secret), "a secret in the logs:\n{logs}");
    }
    drop(open);

    let private = Proxy::builder()
        .config(&config)
        .file("keys.txt", &format!("{key}\n"))
        .file("tokens.txt", &format!("{FILE_TOKEN}\n"))
        .prepare(prepare([0o600, 0o600, 0o640]))
        .start()
        .await;
    assert!(!private.logs().contains("every user"), "{}", private.logs());
    // A reload that brings a readable file in warns about it.
    let tokens = private.path("tokens.txt");
    private.write_file("tokens.txt", &format!("{FILE_TOKEN}\n{TEST_TOKEN}-2\n"));
    chmod(&tokens, 0o644);
    let (status, body) = reload(&private, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        private.wait_for_log("every user", APPLY).await,
        "{}",
        private.logs()
    );
    assert!(warned(&private.logs(), "tokens.txt"), "{}", private.logs());
    assert!(!warned(&private.logs(), "keys.txt"));
}

// ---------------------------------------------------------------------------------------------
// 11. /health obeys the IP rules; the kubelet's probes do not

#[tokio::test]
async fn ip_rules_apply_to_health_but_not_to_the_probes() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(
            base(&fake)
                .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
                .set("access", r#"allow = ["10.0.0.0/8"]"#)
                .set("access", r#"deny = ["10.9.0.0/16"]"#),
        )
        .start()
        .await;
    let get = |path: &str, client: &str| {
        anon(&proxy, Method::GET, path).header("x-forwarded-for", client.to_string())
    };
    let health = get("/health", "10.1.2.3").send().await.expect("health");
    assert_eq!(health.status(), StatusCode::OK);
    let body: Value = health.json().await.unwrap_or(Value::Null);
    assert!(body["totalKeys"].is_number(), "{body}");
    for client in ["203.0.113.7", "10.9.1.1"] {
        assert_eq!(status_of(get("/health", client)).await, 403, "{client}");
        for probe in ["/livez", "/readyz"] {
            assert_eq!(status_of(get(probe, client)).await, 200, "{probe} {client}");
        }
    }
}
