//! OpenAI chat request -> Gemini request, the way `api/chat.rs` runs it: `parse_chat_request`,
//! `remote_media_urls`, then `to_gemini_with` for several targets. Property: never a panic; a
//! refused request is an error that becomes a 400; an accepted one (of valid JSON) yields a
//! JSON object.

use std::collections::HashMap;

use gemini_rotator::api::chat::from_translate;
use gemini_rotator::translate::{self, Extras, FetchedFile, Target};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::{any_json, fuzz_config, mutated_bytes, mutated_json, object, or_junk, seeds};

const MODELS: &[&str] = &[
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
    "gemini-3-flash-preview",
    "gemini-3.1-pro-preview",
    "models/gemini-2.5-flash-lite",
    "gemini-2.0-flash",
    "gpt-4o",
    "",
];

/// Every target shape `chat.rs` builds: model families, an alias's effort, safety settings.
fn targets() -> Vec<Target<'static>> {
    let mut out = Vec::new();
    for model in MODELS.iter().filter(|m| !m.is_empty()) {
        out.push(Target {
            model,
            reasoning_effort: None,
            safety: None,
        });
    }
    out.push(Target {
        model: "gemini-2.5-flash",
        reasoning_effort: Some("high"),
        safety: Some("BLOCK_NONE"),
    });
    out.push(Target {
        model: "gemini-3-pro-preview",
        reasoning_effort: Some("bogus"),
        safety: Some("default"),
    });
    out
}

/// The whole path for one body.
fn check(body: &[u8]) -> Result<(), TestCaseError> {
    let request = match translate::chat::parse_chat_request(body) {
        Ok(request) => request,
        Err(e) => {
            let status = from_translate(e.clone()).status();
            prop_assert_eq!(
                status.as_u16(),
                400,
                "a refused body must be a 400: {:?}",
                e
            );
            return Ok(());
        }
    };
    // Half the URLs "fetched", as media.rs would hand them over; the rest missing.
    let urls = translate::chat::remote_media_urls(&request);
    let media: HashMap<String, FetchedFile> = urls
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 0)
        .map(|(_, url)| {
            let file = FetchedFile {
                mime_type: if url.len() % 3 == 0 {
                    "image/jpg".into()
                } else {
                    "image/png".into()
                },
                bytes: url.as_bytes().to_vec(),
            };
            (url.to_string(), file)
        })
        .collect();
    let lookup = |id: &str| id.len().is_multiple_of(2).then(|| format!("sig-{id}"));
    let with_extras = Extras {
        signatures: Some(&lookup),
        media: Some(&media),
    };
    for target in targets() {
        for extras in [Extras::default(), with_extras] {
            match translate::chat::to_gemini_with(&request, &target, &extras) {
                Ok(out) => {
                    // Schemas and tool arguments are copied raw, as the client wrote them: a lone
                    // surrogate escape (`"\ud800"`), which serde_json refuses in a tree but not
                    // in a raw value, reaches Google as sent. Valid JSON in, valid JSON out.
                    let parsed: Result<Value, _> = serde_json::from_slice(&out);
                    let strict_input = serde_json::from_slice::<Value>(body).is_ok();
                    prop_assert!(
                        matches!(parsed, Ok(Value::Object(_))) || !strict_input,
                        "the Gemini body is not a JSON object: {}",
                        String::from_utf8_lossy(&out)
                    );
                }
                Err(e) => {
                    let status = from_translate(e.clone()).status();
                    prop_assert_eq!(
                        status.as_u16(),
                        400,
                        "untranslatable must be a 400: {:?}",
                        e
                    );
                }
            }
        }
    }
    Ok(())
}

fn text() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-zA-Z0-9 .,!?]{0,24}".prop_map(Value::String),
        "\\PC{0,16}".prop_map(Value::String),
        Just(json!("{\"a\": 1}")),
        Just(json!("  {not json")),
        Just(json!("")),
    ]
}

