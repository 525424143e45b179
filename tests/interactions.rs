//! The Interactions API through the pool (issue #18 item 5): a streamed create relayed as
//! Google's SSE byte for byte (event ids included), a create failing over off a quota-exhausted
//! key before the first byte, `previous_interaction_id` pinned to the creating key across many
//! turns (no 403 at Google), resumption of a stream after `last_event_id`, ownership per client
//! token (another token's interaction is a 404), `cancel`, `delete` then `get` a 404, the pinned
//! key's rest a 429 (a 403 there disables nothing), its removal a 409, and bad bodies refused in
//! Google's shape before any upstream call.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const OTHER_TOKEN: &str = "sk-test-token-OTHER-0123456789";

/// `keys` keys, each its own Google project, and two client tokens.
async fn setup(keys: u32) -> (FakeGemini, Proxy, Vec<String>) {
    let keys = fake_keys(keys);
    let fake = FakeGemini::start().await;
    let proxy = start(&fake, &keys, |c| {
        c.set(
            "auth",
            &format!(r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#),
        )
    })
    .await;
    (fake, proxy, keys)
}

async fn create(proxy: &Proxy, token: &str, body: Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1beta/interactions", proxy.url()))
        .header("x-goog-api-key", token)
        .json(&body)
        .send()
        .await
        .expect("create")
}

async fn json_of(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `(event_type, event_id, data)` of each event of an SSE body.
fn events(body: &str) -> Vec<(String, String, Value)> {
    body.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .filter_map(|e| {
            let data = e.lines().find_map(|l| l.strip_prefix("data: "))?;
            let data: Value = serde_json::from_str(data).ok()?;
            Some((
                data["event_type"].as_str().unwrap_or("").to_string(),
                data["event_id"].as_str().unwrap_or("").to_string(),
                data,
            ))
        })
        .collect()
}

async fn get(proxy: &Proxy, token: &str, id: &str, query: &str) -> reqwest::Response {
    client()
        .get(format!("{}/v1beta/interactions/{id}{query}", proxy.url()))
        .header("x-goog-api-key", token)
        .send()
        .await
        .expect("get")
}

#[tokio::test]
async fn a_streamed_create_is_relayed_byte_for_byte_and_resumes_after_an_event() {
    let (fake, proxy, _) = setup(3).await;
    let response = create(
        &proxy,
        TEST_TOKEN,
        json!({"model": MODEL, "input": "Count to three.", "stream": true}),
    )
    .await;
    assert_eq!(response.status().as_u16(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let relayed = response.text().await.expect("stream");
    let got = events(&relayed);
    let kinds: Vec<&str> = got.iter().map(|(k, _, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "interaction.created",
            "interaction.status_update",
            "step.start",
            "step.delta",
            "step.delta",
            "step.stop",
            "interaction.completed"
        ]
    );
    assert!(
        got.iter().all(|(_, id, _)| !id.is_empty()),
        "every event has its id"
    );
    let id = got[0].2["interaction"]["id"]
        .as_str()
        .expect("id")
        .to_string();
    let creator = fake
        .owner_of(&format!("interactions/{id}"))
        .expect("creator");

    // The whole stream, replayed by Google from the start, is exactly what was relayed.
    let replay = get(&proxy, TEST_TOKEN, &id, "?stream=true").await;
    assert_eq!(replay.status().as_u16(), 200);
    assert_eq!(
        replay.text().await.expect("replay"),
        relayed,
        "byte-faithful"
    );

    // Resumption after the first delta: the rest only, on the creating key.
    let after = &got[3].1;
    let resumed = get(
        &proxy,
        TEST_TOKEN,
        &id,
        &format!("?stream=true&last_event_id={after}"),
    )
    .await;
    assert_eq!(resumed.status().as_u16(), 200);
    let rest = events(&resumed.text().await.expect("resumed"));
    let rest_ids: Vec<&str> = rest.iter().map(|(_, id, _)| id.as_str()).collect();
    let expected: Vec<&str> = got[4..].iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(rest_ids, expected);
    let gets: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET")
        .collect();
    assert_eq!(gets.len(), 2);
    assert!(gets
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    assert_eq!(
        gets[1].query.as_deref(),
        Some(format!("stream=true&last_event_id={after}").as_str()),
        "the resumption's parameters reach Google"
    );
    assert_eq!(fake.permission_denied(), 0);
}

#[tokio::test]
async fn a_create_fails_over_off_a_quota_exhausted_key_before_the_first_byte() {
    let (fake, proxy, keys) = setup(3).await;
    for key in &keys[..2] {
        fake.on(key, MODEL)
            .always(Reply::quota_per_minute(MODEL, Some("30s")));
    }
    // Whichever keys the pool tries first, every create ends on the healthy one.
    for stream in [true, false, true, false] {
        let response = create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "Hi.", "stream": stream}),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200);
        let text = response.text().await.expect("body");
        let id = if stream {
            events(&text)[0].2["interaction"]["id"]
                .as_str()
                .map(str::to_owned)
        } else {
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
        }
        .expect("an interaction id");
        assert_eq!(
            fake.owner_of(&format!("interactions/{id}")).as_deref(),
            Some(keys[2].as_str())
        );
    }
    let exhausted: Vec<u64> = keys[..2].iter().map(|k| fake.hits_for_key(k)).collect();
    assert!(
        exhausted.iter().sum::<u64>() >= 1,
        "a quota-exhausted key was tried and failed over from: {exhausted:?}"
    );
    assert!(
        exhausted.iter().all(|&n| n <= 1),
        "a key that answered 429 rests: {exhausted:?}"
    );
}

#[tokio::test]
async fn previous_interaction_id_stays_on_the_creating_key() {
    let (fake, proxy, _) = setup(4).await;
    let (status, first) = json_of(
        create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "Remember 7."}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let mut previous = first["id"].as_str().expect("id").to_string();
    let creator = fake
        .owner_of(&format!("interactions/{previous}"))
        .expect("creator");
    for turn in 0..12 {
        let stream = turn % 2 == 0;
        let response = create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "And then?", "previous_interaction_id": previous, "stream": stream}),
        )
        .await;
        assert_eq!(response.status().as_u16(), 200, "turn {turn}");
        let text = response.text().await.expect("body");
        previous = if stream {
            events(&text)[0].2["interaction"]["id"]
                .as_str()
                .map(str::to_owned)
        } else {
            serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["id"].as_str().map(str::to_owned))
        }
        .expect("id");
    }
    assert_eq!(
        fake.permission_denied(),
        0,
        "no turn went to another project"
    );
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    let (status, last) = json_of(get(&proxy, TEST_TOKEN, &previous, "").await).await;
    assert_eq!(status, 200, "{last}");
    assert!(last["previous_interaction_id"].is_string(), "{last}");
}

