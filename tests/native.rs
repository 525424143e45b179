//! The rest of the native Gemini API through the pool (issue #18): files uploaded with the
//! resumable protocol through the proxy's own upload URL, used by later generations on the key
//! that created them (never rotated, no 403), context caches likewise, ownership per client
//! token (another token's file is a 404), lists of the caller's own resources, the pinned
//! key's rest as a 429, bad input refused before any upstream call, and a large upload in
//! constant memory. Upload groups (`pool.upload_group`): one token's files uploaded one after
//! another (or all at once) land on one key and are usable in one request; with grouping off they rotate; a
//! group key that cannot serve sends the next upload elsewhere. A create Google refused (a quota
//! 429) is made on another key; one that may have run there (a 500) is not made again.

mod support;

use serde_json::{json, Value};
use support::*;

const MODEL: &str = "gemini-2.5-flash";
const OTHER_TOKEN: &str = "sk-test-token-OTHER-0123456789";

/// `keys` keys, each its own Google project, and two client tokens.
async fn setup(keys: u32) -> (FakeGemini, Proxy, Vec<String>) {
    setup_with(keys, |c| c).await
}

async fn setup_with(
    keys: u32,
    tweak: impl FnOnce(TestConfig) -> TestConfig,
) -> (FakeGemini, Proxy, Vec<String>) {
    let keys = fake_keys(keys);
    let fake = FakeGemini::start().await;
    // The tweak comes last, so a test may raise `max_upload`.
    let proxy = start(&fake, &keys, |c| {
        tweak(
            c.set(
                "auth",
                &format!(
                    r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#
                ),
            )
            .set("server", r#"max_upload = "400MiB""#),
        )
    })
    .await;
    (fake, proxy, keys)
}

/// Starts a resumable upload of `size` bytes as `token`: the upload URL the proxy handed out.
async fn start_upload(proxy: &Proxy, token: &str, size: u64) -> reqwest::Response {
    start_upload_on(proxy, "v1beta", token, size).await
}

/// `start_upload` on API `version` (`/upload/{version}/files`).
async fn start_upload_on(
    proxy: &Proxy,
    version: &str,
    token: &str,
    size: u64,
) -> reqwest::Response {
    client()
        .post(format!("{}/upload/{version}/files", proxy.url()))
        .header("x-goog-api-key", token)
        .header("content-type", "application/json")
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", size.to_string())
        .header("x-goog-upload-header-content-type", "text/plain")
        .json(&json!({"file": {"displayName": "notes.txt"}}))
        .send()
        .await
        .expect("start upload")
}

/// Uploads `data` as `token` in chunks of `chunk` bytes, as google-genai does (no credential
/// on the chunks): the `File` Google made.
async fn upload(proxy: &Proxy, token: &str, data: &[u8], chunk: usize) -> Value {
    let started = start_upload(proxy, token, data.len() as u64).await;
    assert_eq!(started.status().as_u16(), 200);
    let url = started
        .headers()
        .get("x-goog-upload-url")
        .and_then(|v| v.to_str().ok())
        .expect("upload url")
        .to_string();
    assert!(
        url.starts_with(&format!("{}/upload/session/", proxy.url())),
        "the upload URL points at the proxy: {url}"
    );
    assert!(
        !url.contains("upload_id"),
        "Google's session id leaked: {url}"
    );
    let mut offset = 0;
    loop {
        let end = (offset + chunk).min(data.len());
        let last = end == data.len();
        let answer = client()
            .post(&url)
            .header(
                "x-goog-upload-command",
                if last { "upload, finalize" } else { "upload" },
            )
            .header("x-goog-upload-offset", offset.to_string())
            .body(data[offset..end].to_vec())
            .send()
            .await
            .expect("chunk");
        assert_eq!(answer.status().as_u16(), 200);
        let status = answer
            .headers()
            .get("x-goog-upload-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if last {
            assert_eq!(status, "final");
            let body: Value = answer.json().await.expect("file json");
            return body["file"].clone();
        }
        assert_eq!(status, "active");
        offset = end;
    }
}

async fn generate_with(
    proxy: &Proxy,
    token: &str,
    part: Value,
    extra: Value,
) -> (u16, Value, Option<String>) {
    let mut body = json!({"contents": [{"role": "user", "parts": [part, {"text": "Summarise."}]}]});
    if let (Value::Object(b), Value::Object(e)) = (&mut body, extra) {
        b.extend(e);
    }
    let response = client()
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent",
            proxy.url()
        ))
        .header("x-goog-api-key", token)
        .json(&body)
        .send()
        .await
        .expect("generate");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        status,
        response.json().await.unwrap_or(Value::Null),
        retry_after,
    )
}

fn file_part(file: &Value) -> Value {
    json!({"fileData": {"fileUri": file["uri"], "mimeType": "text/plain"}})
}

