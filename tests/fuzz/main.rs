//! Fuzz targets on stable Rust: property-based (proptest), run by plain `cargo test`.
//!
//! Each module is one target over code that reads untrusted input: the OpenAI request
//! translation (`request`), the SSE parser (`sse`), the stream and whole-response translators
//! (`stream`, `response`), the config loader (`config`), client address, IP rule, query and
//! route parsing (`access`), and Google error classification (`classify`). Every target feeds
//! three kinds of input: arbitrary bytes, inputs built at random from the real field names
//! (structured but wrong in every way a client or Google could be), and the seed corpus in
//! `tests/fuzz/corpus/<target>/` mutated byte-wise and JSON-wise. Each seed also runs as it is.
//! The properties are "no panic" plus what each target promises (a client's bad request is a
//! 400, the SSE parser's items do not depend on how the bytes were split, every chunk the
//! stream translator writes is JSON, every config problem has a position).
//!
//! Bounded and reproducible: each target runs a fixed number of cases from a fixed seed (the
//! whole suite takes about a minute in a debug build on 2 cores). To fuzz longer or elsewhere,
//! set `PROPTEST_CASES` (cases per target) and `PROPTEST_RNG_SEED` (a number); a failure is
//! shrunk and its seed appended to `tests/fuzz/proptest-regressions/<target>.txt`, which is
//! committed and replayed first on every run.

mod access;
mod classify;
mod config;
mod request;
mod response;
mod sse;
mod stream;

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, FileFailurePersistence, RngSeed};
use serde_json::{Map, Value};

/// The fixed seed of CI runs; any number would do.
const SEED: u64 = 0x6765_6d69_6e69_2d72;

/// A target's config: `cases` cases (unless `PROPTEST_CASES` says otherwise), the fixed seed
/// (unless `PROPTEST_RNG_SEED` says otherwise), failures kept in the target's regression file.
pub fn fuzz_config(target: &str, cases: u32) -> ProptestConfig {
    let mut config = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    if std::env::var_os("PROPTEST_RNG_SEED").is_none() {
        config.rng_seed = RngSeed::Fixed(SEED);
    }
    // Relative to the package root, where `cargo test` runs integration tests.
    let file: &'static str =
        Box::leak(format!("tests/fuzz/proptest-regressions/{target}.txt").into_boxed_str());
    config.failure_persistence = Some(Box::new(FileFailurePersistence::Direct(file)));
    // A failure is reported within a bounded time even when shrinking is slow.
    config.max_shrink_time = 60_000;
    config
}

/// Runs `f` on a thread with a 64 MiB stack (and passes its panic on): some strategies nest
/// deeply enough to overflow a test thread's 2 MiB in a debug build while generating.
pub fn with_big_stack(f: impl FnOnce() + Send + 'static) {
    let worker = std::thread::Builder::new()
        .name("fuzz".into())
        .stack_size(64 << 20)
        .spawn(f)
        .expect("a thread");
    if let Err(panic) = worker.join() {
        std::panic::resume_unwind(panic);
    }
}

/// The seed files of one target, sorted by name, as `(name, bytes)`.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz/corpus")
        .join(target);
    corpus_from(&dir)
}

pub fn corpus_from(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("read a corpus file");
            (e.file_name().to_string_lossy().into_owned(), bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "corpus {} is empty", dir.display());
    seeds
}

/// Just the bytes of `corpus(target)`.
pub fn seeds(target: &str) -> Vec<Vec<u8>> {
    corpus(target).into_iter().map(|(_, b)| b).collect()
}

// ---------------------------------------------------------------------------------------------
// Byte-level mutation of seeds.

/// One edit of a byte string; positions are taken modulo the length when applied, so every
/// edit applies to every input and shrinks towards the start.
#[derive(Debug, Clone)]
pub enum ByteOp {
    Set(usize, u8),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Duplicate(usize, usize),
    Truncate(usize),
    /// Bytes `[at, at+len)` of another seed inserted at `pos`.
    Splice {
        pos: usize,
        seed: usize,
        at: usize,
        len: usize,
    },
}

