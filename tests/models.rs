//! `/v1/models`: Gemini's list (every page, cached) plus aliases, or a static list.

mod support;

use serde_json::Value;
use support::*;

async fn get(proxy: &Proxy, path: &str) -> (u16, Value) {
    let response = proxy.get(path).send().await.expect("request");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn ids(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .map(|d| {
            d.iter()
                .filter_map(|m| m["id"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn lists_every_page_plus_aliases_and_caches() {
    let many: Vec<String> = (0..1205).map(|i| format!("gemini-test-{i:04}")).collect();
    let many_refs: Vec<&str> = many.iter().map(String::as_str).collect();
    let fake = FakeGemini::builder().models(&many_refs).start().await;
    let proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &[fake_key(1)])
                .set("models.aliases", r#""fast" = "gemini-test-0001""#),
        )
        .start()
        .await;

    let (status, list) = get(&proxy, "/v1/models").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["object"], "list");
    let got = ids(&list);
    assert_eq!(got.len(), 1206, "two pages of models plus one alias");
    assert_eq!(got[0], "fast");
    assert!(
        got.contains(&"gemini-test-1204".to_string()),
        "the second page is included"
    );
    assert!(got.iter().all(|id| !id.starts_with("models/")));
    let first = &list["data"][1];
    assert_eq!(first["object"], "model");
    assert!(first["created"].as_u64().is_some() && first["owned_by"].is_string());

    let pages = fake.hits_for_model("");
    assert_eq!(pages, 2);
    let (_, again) = get(&proxy, "/v1/models").await;
    assert_eq!(ids(&again).len(), 1206);
    assert_eq!(fake.hits_for_model(""), pages, "served from cache");
}

#[tokio::test]
async fn gets_one_model_or_404() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &[fake_key(1)])
                .set("models.aliases", r#""gpt-4o" = "gemini-2.5-pro""#),
        )
        .start()
        .await;
    let (status, model) = get(&proxy, "/v1/models/gemini-2.5-flash").await;
    assert_eq!(
        (status, model["id"].as_str()),
        (200, Some("gemini-2.5-flash"))
    );
    let (status, model) = get(&proxy, "/v1/models/gpt-4o").await;
    assert_eq!((status, model["id"].as_str()), (200, Some("gpt-4o")));
    let (status, err) = get(&proxy, "/v1/models/no-such-model").await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["type"], "invalid_request_error");
}

#[tokio::test]
async fn static_list_needs_no_upstream() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(
            config_for(&fake.url(), &[fake_key(1)])
                .set("models", r#"list = "static""#)
                .set(
                    "models",
                    r#"static = ["gemini-2.5-pro", "gemini-2.5-flash"]"#,
                )
                .set("models.aliases", r#""fast" = "gemini-2.5-flash""#),
        )
        .start()
        .await;
    let (status, list) = get(&proxy, "/v1/models").await;
    assert_eq!(status, 200);
    assert_eq!(ids(&list), ["fast", "gemini-2.5-pro", "gemini-2.5-flash"]);
    assert_eq!(fake.total_hits(), 0);
}

#[tokio::test]
async fn token_model_globs_filter_the_list() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[fake_key(1)]).set(
            "auth",
            &format!(r#"tokens = [{{ name = "narrow", token = "{TEST_TOKEN}", models = ["gemini-2.5-*"] }}]"#),
        ))
        .start()
        .await;
    let (status, list) = get(&proxy, "/v1/models").await;
    assert_eq!(status, 200, "{list}");
    let got = ids(&list);
    assert!(
        !got.is_empty() && got.iter().all(|id| id.starts_with("gemini-2.5-")),
        "{got:?}"
    );
}

/// The native `models.get` of an alias: its first model as Google describes it, named as the
/// alias (google-genai's `models.get("fast")`); a plain model and an unknown one as Google
/// answers them.
#[tokio::test]
async fn native_get_of_an_alias_describes_its_model() {
    let fake = FakeGemini::start().await;
    let proxy = Proxy::builder()
        .config(config_for(&fake.url(), &[fake_key(1)]).set(
            "models.aliases",
            r#""fast" = { models = ["gemini-2.5-flash", "gemini-2.5-pro"] }"#,
        ))
        .start()
        .await;
    let (status, model) = get(&proxy, "/v1beta/models/fast").await;
    assert_eq!(status, 200, "{model}");
    assert_eq!(model["name"], "models/fast");
    assert_eq!(model["baseModelId"], "gemini-2.5-flash");
    assert_eq!(model["inputTokenLimit"], 1_048_576);
    let seen = fake.last_request().expect("the upstream was asked");
    assert!(
        seen.path.ends_with("/models/gemini-2.5-flash"),
        "{}",
        seen.path
    );
    let (status, model) = get(&proxy, "/v1beta/models/gemini-2.5-pro").await;
    assert_eq!(
        (status, model["name"].as_str()),
        (200, Some("models/gemini-2.5-pro"))
    );
    let (status, err) = get(&proxy, "/v1beta/models/no-such-model").await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["status"], "NOT_FOUND");
}
