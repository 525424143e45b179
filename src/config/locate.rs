//! Where things are in the config text, and what may be said about them.
//!
//! Field paths (`pool.keys[3]`, `models.aliases."fast"`) and the two ways between a path and a
//! position: `locate` (path to byte offset, for our own checks) and `path_at` (offset to path,
//! for serde's errors, which know only where they happened). Also the masking of secrets in
//! text that may echo the document: `scrub` for serde's quoting of values, `redact` for any key
//! or token the document holds.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::secret::{mask_key, mask_token};

/// A field path such as `pool.keys[3].models[0]` or `models.aliases."fast"`.
#[derive(Debug, Clone, Default)]
pub(super) struct FieldPath(Vec<Seg>);

#[derive(Debug, Clone)]
pub(super) enum Seg {
    Key(String),
    /// A user-chosen table key (an alias name): always quoted, so it reads as a name.
    Name(String),
    Index(usize),
}

impl FieldPath {
    pub(super) fn root(key: &str) -> Self {
        FieldPath(vec![Seg::Key(key.into())])
    }

    pub(super) fn with(&self, seg: Seg) -> Self {
        let mut segs = self.0.clone();
        segs.push(seg);
        FieldPath(segs)
    }

    pub(super) fn key(&self, key: &str) -> Self {
        self.with(Seg::Key(key.into()))
    }

    pub(super) fn name(&self, name: &str) -> Self {
        self.with(Seg::Name(name.into()))
    }

    pub(super) fn index(&self, i: usize) -> Self {
        self.with(Seg::Index(i))
    }

