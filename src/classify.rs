//! Turns a Google response (status and body) into an `Outcome`. This is the only code that reads
//! Google's error details (`QuotaFailure`, `RetryInfo`, `ErrorInfo`) and the only code that
//! decides what a status code means for a key.
//!
//! It must not panic on any body (upstream bytes are untrusted), must not decide per-day versus
//! per-minute from a retry delay alone (Google sends short delays with per-day quota errors), and
//! must never put a key into a reason string. It keeps no state and reads no clock.

use std::time::Duration;

use serde_json::Value;

use crate::pool::Outcome;

/// Longest reason kept from a Google message; reasons end up in `/status` and logs.
const MAX_REASON: usize = 200;

pub fn classify(status: u16, body: &[u8]) -> Outcome {
    if (200..300).contains(&status) {
        return Outcome::Success;
    }
    let err = GoogleError::parse(body);
    match status {
        429 => classify_429(&err),
        400 if err.key_invalid() => Outcome::KeyInvalid {
            reason: err.reason(status),
        },
        // The only credential the proxy sends is the key: Google not accepting it is the key's.
        401 => Outcome::KeyInvalid {
            reason: err.reason(status),
        },
        403 => classify_403(&err),
        503 if err.message.to_ascii_lowercase().contains("overloaded") => Outcome::Overloaded,
        408 | 500..=599 => Outcome::Transient {
            reason: err.reason(status),
        },
        400..=499 => Outcome::ClientError,
        // 1xx/3xx never come from generativelanguage; treat them as a broken exchange so another
        // key is tried rather than handing the client something it cannot use.
        _ => Outcome::Transient {
            reason: err.reason(status),
        },
    }
}

/// `classify` for a call pinned to the key that created the resource it names: a 401/403 there
/// is about the resource (gone, or another project's view of it), never grounds to disable the
/// key or rest it for the model, since no other key could serve the call anyway.
pub fn classify_pinned(status: u16, body: &[u8]) -> Outcome {
    match classify(status, body) {
        Outcome::KeyInvalid { .. } | Outcome::ModelDenied { .. } if status == 403 => {
            Outcome::ClientError
        }
        other => other,
    }
}

/// A Live API WebSocket that Google closed before `setupComplete` (or during a session), as the
/// HTTP status Google gives the same error on its REST methods: a close reason that speaks of
/// quota is a 429 (Google closes with 1011 for it), 1007 (invalid argument, an invalid key
/// among them) a 400, 1008 (a policy refusal: the model, the method) a 403's client side, a
/// 404; 1013 and 1001 a 503; anything else (1011, an abnormal close) a 500.
pub fn close_status(code: u16, reason: &str) -> u16 {
    let lower = reason.to_ascii_lowercase();
    if lower.contains("quota")
        || lower.contains("resource_exhausted")
        || lower.contains("rate limit")
    {
        return 429;
    }
    match code {
        1007 => 400,
        1008 => 404,
        1001 | 1013 => 503,
        _ => 500,
    }
}

/// `classify` for a Live API close: the close's reason read as Google's error message under
/// its REST status (`close_status`), so an invalid key disables that key, quota rests it, and
/// the client's own mistakes touch no key.
pub fn classify_close(code: u16, reason: &str) -> Outcome {
    let status = close_status(code, reason);
    let body = serde_json::json!({"error": {"code": status, "message": reason}}).to_string();
    classify(status, body.as_bytes())
}

/// One event of a 200 stream (SSE data, bare JSON, or an element of the JSON-array stream):
/// `None` when it is not an error, else what the error means for the key, classified like the
/// same error with its own status code. Cheap for ordinary events, which never parse twice.
pub fn classify_event(event: &[u8]) -> Option<Outcome> {
    // Most events carry no error: one SIMD search (its searcher built once) before any parse.
    static ERROR: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"error\""));
    ERROR.find(event)?;
    let v = serde_json::from_slice::<Value>(event).ok()?;
    let v = match &v {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let e = v.get("error")?;
    if !e.is_object() {
        return None;
    }
    let code = e
        .get("code")
        .and_then(Value::as_u64)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..600).contains(c))
        .unwrap_or_else(|| match e.get("status").and_then(Value::as_str) {
            Some("RESOURCE_EXHAUSTED") => 429,
            Some("UNAVAILABLE") => 503,
            Some("DEADLINE_EXCEEDED") => 504,
            Some("INVALID_ARGUMENT") => 400,
            Some("PERMISSION_DENIED") => 403,
            Some("UNAUTHENTICATED") => 401,
            _ => 500,
        });
    Some(classify(code, event))
}

