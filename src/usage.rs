//! Token accounting: what Gemini says a response cost (`usageMetadata`, or an interaction's
//! `usage`), and the per client token ledger of requests and tokens for the current quota day.
//!
//! Per (key, model) counts live in the pool's cells next to the request counters; this module
//! owns reading `usageMetadata` out of response bytes (cheaply: it looks for the field from the
//! end instead of parsing the whole body again) and the ledger by client token name, which
//! resets at midnight America/Los_Angeles like every daily counter. The ledger lives on `App`
//! (and travels with the pool so the hot path can reach it), so it survives reloads. It does no
//! I/O and never sees a credential: tokens are counted by their configured name. Each worker
//! counts into a shard of its own (`shard`), merged when read: no process-wide lock per request.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::{LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use memchr::memmem::Finder;

use crate::quota_day::{QuotaClock, QuotaDay};
use crate::shard::Shards;
use crate::translate::gemini::UsageMetadata;

/// What one response cost, in Gemini's terms. `completion` is the visible output only
/// (`candidatesTokenCount`); thoughts are counted apart, never twice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tokens {
    /// `promptTokenCount` + `toolUsePromptTokenCount` (cached tokens are inside it).
    pub prompt: u64,
    /// `candidatesTokenCount`.
    pub completion: u64,
    /// `thoughtsTokenCount`.
    pub thoughts: u64,
}

impl Tokens {
    /// The sum, saturating (the counts come from Google's answers).
    pub fn plus(self, other: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.saturating_add(other.prompt),
            completion: self.completion.saturating_add(other.completion),
            thoughts: self.thoughts.saturating_add(other.thoughts),
        }
    }

    /// Each count the larger of the two.
    pub fn max(self, other: Tokens) -> Tokens {
        Tokens {
            prompt: self.prompt.max(other.prompt),
            completion: self.completion.max(other.completion),
            thoughts: self.thoughts.max(other.thoughts),
        }
    }
}

impl From<&UsageMetadata> for Tokens {
    fn from(u: &UsageMetadata) -> Self {
        Tokens {
            // Google's numbers: a sum that would overflow saturates instead.
            prompt: u
                .prompt_token_count
                .saturating_add(u.tool_use_prompt_token_count),
            completion: u.candidates_token_count,
            thoughts: u.thoughts_token_count,
        }
    }
}

const FIELD: &[u8] = b"\"usageMetadata\"";
/// An interaction's `usage` (the Interactions API), read only when a body has no
/// `usageMetadata` and mentions `INTERACTION_MARK`.
const INTERACTION_FIELD: &[u8] = b"\"usage\"";
const INTERACTION_MARK: &[u8] = b"\"total_input_tokens\"";

/// The field names' searchers, built once (a `Finder` costs more to build than to run on an
/// event).
static FIELD_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(FIELD));
static INTERACTION_FINDER: LazyLock<Finder<'static>> =
    LazyLock::new(|| Finder::new(INTERACTION_FIELD));
static MARK_FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(INTERACTION_MARK));

/// Where the usage of one Gemini response or stream event (JSON bytes) starts, if it has any:
/// the last `usageMetadata` field name (its opening quote not escaped), found by a search from
/// the end, or failing that an interaction's `usage` field: the last one before the last
/// unescaped `INTERACTION_MARK` (its own first count). A cheap probe per stream event:
/// `from_json` of the bytes from there on reads it, however large the event before it (an
/// `interaction.completed` carries the whole interaction, outputs first).
pub fn field_at(bytes: &[u8]) -> Option<usize> {
    last_unescaped(bytes, bytes.len(), &FIELD_FINDER).or_else(|| {
        let mark = last_unescaped(bytes, bytes.len(), &MARK_FINDER)?;
        last_unescaped(bytes, mark, &INTERACTION_FINDER)
    })
}

/// How much `last_unescaped` searches forward at a time, going back from the end.
const WINDOW: usize = 1024;

