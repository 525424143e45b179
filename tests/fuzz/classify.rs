//! Google error classification (`classify::classify`, `classify::classify_event`) on random
//! statuses and bodies. Property: no panic; a 2xx is a success whatever the body; a reason is
//! short and never holds a key; a retry delay is never more than a year.

use std::time::Duration;

use gemini_rotator::classify::{classify, classify_event};
use gemini_rotator::pool::Outcome;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{any_json, fuzz_config, mutated_bytes, mutated_json, object, or_junk};

/// A key-shaped word planted in messages: it must never come back in a reason.
const PLANTED_KEY: &str = "AIzaSyPLANTED0fuzz0key0must0never0show";

/// The Google fixtures the unit tests use, and this target's own seeds.
fn all_seeds() -> Vec<Vec<u8>> {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/google");
    let mut seeds: Vec<Vec<u8>> = crate::corpus_from(&fixtures)
        .into_iter()
        .map(|(_, b)| b)
        .collect();
    seeds.extend(crate::seeds("classify"));
    seeds
}

fn reason_of(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::KeyInvalid { reason } | Outcome::Transient { reason } => Some(reason),
        _ => None,
    }
}

fn check_outcome(status: u16, outcome: &Outcome) -> Result<(), TestCaseError> {
    if (200..300).contains(&status) {
        prop_assert!(
            matches!(outcome, Outcome::Success),
            "{} gave {:?}",
            status,
            outcome
        );
    }
    if let Some(reason) = reason_of(outcome) {
        // 200 bytes and the ellipsis that marks a cut.
        prop_assert!(
            reason.len() <= 200 + '…'.len_utf8(),
            "reason too long: {}",
            reason.len()
        );
        prop_assert!(
            !reason.contains(PLANTED_KEY),
            "a key in a reason: {}",
            reason
        );
        prop_assert!(
            !reason.contains("AIzaSyPLANT"),
            "a key in a reason: {}",
            reason
        );
    }
    if let Outcome::RateLimited {
        retry_after: Some(d),
    } = outcome
    {
        prop_assert!(
            *d <= Duration::from_secs(366 * 86_400),
            "retry after {:?}",
            d
        );
    }
    Ok(())
}

fn check(status: u16, body: &[u8]) -> Result<(), TestCaseError> {
    check_outcome(status, &classify(status, body))?;
    if let Some(outcome) = classify_event(body) {
        prop_assert!(
            !matches!(outcome, Outcome::Success),
            "an error event is no success"
        );
        check_outcome(400, &outcome)?;
    }
    Ok(())
}

fn status() -> impl Strategy<Value = u16> {
    prop_oneof![
        4 => prop::sample::select(vec![200u16, 204, 400, 401, 403, 404, 408, 429, 500, 502, 503, 504]),
        1 => any::<u16>(),
    ]
}

fn message() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("API key not valid. Please pass a valid API key.")),
        Just(json!("API key expired. Please renew the API key.")),
        Just(json!("The model is overloaded. Please try again later.")),
        Just(json!(format!(
            "Quota exceeded, limit: 0, model: x. Please retry in 54.88s. key {PLANTED_KEY}"
        ))),
        Just(json!("limit: 05 limit: 0.5 Please retry in 1e400s.")),
        Just(json!("Please retry in -3s.")),
        Just(json!("Please retry in ")),
        Just(json!(format!("{PLANTED_KEY} {}", "é".repeat(150)))),
        "\\PC{0,64}".prop_map(Value::String),
    ]
}

fn delay() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec![
            "54s",
            "34.4s",
            "900ms",
            "0s",
            "-1s",
            "1e308s",
            "NaNs",
            "infs",
            "31536001s",
            "s",
            "ms",
            " 5 s ",
            "18446744073709551616s",
        ])
        .prop_map(Value::from),
        "[0-9.e+-]{0,12}(s|ms)?".prop_map(Value::String),
        any_json(),
    ]
}

