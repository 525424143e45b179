//! Google's error replies, built from the anatomy of the real ones (`QuotaFailure`,
//! `RetryInfo`, `Help`, `ErrorInfo`, `BadRequest`…): the `Reply` presets for quota, key, model
//! and resource refusals and server faults, `google_error` for any other body, and the 400 the
//! fake itself answers to invalid JSON. New error presets go here.

use http::Response;
use serde_json::{json, Value};

use super::body::{json_response, FakeBody};
use super::Reply;

const HELP_URL: &str = "https://ai.google.dev/gemini-api/docs/rate-limits";

/// A Google error body: `{"error": {code, message, status, details?}}`.
pub fn google_error(code: u16, status: &str, message: &str, details: Vec<Value>) -> Value {
    let mut error = json!({ "code": code, "message": message, "status": status });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json!({ "error": error })
}

impl Reply {
    fn google(status: u16, body: Value) -> Reply {
        Reply::Json {
            status,
            body,
            headers: Vec::new(),
            google_error: true,
        }
    }

    /// 429: per-minute free-tier quota (QuotaFailure `…PerMinute…`, Help, optional RetryInfo).
    pub fn quota_per_minute(model: &str, retry_delay: Option<&str>) -> Reply {
        let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        let mut message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: {HELP_URL}. To monitor your current usage, head \
             to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, \
             limit: 2, model: {model}"
        );
        let mut details = vec![
            json!({ "@type": "type.googleapis.com/google.rpc.DebugInfo",
                    "detail": "[ORIGINAL ERROR] generic::resource_exhausted: Resource has been exhausted (e.g. check quota)." }),
            quota_failure(
                metric,
                "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                model,
                Some("2"),
            ),
            help_detail(),
        ];
        if let Some(delay) = retry_delay {
            let secs = delay.trim_end_matches('s');
            message.push_str(&format!("\nPlease retry in {secs}s."));
            details.push(retry_info(delay));
        }
        Reply::google(
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &message, details),
        )
    }

    /// 429: per-day free-tier quota. Like the real ones, it carries a short RetryInfo (38s):
    /// classifying by the delay alone gets this wrong.
    pub fn quota_per_day(model: &str) -> Reply {
        let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        let message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: {HELP_URL}. To monitor your current usage, head \
             to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, \
             limit: 250, model: {model}\nPlease retry in 38.415612318s."
        );
        let details = vec![
            help_detail(),
            quota_failure(
                metric,
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                model,
                Some("250"),
            ),
            retry_info("38s"),
        ];
        Reply::google(
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &message, details),
        )
    }

    /// 429 with "limit: 0": the model has no quota at all on this key's project and tier.
    pub fn no_quota(model: &str) -> Reply {
        let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
        let message = format!(
            "You exceeded your current quota, please check your plan and billing details. For more \
             information on this error, head to: {HELP_URL}. To monitor your current usage, head \
             to: https://ai.dev/usage?tab=rate-limit. \n* Quota exceeded for metric: {metric}, \
             limit: 0, model: {model}\n* Quota exceeded for metric: {metric}, limit: 0, model: \
             {model}\nPlease retry in 47.517970178s."
        );
        let details = vec![
            help_detail(),
            json!({ "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                { "quotaMetric": metric, "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                  "quotaDimensions": { "model": model, "location": "global" } },
                { "quotaMetric": metric, "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                  "quotaDimensions": { "model": model, "location": "global" } }
            ]}),
            retry_info("47s"),
        ];
        Reply::google(
            429,
            google_error(429, "RESOURCE_EXHAUSTED", &message, details),
        )
    }

    /// 400 INVALID_ARGUMENT with ErrorInfo `API_KEY_INVALID`.
    pub fn api_key_invalid() -> Reply {
        let message = "API key not valid. Please pass a valid API key.";
        Reply::google(
            400,
            google_error(
                400,
                "INVALID_ARGUMENT",
                message,
                vec![
                    json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID", "domain": "googleapis.com",
                            "metadata": { "service": "generativelanguage.googleapis.com" } }),
                    json!({ "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
                            "locale": "en-US", "message": message }),
                ],
            ),
        )
    }

    /// 403 PERMISSION_DENIED: the key was reported as leaked.
    pub fn leaked_key() -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Your API key was reported as leaked. Please use another API key.",
                vec![],
            ),
        )
    }

    /// 403 PERMISSION_DENIED: the request carried no key.
    pub fn unregistered_caller() -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Method doesn't allow unregistered callers (callers without established \
                 identity). Please use API Key or other form of API consumer identity to call \
                 this API.",
                vec![],
            ),
        )
    }

    /// 503 UNAVAILABLE: the model (not the key) is overloaded.
    pub fn overloaded() -> Reply {
        Reply::google(
            503,
            google_error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
                vec![],
            ),
        )
    }

    /// 500 INTERNAL.
    pub fn internal() -> Reply {
        Reply::google(
            500,
            google_error(
                500,
                "INTERNAL",
                "An internal error has occurred. Please retry or report in \
                 https://developers.generativeai.google/guide/troubleshooting",
                vec![],
            ),
        )
    }

    /// 400 INVALID_ARGUMENT with `message` (the client's fault).
    pub fn bad_request(message: &str) -> Reply {
        Reply::google(400, google_error(400, "INVALID_ARGUMENT", message, vec![]))
    }

    /// 404 NOT_FOUND for an unknown model.
    pub fn model_not_found(model: &str) -> Reply {
        Reply::google(
            404,
            google_error(
                404,
                "NOT_FOUND",
                &format!(
                    "models/{model} is not found for API version v1beta, or is not supported for \
                     generateContent. Call ListModels to see the list of available models and \
                     their supported methods."
                ),
                vec![],
            ),
        )
    }

    /// A 200 SSE stream: the `before` events, then one event holding `error`'s body (a JSON
    /// reply such as [`Reply::overloaded`]), then EOF.
    pub fn error_in_stream(before: Vec<Value>, error: Reply) -> Reply {
        let mut events = before;
        events.push(error.body().clone());
        Reply::stream(events)
    }
}

