//! `[state] store = "file"` against the real binary (issue #16): a replica restarted mid-day
//! remembers what its pool learned (a key out for the day gets no call, daily counters go on, a
//! per-minute rest runs to its end and no further), SIGTERM writes the last snapshot (mode
//! 0600), a corrupt file is a WARN and a fresh start, the file holds no key or token, a reload
//! switches the store on and off, and the file's writes do not wake the config watcher.
//!
//! A restart is a second process started with the first one's state file copied into its
//! config folder. Waits are bounded polls.

mod support;

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{fake_keys, mask, FakeGemini, Proxy, Reply, Signal, TEST_TOKEN};

const FLASH: &str = "gemini-2.5-flash";
const STATE: &str = "gemini-rotator.state";

fn with_file_store(c: support::TestConfig) -> support::TestConfig {
    c.set("state", r#"store = "file""#)
}

/// The proxy with `store = "file"`, its config folder holding `state` (a file left by an
/// earlier run) when given.
async fn start_with_state(fake: &FakeGemini, keys: &[String], state: Option<&str>) -> Proxy {
    let mut b = Proxy::builder().config(with_file_store(
        support::config_for(&fake.url(), keys).set("models", r#"list = "static""#),
    ));
    if let Some(s) = state {
        b = b.file(STATE, s);
    }
    b.start().await
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

async fn flash_status(proxy: &Proxy, index: usize) -> Value {
    let body: Value = proxy
        .get("/status")
        .send()
        .await
        .expect("/status")
        .json()
        .await
        .expect("/status JSON");
    body["keys"][index]["models"][FLASH].clone()
}

/// SIGTERM, a clean exit, and the state file it left.
async fn stop(mut proxy: Proxy) -> String {
    proxy.signal(Signal::Term);
    let status = proxy
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}; logs:\n{}", proxy.logs());
    assert!(
        proxy.logs().contains("state: final snapshot written"),
        "{}",
        proxy.logs()
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(proxy.path(STATE))
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0);
        assert_eq!(mode, 0o600, "the state file's mode");
    }
    std::fs::read_to_string(proxy.path(STATE)).expect("the state file")
}

/// No key or client token in the file, raw or masked, nor a piece of one.
fn assert_no_secret(state: &str, keys: &[String]) {
    for k in keys {
        assert!(!state.contains(k.as_str()), "raw key in\n{state}");
        assert!(!state.contains(&mask(k)), "masked key in\n{state}");
        assert!(
            !state.contains(&k[k.len() - 8..]),
            "a key's tail in\n{state}"
        );
    }
    assert!(
        !state.contains("AIza") && !state.contains("****"),
        "{state}"
    );
    assert!(!state.contains(TEST_TOKEN), "raw token in\n{state}");
    // A masked token is `sk-t…#abcdef`.
    assert!(
        !state.contains("sk-t") && !state.contains('…'),
        "masked token in\n{state}"
    );
}

#[tokio::test]
async fn a_restart_mid_day_remembers_day_outs_and_daily_counts() {
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH).always(Reply::quota_per_day(FLASH));

    let first = start_with_state(&fake, &keys, None).await;
    assert!(
        first.logs().contains("state: no state file yet"),
        "{}",
        first.logs()
    );
    for _ in 0..3 {
        assert_eq!(chat(&first).await, 200);
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        1,
        "key 0 answered its per-day 429 once"
    );
    assert_eq!(flash_status(&first, 0).await["state"], "exhausted");
    assert_eq!(flash_status(&first, 1).await["daily_requests"], 3);
    let state = stop(first).await;
    assert_no_secret(&state, &keys);

    fake.reset_counters();
    let second = start_with_state(&fake, &keys, Some(&state)).await;
    assert!(second.logs().contains("state: loaded"), "{}", second.logs());
    assert_eq!(flash_status(&second, 0).await["state"], "exhausted");
    assert_eq!(flash_status(&second, 1).await["daily_requests"], 3);
    for _ in 0..3 {
        assert_eq!(chat(&second).await, 200);
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        0,
        "no call to a key out for the day"
    );
    assert_eq!(fake.hits(&keys[1], FLASH), 3);
    assert_eq!(flash_status(&second, 1).await["daily_requests"], 6);
    assert_eq!(flash_status(&second, 0).await["daily_requests"], 1);
}