#[tokio::test]
async fn an_uploaded_file_is_used_on_the_key_that_created_it() {
    let (fake, proxy, keys) = setup(3).await;
    let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
    let file = upload(&proxy, TEST_TOKEN, &data, 256 * 1024).await;
    let name = file["name"].as_str().expect("file name").to_string();
    assert_eq!(file["sizeBytes"], "1000000");
    // Every byte arrived, in order.
    let digest = fnv1a(FNV_START, &data);
    assert_eq!(fake.upload_digest(&name), Some((data.len() as u64, digest)));
    let creator = fake.owner_of(&name).expect("file exists at the fake");
    assert!(keys.contains(&creator));
    // No chunk reached Google with a key other than the creator's; none carried a key in
    // the URL or the client's token.
    for r in fake.requests() {
        assert_ne!(r.key.as_deref(), Some(TEST_TOKEN));
        if r.path.starts_with("/upload/") {
            assert_eq!(r.key.as_deref(), Some(creator.as_str()));
        }
    }
    fake.reset_counters();
    for _ in 0..12 {
        let (status, answer, _) =
            generate_with(&proxy, TEST_TOKEN, file_part(&file), json!({})).await;
        assert_eq!(status, 200, "{answer}");
    }
    assert_eq!(
        fake.permission_denied(),
        0,
        "no call went to another project"
    );
    let used: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.key.clone())
        .collect();
    assert_eq!(used.len(), 12);
    assert!(
        used.iter().all(|k| *k == creator),
        "every call on the creating key"
    );
    // The bare name works too, and files.get goes to the creator.
    let (status, _, _) = generate_with(
        &proxy,
        TEST_TOKEN,
        json!({"fileData": {"fileUri": name, "mimeType": "text/plain"}}),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let got = proxy
        .get(&format!("/v1beta/{name}"))
        .send()
        .await
        .expect("get");
    assert_eq!(got.status().as_u16(), 200);
    let got: Value = got.json().await.unwrap_or(Value::Null);
    assert_eq!(got["name"], name);
    assert_eq!(fake.keys_in_url(), 0);
}