fn url() -> impl Strategy<Value = Value> {
    prop::sample::select(vec![
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/jpg;base64,/9j/4AAQ",
        "data:;base64,AAAA",
        "data:application/octet-stream;base64,AAAA",
        "data:image/png,notbase64",
        "data:image/png;charset=utf-8;BASE64,AA==",
        "data:",
        "data:,",
        "http://example.com/cat.png",
        "https://example.com/a%20b.jpg?x=1",
        "https://",
        "ftp://example.com/x.png",
        "file:///etc/passwd",
        "",
    ])
    .prop_map(Value::from)
}

fn part() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text().prop_map(|t| json!({"type": "text", "text": t})),
        2 => url().prop_map(|u| json!({"type": "image_url", "image_url": {"url": u, "detail": "auto"}})),
        1 => (text(), prop::sample::select(vec!["wav", "mp3", "flac", "", "x/y"]))
            .prop_map(|(d, f)| json!({"type": "input_audio", "input_audio": {"data": d, "format": f}})),
        1 => (
            prop::option::of(prop_oneof![url(), text()]),
            prop::option::of(text()),
            prop::option::of(prop::sample::select(vec!["a.pdf", "b.PNG", "noext", "x.", ".md", "c.tar.gz"]).prop_map(Value::from)),
        )
            .prop_map(|(data, id, name)| json!({"type": "file", "file": object(vec![
                ("file_data", data), ("file_id", id), ("filename", name)])})),
        1 => text().prop_map(|t| json!({"type": "refusal", "refusal": t})),
        1 => any_json().prop_map(|v| json!({"type": "video", "video": v})),
    ]
}

fn content() -> impl Strategy<Value = Value> {
    prop_oneof![
        1 => Just(Value::Null),
        3 => text(),
        3 => prop::collection::vec(part(), 0..4).prop_map(Value::Array),
    ]
}

fn arguments() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("{\"path\": \"src/main.rs\"}")),
        Just(json!("{}")),
        Just(json!("")),
        Just(json!("[1,2]")),
        Just(json!("{\"broken\": ")),
        Just(json!("\"\\u00e9\"")),
        Just(json!({"path": "a"})),
        Just(Value::Null),
        any_json(),
    ]
}

fn tool_call() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec!["call_1", "call_2", "", "tool_0_read_file"]),
        prop::sample::select(vec!["read_file", "write_to_file", "", "ünïcode"]),
        arguments(),
        prop::option::of(text()),
    )
        .prop_map(|(id, name, args, sig)| {
            let mut call = json!({"id": id, "type": "function",
                "function": {"name": name, "arguments": args}});
            if let Some(sig) = sig {
                call["extra_content"] = json!({"google": {"thought_signature": sig}});
            }
            call
        })
}

fn message() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            8 => prop::sample::select(vec!["system", "developer", "user", "assistant", "tool"]),
            1 => prop::sample::select(vec!["function", "model", "", "USER"]),
        ],
        or_junk(content()),
        prop::option::of(prop::collection::vec(tool_call(), 0..3).prop_map(Value::Array)),
        prop::option::of(
            prop::sample::select(vec!["call_1", "call_2", "", "gone"]).prop_map(Value::from),
        ),
        prop::option::of(text()),
    )
        .prop_map(|(role, content, calls, call_id, name)| {
            object(vec![
                ("role", Some(Value::from(role))),
                ("content", Some(content)),
                ("tool_calls", calls),
                ("tool_call_id", call_id),
                ("name", name),
            ])
        })
}

