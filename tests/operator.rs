//! The operator surface through the real binary (SPEC §4): `/stats`, the key resets,
//! `/api-key-recommendations`, `/ip-config`, `/test-ip` and `/metrics` — each endpoint's shape,
//! its admin gate, and exact numbers after scripted traffic against the fake Gemini.

mod support;

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use reqwest::{Method, RequestBuilder};
use serde_json::{json, Value};
use support::{fake_key, fake_keys, mask, start, FakeGemini, Proxy, Reply};

const FLASH: &str = "gemini-2.5-flash";
const PRO: &str = "gemini-2.5-pro";
const ADMIN: &str = "adm-0123456789abcdef-admin";

async fn send(req: RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request to the proxy");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn anon(proxy: &Proxy, method: Method, path: &str) -> RequestBuilder {
    support::client().request(method, format!("{}{path}", proxy.url()))
}

fn admin(proxy: &Proxy, method: Method, path: &str) -> RequestBuilder {
    anon(proxy, method, path).bearer_auth(ADMIN)
}

async fn chat(proxy: &Proxy, model: &str) -> u16 {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    send(proxy.post("/v1/chat/completions").json(&body)).await.0
}

/// Every operator endpoint, with a body that is valid for it.
fn operator_requests() -> Vec<(Method, &'static str, Option<Value>)> {
    vec![
        (Method::GET, "/stats", None),
        (Method::GET, "/api-key-recommendations", None),
        (Method::GET, "/ip-config", None),
        (
            Method::POST,
            "/test-ip",
            Some(json!({"test_ip": "10.1.2.3"})),
        ),
        (Method::GET, "/metrics", None),
        (Method::POST, "/admin/reset-keys", None),
        (
            Method::POST,
            "/reset-api-key-health",
            Some(json!({"reset_all": true})),
        ),
    ]
}

fn with_body(req: RequestBuilder, body: &Option<Value>) -> RequestBuilder {
    match body {
        Some(b) => req.json(b),
        None => req,
    }
}

#[tokio::test]
async fn operator_endpoints_need_the_admin_token() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
    })
    .await;

    for (method, path, body) in operator_requests() {
        let (code, err) = send(with_body(anon(&proxy, method.clone(), path), &body)).await;
        assert_eq!(code, 401, "{method} {path} without a token: {err}");
        assert_eq!(
            err["error"]["type"], "authentication_error",
            "{path}: {err}"
        );

        let (code, err) = send(with_body(proxy.request(method.clone(), path), &body)).await;
        assert_eq!(code, 403, "{method} {path} with a client token: {err}");

        let (code, got) = send(with_body(admin(&proxy, method.clone(), path), &body)).await;
        assert_eq!(code, 200, "{method} {path} with the admin token: {got}");

        // The admin token works from anywhere; the IP rules still apply.
        let remote = admin(&proxy, method.clone(), path).header("x-forwarded-for", "203.0.113.9");
        assert_eq!(send(with_body(remote, &body)).await.0, 200, "{path} remote");
    }
}

#[tokio::test]
async fn without_admin_tokens_operator_endpoints_are_loopback_only() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
    })
    .await;
    for (method, path, body) in operator_requests() {
        let local = with_body(proxy.request(method.clone(), path), &body);
        assert_eq!(send(local).await.0, 200, "{method} {path} from loopback");
        let remote = proxy
            .request(method.clone(), path)
            .header("x-forwarded-for", "198.51.100.4");
        let (code, err) = send(with_body(remote, &body)).await;
        assert_eq!(code, 403, "{method} {path} from a remote client: {err}");
    }
}

#[tokio::test]
async fn metrics_public_opens_only_metrics() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("server", "metrics_public = true")
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
    })
    .await;
    let resp = anon(&proxy, Method::GET, "/metrics")
        .send()
        .await
        .expect("/metrics");
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().unwrap_or_default();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert_eq!(send(anon(&proxy, Method::GET, "/stats")).await.0, 401);
}

// ---------------------------------------------------------------------------------------------
// /stats and resets

