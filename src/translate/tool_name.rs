//! Tool names as Gemini accepts them, and back.
//!
//! Gemini refuses a whole request when one function name does not start with a letter or `_`,
//! holds a character other than `a-z A-Z 0-9 _ . : -`, or is longer than 64 characters.
//! Clients send such names: Claude Code's MCP tools (`mcp__<server>__<tool>`) are often
//! longer, and OpenAI tools may hold any character. A valid name goes out byte for byte; any
//! other is made valid (bad characters as `_`, a `_` before a bad first character) and ends
//! with `_` and 8 hex digits of an FNV-1a hash of the client's name, within 64 characters. The
//! mapping is a pure function of the name, so history, declarations and `allowedFunctionNames`
//! agree on every turn and every replica; `ToolNames` maps Gemini's calls back to the names the
//! client declared.

use std::borrow::Cow;
use std::collections::HashMap;

use serde::Serializer;

use super::gemini::GenerateContentResponse;

/// Gemini's longest function name.
pub const MAX_LEN: usize = 64;

fn valid_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

/// Whether Gemini takes `name` as it is.
pub fn is_valid(name: &str) -> bool {
    let starts = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    starts && name.len() <= MAX_LEN && name.chars().all(valid_char)
}

/// The name Gemini gets for the client's `name`.
pub fn gemini_name(name: &str) -> Cow<'_, str> {
    if is_valid(name) {
        return Cow::Borrowed(name);
    }
    let mut out = String::with_capacity(MAX_LEN);
    if !name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
    {
        out.push('_');
    }
    // Room for `_` and the 8 hex digits.
    let room = MAX_LEN - 9;
    for c in name.chars() {
        if out.len() >= room {
            break;
        }
        out.push(if valid_char(c) { c } else { '_' });
    }
    out.push('_');
    out.push_str(&format!("{:08x}", fnv1a(name.as_bytes())));
    Cow::Owned(out)
}

/// 32-bit FNV-1a: stable across processes, releases and replicas (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// Serializes a tool name as Gemini gets it (`#[serde(serialize_with)]` on the wire types).
pub(crate) fn serialize<S: Serializer>(name: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&gemini_name(name))
}

/// `allowedFunctionNames`, each as Gemini gets it.
pub(crate) fn serialize_allowed<S: Serializer>(
    names: &Option<[&str; 1]>,
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    match names {
        None => s.serialize_none(),
        Some(names) => {
            let mut seq = s.serialize_seq(Some(names.len()))?;
            for name in names {
                seq.serialize_element(&gemini_name(name))?;
            }
            seq.end()
        }
    }
}

/// The names a request declares, as Gemini gets them: the same name twice is a duplicate (the
/// first declaration wins, as Gemini refuses two), and two different names that Gemini would
/// get alike (a declared name equal to another's mapping, or two hashes alike) are the
/// client's 400, since their calls could not be told apart.
#[derive(Default)]
pub(crate) struct Declared<'a>(HashMap<Cow<'a, str>, &'a str>);

impl<'a> Declared<'a> {
    /// Whether `name` is new (declare it), or a duplicate of one declared (drop it); `Err` with
    /// the earlier name when a different name maps to the same Gemini name.
    pub fn first(&mut self, name: &'a str) -> Result<bool, &'a str> {
        match self.0.entry(gemini_name(name)) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(name);
                Ok(true)
            }
            std::collections::hash_map::Entry::Occupied(o) if *o.get() == name => Ok(false),
            std::collections::hash_map::Entry::Occupied(o) => Err(o.get()),
        }
    }

    /// `first`, with a clash as the client's 400 naming `param` (the field of `name`).
    pub fn declare(
        &mut self,
        name: &'a str,
        param: impl FnOnce() -> String,
    ) -> Result<bool, super::TranslateError> {
        self.first(name)
            .map_err(|earlier| clash(earlier, name, param()))
    }
}

/// The client's 400 for two declared names Gemini would get alike.
fn clash(earlier: &str, name: &str, param: String) -> super::TranslateError {
    super::invalid(
        &format!(
            "tool names `{}` and `{}` are the same function name to Gemini (names Gemini \
             refuses are mapped to valid ones): rename one",
            crate::excerpt::excerpt(earlier),
            crate::excerpt::excerpt(name)
        ),
        param,
    )
}