#[tokio::test]
async fn interactions_belong_to_their_token_and_delete_forgets_them() {
    let (fake, proxy, _) = setup(2).await;
    let (_, made) = json_of(
        create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "Mine.", "background": true}),
        )
        .await,
    )
    .await;
    let id = made["id"].as_str().expect("id").to_string();
    assert_eq!(made["status"], "in_progress");
    fake.reset_counters();

    // Another token: a 404 in Google's shape for get, cancel, delete and as a previous turn.
    let foreign = [
        get(&proxy, OTHER_TOKEN, &id, "").await,
        client()
            .post(format!("{}/v1beta/interactions/{id}/cancel", proxy.url()))
            .header("x-goog-api-key", OTHER_TOKEN)
            .send()
            .await
            .expect("cancel"),
        client()
            .delete(format!("{}/v1beta/interactions/{id}", proxy.url()))
            .header("x-goog-api-key", OTHER_TOKEN)
            .send()
            .await
            .expect("delete"),
        create(
            &proxy,
            OTHER_TOKEN,
            json!({"model": MODEL, "input": "Theirs?", "previous_interaction_id": id}),
        )
        .await,
    ];
    for response in foreign {
        let (status, body) = json_of(response).await;
        assert_eq!(status, 404, "{body}");
        assert_eq!(body["error"]["status"], "NOT_FOUND", "{body}");
    }
    assert_eq!(fake.total_hits(), 0, "none reached Google");

    // The owner cancels the background interaction, then deletes it.
    let (status, cancelled) = json_of(
        client()
            .post(format!("{}/v1beta/interactions/{id}/cancel", proxy.url()))
            .header("x-goog-api-key", TEST_TOKEN)
            .send()
            .await
            .expect("cancel"),
    )
    .await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (200, Some("cancelled")),
        "{cancelled}"
    );
    let deleted = client()
        .delete(format!("{}/v1beta/interactions/{id}", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 200);
    let hits = fake.total_hits();
    let (status, body) = json_of(get(&proxy, TEST_TOKEN, &id, "").await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    assert_eq!(
        fake.total_hits(),
        hits,
        "a deleted interaction is forgotten here"
    );
    // No interaction list: it would show a project's interactions, whoever made them.
    let (status, _) = json_of(
        client()
            .get(format!("{}/v1beta/interactions", proxy.url()))
            .header("x-goog-api-key", TEST_TOKEN)
            .send()
            .await
            .expect("list"),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(fake.permission_denied(), 0);
}

#[tokio::test]
async fn a_resting_pinned_key_is_a_429_and_a_403_there_disables_nothing() {
    let (fake, proxy, _) = setup(2).await;
    let (_, made) = json_of(
        create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "Pin me."}),
        )
        .await,
    )
    .await;
    let id = made["id"].as_str().expect("id").to_string();
    let creator = fake
        .owner_of(&format!("interactions/{id}"))
        .expect("creator");
    let follow_up = json!({"model": MODEL, "input": "More.", "previous_interaction_id": id});
    // A 403 on the pinned create is the client's: the key stays in service.
    fake.on(&creator, MODEL).then(Reply::leaked_key());
    let (status, _) = json_of(create(&proxy, TEST_TOKEN, follow_up.clone()).await).await;
    assert_eq!(status, 403);
    let (status, body) = json_of(create(&proxy, TEST_TOKEN, follow_up.clone()).await).await;
    assert_eq!(status, 200, "the key was not disabled: {body}");
    // The creating key rests: a 429 naming the interaction, with Retry-After; not rotated.
    fake.on(&creator, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("40s")));
    fake.reset_counters();
    for _ in 0..2 {
        let response = create(&proxy, TEST_TOKEN, follow_up.clone()).await;
        let retry_after: u64 = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (status, body) = json_of(response).await;
        assert_eq!(status, 429, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&id) && message.contains("resting"),
            "{message}"
        );
        assert!(
            (30..=60).contains(&retry_after),
            "Retry-After {retry_after}"
        );
    }
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    assert_eq!(fake.total_hits(), 1, "the second call never reached Google");
}