/// Where the last `field` (a quoted name) lying whole before `end` begins whose opening quote
/// is not escaped. Forward SIMD searches (a backward one has no SIMD) of `WINDOW`-sized
/// windows, the last window first: Google puts usage near the end, so the first window
/// usually has it, and no byte is searched more than twice.
fn last_unescaped(bytes: &[u8], end: usize, field: &Finder<'_>) -> Option<usize> {
    let n = field.needle().len();
    // Windows by where a match starts: [lo, hi), searched up to `hi + n - 1` (or `end`).
    let mut hi = end;
    loop {
        let lo = hi.saturating_sub(WINDOW);
        let mut found = None;
        let mut from = lo;
        let to = end.min(hi + n - 1);
        while let Some(j) = field.find(bytes.get(from..to).unwrap_or_default()) {
            let i = from + j;
            if !escaped(bytes, i) {
                found = Some(i);
            }
            from = i + 1;
        }
        if found.is_some() || lo == 0 {
            return found;
        }
        hi = lo;
    }
}

/// The last top-level `usageMetadata` in one Gemini response or stream event (JSON bytes), or
/// failing that an interaction's `usage` (`total_input_tokens`, `total_output_tokens`,
/// `total_thought_tokens`: an `Interaction`, or an `interaction.completed` event's). Google
/// puts it near the end, so this scans backwards for the field name and parses only its
/// object; a name inside a string cannot match (its quotes would be escaped).
pub fn from_json(bytes: &[u8]) -> Option<Tokens> {
    if let Some(u) = last_field::<UsageMetadata>(bytes, &FIELD_FINDER) {
        return Some(Tokens::from(&u));
    }
    MARK_FINDER.find(bytes)?;
    let u = last_field::<InteractionUsage>(bytes, &INTERACTION_FINDER)?;
    (u.total_input_tokens.is_some() || u.total_output_tokens.is_some()).then(|| Tokens {
        prompt: u.total_input_tokens.unwrap_or(0),
        completion: u.total_output_tokens.unwrap_or(0),
        thoughts: u.total_thought_tokens.unwrap_or(0),
    })
}

/// An interaction's token counts (the Interactions API's `Usage`).
#[derive(serde::Deserialize)]
struct InteractionUsage {
    total_input_tokens: Option<u64>,
    total_output_tokens: Option<u64>,
    total_thought_tokens: Option<u64>,
}

/// The last unescaped `field` in `bytes` whose value parses as a `T`.
fn last_field<T: serde::de::DeserializeOwned>(bytes: &[u8], field: &Finder<'_>) -> Option<T> {
    let field_len = field.needle().len();
    let mut end = bytes.len();
    while let Some(i) = last_unescaped(bytes, end, field) {
        end = i;
        let rest = bytes[i + field_len..].trim_ascii_start();
        let Some(value) = rest.strip_prefix(b":") else {
            continue;
        };
        let mut values = serde_json::Deserializer::from_slice(value).into_iter::<T>();
        if let Some(Ok(u)) = values.next() {
            return Some(u);
        }
    }
    None
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Whether the quote at `i` is preceded by an odd run of backslashes.
fn escaped(bytes: &[u8], i: usize) -> bool {
    bytes[..i].iter().rev().take_while(|&&b| b == b'\\').count() % 2 == 1
}

/// One client token's day.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenTotals {
    /// Model requests Gemini answered with a 2xx for this token.
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub thoughts_tokens: u64,
}

/// The name counted for requests on an open proxy (no tokens configured).
pub const OPEN: &str = "(open)";

/// Client token names beyond this share one entry: names come from the config, but a huge
/// token file must not grow the ledger without bound.
const MAX_NAMES: usize = 10_000;
pub const OTHER: &str = "(other)";