/// A JSON Schema with the keys the cleaner walks, nested.
fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        prop::sample::select(vec![
            "string", "integer", "number", "boolean", "object", "array", "null"
        ])
        .prop_map(|t| json!({"type": t})),
        Just(json!({"type": ["string", "null"]})),
        Just(json!({"$ref": "#/$defs/a"})),
        Just(json!(true)),
        Just(json!({})),
        any_json(),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::btree_map(
                "[a-z$]{1,6}|strict|\\$schema|\\$comment",
                inner.clone(),
                0..4
            )
            .prop_map(|props| json!({"type": "object", "properties": props,
                    "$schema": "http://json-schema.org/draft-07/schema#", "strict": true,
                    "additionalProperties": false})),
            inner
                .clone()
                .prop_map(|items| json!({"type": "array", "items": items})),
            prop::collection::vec(inner.clone(), 0..3)
                .prop_map(|any| json!({"anyOf": any, "$comment": "c"})),
            (inner.clone(), inner).prop_map(|(a, b)| json!({"$defs": {"a": a}, "not": b,
                "\\u0073trict": 1})),
        ]
    })
}

fn tool() -> impl Strategy<Value = Value> {
    (
        prop_oneof![9 => Just("function"), 1 => Just("code_interpreter")],
        prop::sample::select(vec!["read_file", "write_to_file", "read_file", ""]),
        prop::option::of(text()),
        prop::option::of(schema()),
    )
        .prop_map(|(kind, name, description, parameters)| {
            json!({"type": kind, "function": object(vec![
                ("name", Some(Value::from(name))),
                ("description", description),
                ("parameters", parameters),
            ])})
        })
}

fn response_format() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!({"type": "text"})),
        Just(json!({"type": "json_object"})),
        (prop::option::of(schema()), prop::option::of(text())).prop_map(|(schema, name)| {
            json!({"type": "json_schema", "json_schema": object(vec![
                ("name", name), ("schema", schema), ("strict", Some(json!(true)))])})
        }),
        Just(json!({"type": "json_schema"})),
        Just(json!({"type": "xml"})),
    ]
}

fn tool_choice() -> impl Strategy<Value = Value> {
    prop_oneof![
        prop::sample::select(vec!["auto", "none", "required", "any"]).prop_map(Value::from),
        Just(json!({"type": "function", "function": {"name": "read_file"}})),
        Just(json!({"type": "function"})),
    ]
}

fn google_extras() -> impl Strategy<Value = Value> {
    (
        prop::option::of(prop_oneof![number_json(), Just(json!(-1)), Just(json!(0))]),
        prop::option::of(
            prop::sample::select(vec!["low", "HIGH", "minimal", "max", ""]).prop_map(Value::from),
        ),
        prop::option::of(any::<bool>().prop_map(Value::Bool)),
        prop::option::of(text()),
    )
        .prop_map(|(budget, level, include, cache)| {
            object(vec![
                (
                    "thinking_config",
                    Some(object(vec![
                        ("thinking_budget", budget),
                        ("thinking_level", level),
                        ("include_thoughts", include),
                    ])),
                ),
                ("cached_content", cache),
            ])
        })
}

fn number_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-2.0f64..3.0).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(4294967296u64)),
        Just(json!(1e308)),
        Just(json!("0.5")),
    ]
}