#[tokio::test]
async fn bad_interaction_bodies_are_refused_before_any_upstream_call() {
    let (fake, proxy, _) = setup(1).await;
    let bodies = [
        "",
        "[]",
        "{not json",
        r#""text""#,
        r#"{"input": "no model"}"#,
        r#"{"model": "gemini-2.5-flash", "agent": "deep-research-pro-preview-12-2025", "input": "both"}"#,
        r#"{"model": 7, "input": "x"}"#,
        r#"{"model": "../etc", "input": "x"}"#,
        r#"{"model": "gemini-2.5-flash", "input": "x", "stream": "yes"}"#,
        r#"{"model": "gemini-2.5-flash", "input": "x", "previous_interaction_id": "a/../b"}"#,
        r#"{"model": "gemini-2.5-flash", "input": "x", "previous_interaction_id": "v1_unknown"}"#,
    ];
    for body in bodies {
        let response = client()
            .post(format!("{}/v1beta/interactions", proxy.url()))
            .header("x-goog-api-key", TEST_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("create");
        let (status, answer) = json_of(response).await;
        let expected = if body.contains("v1_unknown") {
            404
        } else {
            400
        };
        assert_eq!(status, expected, "{body}: {answer}");
        assert!(
            answer["error"]["status"].is_string(),
            "Google's error shape: {answer}"
        );
        assert_eq!(answer["error"]["code"], expected);
    }
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn an_interaction_on_a_removed_key_is_a_clear_error() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    let config = |keys: &[String]| {
        config_for(&fake.url(), keys)
            .set("models", r#"list = "static""#)
            .set("auth", &format!(r#"tokens = ["{TEST_TOKEN}"]"#))
    };
    let proxy = Proxy::builder().config(config(&keys)).start().await;
    let (_, made) = json_of(
        create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "Soon orphaned."}),
        )
        .await,
    )
    .await;
    let id = made["id"].as_str().expect("id").to_string();
    let creator = fake
        .owner_of(&format!("interactions/{id}"))
        .expect("creator");
    let rest: Vec<String> = keys.iter().filter(|k| **k != creator).cloned().collect();
    proxy.write_file("config.toml", &config(&rest).render());
    proxy.signal(Signal::Hup);
    assert!(
        proxy
            .wait_for_log("keys +0/-1", std::time::Duration::from_secs(10))
            .await,
        "{}",
        proxy.logs()
    );
    fake.reset_counters();
    let answers = [
        get(&proxy, TEST_TOKEN, &id, "?stream=true").await,
        create(
            &proxy,
            TEST_TOKEN,
            json!({"model": MODEL, "input": "More.", "previous_interaction_id": id}),
        )
        .await,
    ];
    for response in answers {
        let (status, body) = json_of(response).await;
        assert_eq!(status, 409, "{body}");
        assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&id) && message.contains("no longer in the pool"),
            "{message}"
        );
    }
    assert_eq!(fake.total_hits(), 0, "not rotated to another key");
}