/// Requests and tokens per client token name, for the current quota day.
///
/// Each worker counts into its own shard (`shard`), so no request waits on a lock another
/// worker holds; readers add the shards up. Totals merged from a saved state sit in `base`,
/// with the names admitted today (the bound on names is the fleet of shards', not a shard's).
#[derive(Debug, Default)]
pub struct TokenUsage {
    clock: QuotaClock,
    shards: Shards<Mutex<Ledger>>,
    /// Lock order: `base`, then a shard; the request path takes a shard alone, and `base`
    /// (alone) only the first time a shard sees a name that day.
    base: Mutex<Base>,
}

#[derive(Debug, Default)]
struct Ledger {
    day: Option<QuotaDay>,
    /// Counted by this shard since its totals were last folded into `base`.
    by_name: HashMap<String, TokenTotals>,
    /// Counted since the last `drain_at`, by name (a shared store adds them to the fleet's).
    unsynced: HashMap<String, TokenTotals>,
}

impl Ledger {
    /// Starts a new quota day when `today` differs from the ledger's.
    fn roll(&mut self, today: Option<QuotaDay>) {
        if self.day != today {
            self.day = today;
            self.by_name.clear();
            self.unsynced.clear();
        }
    }
}

#[derive(Debug, Default)]
struct Base {
    day: Option<QuotaDay>,
    /// Totals imported from a saved state, plus the shards' counts folded in on import.
    by_name: HashMap<String, TokenTotals>,
    /// Every name counted today under its own entry (at most `MAX_NAMES`).
    names: HashSet<String>,
}

impl Base {
    fn roll(&mut self, today: Option<QuotaDay>) {
        if self.day != today {
            self.day = today;
            self.by_name.clear();
            self.names.clear();
        }
    }

    /// The entry `name` is counted under today: its own, or `OTHER` once `MAX_NAMES` are taken.
    fn admit<'a>(&mut self, name: &'a str) -> &'a str {
        if self.names.contains(name) {
            name
        } else if self.names.len() >= MAX_NAMES {
            OTHER
        } else {
            self.names.insert(name.to_string());
            name
        }
    }
}

fn add(map: &mut HashMap<String, TokenTotals>, name: &str, more: &TokenTotals) {
    let t = match map.get_mut(name) {
        Some(t) => t,
        None => map.entry(name.to_string()).or_default(),
    };
    t.requests = t.requests.saturating_add(more.requests);
    t.prompt_tokens = t.prompt_tokens.saturating_add(more.prompt_tokens);
    t.completion_tokens = t.completion_tokens.saturating_add(more.completion_tokens);
    t.thoughts_tokens = t.thoughts_tokens.saturating_add(more.thoughts_tokens);
}

impl TokenUsage {
    pub fn new() -> Self {
        TokenUsage::default()
    }

    /// One answered request for `token` (its configured name; `None` on an open proxy).
    pub fn record(&self, token: Option<&str>, tokens: Tokens) {
        self.record_at(token, tokens, SystemTime::now());
    }

    pub fn record_at(&self, token: Option<&str>, tokens: Tokens, wall: SystemTime) {
        let today = self.clock.day(wall).map(|(d, _)| d);
        let mut name = token.unwrap_or(OPEN);
        let one = TokenTotals {
            requests: 1,
            prompt_tokens: tokens.prompt,
            completion_tokens: tokens.completion,
            thoughts_tokens: tokens.thoughts,
        };
        let shard = self.shards.local();
        let mut ledger = lock(shard);
        ledger.roll(today);
        if !ledger.by_name.contains_key(name) {
            // The first time this shard sees the name today: is it one of today's names?
            drop(ledger);
            {
                let mut base = lock(&self.base);
                base.roll(today);
                name = base.admit(name);
            }
            ledger = lock(shard);
            ledger.roll(today);
        }
        let ledger = &mut *ledger;
        add(&mut ledger.by_name, name, &one);
        add(&mut ledger.unsynced, name, &one);
    }

