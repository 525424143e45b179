//! Table tests for config loading, all through `check`: a TOML text plus extra files in a temp
//! folder in, either the validated config or the exact list of `file:line:col: field: message`
//! problems out. Adding a case is one line.

use std::net::IpAddr;
use std::path::Path;
use std::time::Duration;

use super::*;

const K1: &str = "AIzaSyTEST-key-number-one-00000001";
const K2: &str = "AIzaSyTEST-key-number-two-00000002";
const K3: &str = "AQ.TEST-key-number-three-00000003";

/// A temp folder only its owner may enter, as a config folder should be: the files in it are
/// not readable by every user, whatever their own mode (see `world_readable_files_are_warned`).
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    dir
}

/// The client token `check` adds to a config that has no `[auth]` table and parses: a config
/// without client tokens is refused (unless `auth.open`), which is not what most cases test.
const HELPER_TOKEN: &str = "sk-test-token-helper-0000001";

/// A config text, the extra files beside it (name, content), and the expected lines.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [&'a str]);

/// Loads `toml` written as `config.toml` beside `files` in a fresh temp folder. With `expected`
/// empty the load must succeed and the result is returned; otherwise the problems, with paths
/// relative to the folder, must be exactly `expected`.
fn check(toml: &str, files: &[(&str, &str)], expected: &[&str]) -> Option<Loaded> {
    let dir = private_dir();
    let mut text = toml.to_string();
    if !toml.contains("[auth]") && toml.parse::<toml::Table>().is_ok() {
        // At the end, so that every position in `toml` stays where it was.
        text.push_str(&format!("\n[auth]\ntokens = [\"{HELPER_TOKEN}\"]\n"));
    }
    std::fs::write(dir.path().join("config.toml"), &text).unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let result = load(&dir.path().join("config.toml"));
    match result {
        Ok(loaded) => {
            assert!(
                expected.is_empty(),
                "expected problems {expected:#?}\nbut it loaded; config:\n{toml}"
            );
            Some(relative_warnings(loaded, dir.path()))
        }
        Err(e) => {
            let got: Vec<String> = e
                .problems
                .iter()
                .map(|p| {
                    let mut p = p.clone();
                    p.file = p.file.strip_prefix(dir.path()).unwrap().to_path_buf();
                    p.to_string()
                })
                .collect();
            assert_eq!(got, expected, "config:\n{toml}");
            None
        }
    }
}

fn relative_warnings(mut loaded: Loaded, dir: &Path) -> Loaded {
    let prefix = format!("{}/", dir.display());
    for w in &mut loaded.warnings {
        *w = w.replace(&prefix, "");
    }
    loaded
}

fn ok(toml: &str, files: &[(&str, &str)]) -> Loaded {
    check(toml, files, &[]).unwrap()
}

