//! The config loader (`config::load`) on documents built from the real field names with random
//! values (and random key and token files beside them), on mutated seed configs and on
//! arbitrary bytes. Property: no panic; a rejected config lists at least one problem, each
//! with `file:line:col` (only a named file that cannot be read has no position); no problem
//! or warning quotes a key or a token.

use gemini_rotator::config;
use proptest::prelude::*;
use toml::{Table, Value};

use crate::{fuzz_config, mutated_bytes, seeds};

/// Secrets the generator plants; none may be quoted back.
const KEYS: &[&str] = &[
    "AIzaSyFUZZ0key0alpha0000000000000000001",
    "AIzaSyFUZZ0key0bravo0000000000000000002",
    "AQ.FUZZ0key0charlie00000000000000000003",
    "not-a-google-key-but-secret-0004",
];
const TOKENS: &[&str] = &[
    "sk-fuzz-client-token-alpha-0001",
    "sk-fuzz-client-token-bravo-0002",
    "sk-fuzz-admin-token-charlie-0003",
];

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

fn strings(options: &'static [&'static str]) -> impl Strategy<Value = Value> {
    prop::sample::select(options).prop_map(s)
}

fn list(item: impl Strategy<Value = Value>) -> impl Strategy<Value = Value> {
    prop::collection::vec(item, 0..4).prop_map(Value::Array)
}

/// A value of the wrong kind for most fields.
fn junk() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i64>().prop_map(Value::Integer),
        any::<bool>().prop_map(Value::Boolean),
        (-1e9f64..1e9).prop_map(Value::Float),
        Just(Value::Float(f64::NAN)),
        "\\PC{0,12}".prop_map(Value::String),
        Just(Value::Array(vec![s("x"), Value::Integer(1)])),
        Just(Value::Table(Table::from_iter([("x".to_owned(), s("y"))]))),
        Just(Value::Datetime(
            "1979-05-27T07:32:00Z".parse().expect("a datetime")
        )),
    ]
}

fn duration() -> impl Strategy<Value = Value> {
    strings(&[
        "30s",
        "0s",
        "1h 2m",
        "500ms",
        "-1s",
        "1x",
        "",
        "18446744073709551616s",
        "10m",
        "1 day",
        "0.5s",
        "9999999999h",
    ])
}

fn int() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..10).prop_map(Value::Integer),
        prop::sample::select(vec![-1i64, i64::MAX, i64::MIN, 1 << 32, 65536])
            .prop_map(Value::Integer),
    ]
}

fn models() -> impl Strategy<Value = Value> {
    list(strings(&[
        "gemini-2.5-*",
        "gemini-2.5-flash",
        "[",
        "",
        "*",
        "gemini-3-pro-preview",
    ]))
}

fn key_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(KEYS).prop_map(s),
        1 => strings(&["", "AIza", "  padded  "]),
        2 => (
            prop::sample::select(KEYS),
            prop::option::of(strings(&["team-a", "", "team-a"])),
            prop::option::of(strings(&["proj-1", ""])),
            prop::option::of(models()),
            prop::option::of(int()),
        )
            .prop_map(|(key, name, project, models, limit)| {
                let mut t = Table::new();
                t.insert("key".into(), s(key));
                for (k, v) in [("name", name), ("project", project), ("models", models), ("daily_limit", limit)] {
                    if let Some(v) = v {
                        t.insert(k.into(), v);
                    }
                }
                Value::Table(t)
            }),
    ]
}

fn token_entry() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::sample::select(TOKENS).prop_map(s),
        1 => strings(&["", "short", "sk-1234567"]),
        2 => (
            prop::sample::select(TOKENS),
            prop::option::of(strings(&["cline", "", "admin", "cline"])),
            prop::option::of(models()),
        )
            .prop_map(|(token, name, models)| {
                let mut t = Table::new();
                t.insert("token".into(), s(token));
                if let Some(n) = name {
                    t.insert("name".into(), n);
                }
                if let Some(m) = models {
                    t.insert("models".into(), m);
                }
                Value::Table(t)
            }),
    ]
}

