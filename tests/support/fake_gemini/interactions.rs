//! The Interactions API (`/v1beta/interactions`), with Google's shapes: a create names a
//! `model` or an `agent` and an `input`, answers the `Interaction` (`id`, `object:
//! "interaction"`, `status`, `steps` ending in a `model_output` step, `usage`) or, with
//! `stream: true`, Server-Sent Events (`event: interaction.created`, `interaction.status_update`,
//! `step.start`, `step.delta`…, `step.stop`, `interaction.completed`), each event's JSON
//! carrying `event_type` and its `event_id`. `get` answers the stored interaction, or with
//! `stream=true` replays its events after `last_event_id`; `cancel` (`/cancel` or `:cancel`)
//! stops a `background` one still in progress; `delete` forgets it. A create with
//! `store: false` is not kept.
//!
//! An interaction belongs to its key's project (see `files.rs`): another project's key naming
//! it (in the path or as `previous_interaction_id`), or a file of another project in a content
//! block's `uri`, gets Google's 403 PERMISSION_DENIED.
//! Quota and other scripted errors for a create are the mod's (it consults the scripts first).

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use http::Response;
use serde_json::{json, Value};

use super::body::{full, json_response, FakeBody, SSE_CT};
use super::errors::google_error;
use super::files::{refuse_foreign, rfc3339};
use super::generate::default_text;
use super::{lock, Shared};

fn invalid(message: &str) -> Response<FakeBody> {
    json_response(400, &google_error(400, "INVALID_ARGUMENT", message, vec![]))
}

fn not_found() -> Response<FakeBody> {
    json_response(
        404,
        &google_error(404, "NOT_FOUND", "Method not found.", vec![]),
    )
}