#[test]
fn problems_are_located() {
    let k1_file = format!("# team a\n{K2}\n\n  {K1}\n");
    #[rustfmt::skip]
    let cases: &[Case] = &[
        // Syntax errors stop before validation.
        ("[server]\nlisten = \"127.0.0.1:7860\n",
         &[], &["config.toml:2:25: invalid basic string, expected `\"`"]),
        ("[server\n", &[], &["config.toml:1:8: unclosed table, expected `]`"]),
        // Unknown fields, at every level and in every mixed form.
        ("[server]\nlisten = \"127.0.0.1:1\"\nlistne = 1\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:3:1: server.listne: unknown field `listne`, expected one of `listen`, `trusted_proxies`, `max_body`, `header_timeout`, `shutdown_grace`, `metrics_public`, `reload_poll`, `workers`, `real_ip_header`, `max_connections`, `max_in_flight`, `memory_budget`, `body_timeout`, `write_timeout`, `max_upload`, `public_url`, `cors_origins`"]),
        ("[servre]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:1:2: servre: unknown table `servre`, expected one of `server`, `upstream`, `auth`, `access`, `pool`, `models`, `logging`, `state`"]),
        ("[auth]\ntokens = [{ token = \"sk-test-token-0000000001\", nmae = \"x\" }]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:49: auth.tokens[0].nmae: unknown field `nmae`, expected one of `name`, `token`, `models`"]),
        ("[[pool.keys]]\nkey = \"AIzaSyTEST-key-number-one-00000001\"\ndaily = 5\n",
         &[], &["config.toml:3:1: pool.keys[0].daily: unknown field `daily`, expected one of `key`, `name`, `project`, `models`, `daily_limit`"]),
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[models.aliases]\nfast = { model = \"m\", effort = \"high\" }\n",
         &[], &["config.toml:4:23: models.aliases.\"fast\".effort: unknown field `effort`, expected one of `model`, `models`, `reasoning_effort`"]),
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\nmax_attempts = \"3\"\n",
         &[], &["config.toml:3:16: pool.max_attempts: invalid type: a string, expected an integer"]),
        // Addresses.
        ("[access]\nallow = [\"10.0.0.0/8\", \"10.0.0.0/33\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:24: access.allow[1]: `10.0.0.0/33` is not a valid CIDR: the prefix length must be 0 to 32"]),
        ("[access]\ndeny = [\"::1\", \"nope\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:16: access.deny[1]: `nope` is not an IP address or CIDR"]),
        ("[server]\ntrusted_proxies = [\"*\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:20: server.trusted_proxies[0]: `*` is not allowed here: list CIDRs (e.g. \"10.0.0.0/8\") or addresses"]),
        ("[server]\nlisten = \"7860\"\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:10: server.listen: \"7860\" is not host:port (e.g. \"127.0.0.1:7860\", \"[::]:7860\")"]),
        ("[upstream]\nbase_url = \"ftp://example.com\"\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:12: upstream.base_url: must be an http:// or https:// URL, e.g. \"https://generativelanguage.googleapis.com\""]),
        // Keys: the pool, duplicates (pointing at the second one), files.
        ("[pool]\nkeys = []\n",
         &[], &["config.toml:2:8: pool.keys: the key pool is empty: no keys in `pool.keys`"]),
        ("", &[], &["config.toml:1:1: pool.keys: the key pool is empty: no keys in `pool.keys`"]),
        ("[pool]\nkey_files = [\"keys.txt\"]\n",
         &[("keys.txt", "# nothing yet\n\n")],
         &["config.toml:1:1: pool.keys: the key pool is empty: no keys in `pool.keys` and none in keys.txt"]),
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\nkey_files = [\"keys.txt\"]\n",
         &[("keys.txt", &k1_file)],
         &["keys.txt:4:3: pool.key_files[0]: duplicate key AIza****0001 (first at pool.keys[0])"]),
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\", { key = \"AIzaSyTEST-key-number-one-00000001\" }]\n",
         &[], &["config.toml:2:55: pool.keys[1].key: duplicate key AIza****0001 (first at pool.keys[0])"]),
        ("[pool]\nkey_files = [\"keys.txt\", \"more.txt\"]\n",
         &[("keys.txt", &k1_file)],
         &["more.txt: pool.key_files[1]: cannot read key file: No such file or directory (os error 2)"]),
        ("[pool]\nkeys = [\"\", \"AIzaSyTEST key\"]\n",
         &[], &["config.toml:2:9: pool.keys[0]: empty key",
                "config.toml:2:13: pool.keys[1]: key AIza****\u{20}key contains whitespace (comments go on their own line)"]),
        ("[pool]\nkeys = [{ key = \"AIzaSyTEST-key-number-one-00000001\", models = [], daily_limit = 0 }]\n",
         &[], &["config.toml:2:64: pool.keys[0].models: empty list would allow no model: leave `models` out to allow every model",
                "config.toml:2:82: pool.keys[0].daily_limit: must be at least 1 (leave it out for no limit)"]),
        ("[pool]\nkeys = [{ key = \"AIzaSyTEST-key-number-one-00000001\", models = [\"gemini-[\"] }]\n",
         &[], &["config.toml:2:65: pool.keys[0].models[0]: bad glob `gemini-[`: invalid range pattern"]),
        // Numbers and durations.
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\ncooldown = \"0s\"\n",
         &[], &["config.toml:3:12: pool.cooldown: must be greater than zero"]),
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\nmax_attempts = 0\nfailure_threshold = -1\nstrategy = \"random\"\n",
         &[], &["config.toml:3:16: pool.max_attempts: must be at least 1, got 0",
                "config.toml:4:21: pool.failure_threshold: must be at least 1, got -1",
                "config.toml:5:12: pool.strategy: unknown strategy `random`, expected `round_robin` or `least_used`"]),
        ("[server]\nheader_timeout = \"soon\"\nmax_body = \"lots\"\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:18: server.header_timeout: invalid duration \"soon\" (expected number at 0): write e.g. \"250ms\", \"60s\", \"10m\"",
                "config.toml:3:12: server.max_body: invalid size \"lots\": write e.g. \"32MiB\", \"512KiB\", \"1GB\""]),
        ("[upstream]\nconnect_timeout = \"0ms\"\nfirst_byte_timeout = \"0s\"\nidle_timeout = \"0s\"\nsafety = \"BLOCK_SOME\"\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:19: upstream.connect_timeout: must be greater than zero",
                "config.toml:3:22: upstream.first_byte_timeout: must be greater than zero",
                "config.toml:4:16: upstream.idle_timeout: must be greater than zero",
                "config.toml:5:10: upstream.safety: unknown safety threshold `BLOCK_SOME`, expected `default`, `BLOCK_LOW_AND_ABOVE`, `BLOCK_MEDIUM_AND_ABOVE`, `BLOCK_ONLY_HIGH`, `BLOCK_NONE`, `OFF`"]),
        // Tokens, client and admin.
        ("[auth]\ntokens = [\"sk-test-token-0000000001\", { name = \"b\", token = \"sk-test-token-0000000001\" }, \"\"]\nadmin_tokens = [\"sk-test-admin-000000001\", \"sk-test-admin-000000001\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:61: auth.tokens[1].token: duplicate token sk-t…#7672c5 (first at auth.tokens[0])",
                "config.toml:2:91: auth.tokens[2]: empty token",
                "config.toml:3:44: auth.admin_tokens[1]: duplicate token sk-t…#2a2a0f (first at auth.admin_tokens[0])"]),
        ("[auth]\ntokens = [\"sk-test-token-0000000001\"]\ntoken_files = [\"tokens.txt\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[("tokens.txt", "sk-test-token-0000000002\n# old one:\nsk-test-token-0000000001\n")],
         &["tokens.txt:3:1: auth.token_files[0]: duplicate token sk-t…#7672c5 (first at auth.tokens[0])"]),
        // Aliases.
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[models.aliases]\na = \"b\"\nb = { models = [\"c\", \"m1\"] }\nc = \"a\"\nself = { model = \"self\" }\n",
         &[], &["config.toml:4:5: models.aliases.\"a\": alias loop: a -> b -> c -> a",
                "config.toml:7:8: models.aliases.\"self\": alias points to itself"]),
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[models.aliases]\nx = { model = \"m\", models = [\"n\"] }\ny = { models = [] }\nz = { reasoning_effort = \"high\" }\n",
         &[], &["config.toml:4:5: models.aliases.\"x\": set `model` or `models`, not both",
                "config.toml:5:16: models.aliases.\"y\".models: empty fallback chain",
                "config.toml:6:5: models.aliases.\"z\": missing `model` (or `models` for a fallback chain)"]),
        // Logging and models.
        ("[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[logging]\nformat = \"xml\"\nmax_files = 0\n[models]\nlist = \"some\"\nrefresh = \"0s\"\n",
         &[], &["config.toml:4:10: logging.format: unknown log format `xml`, expected `text` or `json`",
                "config.toml:5:13: logging.max_files: must be at least 1, got 0",
                "config.toml:7:8: models.list: unknown model list `some`, expected `upstream` or `static`",
                "config.toml:8:11: models.refresh: must be greater than zero"]),
        ("[server]\nworkers = -1\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:11: server.workers: must be 0 (one per CPU) or 1 to 1024, got -1"]),
        // Every section is checked even when another one does not deserialize.
        ("[server]\nlisten = 7860\n[pool]\ncooldown = \"0s\"\n",
         &[], &["config.toml:2:10: server.listen: invalid type: integer `7860`, expected a string",
                "config.toml:3:1: pool.keys: the key pool is empty: no keys in `pool.keys`",
                "config.toml:4:12: pool.cooldown: must be greater than zero"]),
    ];
    for (toml, files, expected) in cases {
        assert!(!expected.is_empty());
        check(toml, files, expected);
    }
}