/// A 403 PERMISSION_DENIED says one of three things, and only the first is about the key:
/// - the key itself is bad: ErrorInfo names it (`API_KEY_INVALID`, `API_KEY_SERVICE_BLOCKED`,
///   `SERVICE_DISABLED`, `BILLING_DISABLED`, `CONSUMER_INVALID`, …) or the message does (leaked,
///   expired, deleted, API not enabled in the project, billing): disabled for every model;
/// - a named resource of another project (a file, a cached content, a tuned model, a corpus):
///   the client's request, passed back with no penalty and no retry (another key is another
///   project, which cannot see it either);
/// - anything else: access to this model (a free-tier key asking for a paid model, ErrorInfo
///   metadata naming the model or method). That (key, model) is taken out like `limit: 0`, and
///   the request moves on. An unknown 403 lands here on purpose: disabling a key for every model
///   on a message we cannot read would let one client's odd request empty the pool, while a
///   model-scoped rest costs at most one call per key for that model until reload or reset.
///
/// Google's own ErrorInfo reason is read first; a named resource comes before the message's
/// wording, since a resource message may quote what the client wrote (a name), and no client
/// text may disable a key.
fn classify_403(err: &GoogleError) -> Outcome {
    if err.key_dead_reason() {
        return Outcome::KeyInvalid {
            reason: err.reason(403),
        };
    }
    if err.names_resource() {
        return Outcome::ClientError;
    }
    if err.key_dead_message() {
        return Outcome::KeyInvalid {
            reason: err.reason(403),
        };
    }
    Outcome::ModelDenied {
        reason: err.reason(403),
    }
}

/// Gemini CLI's order (protocol.md §3): `limit: 0`, then a per-day quotaId, then RetryInfo, then
/// a per-minute quotaId, then the message's "Please retry in Xs".
fn classify_429(err: &GoogleError) -> Outcome {
    if has_zero_limit(&err.message) {
        return Outcome::NoQuota;
    }
    if err
        .quota_ids
        .iter()
        .any(|q| q.contains("PerDay") || q.contains("Daily"))
    {
        return Outcome::QuotaDaily;
    }
    if let Some(d) = err.retry_delay {
        return Outcome::RateLimited {
            retry_after: Some(d),
        };
    }
    if err.quota_ids.iter().any(|q| q.contains("PerMinute")) {
        return Outcome::RateLimited { retry_after: None };
    }
    Outcome::RateLimited {
        retry_after: retry_in_message(&err.message),
    }
}

/// The parts of Google's error JSON that matter here. Missing or mistyped fields are empty.
#[derive(Debug, Default)]
struct GoogleError {
    message: String,
    status: String,
    /// `QuotaFailure.violations[].quotaId` plus `ErrorInfo.metadata.quota_limit`.
    quota_ids: Vec<String>,
    retry_delay: Option<Duration>,
    /// `ErrorInfo.reason`, e.g. `API_KEY_INVALID`.
    reasons: Vec<String>,
    /// `ErrorInfo.metadata` values (`service`, `methodName`, `resource`, …).
    metadata: Vec<String>,
}