/// `/v1beta/interactions[/{id}[/cancel]]`, any method.
pub(super) fn interactions(
    shared: &Shared,
    method: &http::Method,
    rest: Option<&str>,
    key: &str,
    body: Option<&Value>,
    query: &std::collections::HashMap<String, String>,
) -> Response<FakeBody> {
    match (method.as_str(), rest) {
        ("POST", None) => create(shared, key, body),
        (method, Some(rest)) => {
            let (id, action) = match rest.split_once('/') {
                Some((id, action)) => (id, action),
                None => rest.split_once(':').unwrap_or((rest, "")),
            };
            let name = format!("interactions/{id}");
            let mut projects = lock(&shared.projects);
            let mut interaction = match projects.get(key, &name, "Interaction") {
                Ok(found) => found,
                Err(refused) => {
                    shared.permission_denied.fetch_add(1, Ordering::SeqCst);
                    return *refused;
                }
            };
            match (method, action) {
                ("GET", "") if query.get("stream").map(String::as_str) == Some("true") => {
                    let events = projects.events.get(&name).cloned().unwrap_or_default();
                    let after = query.get("last_event_id");
                    let start = match after {
                        Some(after) => match events
                            .iter()
                            .position(|e| e.get("event_id").and_then(Value::as_str) == Some(after))
                        {
                            Some(i) => i + 1,
                            None => {
                                return invalid(
                                    "last_event_id does not name an event of this interaction.",
                                )
                            }
                        },
                        None => 0,
                    };
                    sse(&events[start..])
                }
                ("GET", "") => {
                    // A background interaction finishes by the time anyone looks again.
                    if interaction["status"] == "in_progress" {
                        interaction["status"] = json!("completed");
                        interaction["updated"] = json!(rfc3339(SystemTime::now()));
                        if let Some((_, stored)) = projects.resources.get_mut(&name) {
                            *stored = interaction.clone();
                        }
                    }
                    json_response(200, &interaction)
                }
                ("POST", "cancel") => {
                    if interaction["status"] != "in_progress" {
                        return json_response(
                            400,
                            &google_error(
                                400,
                                "FAILED_PRECONDITION",
                                "Only background interactions that are in progress can be cancelled.",
                                vec![],
                            ),
                        );
                    }
                    interaction["status"] = json!("cancelled");
                    interaction["updated"] = json!(rfc3339(SystemTime::now()));
                    if let Some((_, stored)) = projects.resources.get_mut(&name) {
                        *stored = interaction.clone();
                    }
                    json_response(200, &interaction)
                }
                ("DELETE", "") => {
                    projects.resources.remove(&name);
                    projects.events.remove(&name);
                    json_response(200, &json!({}))
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

/// `POST /v1beta/interactions`.
fn create(shared: &Shared, key: &str, body: Option<&Value>) -> Response<FakeBody> {
    let Some(body) = body.filter(|b| b.is_object()) else {
        return invalid("Invalid JSON payload received.");
    };
    let model = body.get("model").and_then(Value::as_str);
    let agent = body.get("agent").and_then(Value::as_str);
    let who = match (model, agent) {
        (Some(m), None) => m,
        (None, Some(a)) => a,
        _ => return invalid("Exactly one of model or agent must be set."),
    };
    if body.get("input").is_none() && body.get("previous_interaction_id").is_none() {
        return invalid("input is required.");
    }
    // A content block's `uri` naming another project's file: Google's 403.
    if let Some(refused) = refuse_foreign(shared, key, Some(body)) {
        return refused;
    }
    let mut projects = lock(&shared.projects);
    if let Some(previous) = body.get("previous_interaction_id").and_then(Value::as_str) {
        if let Err(refused) = projects.get(key, &format!("interactions/{previous}"), "Interaction")
        {
            shared.permission_denied.fetch_add(1, Ordering::SeqCst);
            return *refused;
        }
    }
    let n = shared.next_id.fetch_add(1, Ordering::SeqCst);
    let id = format!("v1_fakeInteraction{n:06}");
    let now = rfc3339(SystemTime::now());
    let text = default_text(who, key);
    let background = body.get("background").and_then(Value::as_bool) == Some(true);
    let store = body.get("store").and_then(Value::as_bool) != Some(false);
    let stream = body.get("stream").and_then(Value::as_bool) == Some(true);
    let mut interaction = json!({
        "id": id,
        "object": "interaction",
        "status": "completed",
        "created": now,
        "updated": now,
        "role": "model",
        "steps": [
            {"type": "user_input", "content": [{"type": "text", "text": input_text(body)}]},
            {"type": "model_output", "content": [{"type": "text", "text": text}]},
        ],
        "usage": {"total_input_tokens": 8, "total_output_tokens": 12, "total_tokens": 20},
    });
    match (model, agent) {
        (Some(m), _) => interaction["model"] = json!(m),
        (_, Some(a)) => interaction["agent"] = json!(a),
        _ => {}
    }
    if let Some(previous) = body.get("previous_interaction_id") {
        interaction["previous_interaction_id"] = previous.clone();
    }
    let events = events_of(&interaction, &text);
    if background {
        interaction["status"] = json!("in_progress");
    }
    if store {
        let project = projects.project(key);
        let name = format!("interactions/{id}");
        projects
            .resources
            .insert(name.clone(), (project, interaction.clone()));
        projects.events.insert(name, events.clone());
    }
    if stream {
        sse(&events)
    } else {
        json_response(200, &interaction)
    }
}

/// The create's input as one text (a string, or the texts of its content blocks).
fn input_text(body: &Value) -> String {
    match body.get("input") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            let mut texts = Vec::new();
            collect_texts(other, &mut texts, 0);
            texts.join("\n")
        }
        None => String::new(),
    }
}

fn collect_texts(value: &Value, out: &mut Vec<String>, depth: usize) {
    if depth > 8 {
        return;
    }
    match value {
        Value::Object(map) => {
            if let Some(Value::String(t)) = map.get("text") {
                out.push(t.clone());
            }
            for v in map.values() {
                collect_texts(v, out, depth + 1);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_texts(v, out, depth + 1)),
        _ => {}
    }
}

/// The stream of a finished interaction, as Google sends it with steps enabled: created (in
/// progress, no steps), a status update, the output step's start, its text in two deltas, its
/// stop, and completed (no steps: the deltas carry the output). Event ids are `evt_{n}`.
fn events_of(interaction: &Value, text: &str) -> Vec<Value> {
    let id = interaction["id"].clone();
    let mut shell = interaction.clone();
    if let Some(map) = shell.as_object_mut() {
        map.remove("steps");
        map.remove("usage");
        map.remove("previous_interaction_id");
    }
    let mut created = shell.clone();
    created["status"] = json!("in_progress");
    let mut completed = shell;
    completed["usage"] = interaction["usage"].clone();
    let cut = text
        .char_indices()
        .nth(text.chars().count() / 2)
        .map_or(0, |(i, _)| i);
    let (a, b) = text.split_at(cut);
    let mut events = vec![
        json!({"event_type": "interaction.created", "interaction": created}),
        json!({"event_type": "interaction.status_update", "interaction_id": id, "status": "in_progress"}),
        json!({"event_type": "step.start", "index": 0, "step": {"type": "model_output"}}),
        json!({"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": a}}),
        json!({"event_type": "step.delta", "index": 0, "delta": {"type": "text", "text": b}}),
        json!({"event_type": "step.stop", "index": 0}),
        json!({"event_type": "interaction.completed", "interaction": completed}),
    ];
    for (i, event) in events.iter_mut().enumerate() {
        event["event_id"] = json!(format!("evt_{}", i + 1));
    }
    events
}

/// Events as Google frames them: `event: {event_type}` and one `data:` line each.
fn sse(events: &[Value]) -> Response<FakeBody> {
    let mut out = String::new();
    for event in events {
        let kind = event["event_type"].as_str().unwrap_or("message");
        out.push_str(&format!("event: {kind}\ndata: {event}\n\n"));
    }
    full(200, SSE_CT, Bytes::from(out), &[])
}