#[test]
fn bad_log_level_is_located() {
    let toml =
        "[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[logging]\nlevel = \"info,=[\"\n[auth]\nopen = true\n";
    let dir = private_dir();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    let problems = load(&path).unwrap_err().problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!((problems[0].line, problems[0].col), (4, 9));
    assert_eq!(problems[0].field, "logging.level");
    assert!(problems[0].message.starts_with("not a tracing filter"));
}

#[test]
fn missing_config_file_names_the_path() {
    let dir = private_dir();
    let path = dir.path().join("nope.toml");
    let e = load(&path).unwrap_err();
    assert_eq!(e.problems.len(), 1);
    assert_eq!(e.problems[0].file, path);
    assert_eq!(e.problems[0].line, 0);
    assert!(e.to_string().contains("nope.toml: cannot read config file"));
}

#[test]
fn defaults_follow_the_spec() {
    let c = ok(&format!("[pool]\nkeys = [\"{K1}\"]\n"), &[]).config;
    assert_eq!(c.auth.tokens[0].token.expose(), HELPER_TOKEN);
    assert!(!c.auth.open);
    assert_eq!(c.server.real_ip_header, RealIpHeader::XForwardedFor);
    let c = ok(
        &format!("[auth]\nopen = true\n[pool]\nkeys = [\"{K1}\"]\n"),
        &[],
    )
    .config;
    assert!(c.auth.open);
    assert_eq!(c.server.listen, "0.0.0.0:7860");
    assert!(c.server.trusted_proxies.is_empty());
    assert_eq!(c.server.max_body, 32 * 1024 * 1024);
    assert_eq!(c.server.max_upload, 2 * 1024 * 1024 * 1024);
    assert_eq!(c.server.public_url, None);
    assert_eq!(c.server.header_timeout, Duration::from_secs(30));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert!(!c.server.metrics_public);
    assert_eq!(
        c.upstream.base_url,
        "https://generativelanguage.googleapis.com"
    );
    assert_eq!(c.upstream.proxy, None);
    assert_eq!(c.upstream.connect_timeout, Duration::from_secs(10));
    assert_eq!(c.upstream.first_byte_timeout, Duration::from_secs(300));
    assert_eq!(c.upstream.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.upstream.heartbeat, Some(Duration::from_secs(15)));
    assert_eq!(c.upstream.safety.as_deref(), Some("BLOCK_NONE"));
    assert!(!c.upstream.fetch_private_urls);
    assert!(c.auth.tokens.is_empty() && c.auth.admin_tokens.is_empty());
    assert_eq!(c.access.allow, vec![IpRule::Any]);
    assert!(c.access.deny.is_empty());
    assert_eq!(c.pool.strategy, Strategy::RoundRobin);
    assert_eq!(c.pool.keys.len(), 1);
    assert_eq!(c.pool.failure_threshold, 3);
    assert_eq!(c.pool.cooldown, Duration::from_secs(60));
    assert_eq!(c.pool.max_attempts, 3);
    assert!(matches!(c.models.list, ModelList::Upstream));
    assert_eq!(c.models.refresh, Duration::from_secs(600));
    assert!(c.models.aliases.is_empty());
    assert_eq!(c.logging.level, "info");
    assert_eq!(c.logging.format, LogFormat::Text);
    assert_eq!(c.logging.directory, None);
    assert_eq!(c.logging.max_files, 30);
    assert!(c.path.is_absolute() && c.path.ends_with("config.toml"));
    assert_eq!(c.files, vec![c.path.clone()]);
    assert_eq!(c.hash.len(), 64);
}