/// Two keys; key 1 takes a per-minute 429 on PRO (RetryInfo 50s), so PRO is served by key 2.
async fn traffic() -> (FakeGemini, Proxy, Vec<String>) {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(2);
    fake.on(&keys[0], PRO)
        .always(Reply::quota_per_minute(PRO, Some("50s")));
    let proxy = start(&fake, &keys, |c| {
        c.set("pool", r#"strategy = "round_robin""#)
    })
    .await;
    for _ in 0..4 {
        assert_eq!(chat(&proxy, FLASH).await, 200);
    }
    for _ in 0..2 {
        assert_eq!(chat(&proxy, PRO).await, 200);
    }
    (fake, proxy, keys)
}

#[tokio::test]
async fn stats_report_usage_per_key_and_model() {
    let (fake, proxy, keys) = traffic().await;
    // Key 1 was tried once for PRO (then rested 50 s); key 2 served both PRO requests.
    assert_eq!(fake.hits(&keys[0], PRO), 1);
    assert_eq!(fake.hits(&keys[1], PRO), 2);

    let (code, stats) = send(proxy.get("/stats")).await;
    assert_eq!(code, 200, "{stats}");
    let k1 = &stats["api_key_stats"][mask(&keys[0])];
    let k2 = &stats["api_key_stats"][mask(&keys[1])];
    assert!(
        k1.is_object() && k2.is_object(),
        "keys by masked form: {stats}"
    );
    assert!(!stats.to_string().contains(&keys[0]), "a raw key in /stats");

    assert_eq!(k1["models"][FLASH]["total_requests"], 2, "{k1}");
    assert_eq!(k2["models"][FLASH]["total_requests"], 2, "{k2}");
    assert_eq!(k1["models"][PRO]["total_requests"], 1, "{k1}");
    assert_eq!(k1["models"][PRO]["errors"], 1);
    assert_eq!(k1["models"][PRO]["state"], "cooling");
    assert_eq!(k1["models"][PRO]["healthy"], false);
    assert_eq!(k1["models"][PRO]["last_error_class"], "rate_limited");
    assert!(k1["models"][PRO]["cooldown_until"].is_string(), "{k1}");
    assert_eq!(k2["models"][PRO]["total_requests"], 2);
    assert_eq!(k1["total_requests"], 3);
    assert_eq!(k1["errors"], 1);
    assert_eq!(k1["error_rate"], 0.333);
    assert_eq!(k1["daily_requests"], 3);
    assert!(k1["last_used"].is_string());
    assert!(k1["daily_reset_at"].is_string());

    assert_eq!(stats["model_summary"][FLASH]["total_requests"], 4);
    assert_eq!(stats["model_summary"][PRO]["total_requests"], 3);
    assert_eq!(stats["model_summary"][PRO]["keys_usable"], 1);
    assert_eq!(stats["model_summary"][PRO]["keys_cooling"], 1);
    let global = &stats["global_summary"];
    assert_eq!(global["total_keys"], 2);
    assert_eq!(global["total_requests"], 7);
    assert_eq!(global["errors"], 1);
    let lb = &stats["load_balancing"];
    assert_eq!(lb["strategy"], "round_robin");
    assert_eq!(lb["quota_day_timezone"], "America/Los_Angeles");
    assert!(lb["now"].is_string() && lb["quota_day"].is_string(), "{lb}");
}

#[tokio::test]
async fn reset_endpoints_make_keys_usable_again() {
    let (fake, proxy, keys) = traffic().await;
    let pro_state = |s: &Value| s["api_key_stats"][mask(&keys[0])]["models"][PRO]["state"].clone();
    fake.on(&keys[0], PRO).clear();

    // Bad requests: empty body, unknown field, nothing matches.
    let (code, err) = send(proxy_admin_post(&proxy, "/reset-api-key-health").body("")).await;
    assert_eq!(code, 400, "{err}");
    assert!(err["error"]["message"].is_string(), "{err}");
    let (code, _) =
        send(proxy_admin_post(&proxy, "/reset-api-key-health").json(&json!({"bogus": 1}))).await;
    assert_eq!(code, 400);
    let (code, err) = send(
        proxy_admin_post(&proxy, "/reset-api-key-health")
            .json(&json!({"api_key_pattern": "AIza****zzzz"})),
    )
    .await;
    assert_eq!(code, 404, "{err}");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("AIza****zzzz"),
        "the message says what did not match: {err}"
    );

    let (code, err) = send(
        proxy_admin_post(&proxy, "/reset-api-key-health")
            .json(&json!({"model": "gemini-never-used"})),
    )
    .await;
    assert_eq!(code, 404, "a model no key has served: {err}");
    assert!(err["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .contains("gemini-never-used"));

    // The key's PRO state only.
    let (code, got) = send(
        proxy_admin_post(&proxy, "/reset-api-key-health")
            .json(&json!({"api_key_pattern": mask(&keys[0]), "model": PRO})),
    )
    .await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["reset_count"], 1);
    assert!(got["message"].is_string());
    let stats = send(proxy.get("/stats")).await.1;
    assert_eq!(pro_state(&stats), "ok", "{stats}");
    // And it serves again.
    fake.reset_counters();
    for _ in 0..2 {
        assert_eq!(chat(&proxy, PRO).await, 200);
    }
    assert_eq!(fake.hits(&keys[0], PRO), 1, "key 1 back in the rotation");

    // Cool it again, then the other forms.
    fake.on(&keys[0], PRO)
        .always(Reply::quota_per_minute(PRO, Some("50s")));
    for _ in 0..2 {
        assert_eq!(chat(&proxy, PRO).await, 200);
    }
    let stats = send(proxy.get("/stats")).await.1;
    assert_eq!(pro_state(&stats), "cooling", "{stats}");
    fake.on(&keys[0], PRO).clear();
    let (code, got) =
        send(proxy_admin_post(&proxy, "/reset-api-key-health").json(&json!({"model": PRO}))).await;
    assert_eq!((code, got["reset_count"].clone()), (200, json!(2)), "{got}");
    assert_eq!(pro_state(&send(proxy.get("/stats")).await.1), "ok");

    let (code, got) = send(proxy_admin_post(&proxy, "/admin/reset-keys")).await;
    assert_eq!((code, got["reset_count"].clone()), (200, json!(2)), "{got}");
    let (code, got) =
        send(proxy_admin_post(&proxy, "/reset-api-key-health").json(&json!({"reset_all": true})))
            .await;
    assert_eq!((code, got["reset_count"].clone()), (200, json!(2)), "{got}");
}

fn proxy_admin_post(proxy: &Proxy, path: &str) -> RequestBuilder {
    // No admin tokens configured: loopback is admin.
    proxy.post(path)
}

#[tokio::test]
async fn recommendations_follow_the_pool_state() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(3);
    fake.on_key(&keys[2]).always(Reply::api_key_invalid());
    let proxy = start(&fake, &[], |c| {
        c.set(
            "pool",
            &format!(
                r#"keys = [{{ key = "{}", project = "p1" }}, {{ key = "{}", project = "p1" }}, {{ key = "{}", name = "spare" }}]"#,
                keys[0], keys[1], keys[2]
            ),
        )
    })
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&proxy, FLASH).await, 200);
    }
    let (code, got) = send(proxy.get("/api-key-recommendations")).await;
    assert_eq!(code, 200, "{got}");
    let advice = got["recommendations"].as_array().expect("a list").clone();
    let find = |kind: &str| advice.iter().find(|a| a["kind"] == kind).cloned();

    let disabled = find("key_disabled").expect("the invalid key is reported");
    assert_eq!(disabled["severity"], "critical");
    assert_eq!(disabled["keys"], json!(["spare"]));
    let shared = find("shared_project").expect("the shared project is reported");
    assert_eq!(shared["keys"], json!([mask(&keys[0]), mask(&keys[1])]));
    assert!(shared["message"]
        .as_str()
        .unwrap_or_default()
        .contains("p1"));
    assert!(find("model_unavailable").is_none(), "{got}");
    assert_eq!(got["model_health"][FLASH]["keys_usable"], 2, "{got}");
    assert_eq!(got["model_health"][FLASH]["keys_disabled"], 1, "{got}");
    assert!(
        !got.to_string().contains(&keys[2]),
        "a raw key in the advice"
    );
}

