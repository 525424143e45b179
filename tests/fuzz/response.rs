//! Gemini `GenerateContentResponse` -> OpenAI `chat.completion` (`translate::chat::from_gemini_detailed`),
//! and reading `usageMetadata` out of the same bytes (`usage::from_json`). Property: no panic;
//! a translated answer is a JSON object with `choices`; a Google error in a 200 becomes an
//! error whose status is 4xx or 5xx.

use gemini_rotator::api::chat::from_translate;
use gemini_rotator::translate::{self, ResponseCtx};
use gemini_rotator::usage;
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{any_json, fuzz_config, mutated_bytes, mutated_json, object, or_junk, seeds};

pub fn ctx() -> ResponseCtx {
    ResponseCtx {
        id: "chatcmpl-fuzz0123456789".into(),
        created: 1_760_000_000,
        model: "gemini-2.5-flash".into(),
        one_call: false,
        legacy_functions: false,
        tool_names: Default::default(),
    }
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9 .]{0,16}".prop_map(Value::String),
        "\\PC{0,12}".prop_map(Value::String),
        Just(json!("é😀\u{0}")),
    ]
}

fn count() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0u64..100_000).prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, u64::MAX - 1, u64::MAX / 2 + 1]).prop_map(Value::from),
        Just(json!(-1)),
        Just(json!(1.5)),
        Just(json!("12")),
    ]
}

fn part() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (text(), prop::option::of(any::<bool>())).prop_map(|(t, thought)| object(vec![
            ("text", Some(t)),
            ("thought", thought.map(Value::Bool)),
        ])),
        2 => (
            prop::sample::select(vec!["read_file", "", "write_to_file"]),
            or_junk(Just(json!({"path": "a"}))),
            prop::option::of(text()),
            prop::option::of(text()),
        )
            .prop_map(|(name, args, id, sig)| object(vec![
                ("functionCall", Some(object(vec![
                    ("name", Some(Value::from(name))),
                    ("args", Some(args)),
                    ("id", id),
                ]))),
                ("thoughtSignature", sig),
            ])),
        1 => Just(json!({"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}})),
        1 => Just(json!({"executableCode": {"language": "PYTHON", "code": "print(1)"}})),
        1 => any_json(),
    ]
}

fn logprobs() -> impl Strategy<Value = Value> {
    fn candidate() -> impl Strategy<Value = Value> {
        (
            text(),
            prop_oneof![(-20.0f64..0.0).prop_map(Value::from), any_json()],
        )
            .prop_map(|(t, p)| json!({"token": t, "logProbability": p}))
    }
    (
        prop::collection::vec(candidate(), 0..3),
        prop::collection::vec(prop::collection::vec(candidate(), 0..3), 0..3),
    )
        .prop_map(|(chosen, top)| {
            let top: Vec<Value> = top.into_iter().map(|c| json!({"candidates": c})).collect();
            json!({"chosenCandidates": chosen, "topCandidates": top})
        })
}

fn grounding() -> impl Strategy<Value = Value> {
    let index = prop_oneof![(0i64..4).prop_map(Value::from), count()];
    let support = (index.clone(), index.clone(), prop::collection::vec(index, 0..3))
        .prop_map(|(s, e, chunks)| {
            json!({"segment": {"startIndex": s, "endIndex": e, "text": "x"}, "groundingChunkIndices": chunks})
        });
    (
        prop::collection::vec(
            prop::option::of(text()).prop_map(|t| json!({"web": object(vec![
                ("uri", Some(json!("https://example.com/a"))), ("title", t)])})),
            0..3,
        ),
        prop::collection::vec(support, 0..3),
    )
        .prop_map(|(chunks, supports)| {
            json!({"webSearchQueries": ["q"], "groundingChunks": chunks, "groundingSupports": supports})
        })
}

fn candidate() -> impl Strategy<Value = Value> {
    (
        prop::option::of(or_junk(
            prop::collection::vec(part(), 0..4).prop_map(|p| json!({"role": "model", "parts": p})),
        )),
        prop::option::of(or_junk(
            prop::sample::select(vec![
                "STOP",
                "MAX_TOKENS",
                "SAFETY",
                "RECITATION",
                "IMAGE_SAFETY",
                "MALFORMED_FUNCTION_CALL",
                "FINISH_REASON_UNSPECIFIED",
                "",
            ])
            .prop_map(Value::from),
        )),
        prop::option::of(prop_oneof![
            4 => (0u32..3).prop_map(Value::from),
            1 => any::<u32>().prop_map(Value::from),
            1 => any_json(),
        ]),
        prop::option::of(logprobs()),
        prop::option::of(grounding()),
    )
        .prop_map(|(content, finish, index, logprobs, grounding)| {
            object(vec![
                ("content", content),
                ("finishReason", finish),
                ("index", index),
                ("logprobsResult", logprobs),
                ("groundingMetadata", grounding),
            ])
        })
}

fn usage_metadata() -> impl Strategy<Value = Value> {
    (
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(count()),
        prop::option::of(count()),
    )
        .prop_map(|(p, c, t, tu, cached, total)| {
            object(vec![
                ("promptTokenCount", p),
                ("candidatesTokenCount", c),
                ("thoughtsTokenCount", t),
                ("toolUsePromptTokenCount", tu),
                ("cachedContentTokenCount", cached),
                ("totalTokenCount", total),
            ])
        })
}

fn google_error() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![
            prop::sample::select(vec![400u64, 403, 429, 500, 503, 200, 0, 99999]).prop_map(Value::from),
            any_json(),
        ]),
        prop::option::of(text()),
        prop::option::of(prop::sample::select(vec!["RESOURCE_EXHAUSTED", "UNAVAILABLE", "INVALID_ARGUMENT"]).prop_map(Value::from)),
    )
        .prop_map(|(code, message, status)| {
            json!({"error": object(vec![("code", code), ("message", message), ("status", status)])})
        })
}