/// Tokens that matter to the formats under test, inserted more often than random bytes.
pub const DICTIONARY: &[&[u8]] = &[
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"data:",
    b"data: ",
    b": ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b"\\\"",
    b"\\u0000",
    b"\\ud800",
    b",",
    b":",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551615",
    b"-9223372036854775809",
    b"0.5",
    b"\"error\"",
    b"=",
    b"[[",
    b"]]",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xa6",
    b"#",
    b"'''",
    b"\"\"\"",
];

fn insertion() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::sample::select(DICTIONARY).prop_map(<[u8]>::to_vec),
        1 => prop::collection::vec(any::<u8>(), 1..8),
    ]
}

fn byte_op() -> impl Strategy<Value = ByteOp> {
    prop_oneof![
        any::<(usize, u8)>().prop_map(|(p, b)| ByteOp::Set(p, b)),
        (any::<usize>(), insertion()).prop_map(|(p, b)| ByteOp::Insert(p, b)),
        (any::<usize>(), 1..64usize).prop_map(|(p, n)| ByteOp::Delete(p, n)),
        (any::<usize>(), 1..64usize).prop_map(|(p, n)| ByteOp::Duplicate(p, n)),
        any::<usize>().prop_map(ByteOp::Truncate),
        (any::<usize>(), any::<usize>(), any::<usize>(), 1..128usize)
            .prop_map(|(pos, seed, at, len)| ByteOp::Splice { pos, seed, at, len }),
    ]
}

pub fn apply_bytes(mut data: Vec<u8>, ops: &[ByteOp], seeds: &[Vec<u8>]) -> Vec<u8> {
    for op in ops {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match op {
            ByteOp::Set(p, b) => {
                if !data.is_empty() {
                    let i = p % data.len();
                    data[i] = *b;
                }
            }
            ByteOp::Insert(p, bytes) => {
                let i = at(*p, data.len());
                data.splice(i..i, bytes.iter().copied());
            }
            ByteOp::Delete(p, n) => {
                let i = at(*p, data.len());
                let end = (i + n).min(data.len());
                data.drain(i..end);
            }
            ByteOp::Duplicate(p, n) => {
                let i = at(*p, data.len());
                let end = (i + n).min(data.len());
                let copy = data[i..end].to_vec();
                data.splice(end..end, copy);
            }
            ByteOp::Truncate(p) => {
                let i = at(*p, data.len());
                data.truncate(i);
            }
            ByteOp::Splice {
                pos,
                seed,
                at: from,
                len,
            } => {
                let other = &seeds[seed % seeds.len()];
                let start = at(*from, other.len()).min(other.len());
                let end = (start + len).min(other.len());
                let i = at(*pos, data.len());
                data.splice(i..i, other[start..end].iter().copied());
            }
        }
    }
    data
}

/// A seed of `seeds` with 0 to 8 byte edits.
pub fn mutated_bytes(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    let n = seeds.len();
    (0..n, prop::collection::vec(byte_op(), 0..8))
        .prop_map(move |(i, ops)| apply_bytes(seeds[i].clone(), &ops, &seeds))
}

// ---------------------------------------------------------------------------------------------
// JSON values and JSON-level mutation.