#[tokio::test]
async fn a_per_minute_rest_survives_a_restart_and_ends_on_time() {
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH)
        .then(Reply::quota_per_minute(FLASH, Some("30s")));

    let first = start_with_state(&fake, &keys, None).await;
    let rested = Instant::now();
    assert_eq!(chat(&first).await, 200);
    assert_eq!(fake.hits(&keys[0], FLASH), 1);
    assert_eq!(flash_status(&first, 0).await["state"], "cooling");
    let state = stop(first).await;

    fake.reset_counters();
    let second = start_with_state(&fake, &keys, Some(&state)).await;
    let key0 = flash_status(&second, 0).await;
    assert_eq!(key0["state"], "cooling", "{key0}");
    for _ in 0..4 {
        assert_eq!(chat(&second).await, 200);
    }
    assert_eq!(
        fake.hits(&keys[0], FLASH),
        0,
        "key 0 rests across the restart"
    );
    // The rest ends when Google said, not a fresh 30 s after the restart.
    let deadline = rested + Duration::from_secs(60);
    while flash_status(&second, 0).await["state"] != "ok" {
        assert!(Instant::now() < deadline, "the rest never ended");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ended = rested.elapsed();
    assert!(ended >= Duration::from_secs(29), "ended early: {ended:?}");
    assert!(ended < Duration::from_secs(45), "ended late: {ended:?}");
    for _ in 0..2 {
        assert_eq!(chat(&second).await, 200);
    }
    assert!(fake.hits(&keys[0], FLASH) >= 1, "key 0 serves again");
}

#[tokio::test]
async fn a_corrupt_state_file_is_a_warning_and_a_fresh_start() {
    let keys = fake_keys(1);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let proxy = start_with_state(&fake, &keys, Some("{\"version\": 1, \"keys\": [tru")).await;
    let logs = proxy.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("corrupt state file"))
        .unwrap_or_else(|| panic!("no warning:\n{logs}"));
    assert!(line.contains("WARN"), "{line}");
    assert_eq!(chat(&proxy).await, 200);
    assert_eq!(flash_status(&proxy, 0).await["daily_requests"], 1);
    // Replaced by a sound file.
    let state = stop(proxy).await;
    let v: Value = serde_json::from_str(&state).expect("a JSON state file");
    assert_eq!(v["version"], 1);
    assert_eq!(v["keys"][0]["models"][0]["requests"], 1, "{v}");
}