#[test]
fn every_form_is_validated_into_plain_values() {
    let toml = format!(
        r#"
[server]
listen = "[::1]:8080"
trusted_proxies = ["10.0.0.7", "::ffff:192.168.0.0/112", "fd00::/8"]
max_body = "1KiB"
shutdown_grace = "0s"

[upstream]
base_url = "http://localhost:9000/prefix/"
proxy = "socks5://127.0.0.1:1080"
heartbeat = "0s"
safety = "default"

[auth]
tokens = ["sk-test-token-0000000001", {{ name = "cline", token = "sk-test-token-0000000002", models = ["gemini-2.5-*"] }}]
token_files = ["secrets/tokens.txt"]
admin_tokens = ["sk-test-admin-000000001"]

[access]
allow = ["all", "192.168.1.10", "2001:db8::/32"]
deny = ["10.1.2.3/8"]

[pool]
strategy = "least_used"
keys = ["{K1}", {{ key = "{K2}", name = "team-b", project = "proj-b", models = ["gemini-2.5-*", "gemini-2.0-flash"], daily_limit = 250 }}]
key_files = ["keys.txt"]
failure_threshold = 5
cooldown = "250ms"
max_attempts = 1

[models]
list = "static"
static = ["gemini-2.5-pro"]
refresh = "1h"

[models.aliases]
"gpt-4o" = "pro"
"pro" = "gemini-2.5-pro"
"thinking" = {{ model = "gemini-3-flash-preview", reasoning_effort = "high" }}
"deep" = "thinking"
"fast" = {{ models = ["gemini-2.5-flash", "chain", "gemini-2.0-flash"] }}
"chain" = {{ models = ["gemini-2.0-flash", "pro"] }}

[logging]
level = "warn,gemini_rotator=debug"
format = "json"
directory = "logs"
max_files = 7
"#
    );
    let dir = private_dir();
    std::fs::create_dir(dir.path().join("secrets")).unwrap();
    std::fs::write(
        dir.path().join("secrets/tokens.txt"),
        "\u{feff}# mounted secret\n  sk-test-token-0000000003  \r\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("keys.txt"), format!("{K3}\n")).unwrap();
    std::fs::write(dir.path().join("config.toml"), &toml).unwrap();
    let loaded = load(&dir.path().join("config.toml")).unwrap();
    assert_eq!(loaded.warnings, Vec::<String>::new());
    let c = loaded.config;

    assert_eq!(c.server.listen, "[::1]:8080");
    let nets: Vec<String> = c
        .server
        .trusted_proxies
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.7/32", "192.168.0.0/16", "fd00::/8"]);
    assert_eq!(c.server.max_body, 1024);
    assert_eq!(c.server.shutdown_grace, Duration::ZERO);

    assert_eq!(c.upstream.base_url, "http://localhost:9000/prefix");
    assert_eq!(c.upstream.proxy.as_deref(), Some("socks5://127.0.0.1:1080"));
    assert_eq!(c.upstream.heartbeat, None);
    assert_eq!(c.upstream.safety, None);

    let names: Vec<&str> = c.auth.tokens.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["sk-t…#7672c5", "cline", "sk-t…#1e31bb"]);
    assert_eq!(c.auth.tokens[2].token.expose(), "sk-test-token-0000000003");
    let cline = c.auth.tokens[1].models.as_ref().unwrap();
    assert!(cline.matches("gemini-2.5-pro") && !cline.matches("gemini-2.0-flash"));
    assert!(c.auth.tokens[0].models.is_none());
    assert_eq!(c.auth.admin_tokens.len(), 1);

    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    assert_eq!(c.access.allow[0], IpRule::Any);
    assert_eq!(
        c.access.allow[1],
        IpRule::Net("192.168.1.10/32".parse().unwrap())
    );
    assert_eq!(
        c.access.deny,
        vec![IpRule::Net("10.0.0.0/8".parse().unwrap())]
    );
    assert!(c.access.deny[0].matches(ip("::ffff:10.9.9.9")));
    assert!(c.access.allow[2].matches(ip("2001:db8::1")));
    assert!(!c.access.allow[2].matches(ip("2001:db9::1")));

    assert_eq!(c.pool.strategy, Strategy::LeastUsed);
    let keys: Vec<&str> = c.pool.keys.iter().map(|k| k.key.expose()).collect();
    assert_eq!(keys, [K1, K2, K3]);
    let b = &c.pool.keys[1];
    assert_eq!(b.name.as_deref(), Some("team-b"));
    assert_eq!(b.project.as_deref(), Some("proj-b"));
    assert_eq!(b.daily_limit, Some(250));
    assert!(b.models.as_ref().unwrap().matches("gemini-2.0-flash"));
    assert_eq!(c.pool.failure_threshold, 5);
    assert_eq!(c.pool.cooldown, Duration::from_millis(250));
    assert_eq!(c.pool.max_attempts, 1);

    assert!(matches!(&c.models.list, ModelList::Static(s) if s == &["gemini-2.5-pro"]));
    assert_eq!(c.models.refresh, Duration::from_secs(3600));
    let alias = |n: &str| {
        let a = &c.models.aliases[n];
        (a.models.join(" "), a.reasoning_effort.clone())
    };
    assert_eq!(alias("gpt-4o"), ("gemini-2.5-pro".into(), None));
    assert_eq!(
        alias("deep"),
        ("gemini-3-flash-preview".into(), Some("high".into()))
    );
    assert_eq!(
        alias("fast"),
        (
            "gemini-2.5-flash gemini-2.0-flash gemini-2.5-pro".into(),
            None
        )
    );

    assert_eq!(c.logging.level, "warn,gemini_rotator=debug");
    assert_eq!(c.logging.format, LogFormat::Json);
    assert!(c.logging.directory.as_ref().unwrap().is_absolute());
    assert!(c.logging.directory.as_ref().unwrap().ends_with("logs"));
    assert_eq!(c.logging.max_files, 7);

    let files: Vec<String> = c
        .files
        .iter()
        .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert_eq!(files, ["config.toml", "keys.txt", "secrets/tokens.txt"]);
}

#[test]
fn the_hash_covers_every_named_file() {
    let dir = private_dir();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[auth]\nopen = true\n[pool]\nkey_files = [\"keys.txt\"]\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("keys.txt"), format!("{K1}\n")).unwrap();
    let first = load(&path).unwrap().config.hash;
    assert_eq!(load(&path).unwrap().config.hash, first);
    std::fs::write(dir.path().join("keys.txt"), format!("{K1}\n{K2}\n")).unwrap();
    assert_ne!(load(&path).unwrap().config.hash, first);
}

#[test]
fn warnings_do_not_reject() {
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("[auth]\nopen = true\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:8: auth.open: auth.open = true and no client tokens: the proxy is OPEN, anyone who can reach it may use every key in the pool"]),
        ("[server]\ncors_origins = [\"*\"]\n[auth]\nopen = true\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:16: server.cors_origins: with an open proxy (auth.open, no client tokens), every listed web page a browser opens may use the pool: add client tokens, or leave cors_origins empty",
                "config.toml:4:8: auth.open: auth.open = true and no client tokens: the proxy is OPEN, anyone who can reach it may use every key in the pool"]),
        ("[auth]\nopen = true\ntokens = [\"sk-test-token-0000000001\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:8: auth.open: auth.open = true has no effect: client tokens are configured, so clients still need one of them"]),
        ("[auth]\ntokens = [\"sk-short-1\"]\n[pool]\nkey_files = [\"keys.txt\"]\n",
         &[("keys.txt", "\n\nsk-not-a-gemini-key-000000\n")],
         &["config.toml:2:11: auth.tokens[0]: token …#d533ef is short: use at least 16 random characters (e.g. `openssl rand -hex 24`)",
           "keys.txt:3:1: pool.key_files[0]: key ****0000 is in neither Google format (`AIza…` or `AQ.…`)"]),
        ("[auth]\ntokens = [\"sk-test-token-0000000001\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[models]\nstatic = [\"x\"]\n[models.aliases]\nq = { model = \"m\", reasoning_effort = \"max\" }\n",
         &[], &["config.toml:6:10: models.static: ignored: `models.list` is \"upstream\"",
                "config.toml:8:39: models.aliases.\"q\".reasoning_effort: unknown reasoning_effort `max` (known: none, minimal, low, medium, high)"]),
    ];
    for (toml, files, expected) in cases {
        let loaded = ok(toml, files);
        assert_eq!(loaded.warnings, *expected, "config:\n{toml}");
    }
}