    /// A table key found while walking the document: alias names are names, the rest keys.
    pub(super) fn child(&self, key: &str) -> Self {
        match self.0.as_slice() {
            [Seg::Key(a), Seg::Key(b)] if a == "models" && b == "aliases" => self.name(key),
            _ => self.key(key),
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Index(n) => write!(f, "[{n}]")?,
                Seg::Key(k) | Seg::Name(k) => {
                    if i > 0 {
                        f.write_str(".")?;
                    }
                    let bare = !k.is_empty()
                        && k.chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                    if bare && matches!(seg, Seg::Key(_)) {
                        f.write_str(k)?;
                    } else {
                        write!(f, "{k:?}")?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where a value came from: a field of the config file, or a line of a key or token file.
#[derive(Debug, Clone)]
pub(super) enum At {
    Cfg(FieldPath),
    Line {
        file: PathBuf,
        /// The file name as written in the config, for "first at keys.txt:2".
        shown: String,
        line: usize,
        col: usize,
        field: FieldPath,
    },
}

impl At {
    pub(super) fn describe(&self) -> String {
        match self {
            At::Cfg(p) => p.to_string(),
            At::Line { shown, line, .. } => format!("{shown}:{line}"),
        }
    }
}

/// Byte offset of the value at `path`, or of its nearest ancestor that is written down.
pub(super) fn locate(root: &Spanned<DeTable<'_>>, path: &FieldPath) -> usize {
    let mut best = root.span().start;
    let mut node: Option<&DeValue<'_>> = None;
    for seg in &path.0 {
        let next = match (seg, node) {
            (Seg::Key(k) | Seg::Name(k), None) => root.get_ref().get(k.as_str()),
            (Seg::Key(k) | Seg::Name(k), Some(v)) => v.as_table().and_then(|t| t.get(k.as_str())),
            (Seg::Index(i), Some(v)) => v.as_array().and_then(|a| a.get(*i)),
            (Seg::Index(_), None) => None,
        };
        let Some(next) = next else { break };
        best = next.span().start;
        node = Some(next.get_ref());
    }
    best
}

/// The field path of the deepest key or value whose span holds `span.start`, to name the
/// field of a serde error (which only knows where it happened).
pub(super) fn path_at(root: &Spanned<DeTable<'_>>, span: &Range<usize>) -> Option<FieldPath> {
    fn in_table(t: &DeTable<'_>, at: usize, path: &FieldPath) -> Option<FieldPath> {
        for (k, v) in t.iter() {
            let here = path.child(k.get_ref());
            if let Some(deeper) = in_value(v.get_ref(), at, &here) {
                return Some(deeper);
            }
            if k.span().contains(&at) || v.span().contains(&at) {
                return Some(here);
            }
        }
        None
    }
    fn in_value(v: &DeValue<'_>, at: usize, path: &FieldPath) -> Option<FieldPath> {
        match v {
            DeValue::Table(t) => in_table(t, at, path),
            DeValue::Array(a) => a.iter().enumerate().find_map(|(i, item)| {
                let here = path.index(i);
                in_value(item.get_ref(), at, &here)
                    .or_else(|| item.span().contains(&at).then_some(here))
            }),
            _ => None,
        }
    }
    in_table(root.get_ref(), span.start, &FieldPath::default())
}

/// Strings of the document that are, or may be, secrets: whatever sits where a key or token
/// belongs, and anything anywhere (values or table keys) in a Google key format.
pub(super) fn secrets_in(root: &Spanned<DeTable<'_>>) -> Vec<(String, String)> {
    fn google(s: &str) -> bool {
        s.starts_with("AIza") || s.starts_with("AQ.")
    }
    fn walk(v: &DeValue<'_>, path: &mut Vec<String>, out: &mut Vec<(String, String)>) {
        match v {
            DeValue::String(s) => {
                let at: Vec<&str> = path.iter().map(String::as_str).collect();
                match at.as_slice() {
                    ["pool", "keys", "#"] | ["pool", "keys", "#", "key"] => {
                        out.push((s.to_string(), mask_key(s)))
                    }
                    ["auth", "tokens" | "admin_tokens", "#"] | ["auth", "tokens", "#", "token"] => {
                        out.push((s.to_string(), mask_token(s)))
                    }
                    _ if google(s) => out.push((s.to_string(), mask_key(s))),
                    _ => {}
                }
            }
            DeValue::Array(a) => {
                for item in a.iter() {
                    path.push("#".into());
                    walk(item.get_ref(), path, out);
                    path.pop();
                }
            }
            DeValue::Table(t) => {
                for (k, item) in t.iter() {
                    let k: &str = k.get_ref();
                    if google(k) {
                        out.push((k.to_string(), mask_key(k)));
                    }
                    path.push(k.to_string());
                    walk(item.get_ref(), path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    let mut path = Vec::new();
    for (k, item) in root.get_ref().iter() {
        let k: &str = k.get_ref();
        if google(k) {
            out.push((k.to_string(), mask_key(k)));
        }
        path.push(k.to_string());
        walk(item.get_ref(), &mut path, &mut out);
        path.pop();
    }
    // Very short values would mask innocent words; the masks hide them whole anyway.
    out.retain(|(raw, _)| raw.chars().count() >= 8);
    out.sort_by_key(|(raw, _)| std::cmp::Reverse(raw.len()));
    out
}

pub(super) fn redact(text: &str, secrets: &[(String, String)]) -> String {
    let mut text = text.to_string();
    for (raw, masked) in secrets {
        if text.contains(raw.as_str()) {
            text = text.replace(raw.as_str(), masked);
        }
    }
    text
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Serde renders an unexpected string value as `string "…"`; a value in the wrong place may be
/// a key or a token, so it is dropped from the message.
pub(super) fn scrub(message: &str) -> String {
    let mut out = String::new();
    let mut rest = message;
    while let Some(i) = rest.find("string \"") {
        out.push_str(&rest[..i]);
        out.push_str("a string");
        let after = &rest[i + "string \"".len()..];
        let mut end = after.len();
        let mut escaped = false;
        for (j, c) in after.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => {
                    end = j + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    // Serde names Rust types; a config author thinks in TOML ones.
    out.trim_end()
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
}
