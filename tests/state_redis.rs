//! `[state] store = "redis"` against the real binary and a real Redis server (issue #16): two
//! or three replicas on one Redis and one fake Gemini share what they learn (rests, day-outs
//! with their project, disabled keys, `daily_limit` counts, dashboard sessions, lockouts,
//! admin resets, resource pins: a file uploaded through one replica is used, listed and
//! deleted through another, an upload session takes its chunks through any), a replica
//! restarted mid-day remembers, Redis killed or paused under load fails no request (nor a
//! pinned native call), and nothing in Redis is a key, a token or an upload session's id.
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

async fn replica(config: impl ToString) -> Proxy {
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
        let metrics = p.metrics().await;
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
    // A file and an upload session in progress (its id is a capability).
    let file = upload(&r[0], b"a file").await;
    let file_name = file["name"].as_str().expect("a file").to_string();
    let url = start_upload(&r[1], 10).await;
    let (status, _) = chunk(&url, 0, b"12345", false).await;
    assert_eq!(status, 200);
    let session = url.rsplit('/').next().expect("a session id").to_string();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let dump = redis.dump();
    assert!(
        dump.iter().any(|(k, _)| k.starts_with("gemini-rotator:")),
        "the replicas wrote nothing: {dump:?}"
    );
    assert!(dump.iter().any(|(k, _)| k.ends_with("rests")), "{dump:?}");
    assert!(
        dump.iter()
            .any(|(k, _)| k.ends_with(&format!("a:{file_name}"))),
        "{dump:?}"
    );
    assert!(
        dump.iter()
            .any(|(k, v)| k.contains(":ao:") && v.contains(&file_name)),
        "{dump:?}"
    );
    assert!(
        dump.iter().any(|(k, _)| k.contains(":a:uploads/")),
        "{dump:?}"
    );
    for (k, v) in &dump {
        let both = format!("{k} {v}");
        for key in &keys {
            assert!(!both.contains(key.as_str()), "raw key in {k}");
            assert!(!both.contains(&mask(key)), "masked key in {k}");
            assert!(!both.contains(&key[key.len() - 8..]), "a key's tail in {k}");
        }
        for secret in [
            TEST_TOKEN,
            ADMIN,
            "sk-FAKE-wrong-token",
            cookie.as_str(),
            session.as_str(),
        ] {
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

// ---- resource pins (issue #18): files, upload sessions, lists and deletes fleet-wide -------

const OTHER_TOKEN: &str = "sk-FAKE-TEST-other-token-0002";

fn two_tokens(c: TestConfig) -> TestConfig {
    c.set(
        "auth",
        &format!(r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#),
    )
}

/// Starts a resumable upload of `size` bytes through `proxy`: the upload URL it hands out.
async fn start_upload(proxy: &Proxy, size: usize) -> String {
    let started = support::client()
        .post(format!("{}/upload/v1beta/files", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .header("content-type", "application/json")
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", size.to_string())
        .header("x-goog-upload-header-content-type", "text/plain")
        .json(&json!({"file": {"displayName": "notes.txt"}}))
        .send()
        .await
        .expect("start upload");
    assert_eq!(started.status(), 200, "{}", proxy.logs());
    let url = started
        .headers()
        .get("x-goog-upload-url")
        .and_then(|v| v.to_str().ok())
        .expect("an upload URL")
        .to_string();
    assert!(url.starts_with(&proxy.url()), "{url}");
    url
}

/// Sends `data` at `offset` to an upload URL, as google-genai does (no credential); the
/// status and, when `last`, the `File` made.
async fn chunk(url: &str, offset: usize, data: &[u8], last: bool) -> (u16, Value) {
    let answer = support::client()
        .post(url)
        .header(
            "x-goog-upload-command",
            if last { "upload, finalize" } else { "upload" },
        )
        .header("x-goog-upload-offset", offset.to_string())
        .body(data.to_vec())
        .send()
        .await
        .expect("chunk");
    let status = answer.status().as_u16();
    let body: Value = if last {
        answer.json().await.unwrap_or(Value::Null)
    } else {
        Value::Null
    };
    (status, body["file"].clone())
}

/// A whole upload through `proxy` in one chunk: the `File`.
async fn upload(proxy: &Proxy, data: &[u8]) -> Value {
    let url = start_upload(proxy, data.len()).await;
    let (status, file) = chunk(&url, 0, data, true).await;
    assert_eq!(status, 200, "{}", proxy.logs());
    file
}

/// generateContent through `proxy` as `token` on `file`: the status.
async fn generate_on(proxy: &Proxy, token: &str, file: &Value) -> u16 {
    support::client()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            proxy.url()
        ))
        .header("x-goog-api-key", token)
        .json(&json!({"contents": [{"role": "user", "parts": [
            {"fileData": {"fileUri": file["uri"], "mimeType": "text/plain"}},
            {"text": "Summarise."}
        ]}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// `files.list` through `proxy` as `token`: the names.
async fn list_files(proxy: &Proxy, token: &str) -> Vec<String> {
    let got: Value = support::client()
        .get(format!("{}/v1beta/files", proxy.url()))
        .header("x-goog-api-key", token)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    got["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_string))
        .collect()
}

/// Waits (bounded) until some Redis key ends with `suffix`.
fn wait_in_redis(redis: &RedisServer, suffix: &str) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !redis.dump().iter().any(|(k, _)| k.ends_with(suffix)) {
        assert!(Instant::now() < deadline, "{suffix} never reached Redis");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test]
async fn a_file_uploaded_through_one_replica_is_used_listed_and_deleted_through_another() {
    let redis = RedisServer::start();
    let keys = fake_keys(3);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let r = replicas(2, || {
        two_tokens(with_redis(config_for(&fake.url(), &keys), &redis))
    })
    .await;
    let (a, b) = (&r[0], &r[1]);

    // Uploaded through A, used through B: every call on the creating key, no 403.
    let file = upload(a, b"the first file").await;
    let name = file["name"].as_str().expect("a file name").to_string();
    let creator = fake.owner_of(&name).expect("the fake has it");
    wait_in_redis(&redis, &format!("a:{name}"));
    fake.reset_counters();
    for _ in 0..6 {
        assert_eq!(generate_on(b, TEST_TOKEN, &file).await, 200, "{}", b.logs());
    }
    let used: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|q| q.key.clone())
        .collect();
    assert_eq!(used.len(), 6);
    assert!(used.iter().all(|k| *k == creator), "{used:?} vs {creator}");
    assert_eq!(fake.permission_denied(), 0);

    // Listed through B for its owner only; another token reaches nothing.
    assert_eq!(list_files(b, TEST_TOKEN).await, vec![name.clone()]);
    assert!(list_files(b, OTHER_TOKEN).await.is_empty());
    assert_eq!(generate_on(b, OTHER_TOKEN, &file).await, 404);

    // An upload session started on A takes its chunks through B (any replica), and the file
    // it makes is used through A.
    let data = b"0123456789abcdef".repeat(1024);
    let url = start_upload(a, data.len()).await;
    let (status, _) = chunk(&url, 0, &data[..8192], false).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(2);
    while !redis.dump().iter().any(|(k, _)| k.contains(":a:uploads/")) {
        assert!(Instant::now() < deadline, "the session never reached Redis");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let via_b = url.replace(&a.url(), &b.url());
    let (status, second) = chunk(&via_b, 8192, &data[8192..], true).await;
    assert_eq!(status, 200, "{}", b.logs());
    let second_name = second["name"].as_str().expect("a file").to_string();
    let session_key = fake.owner_of(&second_name).expect("the fake has it");
    assert_eq!(
        fake.upload_digest(&second_name).map(|(n, _)| n),
        Some(data.len() as u64),
        "both chunks arrived"
    );
    // Finished: the session is gone from Redis too.
    let deadline = Instant::now() + Duration::from_secs(2);
    while redis.dump().iter().any(|(k, _)| k.contains(":a:uploads/")) {
        assert!(
            Instant::now() < deadline,
            "the finished session stays in Redis"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    wait_in_redis(&redis, &format!("a:{second_name}"));
    fake.reset_counters();
    assert_eq!(
        generate_on(a, TEST_TOKEN, &second).await,
        200,
        "{}",
        a.logs()
    );
    assert_eq!(
        fake.requests()[0].key.as_deref(),
        Some(session_key.as_str())
    );
    let mut both = vec![name.clone(), second_name.clone()];
    both.sort();
    assert_eq!(list_files(a, TEST_TOKEN).await, both);

    // Deleted through B: a 404 on A (which made it and had it in memory) at once after.
    let deleted = support::client()
        .delete(format!("{}/v1beta/{name}", b.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status(), 200, "{}", b.logs());
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let got = support::client()
            .get(format!("{}/v1beta/{name}", a.url()))
            .header("x-goog-api-key", TEST_TOKEN)
            .send()
            .await
            .expect("get")
            .status();
        if got == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "A still serves the deleted file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(generate_on(a, TEST_TOKEN, &file).await, 404);
    assert_eq!(list_files(a, TEST_TOKEN).await, vec![second_name]);
    assert!(!redis
        .dump()
        .iter()
        .any(|(k, _)| k.ends_with(&format!("a:{name}"))));
}

#[tokio::test]
async fn pins_outlive_a_restart_through_redis_and_an_outage_falls_back_to_memory() {
    let mut redis = RedisServer::start();
    let keys = fake_keys(3);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let rendered = with_redis(config_for(&fake.url(), &keys), &redis).render();
    let config = || rendered.clone();
    let first = replica(config()).await;
    let file = upload(&first, b"kept across a restart").await;
    let name = file["name"].as_str().expect("a file name").to_string();
    let creator = fake.owner_of(&name).expect("the fake has it");
    wait_in_redis(&redis, &format!("a:{name}"));
    drop(first);

    // A new process knows the file from Redis.
    let again = replica(config()).await;
    fake.reset_counters();
    for _ in 0..4 {
        assert_eq!(
            generate_on(&again, TEST_TOKEN, &file).await,
            200,
            "{}",
            again.logs()
        );
    }
    assert!(fake
        .requests()
        .iter()
        .all(|q| q.key.as_deref() == Some(creator.as_str())));
    assert_eq!(fake.permission_denied(), 0);

    // Redis gone: what this replica knows and makes still works from its own table.
    redis.kill();
    within(&again, Duration::from_secs(3), |s| {
        s["state"]["ok"] == false
    })
    .await;
    let fresh = upload(&again, b"made while Redis is down").await;
    let fresh_name = fresh["name"].as_str().expect("a file").to_string();
    let fresh_creator = fake.owner_of(&fresh_name).expect("the fake has it");
    fake.reset_counters();
    assert_eq!(generate_on(&again, TEST_TOKEN, &fresh).await, 200);
    assert_eq!(generate_on(&again, TEST_TOKEN, &file).await, 200);
    let used: Vec<Option<String>> = fake.requests().iter().map(|q| q.key.clone()).collect();
    assert_eq!(used, vec![Some(fresh_creator), Some(creator)]);
    assert_eq!(list_files(&again, TEST_TOKEN).await.len(), 2);
    // An unknown name is still a 404, answered without waiting on Redis.
    let unknown = json!({"uri": "files/never-made"});
    assert_eq!(generate_on(&again, TEST_TOKEN, &unknown).await, 404);

    // Back, empty: what was made meanwhile and what this replica knew reach it again (the
    // connect sends every pin), and another replica finds both there.
    redis.restart();
    within(&again, Duration::from_secs(5), |s| s["state"]["ok"] == true).await;
    wait_in_redis(&redis, &format!("a:{fresh_name}"));
    wait_in_redis(&redis, &format!("a:{name}"));
    let other = replica(config()).await;
    assert_eq!(generate_on(&other, TEST_TOKEN, &file).await, 200);
    assert_eq!(generate_on(&other, TEST_TOKEN, &fresh).await, 200);
    assert_eq!(list_files(&other, TEST_TOKEN).await.len(), 2);
}

/// Calls of `command` Redis has served (`INFO commandstats`).
fn redis_calls(redis: &RedisServer, command: &str) -> u64 {
    let mut c = redis.connection().expect("connect to redis");
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(&mut c)
        .expect("INFO");
    let needle = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&needle))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn made_up_names_do_not_turn_into_redis_load() {
    use futures_util::StreamExt;
    let redis = RedisServer::start();
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let proxy = replica(with_redis(config_for(&fake.url(), &keys), &redis)).await;
    let before = redis_calls(&redis, "get");
    let start = Instant::now();
    let asks: u64 = 1200;
    let statuses: Vec<u16> = futures_util::stream::iter(0..asks)
        .map(|i| {
            let file = json!({"uri": format!("files/made-up-{i}")});
            let proxy = &proxy;
            async move { generate_on(proxy, TEST_TOKEN, &file).await }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let took = start.elapsed();
    assert!(statuses.iter().all(|s| *s == 404), "{statuses:?}");
    assert_eq!(
        fake.requests().len(),
        0,
        "no upstream call for an unknown name"
    );
    let gets = redis_calls(&redis, "get") - before;
    // At most 100 lookups a second (a partial second at each end).
    let bound = 100 * (took.as_secs() + 2);
    eprintln!("{asks} made-up names in {took:?}: {gets} Redis lookups (bound {bound})");
    assert!(bound < asks, "too slow to tell: {took:?}");
    assert!(gets <= bound, "{gets} lookups in {took:?}");
    assert!(gets > 0, "misses are looked up in Redis");
}
