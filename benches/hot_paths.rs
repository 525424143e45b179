//! `cargo bench`: the pure hot spots of the proxy, without sockets (SPEC §8).
//!
//! - `pick_report/N`: one key selection plus its outcome report, round robin over N keys
//!   (must be flat from 10 to 10,000 keys).
//! - `translate/*`: a Cline-like chat request with tools to Gemini, a Gemini answer to
//!   `chat.completion`, and a four-event stream to `chat.completion.chunk`s.
//! - `reload/*`: loading a 10,000-key config (parse + validate + key file) and building the
//!   snapshot from it, first start and reload (health cells reused): a reload must take ≤ 50 ms.
//! - `record/T`: what every finished request records (the dashboard's timeline, the token
//!   ledger, the request metrics), from T threads at once: with per-worker shards the time per
//!   request must not grow with T (a process-wide lock would make the threads wait on each other).
//!
//! The end-to-end numbers (throughput, latency, CPU per request, memory) come from
//! `bench/run.sh`.

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use gemini_rotator::config;
use gemini_rotator::pool::{KeyPool, Outcome};
use gemini_rotator::state::Snapshot;
use gemini_rotator::translate::chat::{self, StreamTranslator};
use gemini_rotator::translate::{ResponseCtx, Target};

const CHAT: &str = include_str!("../bench/bodies/chat.json");
const MODEL: &str = "gemini-2.5-flash";

const ANSWER: &str = r#"{"candidates":[{"content":{"parts":[{"text":"Rust's ownership model gives each value a single owner; when the owner goes out of scope the value is dropped. Borrowing lets code use a value without taking ownership."}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1204,"candidatesTokenCount":78,"totalTokenCount":1282},"modelVersion":"gemini-2.5-flash","responseId":"mF3kaKfXBIbnz7IPmLyQ-Ak"}"#;

const EVENTS: [&str; 4] = [
    r#"{"candidates":[{"content":{"parts":[{"text":"Rust's ownership model gives each value a single owner; "}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":1204,"candidatesTokenCount":12,"totalTokenCount":1216},"modelVersion":"gemini-2.5-flash","responseId":"mF3kaKfXBIbnz7IPmLyQ-Ak"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":"when the owner goes out of scope the value is dropped. "}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":1204,"candidatesTokenCount":24,"totalTokenCount":1228},"modelVersion":"gemini-2.5-flash","responseId":"mF3kaKfXBIbnz7IPmLyQ-Ak"}"#,
    r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"read_file","args":{"path":"src/lib.rs"}},"thoughtSignature":"CpQBAVSoXO5kZ0x1c2lnbmF0dXJl"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":1204,"candidatesTokenCount":40,"totalTokenCount":1244},"modelVersion":"gemini-2.5-flash","responseId":"mF3kaKfXBIbnz7IPmLyQ-Ak"}"#,
    r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":1204,"candidatesTokenCount":41,"totalTokenCount":1245},"modelVersion":"gemini-2.5-flash","responseId":"mF3kaKfXBIbnz7IPmLyQ-Ak"}"#,
];

/// A temp folder with `config.toml` and a `keys.txt` of `n` fake keys; removed on drop.
struct TempConfig {
    dir: PathBuf,
}

impl TempConfig {
    fn new(n: usize) -> TempConfig {
        let dir =
            std::env::temp_dir().join(format!("gemini-rotator-bench-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut keys = std::fs::File::create(dir.join("keys.txt")).expect("keys.txt");
        for i in 0..n {
            writeln!(keys, "AIzaFAKE-bench-key-{i:05}-xxxxxxxxxxxxxxxx").expect("write key");
        }
        std::fs::write(
            dir.join("config.toml"),
            "[server]\nlisten = \"127.0.0.1:0\"\n\
             [upstream]\nbase_url = \"http://127.0.0.1:9\"\n\
             [auth]\ntokens = [\"sk-bench-token-0123456789abcdef\"]\n\
             [pool]\nkey_files = [\"keys.txt\"]\n",
        )
        .expect("config.toml");
        TempConfig { dir }
    }

    fn path(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn load(path: &Path) -> config::Config {
    config::load(path).expect("bench config loads").config
}

fn key_selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_report");
    for n in [10, 1_000, 10_000] {
        let tmp = TempConfig::new(n);
        let cfg = load(&tmp.path());
        let keys = KeyPool::new();
        let pool = keys.bind(&cfg.pool);
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                let now = Instant::now();
                let lease = pool.pick(MODEL, now, &[]).expect("a usable key");
                pool.report(&lease, &Outcome::Success, now);
                black_box(lease.index)
            })
        });
    }
    group.finish();
}