/// Gemini's name → the client's, for the declared names Gemini got changed. Empty (and
/// free) when every name was valid, as nearly always.
#[derive(Debug, Clone, Default)]
pub struct ToolNames(HashMap<String, String>);

impl ToolNames {
    /// The map for the names a request declares.
    pub fn of<'a>(declared: impl IntoIterator<Item = &'a str>) -> Self {
        let mut map = HashMap::new();
        for name in declared {
            if let Cow::Owned(mapped) = gemini_name(name) {
                map.insert(mapped, name.to_string());
            }
        }
        ToolNames(map)
    }

    /// The client's name for Gemini's `name` (itself when it was not changed).
    pub fn client<'a>(&'a self, name: &'a str) -> &'a str {
        self.0.get(name).map_or(name, String::as_str)
    }

    /// Puts the client's names back on the calls of an answer or stream event.
    pub fn restore(&self, resp: &mut GenerateContentResponse<'_>) {
        if self.0.is_empty() {
            return;
        }
        let parts = resp
            .candidates
            .iter_mut()
            .filter_map(|c| c.content.as_mut())
            .flat_map(|c| c.parts.iter_mut());
        for part in parts {
            if let Some(call) = part.function_call.as_mut() {
                if let Some(original) = self.0.get(call.name.as_ref()) {
                    call.name = Cow::Owned(original.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_kept_and_others_made_valid() {
        for kept in ["get_weather", "_x", "a.b:c-d", &"a".repeat(64)] {
            assert_eq!(gemini_name(kept), Cow::Borrowed(kept));
        }
        let long = format!("mcp__claude_in_chrome__{}", "navigate_".repeat(6));
        assert!(long.len() > MAX_LEN);
        for name in [long.as_str(), "1st", "-x", "my tool!", "", "ünïcode", "a/b"] {
            let mapped = gemini_name(name);
            assert!(is_valid(&mapped), "{name:?} → {mapped:?}");
            assert_eq!(gemini_name(name), mapped, "deterministic");
        }
        let mapped = gemini_name(&long);
        assert_eq!(mapped.len(), MAX_LEN);
        assert!(
            mapped.starts_with("mcp__claude_in_chrome__navigate_"),
            "{mapped}"
        );
        assert!(gemini_name("1st").starts_with("_1st_"));
        assert!(gemini_name("my tool!").starts_with("my_tool__"));
        // Two long names alike in their first 55 characters still differ.
        let other = format!("{long}2");
        assert_ne!(gemini_name(&long), gemini_name(&other));
    }

    #[test]
    fn calls_come_back_with_the_declared_names() {
        let long = "mcp__server__".to_string() + &"x".repeat(70);
        let names = ToolNames::of(["ok_tool", long.as_str()]);
        let mapped = gemini_name(&long).into_owned();
        let body = format!(
            r#"{{"candidates":[{{"content":{{"parts":[{{"functionCall":{{"name":"{mapped}","args":{{}}}}}},{{"functionCall":{{"name":"ok_tool"}}}},{{"functionCall":{{"name":"unknown"}}}}]}}}}]}}"#
        );
        let mut resp: GenerateContentResponse<'_> =
            serde_json::from_str(&body).expect("a response");
        names.restore(&mut resp);
        let got: Vec<&str> = resp.candidates[0]
            .content
            .as_ref()
            .expect("content")
            .parts
            .iter()
            .filter_map(|p| p.function_call.as_ref().map(|c| c.name.as_ref()))
            .collect();
        assert_eq!(got, [long.as_str(), "ok_tool", "unknown"]);
        assert_eq!(names.client(&mapped), long);
        assert!(ToolNames::of(["a", "b"]).0.is_empty());
    }

    #[test]
    fn names_gemini_would_get_alike_are_told_apart() {
        let mut declared = Declared::default();
        assert_eq!(declared.first("get_weather"), Ok(true));
        assert_eq!(declared.first("get_weather"), Ok(false));
        let mapped = gemini_name("my tool").into_owned();
        assert_eq!(declared.first("my tool"), Ok(true));
        // A client declaring the mapped name itself beside the original.
        assert_eq!(declared.first(&mapped), Err("my tool"));
        assert_eq!(declared.first("my_tool"), Ok(true));
    }
}
