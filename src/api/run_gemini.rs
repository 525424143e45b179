//! `POST /run-gemini`: one prompt through the pool, answered in the seed tool's shape
//! (`{command_executed, stdout, stderr, exit_code, execution_time, success, api_key_used}`).
//!
//! The seed ran the Gemini CLI; here `command` is the prompt and the "run" is one
//! non-streaming chat completion (same aliases, safety settings, key rotation and failover as
//! `/v1/chat/completions`). A malformed request is a 400 in OpenAI's error shape; a run that
//! fails upstream is still a 200 whose body says `success: false`, with the error in `stderr`
//! and a non-zero `exit_code`, as a command that failed would.

use std::sync::Arc;
use std::time::Instant;

use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::access::Caller;
use crate::api::chat::{complete, from_translate, Answer};
use crate::api::{allowed_chain, clean_model_name, resolve};
use crate::body::json_response;
use crate::body::{read_body, Reply};
use crate::error::ProxyError;
use crate::request_log::RequestLog;
use crate::state::{App, Snapshot};
use crate::translate::chat;

/// The model when the request names none (the Gemini CLI's default family).
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";

#[derive(Deserialize)]
struct RunRequest {
    command: String,
    #[serde(default)]
    model: Option<String>,
}

pub async fn run(
    app: &Arc<App>,
    snap: &Arc<Snapshot>,
    caller: &Caller,
    req: Request<Incoming>,
    log: &mut RequestLog,
) -> Result<Reply, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let run: RunRequest = serde_json::from_slice(&body).map_err(|e| {
        ProxyError::bad_request(format!(
            "invalid request body: {}",
            crate::excerpt::serde_error(&e)
        ))
    })?;
    if run.command.trim().is_empty() {
        return Err(ProxyError::BadRequest {
            message: "`command` must not be empty".into(),
            param: Some("command".into()),
        });
    }
    let model = run
        .model
        .filter(|m| !m.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_MODEL.to_string());
    let chat = json!({
        "model": model,
        "messages": [{"role": "user", "content": run.command}],
    });
    let chat = chat.to_string();
    let request = chat::parse_chat_request(chat.as_bytes()).map_err(from_translate)?;
    // Bad input is refused here, as a 400; from now on every failure is a failed run.
    let requested = clean_model_name(&model)?;
    allowed_chain(caller, requested, resolve(&snap.config.models, requested))?;

    let started = Instant::now();
    let result = match complete(app, snap, caller, &request, log).await {
        Ok(Answer::Whole(body)) => answer_text(&body),
        Ok(Answer::Streaming(_)) => Err(ProxyError::Internal(
            "a non-streaming request was streamed".into(),
        )),
        Err(e) => Err(e),
    };
    let execution_time = started.elapsed().as_secs_f64();
    let api_key_used = log.key.as_deref().map(str::to_string);
    let (stdout, stderr, exit_code) = match result {
        Ok(text) => (text, String::new(), 0),
        Err(e) => {
            let message = e.client_message();
            log.error = Some(message.clone());
            (String::new(), message, 1)
        }
    };
    Ok(Reply::Done(json_response(
        StatusCode::OK,
        &json!({
            "command_executed": run.command,
            "model": model,
            "stdout": stdout,
            "stderr": stderr,
            "exit_code": exit_code,
            "execution_time": (execution_time * 1000.0).round() / 1000.0,
            "success": exit_code == 0,
            "api_key_used": api_key_used,
        }),
    )))
}

/// The assistant text of a `chat.completion` body.
fn answer_text(body: &[u8]) -> Result<String, ProxyError> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ProxyError::Internal(format!("unreadable translated answer: {e}")))?;
    Ok(value["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string())
}