fn alias() -> impl Strategy<Value = Value> {
    prop_oneof![
        strings(&["gemini-2.5-pro", "fast", "gpt-4o", ""]),
        (
            prop::option::of(strings(&["gemini-2.5-pro", "fast", "gpt-4o"])),
            prop::option::of(list(strings(&[
                "gemini-2.5-flash",
                "gemini-2.0-flash",
                "fast",
                "gpt-4o"
            ]))),
            prop::option::of(strings(&["high", "low", "extreme", ""])),
        )
            .prop_map(|(model, models, effort)| {
                let mut t = Table::new();
                for (k, v) in [
                    ("model", model),
                    ("models", models),
                    ("reasoning_effort", effort),
                ] {
                    if let Some(v) = v {
                        t.insert(k.into(), v);
                    }
                }
                Value::Table(t)
            }),
    ]
}

type FieldGen = (&'static str, BoxedStrategy<Value>);

fn section(fields: Vec<FieldGen>) -> impl Strategy<Value = Table> {
    let n = fields.len();
    let gens: Vec<BoxedStrategy<Option<(String, Value)>>> = fields
        .into_iter()
        .map(|(name, g)| {
            prop::option::weighted(0.5, prop_oneof![9 => g, 1 => junk().boxed()])
                .prop_map(move |v| v.map(|v| (name.to_owned(), v)))
                .boxed()
        })
        .collect();
    (gens, prop::option::weighted(0.05, ("[a-z_]{1,8}", junk()))).prop_map(move |(vals, extra)| {
        let mut t = Table::new();
        for (k, v) in vals.into_iter().flatten() {
            t.insert(k, v);
        }
        if let Some((k, v)) = extra {
            t.insert(k, v);
        }
        debug_assert!(t.len() <= n + 1);
        t
    })
}

fn document() -> impl Strategy<Value = Table> {
    let server = section(vec![
        (
            "listen",
            strings(&[
                "127.0.0.1:0",
                "0.0.0.0:7860",
                "[::1]:80",
                "localhost:99999",
                "nope",
                "",
            ])
            .boxed(),
        ),
        (
            "trusted_proxies",
            list(strings(&[
                "10.0.0.0/8",
                "127.0.0.1",
                "::1",
                "bad/99",
                "*",
                "10.0.0.1/33",
            ]))
            .boxed(),
        ),
        (
            "max_body",
            strings(&[
                "32MiB",
                "1kB",
                "0",
                "-1",
                "1e9",
                "99999999999999999999 GiB",
                "",
            ])
            .boxed(),
        ),
        ("header_timeout", duration().boxed()),
        ("shutdown_grace", duration().boxed()),
        (
            "metrics_public",
            any::<bool>().prop_map(Value::Boolean).boxed(),
        ),
        ("reload_poll", duration().boxed()),
        ("workers", int().boxed()),
    ]);
    let upstream = section(vec![
        (
            "base_url",
            strings(&[
                "http://127.0.0.1:1",
                "https://x/",
                "ftp://x",
                "http://user:pass@h:1/p?q",
                "not a url",
                "",
            ])
            .boxed(),
        ),
        (
            "proxy",
            strings(&[
                "",
                "socks5://127.0.0.1:1080",
                "http://u:secretpass@proxy:8080",
                "x",
            ])
            .boxed(),
        ),
        ("connect_timeout", duration().boxed()),
        ("first_byte_timeout", duration().boxed()),
        ("idle_timeout", duration().boxed()),
        ("heartbeat", duration().boxed()),
        (
            "safety",
            strings(&["BLOCK_NONE", "OFF", "default", "block_none", ""]).boxed(),
        ),
        (
            "fetch_private_urls",
            any::<bool>().prop_map(Value::Boolean).boxed(),
        ),
    ]);
    let auth = section(vec![
        (
            "tokens",
            prop::collection::vec(token_entry(), 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        (
            "token_files",
            list(strings(&[
                "tokens.txt",
                "missing.txt",
                "",
                "tokens.txt",
                ".",
            ]))
            .boxed(),
        ),
        (
            "admin_tokens",
            list(prop_oneof![
                prop::sample::select(TOKENS).prop_map(s),
                strings(&["", "adm"])
            ])
            .boxed(),
        ),
    ]);
    let access = section(vec![
        (
            "allow",
            list(strings(&[
                "*",
                "10.0.0.0/8",
                "bad",
                "::1",
                "",
                "127.0.0.1/8",
            ]))
            .boxed(),
        ),
        (
            "deny",
            list(strings(&["*", "192.168.0.0/16", "x", "::ffff:10.0.0.1"])).boxed(),
        ),
        ("max_token_failures", int().boxed()),
    ]);
    let pool = section(vec![
        (
            "strategy",
            strings(&["round_robin", "least_used", "random", ""]).boxed(),
        ),
        (
            "keys",
            prop::collection::vec(key_entry(), 0..4)
                .prop_map(Value::Array)
                .boxed(),
        ),
        (
            "key_files",
            list(strings(&[
                "keys.txt",
                "missing.txt",
                "",
                "keys.txt",
                "sub/keys.txt",
            ]))
            .boxed(),
        ),
        ("failure_threshold", int().boxed()),
        ("cooldown", duration().boxed()),
        ("max_attempts", int().boxed()),
    ]);
    let models = section(vec![
        ("list", strings(&["upstream", "static", "x"]).boxed()),
        (
            "static",
            list(strings(&["gemini-2.5-flash", "", "models/gemini-2.5-pro"])).boxed(),
        ),
        ("refresh", duration().boxed()),
        (
            "aliases",
            prop::collection::btree_map("gpt-4o|fast|[a-z0-9.-]{0,6}", alias(), 0..4)
                .prop_map(|m| Value::Table(m.into_iter().collect()))
                .boxed(),
        ),
    ]);
    let logging = section(vec![
        (
            "level",
            strings(&[
                "info",
                "trace",
                "gemini_rotator=debug,hyper=warn",
                "nope=[",
                "",
            ])
            .boxed(),
        ),
        ("format", strings(&["text", "json", "xml"]).boxed()),
        ("directory", strings(&["", "logs", "sub/dir"]).boxed()),
        ("max_files", int().boxed()),
    ]);
    (
        (server, upstream, auth, access),
        (pool, models, logging),
        prop::sample::subsequence(
            vec![
                "server", "upstream", "auth", "access", "pool", "models", "logging", "extra",
            ],
            0..=8,
        ),
    )
        .prop_map(
            |((server, upstream, auth, access), (pool, models, logging), present)| {
                let mut doc = Table::new();
                for (name, table) in [
                    ("server", server),
                    ("upstream", upstream),
                    ("auth", auth),
                    ("access", access),
                    ("pool", pool),
                    ("models", models),
                    ("logging", logging),
                ] {
                    if present.contains(&name) {
                        doc.insert(name.into(), Value::Table(table));
                    }
                }
                if present.contains(&"extra") {
                    doc.insert("servers".into(), Value::Integer(1));
                }
                doc
            },
        )
}

/// A key or token file: secrets, comments, blank lines, junk, CRLF now and then.
fn list_file(secrets: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::sample::select(secrets).prop_map(|s| s.as_bytes().to_vec()),
            1 => Just(b"# a comment".to_vec()),
            1 => Just(Vec::new()),
            1 => Just(b"   ".to_vec()),
            1 => Just(b"\xef\xbb\xbfAIza-bom".to_vec()),
            1 => prop::collection::vec(any::<u8>(), 0..12),
        ],
        0..5,
    )
    .prop_flat_map(|lines| {
        prop::sample::select(vec!["\n", "\r\n"]).prop_map(move |end| lines.join(end.as_bytes()))
    })
}

struct Loaded {
    result: Result<config::Loaded, config::ConfigError>,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn load(config_bytes: &[u8], keys: &[u8], tokens: &[u8]) -> Loaded {
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, config_bytes).expect("write the config");
    std::fs::write(dir.path().join("keys.txt"), keys).expect("write keys.txt");
    std::fs::write(dir.path().join("tokens.txt"), tokens).expect("write tokens.txt");
    std::fs::create_dir_all(dir.path().join("sub")).expect("a subfolder");
    std::fs::write(dir.path().join("sub/keys.txt"), keys).expect("write sub/keys.txt");
    Loaded {
        result: config::load(&path),
        path,
        _dir: dir,
    }
}

fn check_problems(loaded: &Loaded) -> Result<(), TestCaseError> {
    let Err(e) = &loaded.result else {
        return Ok(());
    };
    prop_assert!(!e.problems.is_empty(), "rejected with no problem");
    for p in &e.problems {
        prop_assert!(!p.message.contains("a bug"), "{}", p);
        if p.file == loaded.path {
            prop_assert!(
                p.line >= 1 && p.col >= 1,
                "a problem in the config without a position: {}",
                p
            );
            let shown = p.to_string();
            let at = format!("{}:{}:{}", loaded.path.display(), p.line, p.col);
            prop_assert!(
                shown.starts_with(&at),
                "{} does not start with {}",
                shown,
                at
            );
        } else if p.line == 0 {
            // Only a named file that cannot be read (or is not text) has no position.
            prop_assert!(
                !p.field.is_empty(),
                "a file problem without its field: {}",
                p
            );
        }
    }
    Ok(())
}

/// No secret the generator planted comes back whole in a problem or a warning.
fn check_no_secret(loaded: &Loaded) -> Result<(), TestCaseError> {
    let text = match &loaded.result {
        Ok(l) => l.warnings.join("\n"),
        Err(e) => e.to_string(),
    };
    for secret in KEYS.iter().chain(TOKENS) {
        prop_assert!(!text.contains(secret), "{} quoted in:\n{}", secret, text);
    }
    Ok(())
}

#[test]
fn seeds_as_they_are() {
    let keys = KEYS[..2].join("\n");
    let tokens = TOKENS[0];
    for (name, seed) in crate::corpus("config") {
        let loaded = load(&seed, keys.as_bytes(), tokens.as_bytes());
        if let Err(e) = check_problems(&loaded).and_then(|_| check_no_secret(&loaded)) {
            panic!("{name}: {e}");
        }
        // The seeds are good configs, except the ones named for what is wrong with them.
        if !name.starts_with("bad_") {
            if let Err(e) = &loaded.result {
                panic!("seed {name} is rejected:\n{e}");
            }
        }
    }
}

proptest! {
    #![proptest_config(fuzz_config("config", 2500))]

    #[test]
    fn structured_documents(
        doc in document(),
        keys in list_file(KEYS),
        tokens in list_file(TOKENS),
    ) {
        let text = toml::to_string(&doc).expect("a table serialises");
        let loaded = load(text.as_bytes(), &keys, &tokens);
        check_problems(&loaded)?;
        check_no_secret(&loaded)?;
    }

    #[test]
    fn mutated_seeds(config in mutated_bytes(seeds("config")), keys in list_file(KEYS)) {
        let loaded = load(&config, &keys, TOKENS[0].as_bytes());
        check_problems(&loaded)?;
    }

    #[test]
    fn arbitrary_bytes(config in prop::collection::vec(any::<u8>(), 0..128)) {
        let loaded = load(&config, b"", b"");
        check_problems(&loaded)?;
    }
}