#[test]
fn no_secret_reaches_a_message() {
    let secrets = [
        "AIzaSySECRET-key-one-000000000000001",
        "AIzaSySECRET-key-two-000000000000002",
        "sk-SECRET-token-one-00000000001",
        "sk-SECRET-admin-0000000000001",
        "xx-SECRET-odd-key-00000000003",
        "AIzaSySECRET with space 0000004",
        "http://user:SECRETPASS@proxy:3128",
    ];
    let [k1, k2, t1, a1, odd, spaced, proxy] = secrets;
    let tomls = [
        // Duplicates and bad values everywhere a secret sits.
        format!(
            r#"
[upstream]
proxy = "{proxy}x"
base_url = "{proxy}"
[auth]
tokens = ["{t1}", {{ token = "{t1}", name = "" }}, "{k1}"]
admin_tokens = ["{a1}", "{a1}"]
token_files = ["tokens.txt"]
[pool]
keys = ["{k1}", {{ key = "{k1}", daily_limit = 0 }}, "{spaced}"]
key_files = ["keys.txt"]
"#
        ),
        // A secret where a number belongs: serde's message would quote it.
        format!("[pool]\nkeys = [{{ key = \"{k2}\", daily_limit = \"{k1}\" }}]\n"),
        format!("[auth]\ntokens = [{{ token = \"{t1}\", models = \"{a1}\" }}]\n"),
        format!("[pool]\nmax_attempts = \"{k1}\"\n"),
        // Secrets in broken TOML.
        format!("[pool]\nkeys = [{k1}]\n"),
        format!("[pool]\nkeys = [\"{k1}\n"),
        format!("{k1} = 1\n"),
    ];
    let files: &[(&str, &str)] = &[
        ("keys.txt", &format!("{k2}\n{k1}\n{odd}\n{spaced}\n")),
        ("tokens.txt", &format!("{t1}\n{a1}\n{a1}\n")),
    ];
    for toml in &tomls {
        let dir = private_dir();
        std::fs::write(dir.path().join("config.toml"), toml).unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = match load(&dir.path().join("config.toml")) {
            Ok(l) => format!("{:?}\n{}", l, l.warnings.join("\n")),
            Err(e) => format!("{e}\n{e:?}"),
        };
        assert!(!text.is_empty());
        for s in secrets {
            assert!(!text.contains(s), "{s} leaked from\n{toml}\ninto\n{text}");
        }
        assert!(
            !text.contains("SECRETPASS"),
            "proxy password leaked:\n{text}"
        );
    }
}

/// The shipped example and default must load as they are.
#[test]
fn shipped_configs_load() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let keys = std::fs::read_to_string(root.join("keys.txt.example")).unwrap();
    for name in ["config.example.toml", "config.toml"] {
        let toml = std::fs::read_to_string(root.join(name)).unwrap();
        let loaded = ok(&toml, &[("keys.txt", &keys)]);
        assert_eq!(loaded.warnings, Vec::<String>::new(), "{name}");
        let c = loaded.config;
        assert_eq!(c.pool.keys.len(), 2, "{name}");
        assert!(c
            .pool
            .keys
            .iter()
            .all(|k| k.key.expose().contains("PLACEHOLDER")));
    }
    let c = ok(
        &std::fs::read_to_string(root.join("config.toml")).unwrap(),
        &[("keys.txt", &keys)],
    )
    .config;
    assert_eq!(c.server.listen, "127.0.0.1:7860");
    assert_eq!(c.auth.tokens[0].token.expose(), "sk-local-change-me");
}

/// No edit may open the proxy by accident: an empty token list, an empty allow list.
#[test]
fn no_config_fails_open_by_accident() {
    #[rustfmt::skip]
    let cases: &[Case] = &[
        ("[auth]\ntokens = []\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:10: auth.tokens: no client tokens: none in `auth.tokens`. Add one (e.g. `openssl rand -hex 24`), or set `auth.open = true` to let every client in on purpose"]),
        // A Secret's tokens.txt emptied by a bad edit.
        ("[auth]\ntoken_files = [\"tokens.txt\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[("tokens.txt", "# every token removed\n")],
         &["config.toml:1:1: auth.tokens: no client tokens: none in `auth.tokens` and none in tokens.txt. Add one (e.g. `openssl rand -hex 24`), or set `auth.open = true` to let every client in on purpose"]),
        // Admin tokens are not client tokens.
        ("[auth]\nadmin_tokens = [\"sk-test-admin-000000001\"]\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:1:1: auth.tokens: no client tokens: none in `auth.tokens`. Add one (e.g. `openssl rand -hex 24`), or set `auth.open = true` to let every client in on purpose"]),
        ("[access]\nallow = []\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:9: access.allow: empty: write `allow = [\"*\"]` to allow every address, list the addresses or CIDRs to allow, or leave `allow` out (everyone)"]),
        ("[server]\nreal_ip_header = \"x forwarded\"\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:18: server.real_ip_header: \"x forwarded\" is not a header name: use \"x-forwarded-for\", \"forwarded\", \"x-real-ip\" or the header your proxy sets (e.g. \"cf-connecting-ip\")"]),
        ("[server]\nreal_ip_header = \"\"\n[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n",
         &[], &["config.toml:2:18: server.real_ip_header: \"\" is not a header name: use \"x-forwarded-for\", \"forwarded\", \"x-real-ip\" or the header your proxy sets (e.g. \"cf-connecting-ip\")"]),
    ];
    for (toml, files, expected) in cases {
        check(toml, files, expected);
    }
    // `["*"]` (or leaving `allow` out) is everyone; `auth.open` is the way to run without tokens.
    let c = ok(
        &format!("[access]\nallow = [\"*\"]\n[pool]\nkeys = [\"{K1}\"]\n"),
        &[],
    )
    .config;
    assert_eq!(c.access.allow, vec![IpRule::Any]);
    let header = |name: &str| {
        ok(
            &format!("[server]\nreal_ip_header = \"{name}\"\n[pool]\nkeys = [\"{K1}\"]\n"),
            &[],
        )
        .config
        .server
        .real_ip_header
    };
    assert_eq!(header("X-Forwarded-For"), RealIpHeader::XForwardedFor);
    assert_eq!(header("forwarded"), RealIpHeader::Forwarded);
    for name in ["x-real-ip", "CF-Connecting-IP", "true-client-ip"] {
        assert_eq!(
            header(name),
            RealIpHeader::Single(
                http::HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()).unwrap()
            )
        );
    }
}