fn detail() -> impl Strategy<Value = Value> {
    prop_oneof![
        (prop::collection::vec(
            prop::sample::select(vec![
                "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                "GenerateContentInputTokensPerModelPerMinute-FreeTier",
                "Daily",
                "",
            ]),
            0..3,
        ))
        .prop_map(|ids| {
            let v: Vec<Value> = ids.into_iter().map(|id| json!({"quotaId": id})).collect();
            json!({"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": v})
        }),
        delay().prop_map(
            |d| json!({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": d})
        ),
        (
            prop::sample::select(vec![
                "API_KEY_INVALID",
                "API_KEY_SERVICE_BLOCKED",
                "SERVICE_DISABLED",
                "BILLING_DISABLED",
                "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
                "CONSUMER_SUSPENDED",
                "",
            ]),
            prop::option::of(
                prop::sample::select(vec!["GenerateRequestsPerDay", "x"]).prop_map(Value::from)
            ),
        )
            .prop_map(|(reason, limit)| {
                json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": reason,
                    "domain": "googleapis.com", "metadata": object(vec![("quota_limit", limit)])})
            }),
        Just(
            json!({"@type": "type.googleapis.com/google.rpc.Help", "links": [{"url": "https://ai.google.dev"}]})
        ),
        any_json(),
    ]
}

fn google_error() -> impl Strategy<Value = Value> {
    (
        prop::option::of(or_junk(status().prop_map(Value::from))),
        prop::option::of(or_junk(message())),
        prop::option::of(or_junk(
            prop::sample::select(vec![
                "RESOURCE_EXHAUSTED",
                "UNAVAILABLE",
                "INVALID_ARGUMENT",
                "PERMISSION_DENIED",
                "UNAUTHENTICATED",
                "DEADLINE_EXCEEDED",
                "NOT_FOUND",
            ])
            .prop_map(Value::from),
        )),
        prop::option::of(or_junk(
            prop::collection::vec(detail(), 0..4).prop_map(Value::Array),
        )),
        any::<bool>(),
    )
        .prop_map(|(code, message, status, details, wrapped)| {
            let e = json!({"error": object(vec![
                ("code", code), ("message", message), ("status", status), ("details", details)])});
            if wrapped {
                json!([e])
            } else {
                e
            }
        })
}

#[test]
fn seeds_as_they_are() {
    for body in all_seeds() {
        for status in [200, 400, 403, 429, 503] {
            if let Err(e) = check(status, &body) {
                panic!("{}: {e}", String::from_utf8_lossy(&body));
            }
        }
    }
}

/// Found by this target: the reason scrubber split on spaces only, so a key in quotes (Google
/// writes `Consumer 'api_key:AIza…' has been suspended.`) reached `/status` and logs whole.
#[test]
fn quoted_keys_are_masked() {
    for message in [
        format!("Consumer 'api_key:{PLANTED_KEY}' has been suspended."),
        format!("\"{PLANTED_KEY}\""),
        format!("key\n{PLANTED_KEY}\nagain ({PLANTED_KEY})"),
    ] {
        let body = json!({"error": {"code": 500, "message": message, "status": "INTERNAL"}});
        let outcome = classify(500, body.to_string().as_bytes());
        let reason = reason_of(&outcome).unwrap_or_default().to_string();
        assert!(!reason.contains("AIzaSyPLANT"), "{reason}");
        assert!(reason.contains("AIza****show"), "{reason}");
    }
}

proptest! {
    #![proptest_config(fuzz_config("classify", 7500))]

    #[test]
    fn structured_errors(status in status(), body in mutated_json(google_error())) {
        check(status, &serde_json::to_vec(&body).expect("serialises"))?;
    }

    #[test]
    fn mutated_seeds(status in status(), body in mutated_bytes(all_seeds())) {
        check(status, &body)?;
    }

    #[test]
    fn arbitrary_bodies(status in status(), body in prop::collection::vec(any::<u8>(), 0..128)) {
        check(status, &body)?;
    }
}