/// A chat request built from the real fields, each optional, each now and then of a wrong type.
fn chat_request() -> impl Strategy<Value = Value> {
    let head = (
        prop_oneof![
            8 => prop::sample::select(MODELS).prop_map(Value::from),
            1 => any_json(),
        ],
        prop_oneof![
            8 => prop::collection::vec(message(), 0..7).prop_map(Value::Array),
            1 => any_json(),
        ],
        prop::option::of(or_junk(any::<bool>().prop_map(Value::Bool))),
        prop::option::of(or_junk(
            any::<bool>().prop_map(|b| json!({"include_usage": b})),
        )),
        prop::option::of(or_junk(
            prop::sample::select(vec![
                "none", "minimal", "low", "medium", "high", "xhigh", "max", "ultra",
            ])
            .prop_map(Value::from),
        )),
        prop::option::of(number_json()),
        prop::option::of(number_json()),
        prop::option::of(number_json()),
    );
    let tail = (
        prop::option::of(or_junk(prop_oneof![
            text(),
            prop::collection::vec(text(), 0..3).prop_map(Value::Array)
        ])),
        prop::option::of(or_junk(response_format())),
        prop::option::of(or_junk(
            prop::collection::vec(tool(), 0..4).prop_map(Value::Array),
        )),
        prop::option::of(or_junk(tool_choice())),
        prop::option::of(or_junk(google_extras())),
        prop::option::of(or_junk(google_extras().prop_map(|g| json!({"google": g})))),
        prop::option::of(or_junk(Just(json!({"search_context_size": "low"})))),
        prop::option::of(number_json()),
    );
    (head, tail).prop_map(
        |(
            (model, messages, stream, options, effort, temperature, top_p, max_tokens),
            (stop, format, tools, choice, google, extra_body, web, n),
        )| {
            object(vec![
                ("model", Some(model)),
                ("messages", Some(messages)),
                ("stream", stream),
                ("stream_options", options),
                ("reasoning_effort", effort),
                ("temperature", temperature),
                ("top_p", top_p),
                ("max_tokens", max_tokens),
                ("stop", stop),
                ("response_format", format),
                ("tools", tools),
                ("tool_choice", choice),
                ("google", google),
                ("extra_body", extra_body),
                ("web_search_options", web),
                ("n", n),
            ])
        },
    )
}

#[test]
fn seeds_as_they_are() {
    for (name, body) in crate::corpus("request") {
        if let Err(e) = check(&body) {
            panic!("{name}: {e}");
        }
        // The seeds are real requests: they must go through.
        let request = translate::chat::parse_chat_request(&body)
            .unwrap_or_else(|e| panic!("seed {name} does not parse: {e}"));
        if translate::chat::remote_media_urls(&request).is_empty() {
            translate::chat::to_gemini(&request, &targets()[0])
                .unwrap_or_else(|e| panic!("seed {name} does not translate: {e}"));
        }
    }
}

/// Generating these nested requests takes more stack than a test thread has in a debug build
/// (proptest's value trees, not the code under test), hence the thread of its own.
#[test]
fn structured_requests() {
    crate::with_big_stack(|| {
        proptest!(fuzz_config("request", 4500), |(request in mutated_json(chat_request()))| {
            check(&serde_json::to_vec(&request).expect("a Value serialises"))?;
        });
    });
}

proptest! {
    #![proptest_config(fuzz_config("request", 4500))]

    #[test]
    fn mutated_seed_bytes(body in mutated_bytes(seeds("request"))) {
        check(&body)?;
    }

    #[test]
    fn mutated_seed_json(request in crate::mutated_json_seeds(&seeds("request"))) {
        check(&serde_json::to_vec(&request).expect("a Value serialises"))?;
    }

    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&body)?;
    }
}

/// Found by this target: the schema cleaner recursed once per level of a tool's `parameters`
/// (or a response schema), which the body parser does not limit in depth, so a 320 kB request
/// (20,000 levels) overflowed the stack and aborted the whole process.
#[test]
fn deeply_nested_schema() {
    for depth in [1_000usize, 20_000] {
        let schema = format!(
            "{}{{\"strict\":true}}{}",
            "{\"properties\":{\"a\":".repeat(depth),
            "}}".repeat(depth)
        );
        let body = json!({
            "model": "gemini-2.5-flash",
            "messages": [{"role": "user", "content": "hi"}],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": "SCHEMA"}}],
            "response_format": {"type": "json_schema", "json_schema": {"schema": "SCHEMA"}},
        })
        .to_string()
        .replace("\"SCHEMA\"", &schema);
        let request = translate::chat::parse_chat_request(body.as_bytes()).expect("parses");
        let out = translate::chat::to_gemini(&request, &targets()[0]).expect("translates");
        assert!(out.len() > schema.len(), "depth {depth}");
    }
}
