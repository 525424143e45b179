//! Batch jobs (`batches`), with Google's shapes: `models/{m}:batchGenerateContent` answers a
//! long-running `Operation` named `batches/{id}` whose `metadata` is the batch
//! (`state: BATCH_STATE_PENDING`); `batches.get` answers it finished
//! (`BATCH_STATE_SUCCEEDED`, `done: true`) with its results in a file Google made in the same
//! project (`output.responsesFile` / `response.responsesFile`); `list` (`operations`),
//! `:cancel` and `delete`. A batch, its input file and its results belong to the key's project
//! (see `files.rs`).

use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::errors::google_error;
use super::files::{refuse_foreign, rfc3339};
use super::{lock, Shared};

const BATCH_TYPE: &str =
    "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatch";

/// `POST models/{model}:batchGenerateContent`.
pub(super) fn create(
    shared: &Shared,
    model: &str,
    key: &str,
    body: Option<&Value>,
) -> Response<FakeBody> {
    if let Some(refused) = refuse_foreign(shared, key, body) {
        return refused;
    }
    let batch = body.and_then(|b| b.get("batch"));
    let Some(input) = batch.and_then(|b| b.get("inputConfig").or_else(|| b.get("input_config")))
    else {
        return json_response(
            400,
            &google_error(
                400,
                "INVALID_ARGUMENT",
                "batch.inputConfig is required.",
                vec![],
            ),
        );
    };
    let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let id = format!("fakebatch{n:06}");
    let name = format!("batches/{id}");
    let results = format!("files/batch-{id}");
    let now = SystemTime::now();
    let metadata = json!({
        "@type": BATCH_TYPE,
        "model": format!("models/{model}"),
        "displayName": batch.and_then(|b| b.get("displayName")).cloned().unwrap_or(json!("")),
        "inputConfig": input,
        "createTime": rfc3339(now),
        "updateTime": rfc3339(now),
        "state": "BATCH_STATE_PENDING",
        "name": name,
    });
    let operation = json!({ "name": name, "metadata": metadata });
    let mut projects = lock(&shared.projects);
    let project = projects.project(key);
    // The job runs at once: its results file exists in the same project.
    let file = json!({
        "name": results,
        "mimeType": "application/jsonl",
        "sizeBytes": "42",
        "createTime": rfc3339(now),
        "expirationTime": rfc3339(now + Duration::from_secs(48 * 3600)),
        "uri": format!("{}/v1beta/{results}", shared.base),
        "state": "ACTIVE",
        "source": "GENERATED",
    });
    projects
        .resources
        .insert(results.clone(), (project.clone(), file));
    let mut done = operation.clone();
    done["metadata"]["state"] = json!("BATCH_STATE_SUCCEEDED");
    done["metadata"]["output"] = json!({ "responsesFile": results });
    done["done"] = json!(true);
    done["response"] = json!({
        "@type": "type.googleapis.com/google.ai.generativelanguage.v1main.GenerateContentBatchOutput",
        "responsesFile": results,
    });
    projects.resources.insert(name, (project, done));
    json_response(200, &operation)
}

/// `batches.get`, `batches.list`, `:cancel`, `delete`.
pub(super) fn batches(
    shared: &Shared,
    method: &http::Method,
    rest: Option<&str>,
    key: &str,
) -> Response<FakeBody> {
    let mut projects = lock(&shared.projects);
    match (method.as_str(), rest) {
        ("GET", None) => {
            let project = projects.project(key);
            let operations: Vec<&Value> = projects
                .resources
                .iter()
                .filter(|(n, (p, _))| n.starts_with("batches/") && *p == project)
                .map(|(_, (_, v))| v)
                .collect();
            json_response(200, &json!({ "operations": operations }))
        }
        (method, Some(rest)) => {
            let (id, action) = rest.split_once(':').unwrap_or((rest, ""));
            let name = format!("batches/{id}");
            let batch = match projects.get(key, &name, "Batch") {
                Ok(batch) => batch,
                Err(refused) => {
                    shared.permission_denied.fetch_add(1, Ordering::SeqCst);
                    return *refused;
                }
            };
            match (method, action) {
                ("GET", "") => json_response(200, &batch),
                ("POST", "cancel") => json_response(200, &json!({})),
                ("DELETE", "") => {
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