    /// What was counted since the last drain, by name, for a shared store (not the totals).
    pub fn drain_at(&self, wall: SystemTime) -> Option<LedgerDay> {
        let today = self.clock.day(wall).map(|(d, _)| d)?;
        let mut drained: HashMap<String, TokenTotals> = HashMap::new();
        for shard in self.shards.iter() {
            let mut ledger = lock(shard);
            if ledger.day != Some(today) {
                continue;
            }
            for (name, t) in ledger.unsynced.drain() {
                add(&mut drained, &name, &t);
            }
        }
        (!drained.is_empty()).then(|| (today, drained.into_iter().collect()))
    }

    /// Today's totals by token name, sorted by name.
    pub fn snapshot(&self) -> Vec<(String, TokenTotals)> {
        self.snapshot_at(SystemTime::now())
    }

    pub fn snapshot_at(&self, wall: SystemTime) -> Vec<(String, TokenTotals)> {
        let today = self.clock.day(wall).map(|(d, _)| d);
        let base = lock(&self.base);
        let mut totals: HashMap<String, TokenTotals> = HashMap::new();
        if base.day == today {
            totals.clone_from(&base.by_name);
        }
        for shard in self.shards.iter() {
            let ledger = lock(shard);
            if ledger.day != today {
                continue;
            }
            for (name, t) in &ledger.by_name {
                add(&mut totals, name, t);
            }
        }
        drop(base);
        let mut out: Vec<(String, TokenTotals)> = totals.into_iter().collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A quota day's totals by client token name, as a state store keeps them.
pub type LedgerDay = (QuotaDay, Vec<(String, TokenTotals)>);

impl TokenUsage {
    /// The ledger's quota day and totals at `wall` (for a state store); `None` when it holds
    /// nothing for the day `wall` falls in.
    pub fn export_at(&self, wall: SystemTime) -> Option<LedgerDay> {
        let today = self.clock.day(wall).map(|(d, _)| d)?;
        let totals = self.snapshot_at(wall);
        (!totals.is_empty()).then_some((today, totals))
    }

    /// Merges saved totals for quota day `day` (never lowering a count); ignored unless `day`
    /// is the day `wall` falls in.
    pub fn import_at(&self, day: QuotaDay, totals: &[(String, TokenTotals)], wall: SystemTime) {
        let today = self.clock.day(wall).map(|(d, _)| d);
        if today != Some(day) {
            return;
        }
        let mut base = lock(&self.base);
        base.roll(today);
        // Today's counts so far, all in `base`, so a saved total is compared with the whole.
        for shard in self.shards.iter() {
            let mut ledger = lock(shard);
            ledger.roll(today);
            for (name, t) in ledger.by_name.drain() {
                add(&mut base.by_name, &name, &t);
            }
        }
        for (name, saved) in totals {
            if base.admit(name) != name {
                continue;
            }
            let t = base.by_name.entry(name.clone()).or_default();
            t.requests = t.requests.max(saved.requests);
            t.prompt_tokens = t.prompt_tokens.max(saved.prompt_tokens);
            t.completion_tokens = t.completion_tokens.max(saved.completion_tokens);
            t.thoughts_tokens = t.thoughts_tokens.max(saved.thoughts_tokens);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(body: &str, expected: Option<(u64, u64, u64)>) {
        let got = from_json(body.as_bytes()).map(|t| (t.prompt, t.completion, t.thoughts));
        assert_eq!(got, expected, "{body}");
    }

    #[test]
    fn reads_usage_metadata() {
        check(
            r#"{"candidates":[],"usageMetadata":{"promptTokenCount":10,"candidatesTokenCount":5,"thoughtsTokenCount":7,"totalTokenCount":22},"modelVersion":"m"}"#,
            Some((10, 5, 7)),
        );
        check(
            r#"{"usageMetadata" : {"promptTokenCount":3,"toolUsePromptTokenCount":2}}"#,
            Some((5, 0, 0)),
        );
        // The field's name inside generated text does not count.
        check(
            r#"{"candidates":[{"content":{"parts":[{"text":"say \"usageMetadata\": {\"promptTokenCount\": 99}"}]}}]}"#,
            None,
        );
        check(
            r#"{"candidates":[{"content":{"parts":[{"text":"\"usageMetadata\":{}"}]}}],"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2}}"#,
            Some((1, 2, 0)),
        );
        check(r#"{"error":{"code":429}}"#, None);
        check("", None);
        check("\"usageMetadata\"", None);
        check(r#"{"usageMetadata": 5}"#, None);
        check(r#"{"usageMetadata": {"promptTokenCount": "x"}}"#, None);
    }

    #[test]
    fn reads_an_interactions_usage() {
        check(
            r#"{"id":"v1_a","object":"interaction","status":"completed","usage":{"total_input_tokens":8,"total_output_tokens":12,"total_thought_tokens":3,"total_tokens":23}}"#,
            Some((8, 12, 3)),
        );
        check(
            r#"{"event_type":"interaction.completed","event_id":"e7","interaction":{"id":"v1_a","usage":{"total_input_tokens":4,"total_output_tokens":5}}}"#,
            Some((4, 5, 0)),
        );
        // usageMetadata wins; a `usage` without the Interactions API's counts is nothing.
        check(
            r#"{"usage":{"total_input_tokens":9},"usageMetadata":{"promptTokenCount":1}}"#,
            Some((1, 0, 0)),
        );
        check(
            r#"{"usage":{"prompt_tokens":3},"total_input_tokens":1}"#,
            None,
        );
        check(
            r#"{"steps":[{"content":[{"text":"\"usage\":{\"total_input_tokens\":99}"}]}]}"#,
            None,
        );
    }

    #[test]
    fn the_last_field_read_from_its_tail() {
        let event = r#"{"candidates":[{"content":{"parts":[{"text":"a \"usageMetadata\":{\"promptTokenCount\":9}"}]}}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":6},"modelVersion":"m"}"#;
        let at = field_at(event.as_bytes()).expect("the field");
        assert!(event[at..].starts_with(r#""usageMetadata":{"promptTokenCount":4"#));
        let tokens = from_json(&event.as_bytes()[at..]).map(|t| (t.prompt, t.completion));
        assert_eq!(tokens, Some((4, 6)));
        // Only an escaped mention: no field.
        let text = r#"{"candidates":[{"content":{"parts":[{"text":"\"usageMetadata\":{}"}]}}]}"#;
        assert_eq!(field_at(text.as_bytes()), None);
        // An interaction's event: read from its `usage`, however much comes before it.
        for before in [0, 100, 200_000] {
            let done = format!(
                r#"{{"event_type":"interaction.completed","interaction":{{"outputs":[{{"type":"text","text":"{} \"usage\":{{\"total_input_tokens\":9}}"}}],"usage":{{"total_input_tokens":4,"total_output_tokens":5}},"x":{{"usage":"none"}}}}}}"#,
                "y".repeat(before)
            );
            let at = field_at(done.as_bytes()).expect("the interaction's usage");
            assert!(
                done[at..].starts_with(r#""usage":{"total_input_tokens":4"#),
                "{before}"
            );
            let tail = &done.as_bytes()[at..];
            let tokens = from_json(&tail[..tail.len().min(1024)]).map(|t| (t.prompt, t.completion));
            assert_eq!(tokens, Some((4, 5)), "{before}");
        }
        // Only an escaped mention of the counts: no field.
        let text = r#"{"steps":[{"text":"\"usage\":{\"total_input_tokens\":9}"}]}"#;
        assert_eq!(field_at(text.as_bytes()), None);
    }

    /// The search `last_unescaped` replaced: one backward search from `end` per candidate.
    fn backward(b: &[u8], mut end: usize, needle: &[u8]) -> Option<usize> {
        while let Some(i) = memchr::memmem::rfind(&b[..end], needle) {
            if !escaped(b, i) {
                return Some(i);
            }
            end = i;
        }
        None
    }

    /// The tail window and the search before it agree with one search from the end, wherever
    /// the field sits: inside the window, across its start, before it, escaped or not.
    #[test]
    fn field_at_across_the_tail_window() {
        // The search this replaced.
        let reference = |b: &[u8]| {
            backward(b, b.len(), FIELD).or_else(|| {
                backward(b, b.len(), INTERACTION_MARK)
                    .and_then(|mark| backward(b, mark, INTERACTION_FIELD))
            })
        };
        let field = r#""usageMetadata":{"promptTokenCount":1}"#;
        for filler in [0, 10, WINDOW - 20, WINDOW - 1, WINDOW, 3 * WINDOW] {
            for after in [0, 5, WINDOW - 10, WINDOW, 2 * WINDOW] {
                let pad = |n: usize| "x".repeat(n);
                let cases = [
                    format!("{{{}{field},{}}}", pad(filler), pad(after)),
                    format!("{{{field}{}\\{field}{}}}", pad(filler), pad(after)),
                    format!("{{{field}{}\\\\{field}{}}}", pad(filler), pad(after)),
                    format!("{{{}\\{field}{}}}", pad(filler), pad(after)),
                    format!("{{{}{}}}", pad(filler), pad(after)),
                ];
                for case in &cases {
                    let b = case.as_bytes();
                    assert_eq!(field_at(b), reference(b), "{filler} {after} {case:.60}");
                }
            }
        }
        assert_eq!(field_at(b""), None);
        assert_eq!(field_at(FIELD), Some(0));
        assert_eq!(field_at(&FIELD[..FIELD.len() - 1]), None);
    }

    /// Matches that overlap (a quoted name starts and ends with `"`), escaped ones, and every
    /// `end`: the windowed search finds what one backward search per candidate finds.
    #[test]
    fn last_unescaped_matches_a_backward_search() {
        let finder = Finder::new(b"\"u\"");
        let unit = "\"u\"u\"\\\"u\"x";
        for reps in [1, 3, WINDOW / unit.len(), WINDOW / unit.len() + 1, 700] {
            let text = unit.repeat(reps);
            let b = text.as_bytes();
            for end in (0..=b.len()).step_by(7).chain([b.len()]) {
                assert_eq!(
                    last_unescaped(b, end, &finder),
                    backward(b, end, b"\"u\""),
                    "{reps} {end}"
                );
            }
        }
        // A value that does not parse is skipped for the one before it, windows apart.
        let far = format!(
            r#"{{"usageMetadata":{{"promptTokenCount":2}},"t":"{}","usageMetadata":7}}"#,
            "y".repeat(3 * WINDOW)
        );
        assert_eq!(from_json(far.as_bytes()).map(|t| t.prompt), Some(2));
    }

    fn wall(rfc3339: &str) -> SystemTime {
        let ts: jiff::Timestamp = rfc3339.parse().expect("test timestamp");
        SystemTime::from(ts)
    }

    #[test]
    fn ledger_per_token_resets_at_midnight_in_los_angeles() {
        let usage = TokenUsage::new();
        let t = Tokens {
            prompt: 10,
            completion: 5,
            thoughts: 2,
        };
        // 23:59 PST on 2026-01-15.
        let before = wall("2026-01-16T07:59:00Z");
        usage.record_at(Some("cline"), t, before);
        usage.record_at(Some("cline"), t, before);
        usage.record_at(None, Tokens::default(), before);
        let snap = usage.snapshot_at(before);
        assert_eq!(
            snap,
            vec![
                (
                    OPEN.to_string(),
                    TokenTotals {
                        requests: 1,
                        ..TokenTotals::default()
                    }
                ),
                (
                    "cline".to_string(),
                    TokenTotals {
                        requests: 2,
                        prompt_tokens: 20,
                        completion_tokens: 10,
                        thoughts_tokens: 4,
                    }
                ),
            ]
        );
        let after = wall("2026-01-16T08:00:00Z");
        assert_eq!(usage.snapshot_at(after), vec![]);
        usage.record_at(Some("cline"), t, after);
        assert_eq!(usage.snapshot_at(after)[0].1.requests, 1);
    }
}