impl GoogleError {
    fn parse(body: &[u8]) -> GoogleError {
        let Ok(v) = serde_json::from_slice::<Value>(body) else {
            return GoogleError::default();
        };
        // Some paths (the OpenAI-compatible endpoint, stream errors) wrap the error in an array.
        let v = match &v {
            Value::Array(items) => items.first().unwrap_or(&Value::Null),
            other => other,
        };
        let Some(e) = v.get("error") else {
            return GoogleError::default();
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        let mut out = GoogleError {
            message: text(e.get("message")),
            status: text(e.get("status")),
            ..GoogleError::default()
        };
        let details = e.get("details").and_then(Value::as_array);
        for d in details.into_iter().flatten() {
            let kind = d.get("@type").and_then(Value::as_str).unwrap_or("");
            let kind = kind.rsplit('.').next().unwrap_or("");
            match kind {
                "QuotaFailure" => {
                    let violations = d.get("violations").and_then(Value::as_array);
                    for v in violations.into_iter().flatten() {
                        if let Some(id) = v.get("quotaId").and_then(Value::as_str) {
                            out.quota_ids.push(id.to_string());
                        }
                    }
                }
                "RetryInfo" => {
                    let delay = d.get("retryDelay").and_then(Value::as_str);
                    if let Some(delay) = delay.and_then(parse_proto_duration) {
                        out.retry_delay = Some(delay);
                    }
                }
                "ErrorInfo" => {
                    if let Some(r) = d.get("reason").and_then(Value::as_str) {
                        out.reasons.push(r.to_string());
                    }
                    let limit = d.pointer("/metadata/quota_limit").and_then(Value::as_str);
                    if let Some(limit) = limit {
                        out.quota_ids.push(limit.to_string());
                    }
                    let metadata = d.get("metadata").and_then(Value::as_object);
                    for value in metadata.into_iter().flat_map(|m| m.values()) {
                        if let Some(v) = value.as_str() {
                            out.metadata.push(v.to_string());
                        }
                    }
                }
                _ => {}
            }
        }
        out
    }

    fn key_invalid(&self) -> bool {
        self.reasons.iter().any(|r| r == "API_KEY_INVALID")
            || self.message.contains("API key not valid")
            || self.message.contains("API key expired")
    }

    /// ErrorInfo says the key itself is refused, whatever it asks for (403 only: a 400 uses
    /// `key_invalid`, since a 400's "billing" or location message is about the egress).
    fn key_dead_reason(&self) -> bool {
        const REASONS: &[&str] = &[
            "API_KEY_INVALID",
            "API_KEY_SERVICE_BLOCKED",
            "API_KEY_HTTP_REFERRER_BLOCKED",
            "API_KEY_IP_ADDRESS_BLOCKED",
            "API_KEY_ANDROID_APP_BLOCKED",
            "API_KEY_IOS_APP_BLOCKED",
            "SERVICE_DISABLED",
            "BILLING_DISABLED",
            "CONSUMER_INVALID",
            "CONSUMER_SUSPENDED",
        ];
        self.reasons.iter().any(|r| REASONS.contains(&r.as_str()))
    }

    /// The message says the key itself is refused (Google sends some, such as the leaked-key
    /// one, without ErrorInfo).
    fn key_dead_message(&self) -> bool {
        const MESSAGES: &[&str] = &[
            "api key not valid",
            "api key expired",
            "api key was deleted",
            "api key has been deleted",
            "reported as leaked",
            "has not been used in project",
            "requires billing to be enabled",
            "billing account",
            "consumer 'api_key:",
            "unregistered callers",
        ];
        let message = self.message.to_ascii_lowercase();
        MESSAGES.iter().any(|m| message.contains(m))
    }

    /// The error is about a resource the request named (a file, cached content, tuned model,
    /// corpus), not about the key or the model it asked for.
    fn names_resource(&self) -> bool {
        const NAMES: &[&str] = &[
            "files/",
            "cachedcontents/",
            "tunedmodels/",
            "corpora/",
            "ragcorpora/",
            "access the file",
            "cachedcontent not found",
            "tuned model",
            "corpus",
        ];
        let names = |text: &str| {
            let text = text.to_ascii_lowercase();
            NAMES.iter().any(|n| text.contains(n))
        };
        names(&self.message) || self.metadata.iter().any(|m| names(m))
    }

    /// "403 PERMISSION_DENIED: Your API key was reported as leaked…", cut to `MAX_REASON`.
    fn reason(&self, status: u16) -> String {
        let mut out = status.to_string();
        if !self.status.is_empty() {
            out.push(' ');
            out.push_str(&self.status);
        }
        if let Some(r) = self.reasons.first() {
            out.push_str(" (");
            out.push_str(r);
            out.push(')');
        }
        let msg = scrub(self.message.trim());
        if !msg.is_empty() {
            out.push_str(": ");
            out.push_str(&msg);
        }
        truncate(out, MAX_REASON)
    }
}

/// "limit: 0" as a whole number (not "limit: 05" or "limit: 0.5").
fn has_zero_limit(message: &str) -> bool {
    message.match_indices("limit: 0").any(|(i, m)| {
        let next = message[i + m.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_digit() || c == '.')
    })
}

/// A protobuf `Duration` in its JSON form: "54s", "34.4s", also "900ms" as Google sometimes
/// writes in messages. Negative, non-finite or absurd values are ignored.
fn parse_proto_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return None;
    };
    let secs = num.trim().parse::<f64>().ok()? * scale;
    // A year caps anything a quota could mean; it also keeps from_secs_f64 away from overflow.
    if !secs.is_finite() || !(0.0..=31_536_000.0).contains(&secs) {
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// "Please retry in 54.88s." anywhere in the message.
fn retry_in_message(message: &str) -> Option<Duration> {
    const MARK: &str = "Please retry in ";
    let start = message.find(MARK)? + MARK.len();
    let rest = &message[start..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'm' || c == 's'))
        .unwrap_or(rest.len());
    // The sentence's own full stop follows the unit: "54.88s." -> "54.88s".
    parse_proto_duration(rest[..end].trim_end_matches('.'))
}