/// A key, token or config file every user may read is warned about, naming the file only.
#[cfg(unix)]
#[test]
fn world_readable_files_are_warned() {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    let dir = private_dir();
    let path = dir.path().join("config.toml");
    let token = "sk-test-token-0000000001";
    std::fs::write(
        &path,
        format!(
            "[auth]\ntokens = [\"{token}\"]\ntoken_files = [\"tokens.txt\"]\n\
             [pool]\nkey_files = [\"keys.txt\"]\n"
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("keys.txt"), format!("{K1}\n")).unwrap();
    std::fs::write(dir.path().join("tokens.txt"), "sk-test-token-0000000002\n").unwrap();
    let files = ["config.toml", "keys.txt", "tokens.txt"];
    for f in files {
        mode(&dir.path().join(f), 0o644);
    }
    let warnings = |dir: &Path| relative_warnings(load(&path).unwrap(), dir).warnings;

    // In a folder only its owner may enter, nobody else can read them.
    assert_eq!(warnings(dir.path()), Vec::<String>::new());

    mode(dir.path(), 0o755);
    let got = warnings(dir.path());
    assert_eq!(
        got,
        [
            "config.toml: holds keys, tokens or a password and every user of this machine may read it (mode 0644): `chmod o-r` it",
            "keys.txt: pool.key_files[0]: holds keys and every user of this machine may read it (mode 0644): `chmod o-r` it",
            "tokens.txt: auth.token_files[0]: holds tokens and every user of this machine may read it (mode 0644): `chmod o-r` it",
        ]
    );
    assert!(!got.concat().contains(token) && !got.concat().contains(K1));

    for f in files {
        mode(&dir.path().join(f), 0o640);
    }
    assert_eq!(warnings(dir.path()), Vec::<String>::new());

    // A config file that holds no secret may be read by anyone.
    std::fs::write(
        &path,
        "[auth]\ntoken_files = [\"tokens.txt\"]\n[pool]\nkey_files = [\"keys.txt\"]\n",
    )
    .unwrap();
    mode(&path, 0o644);
    assert_eq!(warnings(dir.path()), Vec::<String>::new());
    mode(dir.path(), 0o700);
}

/// `pool.max_quota_hops`, `pool.retry_after_send`, `pool.request_deadline` (issue #14 item 4).
#[test]
fn retry_bounds() {
    let c = ok(&format!("[pool]\nkeys = [\"{K1}\"]\n"), &[]).config;
    assert_eq!(c.pool.retry, RetryPolicy::default());
    assert_eq!(c.pool.retry.max_quota_hops, 8);
    assert!(!c.pool.retry.retry_after_send);
    assert_eq!(c.pool.retry.request_deadline, Duration::from_secs(120));
    let c = ok(
        &format!("[pool]\nkeys = [\"{K1}\"]\nmax_quota_hops = 2\nretry_after_send = true\nrequest_deadline = \"30s\"\n"),
        &[],
    )
    .config;
    assert_eq!(
        c.pool.retry,
        RetryPolicy {
            max_quota_hops: 2,
            retry_after_send: true,
            request_deadline: Duration::from_secs(30),
        }
    );
    check(
        &format!("[pool]\nkeys = [\"{K1}\"]\nmax_quota_hops = 0\nrequest_deadline = \"0s\"\n"),
        &[],
        &[
            "config.toml:3:18: pool.max_quota_hops: must be at least 1, got 0",
            "config.toml:4:20: pool.request_deadline: must be greater than zero",
        ],
    );
}

/// `pool.upload_group`: 10 minutes by default, `"0s"` turns it off, at most a file's 48 hours.
#[test]
fn upload_group() {
    let c = ok(&format!("[pool]\nkeys = [\"{K1}\"]\n"), &[]).config;
    assert_eq!(c.pool.upload_group, crate::config::UPLOAD_GROUP);
    assert_eq!(c.pool.upload_group, Duration::from_secs(600));
    let c = ok(
        &format!("[pool]\nkeys = [\"{K1}\"]\nupload_group = \"0s\"\n"),
        &[],
    )
    .config;
    assert_eq!(c.pool.upload_group, Duration::ZERO);
    let c = ok(
        &format!("[pool]\nkeys = [\"{K1}\"]\nupload_group = \"48h\"\n"),
        &[],
    )
    .config;
    assert_eq!(c.pool.upload_group, Duration::from_secs(48 * 3600));
    check(
        &format!("[pool]\nkeys = [\"{K1}\"]\nupload_group = \"3d\"\n"),
        &[],
        &["config.toml:3:16: pool.upload_group: must be at most 48h (a file lives 48 hours); \"0s\" turns grouping off"],
    );
    check(
        &format!("[pool]\nkeys = [\"{K1}\"]\nupload_group = \"soon\"\n"),
        &[],
        &["config.toml:3:16: pool.upload_group: invalid duration \"soon\" (expected number at 0): write e.g. \"250ms\", \"60s\", \"10m\""],
    );
}

/// Admission limits and timeouts: 0 / "auto" follow memory, explicit values are kept, bad
/// `server.max_upload` and `server.public_url` (issue #18).
#[test]
fn upload_settings() {
    let c = ok(
        &format!(
            "[server]\nmax_upload = \"300MiB\"\npublic_url = \"https://gemini.example.com/\"\n\
             [auth]\ntokens = [\"sk-test-token-for-limits\"]\n[pool]\nkeys = [\"{K1}\"]\n"
        ),
        &[],
    )
    .config;
    assert_eq!(c.server.max_upload, 300 * 1024 * 1024);
    assert_eq!(
        c.server.public_url.as_deref(),
        Some("https://gemini.example.com")
    );
    for bad in ["ftp://x", "https://x/?a=b", "https://u:p@x", "not a url"] {
        check(
            &format!("[server]\npublic_url = \"{bad}\"\n[pool]\nkeys = [\"{K1}\"]\n"),
            &[],
            &[&format!(
                "config.toml:2:14: server.public_url: {bad:?} is not a usable public URL: write e.g. \"https://gemini.example.com\""
            )],
        );
    }
}

/// ones are located, and a budget below `max_body` warns.
#[test]
fn admission_limits() {
    let auto = crate::admission::Defaults::detect();
    let c = ok(
        &format!("[auth]\ntokens = [\"sk-test-token-for-limits\"]\n[pool]\nkeys = [\"{K1}\"]\n"),
        &[],
    )
    .config;
    assert_eq!(c.server.max_in_flight, auto.max_in_flight);
    assert_eq!(c.server.max_connections, auto.max_connections);
    assert_eq!(c.server.memory_budget, auto.memory_budget);
    assert_eq!(c.server.body_timeout, Duration::from_secs(60));
    assert_eq!(c.server.write_timeout, Duration::from_secs(30));
    let c = ok(
        &format!(
            "[server]\nmax_connections = 10\nmax_in_flight = 4\nmemory_budget = \"64MiB\"\n\
             body_timeout = \"5s\"\nwrite_timeout = \"2s\"\n[auth]\ntokens = [\"sk-test-token-for-limits\"]\n[pool]\nkeys = [\"{K1}\"]\n"
        ),
        &[],
    )
    .config;
    assert_eq!((c.server.max_connections, c.server.max_in_flight), (10, 4));
    assert_eq!(c.server.memory_budget, 64 * 1024 * 1024);
    assert_eq!(c.server.body_timeout, Duration::from_secs(5));
    assert_eq!(c.server.write_timeout, Duration::from_secs(2));
    let limit =
        |n: usize| format!("must be 0 (derived from memory, {n} here) or 1 to 1000000, got -1");
    check(
        &format!(
            "[server]\nmax_connections = -1\nmax_in_flight = -1\nmemory_budget = \"lots\"\n\
             body_timeout = \"0s\"\n[auth]\ntokens = [\"sk-test-token-for-limits\"]\n[pool]\nkeys = [\"{K1}\"]\n"
        ),
        &[],
        &[
            &format!("config.toml:2:19: server.max_connections: {}", limit(auto.max_connections)),
            &format!("config.toml:3:17: server.max_in_flight: {}", limit(auto.max_in_flight)),
            "config.toml:4:17: server.memory_budget: invalid size \"lots\": write e.g. \"32MiB\", \"512KiB\", \"1GB\"",
            "config.toml:5:16: server.body_timeout: must be greater than zero",
        ],
    );
    let warned = ok(
        &format!("[server]\nmemory_budget = \"1MiB\"\n[auth]\ntokens = [\"sk-test-token-for-limits\"]\n[pool]\nkeys = [\"{K1}\"]\n"),
        &[],
    );
    assert_eq!(warned.warnings.len(), 1, "{:?}", warned.warnings);
    assert!(
        warned.warnings[0].contains("server.memory_budget"),
        "{:?}",
        warned.warnings
    );
}

// ---- glob aliases (issue #17) ----

#[test]
fn glob_aliases_pick_the_most_specific_match() {
    let toml = "[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[models.aliases]\n\
        \"claude-*\" = \"gemini-2.5-pro\"\n\"claude-*haiku*\" = \"gemini-2.5-flash\"\n\
        \"claude-3-5-*\" = \"fast\"\nfast = \"gemini-2.0-flash\"\n\"*-codex\" = \"gemini-2.5-pro\"\n\
        \"gpt-5*\" = { model = \"gemini-3-pro-preview\", reasoning_effort = \"high\" }\n\
        \"claude-opus-4-1\" = \"gemini-3-pro-preview\"\n";
    let c = check(toml, &[], &[]).unwrap().config;
    let resolved = |name: &str| {
        c.models
            .alias(name)
            .map(|a| (a.models.join(" "), a.reasoning_effort.clone()))
    };
    let check = |name: &str, expected: Option<&str>| {
        assert_eq!(
            resolved(name).map(|(m, _)| m).as_deref(),
            expected,
            "{name}"
        );
    };
    check("claude-sonnet-4-5", Some("gemini-2.5-pro"));
    check("claude-haiku-4-5-20251001", Some("gemini-2.5-flash"));
    check("claude-3-5-haiku-latest", Some("gemini-2.5-flash")); // 12 literal chars beat 11
    check("claude-3-5-sonnet", Some("gemini-2.0-flash"));
    check("claude-opus-4-1", Some("gemini-3-pro-preview")); // an exact key beats every glob
    check("claude-", Some("gemini-2.5-pro")); // `*` matches nothing too
    check("gpt-5-codex", Some("gemini-2.5-pro")); // "-codex" (6 literal chars) beats "gpt-5" (5)
    check("gemini-2.5-flash", None);
    check("my-claude-x", None);
    assert_eq!(
        resolved("gpt-5.1").and_then(|(_, e)| e).as_deref(),
        Some("high")
    );
}

#[test]
fn glob_matching_and_ranking() {
    let m = |p: &str, n: &str| super::glob_matches(p, n);
    assert!(m("claude-*", "claude-x"));
    assert!(m("*haiku*", "claude-haiku-4-5"));
    assert!(m("a*b*c", "abc") && m("a*b*c", "aXbYc") && !m("a*b*c", "acb"));
    assert!(m("*", "") && m("**", "x"));
    assert!(!m("ab*ba", "aba")); // prefix and suffix may not overlap
    assert!(!m("claude-*", "Claude-x"));
    assert!(super::glob_beats("claude-*haiku*", "claude-*"));
    assert!(super::glob_beats("claude-*", "claude*-*")); // as many literals, fewer `*`
    assert!(super::glob_beats("a*b", "ab*")); // a tie: the alphabetically first key
    assert!(!super::glob_beats("claude-*", "claude-*"));
}

#[test]
fn glob_alias_problems() {
    check(
        "[pool]\nkeys = [\"AIzaSyTEST-key-number-one-00000001\"]\n[models.aliases]\n\"claude *\" = \"m\"\nx = \"gemini-*\"\n",
        &[],
        &[
            "config.toml:4:14: models.aliases.\"claude *\": a glob alias may hold only letters, digits, `-`, `_`, `.`, `:`, `/`, `@` and `*`",
            "config.toml:5:5: models.aliases.\"x\": an alias target is a model or alias name, not a glob (`*` belongs in the key)",
        ],
    );
}

/// The shipped configs map the agents' own model names, so no model flag is needed.
#[test]
fn shipped_configs_map_agent_model_names() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let keys = std::fs::read_to_string(root.join("keys.txt.example")).unwrap();
    for name in ["config.example.toml", "config.toml"] {
        let toml = std::fs::read_to_string(root.join(name)).unwrap();
        let c = ok(&toml, &[("keys.txt", &keys)]).config;
        let target = |model: &str| c.models.alias(model).map(|a| a.models[0].clone());
        for (model, expected) in [
            ("claude-sonnet-4-5-20250929", "gemini-2.5-pro"),
            ("claude-opus-4-1", "gemini-2.5-pro"),
            ("claude-haiku-4-5", "gemini-2.5-flash"),
            ("claude-3-5-haiku-latest", "gemini-2.5-flash"),
            ("gpt-5-codex", "gemini-2.5-pro"),
            ("gpt-5.1-codex-max", "gemini-2.5-pro"),
            ("gpt-5-mini", "gemini-2.5-flash"),
            ("codex-mini-latest", "gemini-2.5-flash"),
        ] {
            assert_eq!(target(model).as_deref(), Some(expected), "{name}: {model}");
        }
        assert_eq!(target("gemini-2.5-pro"), None, "{name}");
    }
}