fn quota_failure(metric: &str, quota_id: &str, model: &str, value: Option<&str>) -> Value {
    let mut v = json!({ "quotaMetric": metric, "quotaId": quota_id,
                        "quotaDimensions": { "location": "global", "model": model } });
    if let Some(value) = value {
        v["quotaValue"] = json!(value);
    }
    json!({ "@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [v] })
}

fn help_detail() -> Value {
    json!({ "@type": "type.googleapis.com/google.rpc.Help",
            "links": [{ "description": "Learn more about Gemini API quotas", "url": HELP_URL }] })
}

fn retry_info(delay: &str) -> Value {
    json!({ "@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay })
}

pub(super) fn invalid_json(message: &str) -> Response<FakeBody> {
    json_response(
        400,
        &google_error(
            400,
            "INVALID_ARGUMENT",
            message,
            vec![
                json!({ "@type": "type.googleapis.com/google.rpc.BadRequest",
                         "fieldViolations": [{ "description": message }] }),
            ],
        ),
    )
}

/// 403 shapes (issue #14): what Google answers when a key, a model or a named resource is
/// refused. Bodies follow Google's `PERMISSION_DENIED` errors with `ErrorInfo` details.
impl Reply {
    /// 403: the key may not use `model` (a free-tier key asking for a model its tier lacks);
    /// ErrorInfo names the model as the resource. The key itself is fine for other models.
    pub fn model_denied(model: &str) -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "Permission denied on resource models/{model}: the caller does not have \
                     access to this model on its current tier."
                ),
                vec![json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": "IAM_PERMISSION_DENIED", "domain": "googleapis.com",
                             "metadata": { "resource": format!("models/{model}"),
                                           "permission": "generativelanguage.models.generateContent",
                                           "service": "generativelanguage.googleapis.com" } })],
            ),
        )
    }

    /// 403: the request names a file another project uploaded (the client's error).
    pub fn file_denied(file: &str) -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                &format!(
                    "You do not have permission to access the File {file} or it may not exist."
                ),
                vec![],
            ),
        )
    }

    /// 403: the request names a cached content the key's project cannot see.
    pub fn cached_content_denied() -> Reply {
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "CachedContent not found (or permission denied)",
                vec![],
            ),
        )
    }

    /// 403: the Generative Language API is disabled in the key's project (`SERVICE_DISABLED`).
    pub fn service_disabled() -> Reply {
        let project = "projects/000000000000";
        Reply::google(
            403,
            google_error(
                403,
                "PERMISSION_DENIED",
                "Generative Language API has not been used in project 000000000000 before or it \
                 is disabled. Enable it by visiting https://console.developers.google.com/apis/\
                 api/generativelanguage.googleapis.com/overview?project=000000000000 then retry. \
                 If you enabled this API recently, wait a few minutes for the action to propagate \
                 to our systems and retry.",
                vec![json!({ "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                             "reason": "SERVICE_DISABLED", "domain": "googleapis.com",
                             "metadata": { "consumer": project,
                                           "service": "generativelanguage.googleapis.com",
                                           "serviceTitle": "Generative Language API",
                                           "containerInfo": "000000000000" } })],
            ),
        )
    }
}
