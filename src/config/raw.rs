//! Serde types that mirror the TOML file of SPEC §2, field for field, with the SPEC's defaults.
//!
//! Every table denies unknown fields, so a typo is an error rather than a silently ignored
//! option. Values stay as written (durations, sizes, addresses and enums are strings here):
//! turning them into typed values is `validate`'s job, because there every problem can be
//! reported with its field path, all at once, instead of serde stopping at the first one.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The top-level tables, in the order the SPEC lists them, each mirrored by the struct of the
/// same name below. There is no struct for the whole file: `validate` deserializes each table on
/// its own, so one bad table does not hide the problems of the others.
pub const SECTIONS: [&str; 8] = [
    "server", "upstream", "auth", "access", "pool", "models", "logging", "state",
];

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    pub listen: String,
    pub trusted_proxies: Vec<String>,
    pub max_body: String,
    pub header_timeout: String,
    pub shutdown_grace: String,
    pub metrics_public: bool,
    pub reload_poll: String,
    pub workers: i64,
    pub real_ip_header: String,
    /// 0: derived from the memory the process may use (`admission::Defaults`).
    pub max_connections: i64,
    /// 0: derived from the memory the process may use.
    pub max_in_flight: i64,
    /// A size, or "auto" (a quarter of the memory the process may use).
    pub memory_budget: String,
    pub body_timeout: String,
    pub write_timeout: String,
    /// Largest upload through `/upload/…` (streamed, never held): a size.
    pub max_upload: String,
    /// The proxy's address as clients reach it (`https://gemini.example.com`), for the upload
    /// URLs it hands out; empty: from the request's `Host` (or a trusted proxy's
    /// `X-Forwarded-Host` / `-Proto`).
    pub public_url: String,
    /// Browser origins allowed to call the API routes: `"*"` alone, or `scheme://host[:port]`.
    pub cors_origins: Vec<String>,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: "0.0.0.0:7860".into(),
            trusted_proxies: Vec::new(),
            max_body: "32MiB".into(),
            header_timeout: "30s".into(),
            shutdown_grace: "30s".into(),
            metrics_public: false,
            reload_poll: "30s".into(),
            workers: 0,
            real_ip_header: "x-forwarded-for".into(),
            max_connections: 0,
            max_in_flight: 0,
            memory_budget: "auto".into(),
            body_timeout: "60s".into(),
            write_timeout: "30s".into(),
            max_upload: "2GiB".into(),
            public_url: String::new(),
            cors_origins: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Upstream {
    pub base_url: String,
    pub proxy: String,
    pub connect_timeout: String,
    pub first_byte_timeout: String,
    pub idle_timeout: String,
    pub heartbeat: String,
    pub safety: String,
    pub fetch_private_urls: bool,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            base_url: "https://generativelanguage.googleapis.com".into(),
            proxy: String::new(),
            connect_timeout: "10s".into(),
            first_byte_timeout: "300s".into(),
            idle_timeout: "300s".into(),
            heartbeat: "15s".into(),
            safety: "BLOCK_NONE".into(),
            fetch_private_urls: false,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Auth {
    pub tokens: Vec<TokenEntry>,
    pub token_files: Vec<String>,
    pub admin_tokens: Vec<String>,
    pub open: bool,
}

/// `"sk-…"` or `{ name = "cline", token = "sk-…", models = ["gemini-2.5-*"] }`.
#[derive(Debug)]
pub enum TokenEntry {
    Plain(String),
    Table(TokenTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenTable {
    pub name: Option<String>,
    pub token: String,
    pub models: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Access {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub max_token_failures: u32,
}

impl Default for Access {
    fn default() -> Self {
        Access {
            allow: vec!["*".into()],
            deny: Vec::new(),
            max_token_failures: 10,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Pool {
    pub strategy: String,
    pub keys: Vec<KeyEntry>,
    pub key_files: Vec<String>,
    // Signed, so that `-1` reaches validation and gets the same message as `0`.
    pub failure_threshold: i64,
    pub cooldown: String,
    pub max_attempts: i64,
    pub max_quota_hops: i64,
    pub retry_after_send: bool,
    pub request_deadline: String,
    /// How long one client token's file uploads keep going to one key (`"0s"`: off).
    pub upload_group: String,
}

impl Default for Pool {
    fn default() -> Self {
        Pool {
            strategy: "round_robin".into(),
            keys: Vec::new(),
            key_files: Vec::new(),
            failure_threshold: 3,
            cooldown: "60s".into(),
            max_attempts: 3,
            max_quota_hops: 8,
            retry_after_send: false,
            request_deadline: "120s".into(),
            upload_group: "10m".into(),
        }
    }
}

/// `"AIza…"` or `{ key = "AQ.…", name = "team-b", project = "proj-b", models = […], daily_limit = 250 }`.
#[derive(Debug)]
pub enum KeyEntry {
    Plain(String),
    Table(KeyTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyTable {
    pub key: String,
    pub name: Option<String>,
    pub project: Option<String>,
    pub models: Option<Vec<String>>,
    pub daily_limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Models {
    pub list: String,
    #[serde(rename = "static")]
    pub static_: Vec<String>,
    pub refresh: String,
    pub aliases: BTreeMap<String, AliasEntry>,
}

impl Default for Models {
    fn default() -> Self {
        Models {
            list: "upstream".into(),
            static_: Vec::new(),
            refresh: "10m".into(),
            aliases: BTreeMap::new(),
        }
    }
}

/// `"gemini-2.5-pro"`, `{ model = "…", reasoning_effort = "high" }` or
/// `{ models = ["…", "…"], reasoning_effort = "high" }`. The table form is one struct; that
/// exactly one of `model` and `models` is set is checked in `validate`.
#[derive(Debug)]
pub enum AliasEntry {
    Plain(String),
    Table(AliasTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AliasTable {
    pub model: Option<String>,
    pub models: Option<Vec<String>>,
    pub reasoning_effort: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Logging {
    pub level: String,
    pub format: String,
    pub directory: String,
    pub max_files: i64,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: "info".into(),
            format: "text".into(),
            directory: String::new(),
            max_files: 30,
        }
    }
}

/// `[state]`: where the pool's learned state is kept between restarts.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct State {
    /// "memory" (default), "file" or "redis".
    pub store: String,
    /// `store = "file"`: the snapshot file, relative to the config's folder.
    pub path: String,
    /// `store = "redis"`: `redis://` or `rediss://` URL (or `url_file`, one of the two).
    pub url: String,
    /// A file holding the URL (a Kubernetes Secret), relative to the config's folder.
    pub url_file: String,
    /// Every Redis key starts with it.
    pub prefix: String,
    /// The most one Redis call may take.
    pub timeout: String,
}

impl Default for State {
    fn default() -> Self {
        State {
            store: "memory".into(),
            path: "gemini-rotator.state".into(),
            url: String::new(),
            url_file: String::new(),
            prefix: "gemini-rotator:".into(),
            timeout: "100ms".into(),
        }
    }
}

// The mixed string-or-table entries. `#[serde(untagged)]` would swallow the table's own error
// ("unknown field `nmae`") into "data did not match any variant"; dispatching on the TOML type
// and handing the table to a `deny_unknown_fields` struct keeps the precise message and span.
macro_rules! string_or_table {
    ($entry:ident, $table:ident, $expecting:literal) => {
        impl<'de> Deserialize<'de> for $entry {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $entry;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$entry, E> {
                        Ok($entry::Plain(s.to_owned()))
                    }
                    fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<$entry, M::Error> {
                        $table::deserialize(MapAccessDeserializer::new(m)).map($entry::Table)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_or_table!(
    TokenEntry,
    TokenTable,
    "a token string or a table { name, token, models }"
);
string_or_table!(
    KeyEntry,
    KeyTable,
    "a key string or a table { key, name, project, models, daily_limit }"
);
string_or_table!(
    AliasEntry,
    AliasTable,
    "a model name or a table { model | models, reasoning_effort }"
);
