//! `[state] store = "redis"` against the real binary and a real Redis server (issue #16): two
//! or three replicas on one Redis and one fake Gemini share what they learn (rests, day-outs
//! with their project, disabled keys, `daily_limit` counts, dashboard sessions, lockouts,
//! admin resets), a replica restarted mid-day remembers, Redis killed or paused under load
//! fails no request, and nothing in Redis is a key or a token.
//!
//! Waits are bounded polls; the Redis server is `tests/support/redis.rs`.

mod support;

use std::time::{Duration, Instant};

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use serde_json::{json, Value};
use support::redis::RedisServer;
use support::{config_for, fake_keys, mask, FakeGemini, Proxy, Reply, TestConfig, TEST_TOKEN};

const FLASH: &str = "gemini-2.5-flash";
const ADMIN: &str = "adm-FAKE-TEST-admin-token-0001";

fn with_redis(c: TestConfig, redis: &RedisServer) -> TestConfig {
    c.set("state", r#"store = "redis""#)
        .set("state", &format!("url = \"{}\"", redis.url()))
        .set("state", r#"timeout = "100ms""#)
        .set("models", r#"list = "static""#)
        .set("models", &format!(r#"static = ["{FLASH}"]"#))
}

async fn replica(config: TestConfig) -> Proxy {
    let proxy = Proxy::builder().config(config).start().await;
    assert!(
        proxy
            .wait_for_log("state: connected to Redis", Duration::from_secs(10))
            .await,
        "{}",
        proxy.logs()
    );
    proxy
}

/// `n` replicas of the same config on one Redis.
async fn replicas(n: usize, config: impl Fn() -> TestConfig) -> Vec<Proxy> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(replica(config()).await);
    }
    out
}

async fn chat(proxy: &Proxy) -> u16 {
    proxy
        .post("/v1/chat/completions")
        .json(&json!({ "model": FLASH, "messages": [{ "role": "user", "content": "Say hello" }] }))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

async fn status(proxy: &Proxy) -> Value {
    proxy
        .get("/status")
        .send()
        .await
        .expect("/status")
        .json()
        .await
        .expect("/status JSON")
}

/// Polls `cond` on `proxy`'s `/status` until it holds, at most `limit`; returns the time taken.
async fn within(proxy: &Proxy, limit: Duration, cond: impl Fn(&Value) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let s = status(proxy).await;
        if cond(&s) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "not within {limit:?}: {s}\nlogs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn flash_state(s: &Value, index: usize) -> &Value {
    &s["keys"][index]["models"][FLASH]["state"]
}

#[tokio::test]
async fn a_per_minute_rest_learned_by_one_replica_reaches_the_other_within_a_second() {
    let redis = RedisServer::start();
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH)
        .then(Reply::quota_per_minute(FLASH, Some("30s")));
    let r = replicas(2, || with_redis(config_for(&fake.url(), &keys), &redis)).await;
    let (a, b) = (&r[0], &r[1]);

    assert_eq!(chat(a).await, 200, "A retried on key 1");
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    let took = within(b, Duration::from_secs(1), |s| {
        flash_state(s, 0) == "cooling"
    })
    .await;
    eprintln!("the rest reached B in {took:?}");
    let s = status(b).await;
    assert_eq!(s["state"]["store"], "redis", "{}", s["state"]);
    assert_eq!(s["state"]["ok"], true, "{}", s["state"]);
    for _ in 0..6 {
        assert_eq!(chat(b).await, 200);
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        1,
        "B sent the resting key nothing for that model"
    );
    assert_eq!(fake.hits(&keys[1], FLASH), 7);
}

#[tokio::test]
async fn a_day_out_covers_the_project_and_an_invalid_key_is_disabled_everywhere() {
    let redis = RedisServer::start();
    let keys = fake_keys(4);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH).always(Reply::quota_per_day(FLASH));
    fake.on_key(&keys[2]).always(Reply::api_key_invalid());
    let pool = format!(
        r#"keys = [{{ key = "{}", project = "p1" }}, {{ key = "{}", project = "p1" }}, "{}", "{}"]"#,
        keys[0], keys[1], keys[2], keys[3]
    );
    let r = replicas(2, || {
        with_redis(config_for(&fake.url(), &keys), &redis).set("pool", &pool)
    })
    .await;
    let (a, b) = (&r[0], &r[1]);
    // A meets key 0's per-day 429 (its project-mate key 1 is out with it) and key 2's
    // API_KEY_INVALID, whatever order its rotation takes.
    for _ in 0..4 {
        assert_eq!(chat(a).await, 200);
    }
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    assert_eq!(fake.hits_for_key(&keys[2]), 1);
    within(b, Duration::from_secs(1), |s| {
        flash_state(s, 0) == "exhausted"
            && flash_state(s, 1) == "exhausted"
            && s["keys"][2]["disabled"].is_string()
    })
    .await;
    fake.reset_counters();
    for _ in 0..8 {
        assert_eq!(chat(b).await, 200);
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        0,
        "key 0 is out for the day on B"
    );
    assert_eq!(fake.hits(&keys[1], FLASH), 0, "and so is its project");
    assert_eq!(fake.hits_for_key(&keys[2]), 0, "key 2 is disabled on B");
    assert_eq!(fake.hits(&keys[3], FLASH), 8);

    // An admin reset on B applies on A too.
    let reset = b
        .post("/admin/reset-keys")
        .send()
        .await
        .expect("reset")
        .status();
    assert_eq!(reset, 200);
    within(a, Duration::from_secs(1), |s| {
        flash_state(s, 0) == "ok" && s["keys"][2]["disabled"].is_null()
    })
    .await;
}

#[tokio::test]
async fn daily_limit_holds_across_replicas() {
    let redis = RedisServer::start();
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let pool = format!(
        r#"keys = [{{ key = "{}", daily_limit = 4 }}, "{}"]"#,
        keys[0], keys[1]
    );
    let r = replicas(3, || {
        with_redis(config_for(&fake.url(), &keys), &redis).set("pool", &pool)
    })
    .await;
    for i in 0..30 {
        assert_eq!(chat(&r[i % 3]).await, 200, "request {i}");
    }
    let logs = r
        .iter()
        .map(|p| p.logs())
        .collect::<Vec<_>>()
        .join("\n----\n");
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        4,
        "the capped key served 4 in all; logs:\n{logs}"
    );
    assert_eq!(fake.hits(&keys[1], FLASH), 26);
    for p in &r {
        within(p, Duration::from_secs(1), |s| {
            s["keys"][0]["models"][FLASH]["daily_requests"] == 4
        })
        .await;
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// A dashboard login with the admin token from client `ip`: the `name=value` cookie pair.
async fn login(proxy: &Proxy, ip: &str) -> String {
    let login = no_redirects()
        .post(format!("{}/dashboard/login", proxy.url()))
        .header("x-forwarded-for", ip)
        .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(format!("token={ADMIN}"))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status().as_u16(), 303);
    login
        .headers()
        .get(SET_COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .expect("a session cookie")
        .to_string()
}

#[tokio::test]
async fn sessions_and_lockouts_are_fleet_wide() {
    let redis = RedisServer::start();
    let keys = fake_keys(1);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let r = replicas(2, || {
        with_redis(config_for(&fake.url(), &keys), &redis)
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
            .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
            .set("access", "max_token_failures = 3")
    })
    .await;
    let (a, b) = (&r[0], &r[1]);
    let http = no_redirects();

    // A dashboard login on A...
    let cookie = login(a, "198.51.100.20").await;
    let state_on = |p: &Proxy, cookie: Option<&str>| {
        let mut req = http
            .get(format!("{}/dashboard/api/state", p.url()))
            .header("x-forwarded-for", "198.51.100.20");
        if let Some(c) = cookie {
            req = req.header(COOKIE, c);
        }
        req.send()
    };
    assert_ne!(state_on(b, None).await.expect("state").status(), 200);
    // ...works on B (within a bounded wait for the news to travel).
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let got = state_on(b, Some(&cookie)).await.expect("state").status();
        if got == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the session never worked on B: {got}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Logging out on B ends it on A.
    let out = http
        .post(format!("{}/dashboard/logout", b.url()))
        .header("x-forwarded-for", "198.51.100.20")
        .header("x-dashboard", "1")
        .header(COOKIE, &cookie)
        .send()
        .await
        .expect("logout");
    assert!(
        out.status().is_success() || out.status().is_redirection(),
        "{}",
        out.status()
    );
    let deadline = Instant::now() + Duration::from_secs(1);
    while state_on(a, Some(&cookie)).await.expect("state").status() == 200 {
        assert!(
            Instant::now() < deadline,
            "the session outlived its logout on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Three wrong tokens on A lock the address out on B as well.
    let guesser = "203.0.113.9";
    let chat_from = |p: &Proxy, token: &str| {
        http.post(format!("{}/v1/chat/completions", p.url()))
            .header("x-forwarded-for", guesser)
            .bearer_auth(token)
            .json(&json!({ "model": FLASH, "messages": [{ "role": "user", "content": "hi" }] }))
            .send()
    };
    for i in 0..3 {
        let got = chat_from(a, &format!("sk-guess-{i}")).await.expect("chat");
        assert_eq!(got.status().as_u16(), 401);
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let got = chat_from(b, TEST_TOKEN)
            .await
            .expect("chat")
            .status()
            .as_u16();
        if got == 429 {
            break;
        }
        assert_eq!(got, 200);
        assert!(Instant::now() < deadline, "B never locked the address out");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Another address is not affected.
    let other = http
        .post(format!("{}/v1/chat/completions", b.url()))
        .header("x-forwarded-for", "198.51.100.21")
        .bearer_auth(TEST_TOKEN)
        .json(&json!({ "model": FLASH, "messages": [{ "role": "user", "content": "hi" }] }))
        .send()
        .await
        .expect("chat");
    assert_eq!(other.status().as_u16(), 200);
}

#[tokio::test]
async fn a_replica_restarted_mid_day_remembers_through_redis() {
    let redis = RedisServer::start();
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH).always(Reply::quota_per_day(FLASH));
    let config = || with_redis(config_for(&fake.url(), &keys), &redis);
    let first = replica(config()).await;
    for _ in 0..3 {
        assert_eq!(chat(&first).await, 200);
    }
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    // The news is in Redis within a push period; then the replica goes away for good.
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(first);

    fake.reset_counters();
    let second = replica(config()).await;
    within(&second, Duration::from_secs(2), |s| {
        flash_state(s, 0) == "exhausted" && s["keys"][1]["models"][FLASH]["daily_requests"] == 3
    })
    .await;
    for _ in 0..3 {
        assert_eq!(chat(&second).await, 200);
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        0,
        "no call to a key out for the day"
    );
    within(&second, Duration::from_secs(1), |s| {
        s["keys"][1]["models"][FLASH]["daily_requests"] == 6
    })
    .await;
}

/// Requests through both replicas at about `rate` per second for `dur`; returns the failures
/// and the slowest answer.
async fn load(r: &[Proxy], rate: u32, dur: Duration) -> (Vec<String>, Duration) {
    let mut tasks = Vec::new();
    let gap = Duration::from_secs(1) / rate;
    let start = Instant::now();
    let mut i = 0usize;
    while start.elapsed() < dur {
        let req = r[i % r.len()]
            .post("/v1/chat/completions")
            .json(&json!({ "model": FLASH, "messages": [{ "role": "user", "content": "hi" }] }));
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let got = req.send().await.map(|r| r.status().as_u16());
            (got, t.elapsed())
        }));
        i += 1;
        tokio::time::sleep(gap).await;
    }
    let mut failures = Vec::new();
    let mut slowest = Duration::ZERO;
    for t in tasks {
        let (got, took) = t.await.expect("request task");
        slowest = slowest.max(took);
        match got {
            Ok(200) => {}
            other => failures.push(format!("{other:?}")),
        }
    }
    (failures, slowest)
}

#[tokio::test]
async fn redis_killed_or_paused_under_load_fails_no_request() {
    let mut redis = RedisServer::start();
    let keys = fake_keys(3);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let r = replicas(2, || with_redis(config_for(&fake.url(), &keys), &redis)).await;

    // Killed under load (>= 100 requests/s through both): nothing fails.
    let (during, _) = tokio::join!(load(&r, 150, Duration::from_secs(2)), async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        redis.kill();
    });
    assert!(
        during.0.is_empty(),
        "failed while Redis died: {:?}",
        during.0
    );
    for p in &r {
        within(p, Duration::from_secs(2), |s| s["state"]["ok"] == false).await;
        let metrics = p
            .get("/metrics")
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap_or_default();
        assert!(
            metrics.contains("gemini_rotator_state_store_up{store=\"redis\"} 0"),
            "{metrics}"
        );
    }
    // A rest learned during the outage...
    fake.on(&keys[0], FLASH)
        .then(Reply::quota_per_minute(FLASH, Some("40s")));
    for _ in 0..3 {
        assert_eq!(chat(&r[0]).await, 200);
    }
    assert_eq!(flash_state(&status(&r[0]).await, 0), "cooling");
    // ...reaches the other replica within 5 s of Redis coming back (empty: it lost all).
    redis.restart();
    let took = within(&r[1], Duration::from_secs(5), |s| {
        flash_state(s, 0) == "cooling" && s["state"]["ok"] == true
    })
    .await;
    eprintln!("after the restart, the rest reached B in {took:?}");
    for p in &r {
        let warns = p
            .logs()
            .lines()
            .filter(|l| l.contains("state: Redis unavailable"))
            .count();
        assert_eq!(warns, 1, "one WARN per outage:\n{}", p.logs());
    }

    // Paused (SIGSTOP) under load: nothing fails, nothing waits on Redis.
    let (paused, _) = tokio::join!(load(&r, 150, Duration::from_secs(2)), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        redis.pause();
        tokio::time::sleep(Duration::from_millis(1200)).await;
        redis.resume();
    });
    assert!(
        paused.0.is_empty(),
        "failed while Redis was paused: {:?}",
        paused.0
    );
    // The fake answers at once: an answer slower than the timeout (100 ms) plus a generous
    // margin for a loaded test machine would be a request that waited on Redis.
    assert!(
        paused.1 < Duration::from_millis(1000),
        "slowest answer while paused: {:?}",
        paused.1
    );
    for p in &r {
        within(p, Duration::from_secs(5), |s| s["state"]["ok"] == true).await;
    }
}