/// A Gemini response (or a Google error) built from the real fields.
pub fn gemini_response() -> impl Strategy<Value = Value> {
    let response = (
        prop::option::of(or_junk(
            prop::collection::vec(candidate(), 0..3).prop_map(Value::Array),
        )),
        prop::option::of(or_junk(usage_metadata())),
        prop::option::of(or_junk(
            prop::sample::select(vec!["SAFETY", "OTHER", "BLOCKLIST"])
                .prop_map(|r| json!({"blockReason": r})),
        )),
        prop::option::of(text()),
    )
        .prop_map(|(candidates, usage, feedback, version)| {
            object(vec![
                ("candidates", candidates),
                ("usageMetadata", usage),
                ("promptFeedback", feedback),
                ("modelVersion", version),
                ("responseId", Some(json!("r-1"))),
            ])
        });
    prop_oneof![
        8 => response,
        1 => google_error(),
        1 => google_error().prop_map(|e| json!([e])),
    ]
}

fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let _ = usage::from_json(body);
    let _ = gemini_rotator::classify::classify_event(body);
    match translate::chat::from_gemini_detailed(body, &ctx()) {
        Ok(done) => {
            let parsed: Value = serde_json::from_slice(&done.body)
                .map_err(|e| TestCaseError::fail(format!("not JSON ({e})")))?;
            prop_assert!(parsed["choices"].is_array(), "no choices: {}", parsed);
            prop_assert_eq!(&parsed["object"], "chat.completion");
        }
        Err(e) => {
            let status = from_translate(e.clone()).status();
            prop_assert!(
                status.is_client_error() || status.is_server_error(),
                "{:?} became {}",
                e,
                status
            );
        }
    }
    Ok(())
}

#[test]
fn seeds_as_they_are() {
    for (name, body) in crate::corpus("response") {
        if let Err(e) = check(&body) {
            panic!("{name}: {e}");
        }
    }
}

/// Found by this target: token counts near `u64::MAX` overflowed the usage sums (a panic in a
/// debug build, a wrapped count in a release one).
#[test]
fn huge_token_counts() {
    let body = json!({
        "candidates": [{"content": {"parts": [{"text": "hi"}]}, "finishReason": "STOP"}],
        "usageMetadata": {"promptTokenCount": u64::MAX, "toolUsePromptTokenCount": 5,
            "candidatesTokenCount": u64::MAX, "thoughtsTokenCount": 2}
    });
    let bytes = serde_json::to_vec(&body).expect("serialises");
    let done = translate::chat::from_gemini_detailed(&bytes, &ctx()).expect("translates");
    let parsed: Value = serde_json::from_slice(&done.body).expect("JSON");
    assert_eq!(parsed["usage"]["prompt_tokens"], u64::MAX);
    assert_eq!(parsed["usage"]["completion_tokens"], u64::MAX);
    let tokens = usage::from_json(&bytes).expect("usage read");
    assert_eq!(tokens.prompt, u64::MAX);
}

proptest! {
    #![proptest_config(fuzz_config("response", 4500))]

    #[test]
    fn structured_responses(body in mutated_json(gemini_response())) {
        check(&serde_json::to_vec(&body).expect("a Value serialises"))?;
    }

    #[test]
    fn mutated_seed_bytes(body in mutated_bytes(seeds("response"))) {
        check(&body)?;
    }

    #[test]
    fn mutated_seed_json(body in crate::mutated_json_seeds(&seeds("response"))) {
        check(&serde_json::to_vec(&body).expect("a Value serialises"))?;
    }

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&body)?;
    }
}
