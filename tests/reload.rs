//! Live config (SPEC §3): however the config or a key/token file changes, the running binary
//! follows within a bound, rejects bad edits without losing the good config, keeps key state,
//! and never breaks a request in flight. Every wait is a bounded poll.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::*;

const FLASH: &str = "gemini-2.5-flash";
/// SPEC §3: a change is live within 2 s of the write; leave headroom for a loaded CI machine.
const APPLY: Duration = Duration::from_secs(6);

fn base(fake: &FakeGemini, keys: &[String]) -> TestConfig {
    config_for(&fake.url(), keys).set("models", r#"list = "static""#)
}

async fn status(proxy: &Proxy) -> Value {
    match proxy.get("/status").send().await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

async fn hash(proxy: &Proxy) -> String {
    status(proxy).await["config"]["hash"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Polls `/status` until `cond` holds; returns the last status seen, or panics at the bound.
async fn wait_status(proxy: &Proxy, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + APPLY;
    loop {
        let s = status(proxy).await;
        if cond(&s) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; last status: {s}\nlogs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_new_hash(proxy: &Proxy, old: &str) -> Value {
    wait_status(proxy, "a new config hash", |s| {
        s["config"]["hash"]
            .as_str()
            .is_some_and(|h| !h.is_empty() && h != old)
    })
    .await
}

async fn wait_rejected(proxy: &Proxy, needle: &str) -> Value {
    wait_status(proxy, "a rejected reload", |s| {
        s["config"]["last_reload"]["ok"] == false
            && s["config"]["last_reload"]["error"]
                .as_str()
                .is_some_and(|e| e.contains(needle))
    })
    .await
}

fn with_tokens(config: TestConfig, tokens: &[&str]) -> TestConfig {
    let list: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    config.set("auth", &format!("tokens = [{}]", list.join(", ")))
}

#[tokio::test]
async fn in_place_write_is_applied() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;
    assert_eq!(
        chat_status_as(&proxy, "sk-new-token-000000001", FLASH).await,
        401
    );

    std::fs::write(
        proxy.path("config.toml"),
        with_tokens(config, &[TEST_TOKEN, "sk-new-token-000000001"]).to_string(),
    )
    .expect("write");
    let s = wait_new_hash(&proxy, &old).await;
    assert_eq!(s["config"]["last_reload"]["ok"], true);
    assert_eq!(
        chat_status_as(&proxy, "sk-new-token-000000001", FLASH).await,
        200
    );
    assert!(
        proxy.wait_for_log("tokens +1/-0", APPLY).await,
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn a_file_truncated_then_written_in_two_chunks_is_never_applied_half_written() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;

    let text = with_tokens(config, &[TEST_TOKEN, "sk-two-chunks-00000001"]).to_string();
    let (first, second) = text.split_at(text.len() / 2);
    let mut file = std::fs::File::create(proxy.path("config.toml")).expect("truncate");
    file.write_all(first.as_bytes()).expect("first chunk");
    file.flush().expect("flush");
    tokio::time::sleep(Duration::from_millis(60)).await;
    file.write_all(second.as_bytes()).expect("second chunk");
    drop(file);

    wait_new_hash(&proxy, &old).await;
    assert_eq!(
        chat_status_as(&proxy, "sk-two-chunks-00000001", FLASH).await,
        200
    );
    assert!(
        !proxy.logs().contains("config change rejected"),
        "a half-written file was judged: {}",
        proxy.logs()
    );
}

#[tokio::test]
async fn rename_over_five_times_in_a_row_ends_on_the_last_version() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;

    // How vim and most editors save: write a temporary file, rename it over the original.
    for i in 1..=5 {
        let text = config.clone().set(
            "models.aliases",
            &format!(r#""latest" = "gemini-alias-{i}""#),
        );
        let tmp = proxy.path(&format!(".config.toml.swp{i}"));
        std::fs::write(&tmp, text.to_string()).expect("write temp");
        std::fs::rename(&tmp, proxy.path("config.toml")).expect("rename over");
    }
    wait_new_hash(&proxy, &old).await;
    // Settle on the fifth version (an early event may have applied an earlier one first).
    let deadline = Instant::now() + APPLY;
    loop {
        chat_status_as(&proxy, TEST_TOKEN, "latest").await;
        if fake.last_request().and_then(|r| r.model).as_deref() == Some("gemini-alias-5") {
            break;
        }
        assert!(Instant::now() < deadline, "never served the fifth version");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn configmap_and_secret_data_swaps_are_followed_every_time() {
    let fake = FakeGemini::start().await;
    let (k1, k2, k3) = (fake_key(1), fake_key(2), fake_key(3));
    let config_with = |tokens: &[&str]| {
        with_tokens(base(&fake, &[] as &[String]), tokens)
            .set("pool", r#"key_files = ["../secret/keys.txt"]"#)
            .to_string()
    };
    let first = config_with(&[TEST_TOKEN]);
    let keys = format!("{k1}\n");
    let proxy = Proxy::builder()
        .config_path("cm/config.toml")
        .prepare(move |dir| {
            kubelet_init(&dir.join("cm"), &[("config.toml", first)]);
            kubelet_init(&dir.join("secret"), &[("keys.txt", keys)]);
        })
        .start()
        .await;

    for (generation, (token, key)) in [
        ("sk-cm-gen-1-000000001", &k2),
        ("sk-cm-gen-2-000000001", &k3),
    ]
    .into_iter()
    .enumerate()
    {
        let generation = generation as u32 + 1;
        // The ConfigMap changes: a new token.
        let old = hash(&proxy).await;
        kubelet_update(
            &proxy.dir().join("cm"),
            &[("config.toml", config_with(&[TEST_TOKEN, token]))],
            generation,
        );
        wait_new_hash(&proxy, &old).await;
        assert_eq!(chat_status_as(&proxy, token, FLASH).await, 200);

        // The Secret changes: a different key replaces the old one.
        let old = hash(&proxy).await;
        kubelet_update(
            &proxy.dir().join("secret"),
            &[("keys.txt", format!("{key}\n"))],
            generation,
        );
        wait_new_hash(&proxy, &old).await;
        fake.reset_counters();
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
        assert_eq!(fake.hits_for_key(key), 1, "the new key serves");
    }
    assert_eq!(fake.hits_for_key(&k1), 0);
}

#[tokio::test]
async fn a_key_file_changed_on_its_own_adds_and_removes_keys() {
    let fake = FakeGemini::start().await;
    let (k1, k2) = (fake_key(1), fake_key(2));
    let proxy = Proxy::builder()
        .config(base(&fake, &[] as &[String]).set("pool", r#"key_files = ["keys.txt"]"#))
        .file("keys.txt", &format!("# team keys\n{k1}\n"))
        .start()
        .await;
    let old = hash(&proxy).await;
    proxy.write_file("keys.txt", &format!("# team keys\n{k2}\n"));
    let s = wait_new_hash(&proxy, &old).await;
    assert_eq!(s["totalKeys"], 1);
    fake.reset_counters();
    for _ in 0..4 {
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    assert_eq!((fake.hits_for_key(&k1), fake.hits_for_key(&k2)), (0, 4));
    assert!(
        proxy.wait_for_log("keys +1/-1", APPLY).await,
        "{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn a_syntax_error_is_rejected_then_the_fix_applies() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;

    proxy.write_file("config.toml", &format!("{config}\n[server\nlisten = 1\n"));
    let s = wait_rejected(&proxy, "config.toml:").await;
    assert_eq!(
        s["config"]["hash"],
        old.as_str(),
        "the running config stays"
    );
    assert_eq!(
        chat_status_as(&proxy, TEST_TOKEN, FLASH).await,
        200,
        "still serving"
    );
    // Logged once, however often the watcher looks again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        proxy.logs().matches("config change rejected").count(),
        1,
        "{}",
        proxy.logs()
    );

    proxy.write_file(
        "config.toml",
        &with_tokens(config, &[TEST_TOKEN, "sk-after-fix-000000001"]).to_string(),
    );
    let s = wait_new_hash(&proxy, &old).await;
    assert_eq!(s["config"]["last_reload"]["ok"], true);
    assert_eq!(
        chat_status_as(&proxy, "sk-after-fix-000000001", FLASH).await,
        200
    );
}

#[tokio::test]
async fn semantic_errors_are_rejected_with_their_position_then_the_fix_applies() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;

    proxy.write_file(
        "config.toml",
        &config
            .clone()
            .set("access", r#"allow = ["10.0.0.0/33"]"#)
            .to_string(),
    );
    let s = wait_rejected(&proxy, "access.allow[0]").await;
    let error = s["config"]["last_reload"]["error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("config.toml:") && error.contains("/33"),
        "{error}"
    );
    assert_eq!(
        chat_status_as(&proxy, TEST_TOKEN, FLASH).await,
        200,
        "old rules still apply"
    );

    proxy.write_file(
        "config.toml",
        &config.clone().set("pool", "keys = []").to_string(),
    );
    wait_rejected(&proxy, "pool").await;
    assert_eq!(hash(&proxy).await, old);
    assert_eq!(
        chat_status_as(&proxy, TEST_TOKEN, FLASH).await,
        200,
        "the key pool is not emptied"
    );

    proxy.write_file(
        "config.toml",
        &config
            .set("models.aliases", r#""fixed" = "gemini-2.5-pro""#)
            .to_string(),
    );
    wait_new_hash(&proxy, &old).await;
    assert_eq!(chat_status_as(&proxy, TEST_TOKEN, "fixed").await, 200);
}

#[tokio::test]
async fn a_folder_that_disappears_keeps_the_config_and_is_picked_up_when_it_returns() {
    let fake = FakeGemini::start().await;
    let (k1, k2) = (fake_key(1), fake_key(2));
    let proxy = Proxy::builder()
        .config(base(&fake, &[] as &[String]).set("pool", r#"key_files = ["secret/keys.txt"]"#))
        .file("secret/keys.txt", &format!("{k1}\n"))
        .start()
        .await;
    let old = hash(&proxy).await;

    std::fs::remove_dir_all(proxy.path("secret")).expect("remove folder");
    wait_rejected(&proxy, "keys.txt").await;
    assert_eq!(
        chat_status_as(&proxy, TEST_TOKEN, FLASH).await,
        200,
        "last good config serves"
    );

    std::fs::create_dir(proxy.path("secret")).expect("restore folder");
    std::fs::write(proxy.path("secret/keys.txt"), format!("{k2}\n")).expect("restore keys");
    wait_new_hash(&proxy, &old).await;
    fake.reset_counters();
    assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    assert_eq!(fake.hits_for_key(&k2), 1);
}

#[tokio::test]
async fn sighup_and_admin_reload_rebuild_even_without_a_change() {
    let fake = FakeGemini::start().await;
    let (k1, k2) = (fake_key(1), fake_key(2));
    fake.on_key(&k1).then(Reply::api_key_invalid());
    let proxy = Proxy::builder()
        .config(base(&fake, &[k1.clone(), k2.clone()]).set("server", r#"reload_poll = "0s""#))
        .start()
        .await;
    // Disable k1 (Google calls it invalid once).
    for _ in 0..2 {
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    let disabled = |s: &Value| s["keys"][0]["isAvailable"] == false;
    wait_status(&proxy, "k1 disabled", disabled).await;

    // SPEC §6: disabled "until reload": SIGHUP reloads and gives the key another chance.
    proxy.signal(Signal::Hup);
    wait_status(&proxy, "k1 back after SIGHUP", |s| {
        s["keys"][0]["isAvailable"] == true
    })
    .await;
    assert!(proxy.wait_for_log("SIGHUP", APPLY).await);

    // Disable it again, then reload through the admin endpoint.
    fake.on_key(&k1).then(Reply::api_key_invalid());
    let deadline = Instant::now() + APPLY;
    while !disabled(&status(&proxy).await) {
        assert!(Instant::now() < deadline, "k1 never disabled again");
        chat_status_as(&proxy, TEST_TOKEN, FLASH).await;
    }
    let reply = proxy.post("/admin/reload").send().await.expect("reload");
    assert_eq!(reply.status().as_u16(), 200);
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    assert_eq!(body["ok"], true, "{body}");
    assert_eq!(status(&proxy).await["keys"][0]["isAvailable"], true);
}

#[tokio::test]
async fn admin_reload_answers_with_the_validation_error() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;
    proxy.write_file(
        "config.toml",
        &config.clone().set("pool", "max_attempts = 0").to_string(),
    );
    for path in ["/admin/reload", "/admin/reload-keys"] {
        let reply = proxy.post(path).send().await.expect("reload");
        assert_eq!(reply.status().as_u16(), 422, "{path}");
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert_eq!(body["ok"], false);
        let error = body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("config.toml:") && error.contains("pool.max_attempts"),
            "{error}"
        );
    }
    assert_eq!(hash(&proxy).await, old);
    proxy.write_file(
        "config.toml",
        &config.set("pool", "max_attempts = 2").to_string(),
    );
    let reply = proxy.post("/admin/reload").send().await.expect("reload");
    let body: Value = reply.json().await.unwrap_or(Value::Null);
    assert_eq!(body["ok"], true, "{body}");
}

#[tokio::test]
async fn a_revoked_token_is_refused_on_a_kept_alive_connection() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let doomed = "sk-doomed-token-000001";
    let proxy = Proxy::builder()
        .config(with_tokens(config.clone(), &[TEST_TOKEN, doomed]))
        .start()
        .await;
    // One client, one pool: HTTP/1.1 keep-alive reuses the connection.
    let c = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .build()
        .expect("client");
    let send = || {
        c.post(format!("{}/v1/chat/completions", proxy.url()))
            .bearer_auth(doomed)
            .json(&json!({"model": FLASH, "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    assert_eq!(send().await.map(|r| r.status().as_u16()).unwrap_or(0), 200);
    let old = hash(&proxy).await;
    proxy.write_file("config.toml", &config.to_string());
    wait_new_hash(&proxy, &old).await;
    assert_eq!(send().await.map(|r| r.status().as_u16()).unwrap_or(0), 401);
}

#[tokio::test]
async fn key_state_survives_reloads_and_new_keys_join_at_once() {
    let fake = FakeGemini::start().await;
    let (k1, k2, k3) = (fake_key(1), fake_key(2), fake_key(3));
    fake.on_key(&k1)
        .always(Reply::quota_per_minute(FLASH, Some("300s")));
    let config = |keys: &[String]| base(&fake, keys);
    let proxy = Proxy::builder()
        .config(config(&[k1.clone(), k2.clone()]))
        .start()
        .await;
    let deadline = Instant::now() + APPLY;
    while fake.hits_for_key(&k1) == 0 {
        assert!(Instant::now() < deadline);
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    let old = hash(&proxy).await;
    proxy.write_file(
        "config.toml",
        &config(&[k1.clone(), k3.clone()]).to_string(),
    );
    wait_new_hash(&proxy, &old).await;

    fake.reset_counters();
    for _ in 0..6 {
        assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
    }
    assert_eq!(fake.hits_for_key(&k1), 0, "still resting after the reload");
    assert_eq!(fake.hits_for_key(&k2), 0, "removed keys get no work");
    assert_eq!(fake.hits_for_key(&k3), 6, "added keys are used at once");
}

/// A proxy logging at debug (each check says so) with its config in a folder of its own: the
/// watch covers the config's folder and that folder's parent, which must not be the system
/// temp folder other tests write to.
async fn watched_at_debug(fake: &FakeGemini) -> (TestConfig, Proxy) {
    let config = base(fake, &[fake_key(1)]).set("logging", r#"level = "debug""#);
    let proxy = Proxy::builder()
        .file("conf/config.toml", &config.to_string())
        .config_path("conf/config.toml")
        .start()
        .await;
    (config, proxy)
}

#[tokio::test]
async fn checking_the_files_is_not_itself_a_change() {
    // The check reads the config and key files, which the folder watch sees as open/read
    // events: those must not start the next check (an endless loop of re-reads when idle).
    let fake = FakeGemini::start().await;
    let (config, proxy) = watched_at_debug(&fake).await;
    const CHECKED: &str = "config files checked: unchanged";
    // Same content, written again: one event burst, one check.
    proxy.write_file("conf/config.toml", &config.to_string());
    assert!(
        proxy.wait_for_log(CHECKED, APPLY).await,
        "the rewrite was never checked:\n{}",
        proxy.logs()
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let checks = proxy.logs().matches(CHECKED).count();
    assert!(
        checks <= 2,
        "{checks} checks after one rewrite: reading the files triggers more checks\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn writes_to_other_files_in_the_folder_are_not_checks() {
    // `gemini-rotator > proxy.log 2>&1` beside the config, at debug: were each write to
    // proxy.log a hint, each check's log line would start the next, forever. The same for the
    // state file, other programs' files, anything but the files the config is made of.
    let fake = FakeGemini::start().await;
    let (config, proxy) = watched_at_debug(&fake).await;
    const CHECKED: &str = "config files checked: unchanged trigger=Event";
    let mut log = String::new();
    for i in 0..30 {
        log.push_str(&format!("line {i}\n"));
        proxy.write_file("conf/proxy.log", &log);
        proxy.write_file("conf/notes.txt", &format!("{i}"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let checks = proxy.logs().matches(CHECKED).count();
    assert_eq!(
        checks,
        0,
        "writes to other files were checked\n{}",
        proxy.logs()
    );
    // The watch itself works: rewriting the config is checked.
    proxy.write_file("conf/config.toml", &config.to_string());
    assert!(
        proxy.wait_for_log(CHECKED, APPLY).await,
        "the config's rewrite was never checked:\n{}",
        proxy.logs()
    );
}

#[tokio::test]
async fn a_changed_listen_address_needs_a_restart_and_says_so() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]);
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;
    proxy.write_file(
        "config.toml",
        &config
            .set("server", r#"listen = "127.0.0.1:1""#)
            .to_string(),
    );
    let s = wait_new_hash(&proxy, &old).await;
    let note = s["config"]["restart_required"].as_str().unwrap_or_default();
    assert!(note.contains("server.listen"), "{s}");
    assert_eq!(
        chat_status_as(&proxy, TEST_TOKEN, FLASH).await,
        200,
        "still on the old address"
    );
}

#[tokio::test]
async fn a_changed_worker_count_needs_a_restart_and_says_so() {
    let fake = FakeGemini::start().await;
    let config = base(&fake, &[fake_key(1)]).set("server", "workers = 2");
    let proxy = Proxy::builder().config(&config).start().await;
    let old = hash(&proxy).await;
    proxy.write_file(
        "config.toml",
        &config.set("server", "workers = 3").to_string(),
    );
    let s = wait_new_hash(&proxy, &old).await;
    let note = s["config"]["restart_required"].as_str().unwrap_or_default();
    assert!(note.contains("server.workers changed from 2 to 3"), "{s}");
    assert_eq!(s["config"]["workers"], 2, "still two threads: {s}");
    assert_eq!(chat_status_as(&proxy, TEST_TOKEN, FLASH).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_reloads_under_twenty_streaming_clients_break_nothing() {
    let fake = FakeGemini::start().await;
    fake.on_any().always(
        Reply::text("one two three four five")
            .chunks(5)
            .event_delay(Duration::from_millis(15)),
    );
    let config = base(&fake, &fake_keys(3));
    let proxy = Arc::new(Proxy::builder().config(&config).start().await);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));

    let mut clients = Vec::new();
    for _ in 0..20 {
        let (proxy, done, ok, failed) = (proxy.clone(), done.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let c = client();
            // Bounded: stops when the reloads are done, or after 400 streams at most.
            for _ in 0..400 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                let body = json!({"model": FLASH, "stream": true,
                                  "messages": [{"role": "user", "content": "go"}]});
                let result = c
                    .post(format!("{}/v1/chat/completions", proxy.url()))
                    .bearer_auth(TEST_TOKEN)
                    .json(&body)
                    .send()
                    .await;
                let complete = match result {
                    Ok(r) if r.status().as_u16() == 200 => {
                        let text = r.text().await.unwrap_or_default();
                        text.contains("data: [DONE]") && !text.contains("\"error\"")
                    }
                    _ => false,
                };
                let counter = if complete { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }

    let mut applied = 0;
    for i in 0..50 {
        let text = config.clone().set(
            "models.aliases",
            &format!(r#""round" = "gemini-round-{i}""#),
        );
        proxy.write_file("config.toml", &text.to_string());
        let reply = proxy.post("/admin/reload").send().await.expect("reload");
        let body: Value = reply.json().await.unwrap_or(Value::Null);
        assert_eq!(body["ok"], true, "reload {i}: {body}");
        if body["applied"] == true {
            applied += 1;
        }
    }
    done.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client task");
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    assert_eq!(applied, 50, "an admin reload always rebuilds");
    assert!(
        proxy.logs().matches("config reloaded").count() >= 50,
        "every version was applied (by the watcher or the admin call)"
    );
    assert_eq!(failed, 0, "{ok} streams ok, {failed} failed");
    assert!(ok >= 20, "every client completed streams ({ok})");
}
