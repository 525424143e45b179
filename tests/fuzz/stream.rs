//! Gemini stream events -> OpenAI chunks (`translate::StreamTranslator`), event after event as
//! `relay` feeds them, with `classify_event` and `usage::from_json` on each event as the relay
//! runs them. Property: no panic; everything written is complete SSE events whose data is
//! `[DONE]` or a `chat.completion.chunk` JSON object; the stream ends with exactly one
//! `[DONE]`, and a second `finish` writes nothing.

use gemini_rotator::classify::classify_event;
use gemini_rotator::translate::chat::StreamTranslator;
use gemini_rotator::usage;
use proptest::prelude::*;
use serde_json::Value;

use crate::response::{ctx, gemini_response};
use crate::{any_json, fuzz_config, mutated_bytes, mutated_json};

/// Every event of every seed file (one JSON value per line).
fn seed_events() -> Vec<Vec<u8>> {
    crate::seeds("stream")
        .iter()
        .flat_map(|file| {
            file.split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Checks one piece of output; returns how many `[DONE]` it held.
fn check_output(out: &[u8]) -> Result<usize, TestCaseError> {
    let text = std::str::from_utf8(out)
        .map_err(|e| TestCaseError::fail(format!("output is not UTF-8: {e}")))?;
    if text.is_empty() {
        return Ok(0);
    }
    prop_assert!(text.ends_with("\n\n"), "an unfinished event: {:?}", text);
    let mut done = 0;
    for event in text[..text.len() - 2].split("\n\n") {
        let data = event
            .strip_prefix("data: ")
            .ok_or_else(|| TestCaseError::fail(format!("not a data event: {event:?}")))?;
        prop_assert!(!data.contains('\n'), "a data line break: {:?}", data);
        if data == "[DONE]" {
            done += 1;
            continue;
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| TestCaseError::fail(format!("chunk is not JSON ({e}): {data}")))?;
        prop_assert_eq!(&chunk["object"], "chat.completion.chunk");
        prop_assert!(chunk["choices"].is_array(), "no choices: {}", data);
    }
    Ok(done)
}

fn check(events: &[Vec<u8>], include_usage: bool) -> Result<(), TestCaseError> {
    let mut translator = StreamTranslator::new(ctx(), include_usage);
    for event in events {
        let _ = classify_event(event);
        let _ = usage::from_json(event);
        if let Ok(out) = translator.on_event(event) {
            prop_assert_eq!(check_output(&out)?, 0, "[DONE] before the end");
        }
        let _ = translator.take_signatures();
    }
    let _ = translator.has_output();
    let end = translator.finish();
    prop_assert_eq!(check_output(&end)?, 1, "one [DONE] at the end");
    prop_assert!(end.ends_with(b"data: [DONE]\n\n"));
    prop_assert!(
        translator.finish().is_empty(),
        "a second finish writes nothing"
    );
    Ok(())
}

fn event() -> impl Strategy<Value = Vec<u8>> {
    let seeds = seed_events();
    prop_oneof![
        6 => mutated_json(gemini_response()).prop_map(|v| serde_json::to_vec(&v).expect("serialises")),
        2 => crate::mutated_json_seeds(&seeds).prop_map(|v| serde_json::to_vec(&v).expect("serialises")),
        2 => mutated_bytes(seeds),
        1 => any_json().prop_map(|v| serde_json::to_vec(&v).expect("serialises")),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

#[test]
fn seeds_as_they_are() {
    for (name, file) in crate::corpus("stream") {
        let events: Vec<Vec<u8>> = file
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect();
        for include_usage in [false, true] {
            if let Err(e) = check(&events, include_usage) {
                panic!("{name}: {e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config("stream", 4500))]

    #[test]
    fn event_sequences(events in prop::collection::vec(event(), 0..8), include_usage in any::<bool>()) {
        check(&events, include_usage)?;
    }
}