#[tokio::test]
async fn sigterm_writes_the_last_snapshot_with_mode_0600_and_no_secret() {
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let proxy = start_with_state(&fake, &keys, None).await;
    for _ in 0..5 {
        assert_eq!(chat(&proxy).await, 200);
    }
    // At once: the file SIGTERM leaves holds all five requests.
    let state = stop(proxy).await;
    let v: Value = serde_json::from_str(&state).expect("a JSON state file");
    let requests: u64 = v["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .flat_map(|k| k["models"].as_array().cloned().unwrap_or_default())
        .map(|m| m["requests"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(requests, 5, "{v}");
    assert_eq!(v["tokens"][0]["requests"], 5, "the client token's day: {v}");
    assert_no_secret(&state, &keys);
}

/// Reads the state file until `ok` holds for it (bounded).
async fn wait_for_state(proxy: &Proxy, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for_file(proxy, STATE, ok).await
}

/// Reads `name` in the proxy's folder until it is JSON for which `ok` holds (bounded).
async fn wait_for_file(proxy: &Proxy, name: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(text) = std::fs::read_to_string(proxy.path(name)) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                if ok(&v) {
                    return v;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "the state file never showed it; logs:\n{}",
            proxy.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn day_out(v: &Value) -> bool {
    v["keys"]
        .as_array()
        .is_some_and(|ks| ks.iter().any(|k| k["models"][0]["day_out"] == true))
}

#[tokio::test]
async fn a_reload_switches_the_store_on_and_off_and_snapshots_run_without_a_shutdown() {
    let keys = fake_keys(2);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    fake.on(&keys[0], FLASH).always(Reply::quota_per_day(FLASH));
    let memory = support::config_for(&fake.url(), &keys).set("models", r#"list = "static""#);
    let proxy = Proxy::builder().config(memory.clone()).start().await;
    assert_eq!(chat(&proxy).await, 200);
    assert!(!proxy.path(STATE).exists());

    // Memory -> file: the store is built and swapped in, and the periodic snapshot (no
    // shutdown involved) writes what the pool had learned before.
    proxy.write_file("config.toml", &with_file_store(memory.clone()).to_string());
    assert!(
        proxy
            .wait_for_log("state store changed", Duration::from_secs(10))
            .await,
        "{}",
        proxy.logs()
    );
    let v = wait_for_state(&proxy, day_out).await;
    assert_no_secret(&v.to_string(), &keys);
    assert_eq!(chat(&proxy).await, 200, "serves throughout");

    // File -> memory: the file store writes its last snapshot, then nothing more is written.
    assert_eq!(chat(&proxy).await, 200);
    proxy.write_file("config.toml", &memory.to_string());
    assert!(
        proxy
            .wait_for_log_count("state store changed", 2, Duration::from_secs(10))
            .await,
        "{}",
        proxy.logs()
    );
    assert!(proxy.logs().contains("state: kept in memory only"));
    let last = wait_for_state(&proxy, |v| v["tokens"][0]["requests"] == 3).await;
    assert!(day_out(&last));
    assert_eq!(chat(&proxy).await, 200);
    tokio::time::sleep(gemini_rotator::store::SAVE_EVERY * 2).await;
    let after: Value =
        serde_json::from_str(&std::fs::read_to_string(proxy.path(STATE)).expect("file"))
            .expect("JSON");
    assert_eq!(
        after["tokens"][0]["requests"], 3,
        "written after the switch: {after}"
    );
}

#[tokio::test]
async fn writing_the_state_file_in_the_config_folder_is_not_a_config_edit() {
    let keys = fake_keys(1);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    // In a folder of its own: the watcher also watches the config folder's parent, which must
    // not be the busy /tmp for this test to see only the proxy's own writes.
    let config = with_file_store(
        support::config_for(&fake.url(), &keys)
            .set("models", r#"list = "static""#)
            .set("logging", r#"level = "info,gemini_rotator::reload=debug""#),
    );
    let proxy = Proxy::builder()
        .file("conf/config.toml", &config.to_string())
        .config_path("conf/config.toml")
        .start()
        .await;
    for n in 1..=2u64 {
        assert_eq!(chat(&proxy).await, 200);
        wait_for_file(&proxy, "conf/gemini-rotator.state", |v| {
            v["keys"][0]["models"][0]["requests"] == n
        })
        .await;
    }
    // Past the watcher's debounce (150 ms): an event from those writes would have been checked.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !proxy.logs().contains("trigger=Event"),
        "the state file's writes woke the config watcher:\n{}",
        proxy.logs()
    );
}

/// Starts a resumable upload of `size` bytes: the proxy's upload URL.
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
    started
        .headers()
        .get("x-goog-upload-url")
        .and_then(|v| v.to_str().ok())
        .expect("an upload URL")
        .to_string()
}

/// One chunk to an upload URL (no credential, as google-genai sends it): the status and the
/// `File` of the last one.
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
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    (status, body["file"].clone())
}

async fn generate_on(proxy: &Proxy, file: &Value) -> u16 {
    support::client()
        .post(format!(
            "{}/v1beta/models/{FLASH}:generateContent",
            proxy.url()
        ))
        .header("x-goog-api-key", TEST_TOKEN)
        .json(&json!({"contents": [{"role": "user", "parts": [
            {"fileData": {"fileUri": file["uri"], "mimeType": "text/plain"}},
            {"text": "Summarise."}
        ]}]}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

#[tokio::test]
async fn an_uploaded_file_and_an_upload_in_progress_outlive_a_restart() {
    let keys = fake_keys(3);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let first = start_with_state(&fake, &keys, None).await;
    let url = start_upload(&first, 12).await;
    let (status, file) = chunk(&url, 0, b"a whole file", true).await;
    assert_eq!(status, 200);
    let name = file["name"].as_str().expect("a file").to_string();
    let creator = fake.owner_of(&name).expect("the fake has it");
    // A second upload, stopped halfway by the restart.
    let halfway = start_upload(&first, 10).await;
    assert_eq!(chunk(&halfway, 0, b"12345", false).await.0, 200);
    let session = halfway
        .rsplit('/')
        .next()
        .expect("a session id")
        .to_string();
    let state = stop(first).await;
    assert_no_secret(&state, &keys);
    assert!(
        !state.contains(&session),
        "an upload session's id in\n{state}"
    );
    let saved: Value = serde_json::from_str(&state).expect("JSON");
    let pins: Vec<&str> = saved["pins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(pins.contains(&name.as_str()), "{state}");
    assert!(pins.iter().any(|p| p.starts_with("uploads/")), "{state}");

    fake.reset_counters();
    let second = start_with_state(&fake, &keys, Some(&state)).await;
    for _ in 0..4 {
        assert_eq!(generate_on(&second, &file).await, 200, "{}", second.logs());
    }
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.key.as_deref() == Some(creator.as_str())),
        "every call on the creating key"
    );
    assert_eq!(fake.permission_denied(), 0);
    // The upload goes on through the URL the first process handed out, on the new address.
    let old_base = halfway.split("/upload/session/").next().expect("a base");
    let resumed = halfway.replace(old_base, &second.url());
    let (status, rest) = chunk(&resumed, 5, b"67890", true).await;
    assert_eq!(status, 200, "{}", second.logs());
    let rest_name = rest["name"].as_str().expect("a file").to_string();
    assert_eq!(
        fake.upload_digest(&rest_name).map(|(n, _)| n),
        Some(10),
        "both halves arrived"
    );
    assert_eq!(generate_on(&second, &rest).await, 200);
}