/// Masks anything shaped like a Gemini key. Google's messages carry none, but a reason is shown
/// in `/status` and logs, so this is the last line of defence rather than a trust in Google.
/// A key is a run of key characters wherever it stands: quoted, after `api_key:`, on a line of
/// its own (splitting on spaces alone let `'AIza…'` through).
fn scrub(message: &str) -> String {
    let is_key_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while !rest.is_empty() {
        let start = rest.find(is_key_char).unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(|c: char| !is_key_char(c)).unwrap_or(rest.len());
        let run = &rest[..end];
        let looks_like_key = (run.starts_with("AIza") || run.starts_with("AQ.")) && run.len() >= 20;
        if looks_like_key {
            out.push_str(&crate::secret::mask_key(run));
        } else {
            out.push_str(run);
        }
        rest = &rest[end..];
    }
    out
}

fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/fixtures/google/", $name, ".json"))
        };
    }

    fn check(status: u16, body: &str, expected: Outcome) {
        assert_eq!(classify(status, body.as_bytes()), expected, "body: {body}");
    }

    fn rate_limited(secs: f64) -> Outcome {
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs_f64(secs)),
        }
    }

    fn key_invalid(reason: &str) -> Outcome {
        Outcome::KeyInvalid {
            reason: reason.to_string(),
        }
    }

    fn transient(reason: &str) -> Outcome {
        Outcome::Transient {
            reason: reason.to_string(),
        }
    }

    #[test]
    fn live_closes() {
        assert!(matches!(
            classify_close(1007, "API key not valid. Please pass a valid API key."),
            Outcome::KeyInvalid { .. }
        ));
        assert!(matches!(
            classify_close(
                1011,
                "You exceeded your current quota, please check your plan and billing details."
            ),
            Outcome::RateLimited { .. } | Outcome::QuotaDaily | Outcome::NoQuota
        ));
        assert_eq!(
            classify_close(1007, "Request contains an invalid argument."),
            Outcome::ClientError
        );
        assert_eq!(
            classify_close(1008, "models/nope is not found for API version v1beta"),
            Outcome::ClientError
        );
        assert!(matches!(
            classify_close(1011, "Internal error encountered."),
            Outcome::Transient { .. }
        ));
    }

    #[test]
    fn fixtures() {
        check(200, "{}", Outcome::Success);
        check(204, "", Outcome::Success);
        // RetryInfo wins over the message's more precise "54.88s" (order of protocol.md §3).
        check(429, fixture!("429_per_minute_free"), rate_limited(54.0));
        // A per-day quotaId wins over the RetryInfo that comes with it.
        check(429, fixture!("429_per_day_free"), Outcome::QuotaDaily);
        check(
            429,
            fixture!("429_paid_input_tokens_per_minute"),
            rate_limited(34.4),
        );
        // `limit: 0` wins over a per-day quotaId and a RetryInfo.
        check(429, fixture!("429_limit_zero"), Outcome::NoQuota);
        check(
            429,
            fixture!("429_per_minute_no_retryinfo"),
            Outcome::RateLimited { retry_after: None },
        );
        check(429, fixture!("429_message_only"), rate_limited(7.5));
        check(
            429,
            fixture!("429_bare"),
            Outcome::RateLimited { retry_after: None },
        );
        check(429, fixture!("429_array_wrapped"), Outcome::QuotaDaily);
        check(
            400,
            fixture!("400_api_key_invalid"),
            key_invalid(
                "400 INVALID_ARGUMENT (API_KEY_INVALID): API key not valid. Please pass a valid API key.",
            ),
        );
        check(
            400,
            fixture!("400_api_key_expired"),
            key_invalid(
                "400 INVALID_ARGUMENT (API_KEY_INVALID): API key expired. Please renew the API key.",
            ),
        );
        check(
            400,
            fixture!("400_array_wrapped_api_key_invalid"),
            key_invalid(
                "400 INVALID_ARGUMENT (API_KEY_INVALID): API key not valid. Please pass a valid API key.",
            ),
        );
        check(
            403,
            fixture!("403_leaked_key"),
            key_invalid(
                "403 PERMISSION_DENIED: Your API key was reported as leaked. Please use another API key.",
            ),
        );
        check(
            401,
            r#"{"error":{"code":401,"message":"Request had invalid authentication credentials.","status":"UNAUTHENTICATED"}}"#,
            key_invalid("401 UNAUTHENTICATED: Request had invalid authentication credentials."),
        );
        check(503, fixture!("503_overloaded"), Outcome::Overloaded);
        check(
            503,
            fixture!("503_unavailable"),
            transient("503 UNAVAILABLE: The service is currently unavailable."),
        );
        check(
            504,
            fixture!("504_deadline"),
            transient("504 DEADLINE_EXCEEDED: The request timed out. Please try again."),
        );
        check(408, "", transient("408"));
        check(400, fixture!("400_invalid_argument"), Outcome::ClientError);
        check(400, fixture!("400_context_overflow"), Outcome::ClientError);
        // Another key leaves from the same egress: no point disabling the key.
        check(
            400,
            fixture!("400_location_unsupported"),
            Outcome::ClientError,
        );
        check(404, fixture!("404_model_not_found"), Outcome::ClientError);
    }

    /// Every item of a recorded 200 stream through `classify_event`, as the relay sees them.
    fn stream_outcomes(body: &str) -> Vec<Option<Outcome>> {
        let mut parser = crate::sse::SseParser::new();
        let mut items = parser.push(body.as_bytes());
        items.extend(parser.finish());
        items
            .iter()
            .map(|item| match item {
                crate::sse::SseItem::Data(d) | crate::sse::SseItem::Bare(d) => classify_event(d),
            })
            .collect()
    }

    #[test]
    fn errors_inside_a_stream() {
        // Google's usual form: a text event, then the error as bare JSON without `data:`.
        assert_eq!(
            stream_outcomes(include_str!(
                "../tests/fixtures/google/stream_error_429.sse"
            )),
            vec![None, Some(rate_limited(21.0))]
        );
        assert_eq!(
            stream_outcomes(include_str!(
                "../tests/fixtures/google/stream_error_503_data.sse"
            )),
            vec![None, Some(Outcome::Overloaded)]
        );
        // The JSON-array stream (no alt=sse) ends with the error as an element; a per-day
        // quotaId still wins over RetryInfo there.
        let day: serde_json::Value =
            serde_json::from_str(fixture!("429_per_day_free")).expect("fixture");
        assert_eq!(
            classify_event(day.to_string().as_bytes()),
            Some(Outcome::QuotaDaily)
        );
        // Without a code, the status names it.
        assert_eq!(
            classify_event(br#"{"error":{"message":"x","status":"RESOURCE_EXHAUSTED"}}"#),
            Some(Outcome::RateLimited { retry_after: None })
        );
        assert_eq!(
            classify_event(br#"[{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}]"#),
            Some(key_invalid("400 INVALID_ARGUMENT: API key not valid. Please pass a valid API key."))
        );
        // Ordinary events, and text that talks about errors, are not errors.
        for event in [
            r#"{"candidates":[{"content":{"parts":[{"text":"an \"error\": here"}]}}]}"#,
            r#"{"candidates":[],"error":null}"#,
            r#"{"usageMetadata":{"promptTokenCount":1}}"#,
            "not json \"error\"",
        ] {
            assert_eq!(classify_event(event.as_bytes()), None, "{event}");
        }
    }

    #[test]
    fn service_blocked_reason_names_the_error_info() {
        let Outcome::KeyInvalid { reason } =
            classify(403, fixture!("403_service_blocked").as_bytes())
        else {
            panic!("403 must disable the key");
        };
        assert!(reason.starts_with("403 PERMISSION_DENIED (API_KEY_SERVICE_BLOCKED): Requests"));
        assert!(reason.chars().count() <= MAX_REASON + 1);
    }

    #[test]
    fn internal_error_is_transient() {
        let out = classify(500, fixture!("500_internal").as_bytes());
        assert!(
            matches!(out, Outcome::Transient { ref reason } if reason.starts_with("500 INTERNAL: An internal error"))
        );
    }

    #[test]
    fn junk_bodies_do_not_panic() {
        let junk: &[&[u8]] = &[
            b"",
            b"not json",
            b"\xff\xfe\x00",
            b"[]",
            b"[1]",
            b"null",
            b"{\"error\":null}",
            b"{\"error\":{\"message\":42,\"details\":{}}}",
            b"{\"error\":{\"details\":[{\"@type\":7},{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"-5s\"}]}}",
            b"{\"error\":{\"details\":[{\"@type\":\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"1e400s\"}]}}",
            b"{\"error\":{\"message\":\"Please retry in \"}}",
            b"{\"error\":{\"message\":\"Please retry in .s\"}}",
        ];
        for body in junk {
            for status in [0, 100, 302, 400, 401, 403, 404, 408, 429, 500, 503, 999] {
                let _ = classify(status, body);
            }
        }
        check(429, "garbage", Outcome::RateLimited { retry_after: None });
        check(503, "garbage", transient("503"));
    }

    #[test]
    fn durations() {
        let cases = [
            ("54s", Some(54_000)),
            ("34.4s", Some(34_400)),
            ("900ms", Some(900)),
            ("0s", Some(0)),
            ("1.5", None),
            ("-1s", None),
            ("NaNs", None),
            ("s", None),
            ("", None),
        ];
        for (text, ms) in cases {
            let got = parse_proto_duration(text).map(|d| d.as_millis() as u64);
            assert_eq!(got, ms, "{text}");
        }
        assert_eq!(
            retry_in_message("x. Please retry in 54.88s."),
            Some(Duration::from_millis(54_880))
        );
    }

    #[test]
    fn zero_limit_is_a_whole_number() {
        assert!(has_zero_limit("limit: 0, model: m"));
        assert!(has_zero_limit("limit: 0"));
        assert!(has_zero_limit("limit: 0\nPlease"));
        assert!(!has_zero_limit("limit: 05"));
        assert!(!has_zero_limit("limit: 0.5"));
        assert!(!has_zero_limit("limit: 2"));
    }

    #[test]
    fn reasons_never_carry_a_key() {
        let body = r#"{"error":{"code":403,"message":"Key AIzaSyFAKE-not-a-real-key-0000000000000 blocked","status":"PERMISSION_DENIED"}}"#;
        // An unknown 403: model-scoped, and its reason is scrubbed like any other.
        let Outcome::ModelDenied { reason } = classify(403, body.as_bytes()) else {
            panic!("an unknown 403 rests the (key, model)");
        };
        assert!(!reason.contains("AIzaSyFAKE-not-a-real"), "{reason}");
        assert!(reason.contains("AIza****0000"), "{reason}");
    }

    fn denied(message: &str, details: &str) -> String {
        format!(
            r#"{{"error":{{"code":403,"message":"{message}","status":"PERMISSION_DENIED","details":[{details}]}}}}"#
        )
    }

    fn error_info(reason: &str, metadata: &str) -> String {
        format!(
            r#"{{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"{reason}","domain":"googleapis.com","metadata":{{{metadata}}}}}"#
        )
    }

    fn class_of(status: u16, body: &str) -> &'static str {
        classify(status, body.as_bytes()).class()
    }

    /// Which 403s disable the key, which rest only (key, model), which are the client's.
    #[test]
    fn forbidden_is_judged_by_what_it_names() {
        let svc = r#""service":"generativelanguage.googleapis.com","consumer":"projects/123""#;
        let cases: &[(String, &str)] = &[
            // The key itself: disabled for every model.
            (fixture!("403_leaked_key").to_string(), "key_invalid"),
            (fixture!("403_service_blocked").to_string(), "key_invalid"),
            (
                denied(
                    "Generative Language API has not been used in project 123 before or it is disabled. Enable it by visiting https://console.developers.google.com/apis/api/generativelanguage.googleapis.com/overview?project=123 then retry.",
                    &error_info("SERVICE_DISABLED", svc),
                ),
                "key_invalid",
            ),
            (
                denied(
                    "This API method requires billing to be enabled. Please enable billing on project #123 by visiting https://console.developers.google.com/billing/enable?project=123 then retry.",
                    &error_info("BILLING_DISABLED", svc),
                ),
                "key_invalid",
            ),
            (denied("Permission denied: Consumer 'api_key:x' has been suspended.", &error_info("CONSUMER_INVALID", svc)), "key_invalid"),
            (denied("API key expired. Please renew the API key.", ""), "key_invalid"),
            (denied("API key not valid. Please pass a valid API key.", &error_info("API_KEY_INVALID", svc)), "key_invalid"),
            // A named resource of another project: the client's.
            (denied("You do not have permission to access the File abc123 or it may not exist.", ""), "client_error"),
            (denied("CachedContent not found (or permission denied)", ""), "client_error"),
            (denied("You do not have permission to access tuned model tunedModels/my-model-42.", ""), "client_error"),
            // Client text quoted in a resource message never disables a key.
            (denied("You do not have permission to access the File reported as leaked or it may not exist.", ""), "client_error"),
            (
                denied("Permission denied.", &error_info("IAM_PERMISSION_DENIED", r#""resource":"corpora/other-project-corpus""#)),
                "client_error",
            ),
            // The model: rested for this key only.
            (
                denied(
                    "Permission denied: this API key has no access to model models/gemini-2.5-pro on the free tier.",
                    &error_info("IAM_PERMISSION_DENIED", r#""resource":"models/gemini-2.5-pro","permission":"generativelanguage.models.generateContent""#),
                ),
                "model_denied",
            ),
            // Unknown: model-scoped too, never key-invalid.
            (denied("The caller does not have permission", ""), "model_denied"),
            ("".to_string(), "model_denied"),
            ("not json".to_string(), "model_denied"),
        ];
        for (body, class) in cases {
            assert_eq!(class_of(403, body), *class, "{body}");
        }
        // 401 is the key's credentials; a 400 "billing" or location message is not the key's.
        assert_eq!(class_of(401, ""), "key_invalid");
        assert_eq!(
            class_of(400, fixture!("400_location_unsupported")),
            "client_error"
        );
        // Inside a 200 stream, a 403 event is judged the same way.
        let event = denied(
            "You do not have permission to access the File abc or it may not exist.",
            "",
        );
        assert_eq!(
            classify_event(event.as_bytes()).map(|o| o.class()),
            Some("client_error")
        );
    }
}