#[tokio::test]
async fn redis_holds_no_key_and_no_token() {
    let redis = RedisServer::start();
    let keys = fake_keys(3);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH)
        .then(Reply::quota_per_minute(FLASH, Some("30s")));
    fake.on_key(&keys[1]).always(Reply::api_key_invalid());
    let r = replicas(2, || {
        with_redis(config_for(&fake.url(), &keys), &redis)
            .set("auth", &format!(r#"admin_tokens = ["{ADMIN}"]"#))
            .set("server", r#"trusted_proxies = ["127.0.0.1/32"]"#)
    })
    .await;
    for i in 0..6 {
        assert_eq!(chat(&r[i % 2]).await, 200);
    }
    // A session and a failed login as well.
    let http = no_redirects();
    let cookie = login(&r[0], "198.51.100.30").await;
    let cookie = cookie
        .split_once('=')
        .map(|(_, id)| id.to_string())
        .expect("a session id");
    let _ = http
        .post(format!("{}/v1/chat/completions", r[1].url()))
        .header("x-forwarded-for", "198.51.100.31")
        .bearer_auth("sk-FAKE-wrong-token")
        .send()
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    let dump = redis.dump();
    assert!(
        dump.iter().any(|(k, _)| k.starts_with("gemini-rotator:")),
        "the replicas wrote nothing: {dump:?}"
    );
    assert!(dump.iter().any(|(k, _)| k.ends_with("rests")), "{dump:?}");
    for (k, v) in &dump {
        let both = format!("{k} {v}");
        for key in &keys {
            assert!(!both.contains(key.as_str()), "raw key in {k}");
            assert!(!both.contains(&mask(key)), "masked key in {k}");
            assert!(!both.contains(&key[key.len() - 8..]), "a key's tail in {k}");
        }
        for secret in [TEST_TOKEN, ADMIN, "sk-FAKE-wrong-token", cookie.as_str()] {
            assert!(!both.contains(secret), "a secret in {k}: {both}");
            assert!(
                !both.contains(&secret[..8]),
                "a secret's head in {k}: {both}"
            );
        }
        assert!(!both.contains("AIza") && !both.contains("****"), "{both}");
    }
}

#[tokio::test]
async fn a_stored_response_made_on_one_replica_is_continued_and_deleted_on_another() {
    let redis = RedisServer::start();
    let keys = fake_keys(1);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let other = "sk-FAKE-TEST-other-token-0002";
    let r = replicas(2, || {
        with_redis(config_for(&fake.url(), &keys), &redis).set(
            "auth",
            &format!(r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{other}" }}]"#),
        )
    })
    .await;
    let (a, b) = (&r[0], &r[1]);
    fake.on_any().then(Reply::text("The first answer."));
    let made: Value = a
        .post("/v1/responses")
        .json(&json!({"model": FLASH, "input": "first"}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("JSON");
    let id = made["id"].as_str().expect("an id").to_string();
    // Sent behind the request: a bounded wait for it to be in Redis.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !redis
        .dump()
        .iter()
        .any(|(k, _)| k.ends_with(&format!("r:{id}")))
    {
        assert!(
            Instant::now() < deadline,
            "the response never reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // B returns it, to its token only...
    let got = b
        .get(&format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status(), 200);
    assert_eq!(got.json::<Value>().await.unwrap_or_default(), made);
    let stranger = support::client()
        .get(format!("{}/v1/responses/{id}", b.url()))
        .bearer_auth(other)
        .send()
        .await
        .expect("get");
    assert_eq!(stranger.status(), 404);
    // ...and continues it: Gemini gets the first turn, then the new input.
    fake.on_any().then(Reply::text("The second answer."));
    let next = b
        .post("/v1/responses")
        .json(&json!({"model": FLASH, "previous_response_id": id, "input": "second"}))
        .send()
        .await
        .expect("create");
    assert_eq!(next.status(), 200);
    let sent: Value = fake
        .last_request()
        .and_then(|r| r.body)
        .expect("a JSON body");
    let texts: Vec<&str> = sent["contents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["parts"][0]["text"].as_str())
        .collect();
    assert_eq!(texts, ["first", "The first answer.", "second"], "{sent}");
    // Deleted on B: gone on A too.
    let deleted = b
        .request(reqwest::Method::DELETE, &format!("/v1/responses/{id}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let got = a
            .get(&format!("/v1/responses/{id}"))
            .send()
            .await
            .expect("get")
            .status();
        if got == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "A still has the deleted response"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_reload_switches_the_store_to_redis_and_back() {
    let redis = RedisServer::start();
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH)
        .then(Reply::quota_per_minute(FLASH, Some("30s")));
    let memory = || {
        config_for(&fake.url(), &keys)
            .set("models", r#"list = "static""#)
            .set("models", &format!(r#"static = ["{FLASH}"]"#))
    };
    let proxy = Proxy::builder().config(memory()).start().await;
    assert_eq!(status(&proxy).await["state"]["store"], "memory");
    assert_eq!(chat(&proxy).await, 200);

    // To Redis: what it learned in memory goes there (the merge at connect).
    proxy.write_file("config.toml", &with_redis(memory(), &redis).render());
    within(&proxy, Duration::from_secs(10), |s| {
        s["state"]["store"] == "redis" && s["state"]["ok"] == true
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while !redis
        .dump()
        .iter()
        .any(|(k, v)| k.ends_with("rests") && v.contains(FLASH))
    {
        assert!(Instant::now() < deadline, "the rest never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // And back: the proxy keeps serving from memory, its rest intact.
    proxy.write_file("config.toml", &memory().render());
    within(&proxy, Duration::from_secs(10), |s| {
        s["state"]["store"] == "memory"
    })
    .await;
    assert_eq!(flash_state(&status(&proxy).await, 0), "cooling");
    assert_eq!(chat(&proxy).await, 200);
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
}