fn translation(c: &mut Criterion) {
    let mut group = c.benchmark_group("translate");
    let target = Target {
        model: MODEL,
        reasoning_effort: None,
        safety: Some("BLOCK_NONE"),
    };
    let ctx = ResponseCtx {
        id: "chatcmpl-0123456789abcdef".into(),
        created: 1_760_000_000,
        model: MODEL.into(),
        one_call: false,
        legacy_functions: false,
        tool_names: Default::default(),
    };
    group.throughput(Throughput::Bytes(CHAT.len() as u64));
    group.bench_function("request_cline_tools", |b| {
        b.iter(|| {
            let req = chat::parse_chat_request(black_box(CHAT.as_bytes())).expect("parses");
            chat::to_gemini(&req, &target).expect("translates")
        })
    });
    group.throughput(Throughput::Bytes(ANSWER.len() as u64));
    group.bench_function("response", |b| {
        b.iter(|| chat::from_gemini(black_box(ANSWER.as_bytes()), &ctx).expect("translates"))
    });
    group.throughput(Throughput::Elements(EVENTS.len() as u64));
    group.bench_function("stream_4_events", |b| {
        b.iter(|| {
            let mut t = StreamTranslator::new(ctx.clone(), true);
            let mut out = 0;
            for event in EVENTS {
                out += t
                    .on_event(black_box(event.as_bytes()))
                    .expect("event")
                    .len();
            }
            out + t.finish().len()
        })
    });
    group.finish();
}

fn reload(c: &mut Criterion) {
    let mut group = c.benchmark_group("reload");
    group
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let tmp = TempConfig::new(10_000);
    let path = tmp.path();
    group.bench_function("load_config_10k_keys", |b| b.iter(|| load(&path)));
    let cfg = load(&path);
    group.bench_function("first_snapshot_10k_keys", |b| {
        b.iter(|| {
            Snapshot::build(cfg.clone(), &KeyPool::new(), &Default::default()).expect("snapshot")
        })
    });
    let keys = KeyPool::new();
    let usage = Default::default();
    let _first = Snapshot::build(cfg.clone(), &keys, &usage).expect("snapshot");
    group.bench_function("reload_10k_keys", |b| {
        // What a reload does: load the files, then build the snapshot on the live key pool.
        b.iter(|| Snapshot::build(load(&path), &keys, &usage).expect("snapshot"))
    });
    group.finish();
}

fn recorders(c: &mut Criterion) {
    use gemini_rotator::timeline::Timeline;
    use gemini_rotator::usage::{TokenUsage, Tokens};
    use std::time::SystemTime;

    let mut group = c.benchmark_group("record");
    let timeline = Timeline::default();
    let usage = TokenUsage::new();
    let tokens = Tokens {
        prompt: 1204,
        completion: 78,
        thoughts: 0,
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
    for t in [1, threads] {
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::from_parameter(t), &t, |b, &t| {
            // Each of `t` threads records `iters` requests; the time is per request per thread.
            b.iter_custom(|iters| {
                let start = Instant::now();
                std::thread::scope(|s| {
                    for _ in 0..t {
                        s.spawn(|| {
                            for _ in 0..iters {
                                let now = SystemTime::now();
                                timeline.record(now, 200);
                                usage.record_at(Some("cline"), tokens, now);
                                gemini_rotator::metrics::record_request(
                                    "generateContent",
                                    MODEL,
                                    200,
                                    Duration::from_micros(150),
                                    1,
                                );
                            }
                        });
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, key_selection, translation, reload, recorders);
criterion_main!(benches);