/// Uploads `data` through the proxy as `token` (the resumable protocol, one chunk): the `File`.
async fn upload(proxy: &Proxy, token: &str, data: &[u8]) -> Value {
    let started = client()
        .post(format!("{}/upload/v1beta/files", proxy.url()))
        .header("x-goog-api-key", token)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header(
            "x-goog-upload-header-content-length",
            data.len().to_string(),
        )
        .header("x-goog-upload-header-content-type", "application/pdf")
        .json(&json!({"file": {"displayName": "report.pdf"}}))
        .send()
        .await
        .expect("start upload");
    assert_eq!(started.status().as_u16(), 200);
    let url = started
        .headers()
        .get("x-goog-upload-url")
        .and_then(|v| v.to_str().ok())
        .expect("upload url")
        .to_string();
    let done = client()
        .post(&url)
        .header("x-goog-upload-command", "upload, finalize")
        .header("x-goog-upload-offset", "0")
        .body(data.to_vec())
        .send()
        .await
        .expect("chunk");
    assert_eq!(done.status().as_u16(), 200);
    let body: Value = done.json().await.expect("file");
    body["file"].clone()
}

#[tokio::test]
async fn a_file_in_an_interactions_input_pins_it_to_the_files_key() {
    let (fake, proxy, _) = setup(4).await;
    let file = upload(&proxy, TEST_TOKEN, b"%PDF-1.7 fake").await;
    let name = file["name"].as_str().expect("name").to_string();
    let creator = fake.owner_of(&name).expect("creator");
    let asking = json!({"model": MODEL, "input": [
        {"type": "document", "uri": file["uri"], "mime_type": "application/pdf"},
        {"type": "text", "text": "Summarise it."}
    ]});
    fake.reset_counters();
    for turn in 0..8 {
        let (status, body) = json_of(create(&proxy, TEST_TOKEN, asking.clone()).await).await;
        assert_eq!(status, 200, "turn {turn}: {body}");
    }
    assert_eq!(
        fake.permission_denied(),
        0,
        "no turn went to another project"
    );
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    // Another token naming the file: Google's 404 shape, nothing sent.
    let hits = fake.total_hits();
    let (status, body) = json_of(create(&proxy, OTHER_TOKEN, asking).await).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(fake.total_hits(), hits);
}

#[tokio::test]
async fn an_interactions_usage_is_counted_for_its_token() {
    let (_fake, proxy, _) = setup(1).await;
    let (status, _) =
        json_of(create(&proxy, TEST_TOKEN, json!({"model": MODEL, "input": "One."})).await).await;
    assert_eq!(status, 200);
    let streamed = create(
        &proxy,
        TEST_TOKEN,
        json!({"model": MODEL, "input": "Two.", "stream": true}),
    )
    .await;
    assert_eq!(streamed.status().as_u16(), 200);
    let _ = streamed.text().await;
    // The stream's usage is recorded when it ends: bounded wait for it.
    let mut stats = Value::Null;
    for _ in 0..100 {
        stats = proxy
            .get("/stats")
            .send()
            .await
            .expect("/stats")
            .json()
            .await
            .unwrap_or(Value::Null);
        if stats["clients"]
            .as_object()
            .into_iter()
            .flatten()
            .any(|(_, c)| c["requests"] == 2)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let clients = stats["clients"].as_object().cloned().unwrap_or_default();
    let (_, mine) = clients.iter().next().expect("one client");
    // The fake's interaction costs 8 input and 12 output tokens.
    assert_eq!(mine["requests"], 2, "{stats}");
    assert_eq!(mine["prompt_tokens"], 16, "{stats}");
    assert_eq!(mine["completion_tokens"], 24, "{stats}");
}