// ---------------------------------------------------------------------------------------------
// IP endpoints

#[tokio::test]
async fn ip_config_and_test_ip() {
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| {
        c.set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set(
                "access",
                r#"allow = ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]"#,
            )
            .set("access", r#"deny = ["10.9.0.0/16"]"#)
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
    })
    .await;

    let (code, cfg) = send(admin(&proxy, Method::GET, "/ip-config")).await;
    assert_eq!(code, 200, "{cfg}");
    let allow: Vec<&str> = cfg["allow"]
        .as_array()
        .expect("allow list")
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert_eq!(allow, ["10.0.0.0/8", "127.0.0.1", "2001:db8::/32"]);
    assert_eq!(cfg["deny"][0]["rule"], "10.9.0.0/16");
    assert!(cfg["allow"][0]["meaning"]
        .as_str()
        .unwrap_or_default()
        .contains("10.255.255.255"));
    assert_eq!(cfg["your_ip"], "127.0.0.1");

    let test = |ip: &str| admin(&proxy, Method::POST, "/test-ip").json(&json!({"test_ip": ip}));
    let (code, got) = send(test("10.1.2.3")).await;
    assert_eq!(code, 200, "{got}");
    assert_eq!(got["allowed"], true);
    assert_eq!(got["your_ip"], "127.0.0.1");
    let (_, got) = send(test("10.9.1.1")).await;
    assert_eq!(got["allowed"], false, "deny wins: {got}");
    assert!(got["rule"].to_string().contains("10.9.0.0/16"), "{got}");
    let (_, got) = send(test("192.0.2.1")).await;
    assert_eq!(got["allowed"], false, "{got}");
    let (_, got) = send(test("::ffff:10.1.2.3")).await;
    assert_eq!(got["allowed"], true, "IPv4-mapped IPv6: {got}");

    // The caller's address after trusted-proxy resolution.
    let (_, got) = send(test("10.1.2.3").header("x-forwarded-for", "10.4.4.4")).await;
    assert_eq!(got["your_ip"], "10.4.4.4", "{got}");

    for bad in [
        json!({"test_ip": "10.1.2"}),
        json!({"test_ip": ""}),
        json!({"ip": "10.0.0.1"}),
    ] {
        let (code, err) = send(admin(&proxy, Method::POST, "/test-ip").json(&bad)).await;
        assert_eq!(code, 400, "{bad}: {err}");
        assert_eq!(err["error"]["type"], "invalid_request_error", "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// /metrics

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// The value of one sample: a counter's total, a gauge's value, or a histogram's count.
fn sample(expo: &Exposition, family: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let fam = expo.families.get(family)?;
    fam.iter_samples().find_map(|s| {
        let set = s.get_labelset().ok()?;
        let matches = labels
            .iter()
            .all(|(name, value)| set.get_label_value(name) == Some(*value));
        if !matches {
            return None;
        }
        match &s.value {
            OpenMetricsValue::Counter(c) => Some(c.value.as_f64()),
            OpenMetricsValue::Gauge(g) | OpenMetricsValue::Unknown(g) => Some(g.as_f64()),
            OpenMetricsValue::Histogram(h) => h.count.map(|c| c as f64),
            _ => None,
        }
    })
}

fn histogram_sum(expo: &Exposition, family: &str) -> Option<f64> {
    let fam = expo.families.get(family)?;
    fam.iter_samples().find_map(|s| match &s.value {
        OpenMetricsValue::Histogram(h) => h.sum.as_ref().map(|n| n.as_f64()),
        _ => None,
    })
}

async fn scrape(proxy: &Proxy) -> (String, Exposition) {
    let resp = proxy.get("/metrics").send().await.expect("/metrics");
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.expect("metrics text");
    let expo = openmetrics_parser::openmetrics::parse_openmetrics(&text)
        .unwrap_or_else(|e| panic!("/metrics does not parse as OpenMetrics: {e:?}\n{text}"));
    (text, expo)
}

#[tokio::test]
async fn metrics_count_scripted_traffic_exactly() {
    let (_fake, proxy, keys) = traffic().await;
    // One bad request: the client's 400, no upstream attempt.
    let (code, _) = send(
        proxy
            .post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body("{not json"),
    )
    .await;
    assert_eq!(code, 400);

    let (text, expo) = scrape(&proxy).await;
    let n = |family: &str, labels: &[(&str, &str)]| {
        sample(&expo, family, labels).unwrap_or_else(|| panic!("no {family} {labels:?} in\n{text}"))
    };
    let chat = ("route", "chat_completions");
    assert_eq!(
        n(
            "gemini_rotator_requests",
            &[chat, ("model", FLASH), ("status_class", "2xx")]
        ),
        4.0
    );
    assert_eq!(
        n(
            "gemini_rotator_requests",
            &[chat, ("model", PRO), ("status_class", "2xx")]
        ),
        2.0
    );
    assert_eq!(
        n("gemini_rotator_requests", &[chat, ("status_class", "4xx")]),
        1.0
    );
    assert_eq!(
        n("gemini_rotator_upstream_outcomes", &[("class", "ok")]),
        6.0
    );
    assert_eq!(
        n(
            "gemini_rotator_upstream_outcomes",
            &[("class", "rate_limited")]
        ),
        1.0
    );
    // Six requests reached the pool, with seven attempts between them.
    assert_eq!(n("gemini_rotator_attempts_per_request", &[]), 6.0);
    assert_eq!(
        histogram_sum(&expo, "gemini_rotator_attempts_per_request"),
        Some(7.0)
    );
    assert_eq!(
        n("gemini_rotator_request_duration_seconds", &[chat]),
        7.0,
        "one latency observation per request"
    );
    assert_eq!(
        n("gemini_rotator_upstream_ttfb_seconds", &[("model", FLASH)]),
        4.0
    );

    let k1 = mask(&keys[0]);
    let k2 = mask(&keys[1]);
    let state = |key: &str, model: &str, st: &str| {
        n(
            "gemini_rotator_key_state",
            &[("key", key), ("model", model), ("state", st)],
        )
    };
    assert_eq!(state(&k1, PRO, "cooling"), 1.0);
    assert_eq!(state(&k1, PRO, "ok"), 0.0);
    assert_eq!(state(&k2, PRO, "ok"), 1.0);
    assert_eq!(state(&k1, FLASH, "ok"), 1.0);
    assert_eq!(n("gemini_rotator_usable_keys", &[("model", PRO)]), 1.0);
    assert_eq!(n("gemini_rotator_usable_keys", &[("model", FLASH)]), 2.0);
    assert_eq!(
        n(
            "gemini_rotator_key_daily_requests",
            &[("key", &k2), ("model", PRO)]
        ),
        2.0
    );
    assert_eq!(n("gemini_rotator_keys", &[]), 2.0);
    assert!(!text.contains(&keys[0]), "a raw key in /metrics");
    // Admission, with the traffic done: the scrape is in flight (the last answer may still
    // hold its place for the instant after its bytes were written), and every body held has
    // been given back.
    let in_flight = n("gemini_rotator_requests_in_flight", &[]);
    assert!((1.0..=2.0).contains(&in_flight), "{in_flight} in flight");
    assert!(n("gemini_rotator_client_connections", &[]) >= 1.0);
    assert_eq!(n("gemini_rotator_memory_budget_used_bytes", &[]), 0.0);
    assert!(n("gemini_rotator_memory_budget_bytes", &[]) > 0.0);

    let hash = send(proxy.get("/status")).await.1["config"]["hash"]
        .as_str()
        .expect("config hash")
        .to_string();
    assert_eq!(n("gemini_rotator_config_info", &[("hash", &hash)]), 1.0);
    assert_eq!(n("gemini_rotator_config_last_reload_ok", &[]), 1.0);

    // Reloads are counted by result.
    assert_eq!(send(proxy.post("/admin/reload")).await.0, 200);
    std::fs::write(proxy.path("config.toml"), "[server\nbroken").expect("write bad config");
    assert_eq!(send(proxy.post("/admin/reload")).await.0, 422);
    let (text, expo) = scrape(&proxy).await;
    assert_eq!(
        sample(&expo, "gemini_rotator_config_reloads", &[("result", "ok")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &expo,
            "gemini_rotator_config_reloads",
            &[("result", "failed")]
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&expo, "gemini_rotator_config_last_reload_ok", &[]),
        Some(0.0)
    );
    assert_eq!(
        sample(&expo, "gemini_rotator_config_info", &[("hash", &hash)]),
        Some(1.0),
        "the active config is still the old one"
    );
}

#[tokio::test]
async fn stats_count_tokens_per_key_model_and_client() {
    let fake = FakeGemini::start().await;
    let keys = fake_keys(1);
    let cline = "sk-cline-0123456789abcdef";
    let proxy = start(&fake, &keys, |c| {
        c.set(
            "auth",
            &format!(r#"tokens = [{{ name = "cline", token = "{cline}" }}]"#),
        )
    })
    .await;
    let (mut prompt, mut completion) = (0, 0);
    for text in ["hello", "a somewhat longer question for the model"] {
        let body = json!({"model": FLASH, "messages": [{"role": "user", "content": text}]});
        let (code, got) = send(
            anon(&proxy, Method::POST, "/v1/chat/completions")
                .bearer_auth(cline)
                .json(&body),
        )
        .await;
        assert_eq!(code, 200, "{got}");
        prompt += got["usage"]["prompt_tokens"]
            .as_u64()
            .expect("prompt_tokens");
        completion += got["usage"]["completion_tokens"]
            .as_u64()
            .expect("completion_tokens");
    }
    assert!(prompt > 0 && completion > 0);

    let stats = send(proxy.get("/stats")).await.1;
    let client = &stats["clients"]["cline"];
    assert_eq!(client["requests"], 2, "{stats}");
    assert_eq!(client["prompt_tokens"], prompt, "{stats}");
    assert_eq!(client["completion_tokens"], completion, "{stats}");
    let per_model = &stats["api_key_stats"][mask(&keys[0])]["models"][FLASH]["daily_tokens"];
    assert_eq!(per_model["prompt"], prompt, "{stats}");
    assert_eq!(per_model["completion"], completion, "{stats}");
    assert_eq!(
        stats["global_summary"]["daily_tokens"]["prompt"], prompt,
        "{stats}"
    );
    assert!(!stats.to_string().contains(cline), "a raw token in /stats");
}

#[tokio::test]
async fn loopback_admin_refuses_cross_site_browser_requests() {
    // No admin tokens: loopback is admin without a credential, so a page in a local browser
    // must not be able to use it.
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &[fake_key(1)], |c| c).await;
    let post = || anon(&proxy, Method::POST, "/admin/reset-keys");

    let (code, err) = send(post().header("origin", "https://evil.example")).await;
    assert_eq!(code, 403, "{err}");
    assert_eq!(err["error"]["code"], "cross_site_request", "{err}");
    let (code, err) = send(post().header("sec-fetch-site", "cross-site")).await;
    assert_eq!(code, 403, "{err}");

    // curl and scripts send neither header; a same-origin page may.
    assert_eq!(send(post()).await.0, 200);
    let own = format!("http://{}", proxy.addr());
    assert_eq!(send(post().header("origin", own.as_str())).await.0, 200);
    assert_eq!(
        send(
            post()
                .header("origin", "https://evil.example")
                .header("x-dashboard", "1")
        )
        .await
        .0,
        200,
        "a cross-site page cannot send custom headers without CORS, which we never grant"
    );
    // Reads stay open to loopback (a cross-site page cannot read the answer without CORS).
    let read = anon(&proxy, Method::GET, "/stats").header("origin", "https://evil.example");
    assert_eq!(send(read).await.0, 200);
}