#[test]
fn the_state_section_picks_a_store() {
    let keys = format!("[pool]\nkeys = [\"{K1}\"]\n");
    let loaded = ok(&keys, &[]);
    assert_eq!(loaded.config.state.store, Store::Memory);
    let loaded = ok(&format!("{keys}[state]\nstore = \"file\"\n"), &[]);
    let Store::File { path } = &loaded.config.state.store else {
        panic!("a file store: {:?}", loaded.config.state);
    };
    // Relative to the config's folder.
    assert!(
        path.is_absolute() && path.ends_with("gemini-rotator.state"),
        "{path:?}"
    );
    let loaded = ok(
        &format!("{keys}[state]\nstore = \"file\"\npath = \"var/x.state\"\n"),
        &[],
    );
    assert!(
        matches!(&loaded.config.state.store, Store::File { path } if path.ends_with("var/x.state"))
    );
    check(
        &format!("{keys}[state]\nstore = \"redis\"\n"),
        &[],
        &["config.toml:4:9: state.store: store = \"redis\" needs `url` (redis://host:6379/0) or `url_file`"],
    );
    let loaded = ok(
        &format!("{keys}[state]\nstore = \"redis\"\nurl = \"rediss://u:FAKE-PW@cache:6380/2\"\nprefix = \"gr-a:\"\ntimeout = \"250ms\"\n"),
        &[],
    );
    let Store::Redis(r) = &loaded.config.state.store else {
        panic!("a Redis store: {:?}", loaded.config.state);
    };
    assert_eq!(r.url.masked(), "rediss://****@cache:6380/2");
    assert_eq!(
        (r.prefix.as_str(), r.timeout),
        ("gr-a:", Duration::from_millis(250))
    );
    assert!(!format!("{:?}", loaded.config).contains("FAKE-PW"));
    check(
        &format!("{keys}[state]\nstore = \"redis\"\nurl = \"http://cache:6379\"\n"),
        &[],
        &["config.toml:5:7: state.url: `http://cache:6379` is not a Redis URL: expected redis://[user:password@]host[:port][/db] or rediss://"],
    );
    check(
        &format!("{keys}[state]\nstore = \"disk\"\n"),
        &[],
        &["config.toml:4:9: state.store: unknown store `disk`, expected `memory`, `file` or `redis`"],
    );
    check(
        &format!("{keys}[state]\nstore = \"file\"\npath = \"\"\n"),
        &[],
        &["config.toml:5:8: state.path: empty path: use e.g. \"gemini-rotator.state\""],
    );
    check(
        &format!("{keys}[state]\nurls = \"redis://x\"\n"),
        &[],
        &["config.toml:4:1: state.urls: unknown field `urls`, expected one of `store`, `path`, `url`, `url_file`, `prefix`, `timeout`"],
    );
}