#[tokio::test]
async fn tokens_see_only_their_own_files() {
    let (fake, proxy, _) = setup(2).await;
    let mine = upload(&proxy, TEST_TOKEN, b"mine", 1024).await;
    let theirs = upload(&proxy, OTHER_TOKEN, b"theirs", 1024).await;
    let (mine_name, their_name) = (
        mine["name"].as_str().unwrap_or("").to_string(),
        theirs["name"].as_str().unwrap_or("").to_string(),
    );
    fake.reset_counters();
    // Another token's file: Google's 404, before any upstream call, however it is named.
    let refused = client()
        .get(format!("{}/v1beta/{their_name}", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(refused.status().as_u16(), 404);
    let body: Value = refused.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["status"], "NOT_FOUND");
    assert_eq!(body["error"]["code"], 404);
    let (status, body, _) = generate_with(&proxy, TEST_TOKEN, file_part(&theirs), json!({})).await;
    assert_eq!(status, 404, "{body}");
    let deleted = client()
        .delete(format!("{}/v1/{their_name}", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 404);
    // A name never created through the proxy is the same 404.
    let unknown = proxy
        .get("/v1beta/files/never-made")
        .send()
        .await
        .expect("get");
    assert_eq!(unknown.status().as_u16(), 404);
    assert_eq!(fake.total_hits(), 0, "refused before any upstream call");

    // Lists: each token its own, across keys.
    let list = |token: &'static str| {
        let url = format!("{}/v1beta/files", proxy.url());
        async move {
            let r = client()
                .get(url)
                .header("x-goog-api-key", token)
                .send()
                .await
                .expect("list");
            assert_eq!(r.status().as_u16(), 200);
            let v: Value = r.json().await.unwrap_or(Value::Null);
            v["files"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(list(TEST_TOKEN).await, vec![mine_name.clone()]);
    assert_eq!(list(OTHER_TOKEN).await, vec![their_name.clone()]);
    assert_eq!(fake.permission_denied(), 0);

    // Deleting one's own file works and forgets it.
    let deleted = proxy
        .request(reqwest::Method::DELETE, &format!("/v1beta/{mine_name}"))
        .send()
        .await
        .expect("delete");
    assert_eq!(deleted.status().as_u16(), 200);
    assert!(list(TEST_TOKEN).await.is_empty());
    assert!(fake.owner_of(&mine_name).is_none());
}

#[tokio::test]
async fn lists_are_paged_across_keys() {
    // Grouping off: successive uploads rotate over the keys.
    let (fake, proxy, _) = setup_with(3, |c| c.set("pool", r#"upload_group = "0s""#)).await;
    let mut names = Vec::new();
    for i in 0..5 {
        let f = upload(&proxy, TEST_TOKEN, format!("file {i}").as_bytes(), 1024).await;
        names.push(f["name"].as_str().unwrap_or("").to_string());
    }
    names.sort();
    // They landed on more than one key (rotation), yet one list shows them all.
    let owners: std::collections::HashSet<String> =
        names.iter().filter_map(|n| fake.owner_of(n)).collect();
    assert!(owners.len() > 1, "{owners:?}");
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..5 {
        let mut path = "/v1beta/files?pageSize=2".to_string();
        if let Some(t) = &token {
            path.push_str(&format!("&pageToken={t}"));
        }
        let page: Value = proxy
            .get(&path)
            .send()
            .await
            .expect("list")
            .json()
            .await
            .unwrap_or(Value::Null);
        for f in page["files"].as_array().cloned().unwrap_or_default() {
            seen.push(f["name"].as_str().unwrap_or("").to_string());
        }
        match page["nextPageToken"].as_str() {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, names);
    assert_eq!(fake.permission_denied(), 0);
}

/// A generateContent naming every file of `files`, as `token`: status and answer.
async fn generate_naming(proxy: &Proxy, token: &str, files: &[&Value]) -> (u16, Value) {
    let mut parts: Vec<Value> = files.iter().map(|f| file_part(f)).collect();
    parts.push(json!({"text": "Compare them."}));
    let response = client()
        .post(format!(
            "{}/v1beta/models/{MODEL}:generateContent",
            proxy.url()
        ))
        .header("x-goog-api-key", token)
        .json(&json!({"contents": [{"role": "user", "parts": parts}]}))
        .send()
        .await
        .expect("generate");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn creator_of(fake: &FakeGemini, file: &Value) -> String {
    let name = file["name"].as_str().expect("a file name");
    fake.owner_of(name).expect("the fake has the file")
}

#[tokio::test]
async fn files_uploaded_one_after_another_are_used_together() {
    let (fake, proxy, keys) = setup(3).await;
    // google-genai: files.upload(a), files.upload(b), then generate_content([a, b, "compare"]).
    let a = upload(&proxy, TEST_TOKEN, b"the first report", 1024).await;
    let b = upload(&proxy, TEST_TOKEN, b"the second report", 1024).await;
    let c = upload(&proxy, TEST_TOKEN, b"the third report", 1024).await;
    fake.reset_counters();
    let (status, body) = generate_naming(&proxy, TEST_TOKEN, &[&a, &b, &c]).await;
    assert_eq!(status, 200, "{body}");
    let key = creator_of(&fake, &a);
    assert!(keys.contains(&key));
    assert_eq!(creator_of(&fake, &b), key, "b joined a's upload group");
    assert_eq!(creator_of(&fake, &c), key, "c joined a's upload group");
    assert_eq!(
        fake.permission_denied(),
        0,
        "no file reached another project"
    );
    let used: Vec<Option<String>> = fake.requests().iter().map(|r| r.key.clone()).collect();
    assert_eq!(used, vec![Some(key.clone())], "one call, on the files' key");
    // The group is the token's: another token's uploads are placed on their own, and its
    // own files again go together.
    let x = upload(&proxy, OTHER_TOKEN, b"theirs", 1024).await;
    let y = upload(&proxy, OTHER_TOKEN, b"theirs too", 1024).await;
    assert_eq!(creator_of(&fake, &x), creator_of(&fake, &y));
    let (status, body) = generate_naming(&proxy, OTHER_TOKEN, &[&x, &y]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.permission_denied(), 0);
}

#[tokio::test]
async fn files_uploaded_at_once_are_used_together() {
    // asyncio.gather(files.upload(a), files.upload(b), …): every upload starts before the
    // first has made its file, so no file tells the group's key yet.
    let keys = fake_keys(3);
    let fake = FakeGemini::builder()
        .keys(&keys)
        .upload_start_delay(std::time::Duration::from_millis(300))
        .start()
        .await;
    let proxy = start(&fake, &keys, |c| c).await;
    let data: Vec<Vec<u8>> = (0..4).map(|i| format!("report {i}").into_bytes()).collect();
    let files =
        futures_util::future::join_all(data.iter().map(|d| upload(&proxy, TEST_TOKEN, d, 1024)))
            .await;
    let owners: Vec<String> = files.iter().map(|f| creator_of(&fake, f)).collect();
    assert!(
        owners.iter().all(|o| *o == owners[0]),
        "uploads sent at once share a key: {owners:?}"
    );
    let named: Vec<&Value> = files.iter().collect();
    let (status, body) = generate_naming(&proxy, TEST_TOKEN, &named).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.permission_denied(), 0);
}

#[tokio::test]
async fn with_upload_grouping_off_uploads_rotate_and_the_refusal_says_why() {
    let (fake, proxy, _) = setup_with(3, |c| c.set("pool", r#"upload_group = "0s""#)).await;
    let mut files = Vec::new();
    for i in 0..4 {
        files.push(upload(&proxy, TEST_TOKEN, format!("file {i}").as_bytes(), 1024).await);
    }
    let owners: Vec<String> = files.iter().map(|f| creator_of(&fake, f)).collect();
    let distinct: std::collections::HashSet<&String> = owners.iter().collect();
    assert!(
        distinct.len() > 1,
        "uploads rotate over the keys: {owners:?}"
    );
    // Two of them on different keys cannot be named together: refused before any upstream
    // call, with what to do about it.
    let (i, j) = (0..files.len())
        .flat_map(|i| (0..files.len()).map(move |j| (i, j)))
        .find(|&(i, j)| owners[i] != owners[j])
        .expect("two files on different keys");
    fake.reset_counters();
    let (status, body) = generate_naming(&proxy, TEST_TOKEN, &[&files[i], &files[j]]).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT", "{body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("different keys")
            && message.contains("pool.upload_group")
            && message.contains("upload the files one request needs together"),
        "{message}"
    );
    assert_eq!(fake.total_hits(), 0, "refused before any upstream call");
}

#[tokio::test]
async fn a_group_key_that_cannot_serve_sends_the_next_upload_elsewhere() {
    let keys = fake_keys(3);
    let fake = FakeGemini::builder().keys(&keys).start().await;
    let proxy = start(&fake, &keys, |c| c.set("models", r#"list = "static""#)).await;
    let a = upload(&proxy, TEST_TOKEN, b"on a key soon disabled", 1024).await;
    let key = creator_of(&fake, &a);
    // Google now refuses that key (API_KEY_INVALID): the first generation that meets it
    // disables it and moves on.
    fake.revoke_key(&key);
    let mut met = false;
    for _ in 0..keys.len() * 2 {
        let (status, body, _) =
            generate_with(&proxy, TEST_TOKEN, json!({"text": "Hello"}), json!({})).await;
        assert_eq!(status, 200, "{body}");
        met = fake
            .requests()
            .iter()
            .any(|r| r.key.as_deref() == Some(&key));
        if met {
            break;
        }
    }
    assert!(met, "no generation reached the revoked key");
    fake.reset_counters();
    // The group's key is disabled: the next upload goes to another key, without an error
    // and without trying the disabled one; it starts a new group there.
    let b = upload(&proxy, TEST_TOKEN, b"placed elsewhere", 1024).await;
    let elsewhere = creator_of(&fake, &b);
    assert_ne!(elsewhere, key);
    assert!(
        fake.requests()
            .iter()
            .all(|r| r.key.as_deref() != Some(&key)),
        "the disabled key was not tried"
    );
    let c = upload(&proxy, TEST_TOKEN, b"joins the new group", 1024).await;
    assert_eq!(creator_of(&fake, &c), elsewhere);
    let (status, body) = generate_naming(&proxy, TEST_TOKEN, &[&b, &c]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(fake.permission_denied(), 0);
}

/// Upload starts and cache creates the fake saw, by key.
fn creates_seen(fake: &FakeGemini) -> Vec<String> {
    fake.requests()
        .iter()
        .filter(|r| {
            let start = r
                .headers
                .get("x-goog-upload-command")
                .is_some_and(|c| c.as_bytes() == b"start");
            r.method == "POST"
                && ((r.path == "/upload/v1beta/files" && start)
                    || r.path == "/v1beta/cachedContents")
        })
        .filter_map(|r| r.key.clone())
        .collect()
}

#[tokio::test]
async fn the_preview_surface_v1alpha_passes_through_to_v1alpha() {
    let (fake, proxy, _) = setup(2).await;
    // google-genai with api_version="v1alpha": uploads and lists go to Google's v1alpha.
    let started = start_upload_on(&proxy, "v1alpha", TEST_TOKEN, 5).await;
    assert_eq!(started.status().as_u16(), 200);
    assert!(started
        .headers()
        .get("x-goog-upload-url")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|u| u.starts_with(&proxy.url())));
    let listed = client()
        .get(format!("{}/v1alpha/files", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .send()
        .await
        .expect("list");
    assert_eq!(listed.status().as_u16(), 200);
    let paths: Vec<String> = fake.requests().iter().map(|r| r.path.clone()).collect();
    assert!(
        paths.iter().any(|p| p == "/upload/v1alpha/files")
            && paths.iter().all(|p| !p.contains("v1beta")),
        "{paths:?}"
    );
}

#[tokio::test]
async fn a_create_google_refused_for_quota_is_made_on_another_key() {
    let (fake, proxy, _) = setup(3).await;
    // The first upload start meets a quota 429 (whichever key it lands on): the client never
    // sees it, and the file is made on the next key.
    fake.on_any()
        .then(Reply::quota_per_minute(MODEL, Some("30s")));
    let file = upload(&proxy, TEST_TOKEN, b"a report", 1024).await;
    let starts = creates_seen(&fake);
    assert_eq!(starts.len(), 2, "{starts:?}");
    assert_ne!(starts[0], starts[1]);
    assert_eq!(creator_of(&fake, &file), starts[1]);
    // A cache create likewise.
    fake.reset_counters();
    fake.on_any().then(Reply::quota_per_minute(MODEL, None));
    let cache = create_cache(&proxy, TEST_TOKEN, MODEL).await;
    let creates = creates_seen(&fake);
    assert_eq!(creates.len(), 2, "{creates:?}");
    assert_eq!(fake.owner_of(&cache), Some(creates[1].clone()));
}

#[tokio::test]
async fn a_create_that_may_have_run_is_not_made_again() {
    let (fake, proxy, _) = setup(3).await;
    // A 500 may come after Google made the file: another key would make a second one.
    fake.on_any().then(Reply::internal());
    let started = start_upload(&proxy, TEST_TOKEN, 64).await;
    assert_eq!(started.status().as_u16(), 500);
    assert_eq!(creates_seen(&fake).len(), 1, "sent once");
    // The next upload is made as usual.
    upload(&proxy, TEST_TOKEN, b"a report", 1024).await;
}

#[tokio::test]
async fn a_cache_is_created_and_used_on_the_key_of_its_file() {
    let (fake, proxy, _) = setup(3).await;
    let file = upload(&proxy, TEST_TOKEN, b"a long document", 1024).await;
    let creator = fake
        .owner_of(file["name"].as_str().unwrap_or(""))
        .expect("creator");
    let created = proxy
        .post("/v1beta/cachedContents")
        .json(&json!({
            "model": format!("models/{MODEL}"),
            "contents": [{"role": "user", "parts": [file_part(&file)]}],
            "ttl": "600s",
        }))
        .send()
        .await
        .expect("create cache");
    assert_eq!(created.status().as_u16(), 200);
    let cache: Value = created.json().await.unwrap_or(Value::Null);
    let cache_name = cache["name"].as_str().expect("cache name").to_string();
    assert!(cache_name.starts_with("cachedContents/"));
    assert_eq!(
        fake.owner_of(&cache_name).as_deref(),
        Some(creator.as_str())
    );
    fake.reset_counters();
    for _ in 0..6 {
        let (status, body, _) = generate_with(
            &proxy,
            TEST_TOKEN,
            json!({"text": "Hello"}),
            json!({"cachedContent": cache_name}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(fake.permission_denied(), 0);
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    // The other token cannot use, read or list it.
    let (status, _, _) = generate_with(
        &proxy,
        OTHER_TOKEN,
        json!({"text": "Hello"}),
        json!({"cachedContent": cache_name}),
    )
    .await;
    assert_eq!(status, 404);
    let listed: Value = client()
        .get(format!("{}/v1beta/cachedContents", proxy.url()))
        .header("x-goog-api-key", OTHER_TOKEN)
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(listed["cachedContents"], json!([]));
    let listed: Value = proxy
        .get("/v1beta/cachedContents")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(listed["cachedContents"][0]["name"], cache_name);
    // A patch (new ttl) goes to the creator too.
    let patched = proxy
        .request(
            reqwest::Method::PATCH,
            &format!("/v1beta/{cache_name}?updateMask=ttl"),
        )
        .json(&json!({"ttl": "1200s"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patched.status().as_u16(), 200);
    let last = fake.last_request().expect("patch upstream");
    assert_eq!(last.key.as_deref(), Some(creator.as_str()));
    assert_eq!(last.query.as_deref(), Some("updateMask=ttl"));
    let listed: Value = proxy
        .get("/v1beta/cachedContents")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(
        listed["cachedContents"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["cachedContents"][0]["name"], cache_name, "{listed}");
}

#[tokio::test]
async fn a_resting_pinned_key_is_a_429_and_a_403_there_disables_nothing() {
    let (fake, proxy, _) = setup(2).await;
    let file = upload(&proxy, TEST_TOKEN, b"pinned", 1024).await;
    let name = file["name"].as_str().unwrap_or("").to_string();
    let creator = fake.owner_of(&name).expect("creator");
    // A 403 on the pinned call (whatever it says) is the client's: the key stays in service.
    fake.on(&creator, MODEL).then(Reply::leaked_key());
    let (status, _, _) = generate_with(&proxy, TEST_TOKEN, file_part(&file), json!({})).await;
    assert_eq!(status, 403);
    let (status, body, _) = generate_with(&proxy, TEST_TOKEN, file_part(&file), json!({})).await;
    assert_eq!(status, 200, "the key was not disabled: {body}");
    // The creating key rests: a 429 naming the resource, with Retry-After; no other key used.
    fake.on(&creator, MODEL)
        .always(Reply::quota_per_minute(MODEL, Some("40s")));
    fake.reset_counters();
    for _ in 0..2 {
        let (status, body, retry_after) =
            generate_with(&proxy, TEST_TOKEN, file_part(&file), json!({})).await;
        assert_eq!(status, 429, "{body}");
        let message = body["error"]["message"].as_str().unwrap_or("");
        assert!(
            message.contains(&name) && message.contains("resting"),
            "{message}"
        );
        let wait: u64 = retry_after.and_then(|v| v.parse().ok()).unwrap_or(0);
        assert!((30..=60).contains(&wait), "Retry-After {wait}");
    }
    assert!(fake
        .requests()
        .iter()
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
    assert_eq!(fake.total_hits(), 1, "the second call never reached Google");
}

#[tokio::test]
async fn bad_native_input_is_refused_before_any_upstream_call() {
    let (fake, proxy, _) = setup(1).await;
    let cases: Vec<(reqwest::RequestBuilder, u16)> = vec![
        (proxy.get("/v1beta/files/abc?alt=proto"), 400),
        (proxy.get("/v1beta/files/a%2F..%2Fmodels"), 400),
        (proxy.post("/v1beta/cachedContents").body("{not json"), 400),
        (proxy.post("/v1beta/cachedContents").body("[]"), 400),
        // Larger than server.max_upload, declared at the start.
        (
            proxy
                .post("/upload/v1beta/files")
                .header("x-goog-upload-protocol", "resumable")
                .header("x-goog-upload-command", "start")
                .header(
                    "x-goog-upload-header-content-length",
                    (500u64 << 20).to_string(),
                )
                .json(&json!({"file": {}})),
            413,
        ),
        (
            proxy
                .post("/upload/v1beta/files")
                .header("x-goog-upload-protocol", "resumable")
                .header("x-goog-upload-command", "start")
                .header("x-goog-upload-header-content-length", "lots")
                .json(&json!({"file": {}})),
            400,
        ),
        // No session of ours.
        (
            client().post(format!("{}/upload/session/{}", proxy.url(), "0".repeat(64))),
            404,
        ),
        (
            client().post(format!("{}/upload/session/short", proxy.url())),
            404,
        ),
        // Without a token.
        (client().get(format!("{}/v1beta/files", proxy.url())), 401),
    ];
    for (request, expected) in cases {
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, expected, "{body}");
        assert!(
            body["error"]["status"].is_string(),
            "Google's error shape: {body}"
        );
    }
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn an_oversized_chunk_is_refused_and_blames_no_key() {
    let (fake, proxy, keys) = setup(1).await;
    let started = start_upload(&proxy, TEST_TOKEN, 10).await;
    let url = started.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap_or("")
        .to_string();
    // Declared beyond max_upload: refused before the body.
    let refused = client()
        .post(&url)
        .header("x-goog-upload-command", "upload")
        .header("x-goog-upload-offset", (400u64 << 20).to_string())
        .body(vec![0u8; 1])
        .send()
        .await
        .expect("chunk");
    assert_eq!(refused.status().as_u16(), 413);
    // The upload is over, as google-genai reads it (else it resends the chunk three times).
    assert_eq!(
        refused.headers()["x-goog-upload-status"]
            .to_str()
            .unwrap_or(""),
        "final"
    );
    // Undeclared (chunked) and growing past it: cut, 413, and the key is still healthy.
    let endless = futures_util::stream::iter(
        (0..600).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![7u8; 1 << 20]))),
    );
    let refused = client()
        .post(&url)
        .header("x-goog-upload-command", "upload")
        .header("x-goog-upload-offset", "0")
        .body(reqwest::Body::wrap_stream(endless))
        .send()
        .await;
    // The client may see the 413 or, still sending, a closed connection; the proxy's log
    // line says which answer it gave.
    if let Ok(r) = refused {
        assert_eq!(r.status().as_u16(), 413);
    }
    let refusals = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("upload_session") && l.contains("413"))
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while refusals(&proxy.logs()) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(refusals(&proxy.logs()), 2, "{}", proxy.logs());
    // The session id is a credential: no log line carries it.
    let id = url.rsplit('/').next().unwrap_or("");
    assert_eq!(id.len(), 64);
    assert!(!proxy.logs().contains(id), "{}", proxy.logs());
    // No byte beyond the limit reached Google, and the key still serves.
    assert!(fake.uploaded_bytes() <= 400 << 20);
    let (status, _, _) = generate_with(&proxy, TEST_TOKEN, json!({"text": "hi"}), json!({})).await;
    assert_eq!(status, 200, "the key was not blamed");
    assert!(fake.hits(&keys[0], MODEL) > 0);
}

/// Peak resident memory of a process (`VmHWM`), in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_large_upload_streams_through_in_constant_memory() {
    // The issue's figure: a gibibyte.
    const SIZE: u64 = 1 << 30;
    // Larger than `server.max_body` (32 MiB): uploads are bounded by `max_upload` only.
    const CHUNK: u64 = 64 << 20;
    // One worker thread: the chunks' connections all land on it, so the peak below is not
    // each thread's allocator warming up.
    let (fake, proxy, _) = setup_with(2, |c| {
        c.set("server", "workers = 1")
            .set("server", r#"max_upload = "1100MiB""#)
    })
    .await;
    // Warm up (connections, allocator) so the peak below is the upload's alone.
    let warm = upload(&proxy, TEST_TOKEN, &vec![1u8; 8 << 20], 2 << 20).await;
    assert!(warm["name"].is_string());
    let before = peak_rss_kib(proxy.pid());
    assert!(before > 0, "no /proc status");
    let started = start_upload(&proxy, TEST_TOKEN, SIZE).await;
    let url = started.headers()["x-goog-upload-url"]
        .to_str()
        .unwrap_or("")
        .to_string();
    let mut offset = 0;
    let mut last = None;
    while offset < SIZE {
        let len = CHUNK.min(SIZE - offset);
        let pieces = (len / (1 << 20)) as usize;
        let body = futures_util::stream::iter(
            (0..pieces).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![42u8; 1 << 20]))),
        );
        let command = if offset + len == SIZE {
            "upload, finalize"
        } else {
            "upload"
        };
        let answer = client()
            .post(&url)
            .header("x-goog-upload-command", command)
            .header("x-goog-upload-offset", offset.to_string())
            .header("content-length", len.to_string())
            .body(reqwest::Body::wrap_stream(body))
            .send()
            .await
            .expect("chunk");
        assert_eq!(answer.status().as_u16(), 200);
        offset += len;
        last = Some(answer);
    }
    let file: Value = last.expect("answer").json().await.unwrap_or(Value::Null);
    assert_eq!(file["file"]["sizeBytes"], SIZE.to_string());
    assert!(fake.uploaded_bytes() >= SIZE);
    let after = peak_rss_kib(proxy.pid());
    let grew_mib = after.saturating_sub(before) / 1024;
    println!("peak RSS {before} -> {after} KiB");
    assert!(
        grew_mib <= 8,
        "peak RSS grew by {grew_mib} MiB for a {} MiB upload ({before} -> {after} KiB)",
        SIZE >> 20
    );
}

#[tokio::test]
async fn a_file_on_a_removed_key_is_a_clear_error_and_names_are_not_shared() {
    let keys = fake_keys(2);
    let fake = FakeGemini::start().await;
    let config = |keys: &[String]| {
        config_for(&fake.url(), keys)
            .set("models", r#"list = "static""#)
            .set(
                "auth",
                &format!(
                    r#"tokens = ["{TEST_TOKEN}", {{ name = "other", token = "{OTHER_TOKEN}" }}]"#
                ),
            )
    };
    let proxy = Proxy::builder().config(config(&keys)).start().await;
    let file = upload(&proxy, TEST_TOKEN, b"soon orphaned", 1024).await;
    let name = file["name"].as_str().unwrap_or("").to_string();
    let creator = fake.owner_of(&name).expect("creator");

    // A chosen name another token holds is refused before any upstream call.
    let taken = client()
        .post(format!("{}/upload/v1beta/files", proxy.url()))
        .header("x-goog-api-key", OTHER_TOKEN)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", "3")
        .json(&json!({"file": {"name": name}}))
        .send()
        .await
        .expect("start");
    assert_eq!(taken.status().as_u16(), 409);
    let body: Value = taken.json().await.unwrap_or(Value::Null);
    assert_eq!(body["error"]["status"], "ALREADY_EXISTS");

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
    let (status, body, _) = generate_with(&proxy, TEST_TOKEN, file_part(&file), json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["status"], "FAILED_PRECONDITION");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains(&name) && message.contains("no longer in the pool"),
        "{message}"
    );
    assert_eq!(fake.total_hits(), 0, "not rotated to another key");
    // The token's upload group was on the removed key: its next upload goes to one that is
    // left, without an error.
    let next = upload(&proxy, TEST_TOKEN, b"after the reload", 1024).await;
    let placed = fake
        .owner_of(next["name"].as_str().unwrap_or(""))
        .expect("the fake has it");
    assert!(rest.contains(&placed), "{placed} is not in the pool");
}

/// The upload URL of a start as `token` with extra request headers.
async fn upload_url_with(proxy: &Proxy, headers: &[(&str, &str)]) -> String {
    let mut request = client()
        .post(format!("{}/upload/v1beta/files", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .header("x-goog-upload-header-content-length", "3");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .json(&json!({"file": {}}))
        .send()
        .await
        .expect("start");
    assert_eq!(response.status().as_u16(), 200);
    response
        .headers()
        .get("x-goog-upload-url")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn the_upload_url_names_the_proxy_as_its_clients_reach_it() {
    let forwarded = [
        ("x-forwarded-host", "gemini.example.com"),
        ("x-forwarded-proto", "https"),
    ];
    // From an untrusted peer the forwarding headers mean nothing: the Host it asked.
    let (_fake, proxy, _) = setup(1).await;
    let url = upload_url_with(&proxy, &forwarded).await;
    assert!(
        url.starts_with(&format!("{}/upload/session/", proxy.url())),
        "{url}"
    );
    let url = upload_url_with(&proxy, &[("host", "proxy.internal:7860")]).await;
    assert!(
        url.starts_with("http://proxy.internal:7860/upload/session/"),
        "{url}"
    );
    // A Host that could bend the URL is refused.
    let response = client()
        .post(format!("{}/upload/v1beta/files", proxy.url()))
        .header("x-goog-api-key", TEST_TOKEN)
        .header("host", "evil.example/path?x=")
        .header("x-goog-upload-protocol", "resumable")
        .header("x-goog-upload-command", "start")
        .json(&json!({"file": {}}))
        .send()
        .await
        .expect("start");
    assert_eq!(response.status().as_u16(), 400);

    // Behind a trusted proxy: its X-Forwarded-Host and -Proto.
    let (_fake, proxy, _) =
        setup_with(1, |c| c.set("server", r#"trusted_proxies = ["127.0.0.1"]"#)).await;
    let url = upload_url_with(&proxy, &forwarded).await;
    assert!(
        url.starts_with("https://gemini.example.com/upload/session/"),
        "{url}"
    );

    // server.public_url wins over everything.
    let (_fake, proxy, _) = setup_with(1, |c| {
        c.set(
            "server",
            r#"public_url = "https://api.example.org/gemini/""#,
        )
        .set("server", r#"trusted_proxies = ["127.0.0.1"]"#)
    })
    .await;
    let url = upload_url_with(&proxy, &forwarded).await;
    assert!(
        url.starts_with("https://api.example.org/gemini/upload/session/"),
        "{url}"
    );
    let id = url.rsplit('/').next().unwrap_or("");
    assert!(
        id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{id}"
    );
}

#[tokio::test]
async fn a_batch_runs_on_the_key_of_its_input_file_and_its_results_follow() {
    let (fake, proxy, _) = setup(3).await;
    let input = upload(
        &proxy,
        TEST_TOKEN,
        b"{\"key\":\"1\",\"request\":{}}\n",
        1024,
    )
    .await;
    let input_name = input["name"].as_str().unwrap_or("").to_string();
    let creator = fake.owner_of(&input_name).expect("creator");
    let created = proxy
        .post(&format!("/v1beta/models/{MODEL}:batchGenerateContent"))
        .json(
            &json!({"batch": {"displayName": "nightly", "inputConfig": {"fileName": input_name}}}),
        )
        .send()
        .await
        .expect("create batch");
    assert_eq!(created.status().as_u16(), 200);
    let operation: Value = created.json().await.unwrap_or(Value::Null);
    let batch = operation["name"].as_str().expect("batch name").to_string();
    assert!(batch.starts_with("batches/"));
    assert_eq!(fake.owner_of(&batch).as_deref(), Some(creator.as_str()));
    // Polling goes to the same key; the results file it names is the caller's too.
    let polled: Value = proxy
        .get(&format!("/v1beta/{batch}"))
        .send()
        .await
        .expect("poll")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(polled["done"], true, "{polled}");
    let results = polled["response"]["responsesFile"]
        .as_str()
        .expect("results file")
        .to_string();
    let got = proxy
        .get(&format!("/v1beta/{results}"))
        .send()
        .await
        .expect("results");
    assert_eq!(got.status().as_u16(), 200);
    // Its bytes stream back (alt=media), untouched.
    let download = proxy
        .get(&format!("/v1/{results}:download?alt=media"))
        .send()
        .await
        .expect("download");
    assert_eq!(download.status().as_u16(), 200);
    assert_eq!(
        download.headers()["content-type"].to_str().unwrap_or(""),
        "application/octet-stream"
    );
    let bytes = download.bytes().await.expect("bytes");
    let line = format!("{{\"results of\": \"{results}\"}}\n");
    assert_eq!(bytes.len(), line.len() * 1000);
    assert!(bytes.starts_with(line.as_bytes()));
    let last = fake.last_request().expect("download upstream");
    assert_eq!(last.query.as_deref(), Some("alt=media"));
    let listed: Value = proxy
        .get("/v1beta/batches")
        .send()
        .await
        .expect("list")
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(
        listed["operations"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["operations"][0]["name"], batch);
    // Another token reaches neither the batch nor its results.
    for path in [format!("/v1beta/{batch}"), format!("/v1beta/{results}")] {
        let refused = client()
            .get(format!("{}{path}", proxy.url()))
            .header("x-goog-api-key", OTHER_TOKEN)
            .send()
            .await
            .expect("get");
        assert_eq!(refused.status().as_u16(), 404, "{path}");
    }
    let cancelled = proxy
        .post(&format!("/v1beta/{batch}:cancel"))
        .send()
        .await
        .expect("cancel");
    assert_eq!(cancelled.status().as_u16(), 200);
    assert_eq!(fake.permission_denied(), 0);
    assert!(fake
        .requests()
        .iter()
        .filter(|r| r.path.contains("batch"))
        .all(|r| r.key.as_deref() == Some(creator.as_str())));
}
