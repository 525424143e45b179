//! Context caches (`cachedContents`), with Google's shapes: `create` answers the resource
//! (`name: cachedContents/…`, `model`, `createTime`, `updateTime`, `expireTime` from `ttl`,
//! default one hour, `usageMetadata.totalTokenCount`); `get`, `list`, `patch` (a new `ttl`)
//! and `delete`. A cache belongs to its key's project (see `files.rs`); the files a create
//! names must be that project's too.

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::errors::google_error;
use super::files::{refuse_foreign, rfc3339};
use super::{lock, Shared};

fn ttl(body: Option<&Value>) -> Duration {
    body.and_then(|b| b.get("ttl"))
        .and_then(Value::as_str)
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse::<f64>().ok())
        .map_or(Duration::from_secs(3600), Duration::from_secs_f64)
}

pub(super) fn caches(
    shared: &Shared,
    method: &http::Method,
    rest: Option<&str>,
    key: &str,
    body: Option<&Value>,
) -> Response<FakeBody> {
    let now = SystemTime::now();
    match (method.as_str(), rest) {
        ("POST", None) => {
            if let Some(refused) = refuse_foreign(shared, key, body) {
                return refused;
            }
            let Some(model) = body.and_then(|b| b.get("model")).and_then(Value::as_str) else {
                return json_response(
                    400,
                    &google_error(400, "INVALID_ARGUMENT", "model is required.", vec![]),
                );
            };
            let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
            let name = format!("cachedContents/fakecache{n:06}");
            let cache = json!({
                "name": name,
                "model": model,
                "createTime": rfc3339(now),
                "updateTime": rfc3339(now),
                "expireTime": rfc3339(now + ttl(body)),
                "displayName": body.and_then(|b| b.get("displayName")).cloned().unwrap_or(json!("")),
                "usageMetadata": {"totalTokenCount": 4096},
            });
            let mut projects = lock(&shared.projects);
            let project = projects.project(key);
            projects.resources.insert(name, (project, cache.clone()));
            json_response(200, &cache)
        }
        ("GET", None) => {
            let projects = lock(&shared.projects);
            let project = projects.project(key);
            let caches: Vec<&Value> = projects
                .resources
                .iter()
                .filter(|(n, (p, _))| n.starts_with("cachedContents/") && *p == project)
                .map(|(_, (_, v))| v)
                .collect();
            json_response(200, &json!({ "cachedContents": caches }))
        }
        (method, Some(id)) => {
            let name = format!("cachedContents/{id}");
            let mut projects = lock(&shared.projects);
            let cache = match projects.get(key, &name, "CachedContent") {
                Ok(cache) => cache,
                Err(refused) => {
                    shared.permission_denied.fetch_add(1, Ordering::SeqCst);
                    return *refused;
                }
            };
            match method {
                "GET" => json_response(200, &cache),
                "PATCH" => {
                    let mut cache = cache;
                    cache["expireTime"] = json!(rfc3339(now + ttl(body)));
                    cache["updateTime"] = json!(rfc3339(now));
                    let project = projects.project(key);
                    projects.resources.insert(name, (project, cache.clone()));
                    json_response(200, &cache)
                }
                "DELETE" => {
                    projects.resources.remove(&name);
                    json_response(200, &json!({}))
                }
                _ => json_response(
                    404,
                    &google_error(404, "NOT_FOUND", "Method not found.", vec![]),
                ),
            }
        }
        _ => json_response(
            404,
            &google_error(404, "NOT_FOUND", "Method not found.", vec![]),
        ),
    }
}