/// `server.cors_origins`: off by default, `*` alone, origins normalised as browsers send them,
/// anything else located.
#[test]
fn cors_origins() {
    use crate::config::CorsOrigins;
    let load = |list: &str| {
        ok(
            &format!(
                "[server]\ncors_origins = {list}\n[auth]\ntokens = [\"sk-test-token-for-cors\"]\n\
                 [pool]\nkeys = [\"{K1}\"]\n"
            ),
            &[],
        )
        .config
        .server
        .cors_origins
    };
    assert_eq!(load("[]"), CorsOrigins::None);
    assert_eq!(load(r#"["*"]"#), CorsOrigins::Any);
    assert_eq!(
        load(r#"["https://Chat.Example.com/", "http://localhost:3000", "https://a.example:443"]"#),
        CorsOrigins::Listed(vec![
            "http://localhost:3000".into(),
            "https://a.example".into(),
            "https://chat.example.com".into(),
        ])
    );
    check(
        &format!("[server]\ncors_origins = [\"*\", \"https://a.example\"]\n[pool]\nkeys = [\"{K1}\"]\n"),
        &[],
        &["config.toml:2:16: server.cors_origins: \"*\" allows every origin: write it alone, or list origins"],
    );
    for bad in [
        "https://a.example/app",
        "ftp://a.example",
        "a.example",
        "https://u@a.example",
    ] {
        check(
            &format!("[server]\ncors_origins = [\"{bad}\"]\n[pool]\nkeys = [\"{K1}\"]\n"),
            &[],
            &[&format!(
                "config.toml:2:17: server.cors_origins[0]: {bad:?} is not an origin: write e.g. \"https://app.example.com\" (scheme and host, an optional port, no path), or \"*\" alone"
            )],
        );
    }
}