/// Field names of every format under test (OpenAI requests, Gemini responses, Google errors,
/// JSON Schema), so random objects often hit a real field.
pub const FIELD_NAMES: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "image_url",
    "url",
    "input_audio",
    "data",
    "format",
    "file",
    "file_data",
    "file_id",
    "filename",
    "tool_calls",
    "tool_call_id",
    "name",
    "id",
    "function",
    "arguments",
    "extra_content",
    "google",
    "thought_signature",
    "tools",
    "tool_choice",
    "parameters",
    "description",
    "response_format",
    "json_schema",
    "schema",
    "stream",
    "stream_options",
    "include_usage",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "n",
    "seed",
    "reasoning_effort",
    "thinking_config",
    "thinking_budget",
    "thinking_level",
    "include_thoughts",
    "cached_content",
    "extra_body",
    "web_search_options",
    "logprobs",
    "top_logprobs",
    "candidates",
    "parts",
    "functionCall",
    "args",
    "thought",
    "thoughtSignature",
    "finishReason",
    "index",
    "usageMetadata",
    "promptTokenCount",
    "candidatesTokenCount",
    "thoughtsTokenCount",
    "totalTokenCount",
    "cachedContentTokenCount",
    "toolUsePromptTokenCount",
    "promptFeedback",
    "blockReason",
    "logprobsResult",
    "chosenCandidates",
    "topCandidates",
    "token",
    "logProbability",
    "groundingMetadata",
    "groundingChunks",
    "groundingSupports",
    "web",
    "uri",
    "title",
    "segment",
    "startIndex",
    "endIndex",
    "groundingChunkIndices",
    "webSearchQueries",
    "error",
    "code",
    "message",
    "status",
    "details",
    "@type",
    "reason",
    "metadata",
    "quota_limit",
    "violations",
    "quotaId",
    "retryDelay",
    "properties",
    "items",
    "anyOf",
    "$schema",
    "strict",
    "$comment",
    "$defs",
    "$ref",
    "required",
    "additionalProperties",
    "enum",
    "modelVersion",
    "responseId",
];

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9 _.:/-]{0,16}",
        2 => prop::sample::select(FIELD_NAMES).prop_map(str::to_owned),
        2 => "\\PC{0,24}",
        1 => ".{0,12}",
    ]
}

fn number() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        prop::sample::select(vec![
            0.0,
            -0.0,
            -1.0,
            0.5,
            1.0,
            2.0,
            4294967295.0,
            4294967296.0,
            1e300,
            -1e300,
            f64::MAX,
            f64::MIN_POSITIVE,
        ])
        .prop_map(Value::from),
        prop::sample::select(vec![u64::MAX, u64::MAX / 2 + 1, u32::MAX as u64 + 1])
            .prop_map(Value::from),
    ]
}

/// Any JSON value, up to a few levels deep, its keys often real field names.
pub fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        number(),
        string().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(string(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One edit of a JSON tree; `node` is an index into its nodes in pre-order, modulo their count.
#[derive(Debug, Clone)]
pub enum JsonOp {
    Replace(usize, Value),
    Remove(usize),
    DuplicateElement(usize),
    WrapInArray(usize),
    Stringify(usize),
    AddField(usize, String, Value),
}

pub fn json_op() -> impl Strategy<Value = JsonOp> {
    prop_oneof![
        3 => (any::<usize>(), any_json()).prop_map(|(n, v)| JsonOp::Replace(n, v)),
        2 => any::<usize>().prop_map(JsonOp::Remove),
        1 => any::<usize>().prop_map(JsonOp::DuplicateElement),
        1 => any::<usize>().prop_map(JsonOp::WrapInArray),
        1 => any::<usize>().prop_map(JsonOp::Stringify),
        2 => (any::<usize>(), prop::sample::select(FIELD_NAMES), any_json())
            .prop_map(|(n, k, v)| JsonOp::AddField(n, k.to_owned(), v)),
    ]
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(o) => o.values().map(count).sum(),
        _ => 0,
    }
}

/// The `n`th node in pre-order (0 is the root).
fn node_mut(v: &mut Value, mut n: usize) -> Option<&mut Value> {
    if n == 0 {
        return Some(v);
    }
    n -= 1;
    let children: Vec<&mut Value> = match v {
        Value::Array(a) => a.iter_mut().collect(),
        Value::Object(o) => o.values_mut().collect(),
        _ => return None,
    };
    for child in children {
        let size = count(child);
        if n < size {
            return node_mut(child, n);
        }
        n -= size;
    }
    None
}

/// Removes a node other than the root (`n` modulo their count) from its container.
fn remove_node(v: &mut Value, n: usize) {
    let total = count(v);
    if total <= 1 {
        return;
    }
    // Node 0 is the root, which cannot be removed: pick a child of somewhere instead.
    let n = 1 + (n % (total - 1));
    /// `n` counts the nodes below `v` in pre-order, 0 being its first child.
    fn go(v: &mut Value, mut n: usize) -> bool {
        let keys: Vec<String> = match v {
            Value::Object(o) => o.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let len = match v {
            Value::Array(a) => a.len(),
            Value::Object(o) => o.len(),
            _ => 0,
        };
        for i in 0..len {
            let child = match v {
                Value::Array(a) => &mut a[i],
                Value::Object(o) => o.get_mut(&keys[i]).expect("key just listed"),
                _ => return false,
            };
            let size = count(child);
            if n == 0 {
                match v {
                    Value::Array(a) => {
                        a.remove(i);
                    }
                    Value::Object(o) => {
                        o.remove(&keys[i]);
                    }
                    _ => {}
                }
                return true;
            }
            if n < size {
                return go(child, n - 1);
            }
            n -= size;
        }
        false
    }
    go(v, n - 1);
}

pub fn apply_json(mut v: Value, ops: &[JsonOp]) -> Value {
    for op in ops {
        let total = count(&v);
        let pick = |n: usize| n % total;
        match op {
            JsonOp::Replace(n, new) => {
                if let Some(node) = node_mut(&mut v, pick(*n)) {
                    *node = new.clone();
                }
            }
            JsonOp::Remove(n) => remove_node(&mut v, *n),
            JsonOp::DuplicateElement(n) => {
                if let Some(Value::Array(a)) = node_mut(&mut v, pick(*n)) {
                    if let Some(first) = a.first().cloned() {
                        a.push(first);
                    }
                }
            }
            JsonOp::WrapInArray(n) => {
                if let Some(node) = node_mut(&mut v, pick(*n)) {
                    let inner = node.take();
                    *node = Value::Array(vec![inner]);
                }
            }
            JsonOp::Stringify(n) => {
                if let Some(node) = node_mut(&mut v, pick(*n)) {
                    let text = node.to_string();
                    *node = Value::String(text);
                }
            }
            JsonOp::AddField(n, key, value) => {
                if let Some(Value::Object(o)) = node_mut(&mut v, pick(*n)) {
                    o.insert(key.clone(), value.clone());
                }
            }
        }
    }
    v
}

/// `base` with 0 to 4 JSON edits.
pub fn mutated_json(base: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    (base, prop::collection::vec(json_op(), 0..4)).prop_map(|(v, ops)| apply_json(v, &ops))
}

/// The JSON seeds of a target (files that parse), each with 0 to 4 JSON edits.
pub fn mutated_json_seeds(seeds: &[Vec<u8>]) -> impl Strategy<Value = Value> {
    let values: Vec<Value> = seeds
        .iter()
        .filter_map(|s| serde_json::from_slice(s).ok())
        .collect();
    assert!(!values.is_empty(), "no JSON seeds");
    mutated_json(prop::sample::select(values))
}

/// An object from `(name, value)` pairs, leaving out the `None`s.
pub fn object(fields: Vec<(&str, Option<Value>)>) -> Value {
    let map: Map<String, Value> = fields
        .into_iter()
        .filter_map(|(k, v)| Some((k.to_owned(), v?)))
        .collect();
    Value::Object(map)
}

/// A value of `strategy`, or now and then any JSON value at all (a wrong type).
pub fn or_junk<S>(strategy: S) -> impl Strategy<Value = Value>
where
    S: Strategy<Value = Value> + 'static,
{
    prop_oneof![8 => strategy, 1 => any_json()]
}

/// Bytes drawn mostly from `alphabet`'s tokens: dense in the structure a parser reacts to.
pub fn tokens_bytes(
    alphabet: &'static [&'static [u8]],
    max: usize,
) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(alphabet).prop_map(<[u8]>::to_vec),
            1 => prop::collection::vec(any::<u8>(), 1..4),
        ],
        0..max,
    )
    .prop_map(|parts| parts.concat())
}

#[test]
fn json_mutation_reaches_every_node() {
    let v: Value = serde_json::json!({"a": [1, {"b": 2}], "c": "x"});
    let total = count(&v);
    assert_eq!(total, 6);
    for n in 0..total {
        assert!(node_mut(&mut v.clone(), n).is_some(), "node {n}");
        let mut w = v.clone();
        remove_node(&mut w, n);
        assert!(count(&w) < total, "removing node {n} of {v}");
    }
}
