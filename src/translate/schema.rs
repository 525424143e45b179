//! JSON Schemas for Gemini's `parametersJsonSchema`/`responseJsonSchema`, cleaned while copied.
//!
//! Raw JSON Schema keeps anyOf, $ref and type arrays meaningful, so only the keys Gemini
//! rejects and that carry no constraint go. A schema stays the client's raw JSON: when none of
//! those keys can occur in it, it is passed on as is; otherwise one walk follows the schema
//! structure (so a property literally named `strict` survives), copies every other value
//! verbatim and writes the result once.

use std::borrow::Cow;
use std::fmt;
use std::sync::LazyLock;

use memchr::memmem;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::json::CowStr;

/// Keys Gemini's JSON Schema support rejects and that carry no constraint.
const NON_SCHEMA_KEYS: [&str; 3] = ["$schema", "strict", "$comment"];
/// Keys whose value is a map from names to schemas.
const SCHEMA_MAPS: [&str; 5] = [
    "properties",
    "$defs",
    "definitions",
    "patternProperties",
    "dependentSchemas",
];
/// Keys whose value is a schema, or a list of schemas.
const SCHEMA_VALUES: [&str; 15] = [
    "items",
    "prefixItems",
    "additionalProperties",
    "not",
    "if",
    "then",
    "else",
    "contains",
    "propertyNames",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
    "anyOf",
    "oneOf",
    "allOf",
];

/// Schema levels the walk descends; deeper values are copied as sent. The client's body is
/// parsed into raw values, which serde_json does not limit in depth, and each level of the walk
/// is a few stack frames: without a limit a deeply nested schema (10,000 levels is a 160 kB
/// body) overflowed the worker's stack and aborted the process.
const MAX_DEPTH: usize = 64;

/// What `clean` looks for before walking: the keys it drops, and `\u` (a key is compared
/// unescaped, so an escape could spell one). memchr's finders, built once, scan with SIMD;
/// `str::contains` set up a searcher per call and cost as much as the rest of the request.
static NEEDLES: LazyLock<[memmem::Finder<'static>; 4]> = LazyLock::new(|| {
    let [a, b, c] = NON_SCHEMA_KEYS;
    ["\\u", a, b, c].map(memmem::Finder::new)
});

/// The schema without its non-schema keys.
pub(crate) fn clean(schema: &RawValue) -> Cow<'_, RawValue> {
    let text = schema.get();
    let untouched = NEEDLES.iter().all(|n| n.find(text.as_bytes()).is_none());
    if untouched {
        return Cow::Borrowed(schema);
    }
    let mut out = Vec::with_capacity(text.len());
    walk(schema, Kind::Schema, &mut out, 0);
    // The walk writes valid JSON; should it ever not, the schema goes as the client sent it.
    match String::from_utf8(out).map(RawValue::from_string) {
        Ok(Ok(cleaned)) => Cow::Owned(cleaned),
        _ => Cow::Borrowed(schema),
    }
}

/// `{}` or `{"type":"object","properties":{}}` (what clients send for "no parameters"), once
/// cleaned: declaring it adds nothing and older Gemini paths reject an empty object schema.
///
/// Stops reading at the first sign of content (a property, an unknown key), so a real schema
/// costs a few bytes here, not a second scan: the parser then reports the unread rest as an
/// error, and any error means "not empty".
pub(crate) fn is_empty_object(schema: &RawValue) -> bool {
    struct Schema;
    impl<'de> Visitor<'de> for Schema {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a schema object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            while let Some(CowStr(key)) = map.next_key()? {
                let empty = match &*key {
                    "properties" => map.next_value_seed(NoEntries)?,
                    "type" => map.next_value::<CowStr>()?.0 == "object",
                    "required" => map.next_value::<Vec<IgnoredAny>>()?.is_empty(),
                    "additionalProperties" => map.next_value::<bool>().is_ok(),
                    k if NON_SCHEMA_KEYS.contains(&k) || k == "title" || k == "description" => {
                        map.next_value::<IgnoredAny>()?;
                        true
                    }
                    _ => false,
                };
                if !empty {
                    return Ok(false);
                }
            }
            Ok(true)
        }
    }
    /// `{}`: reads at most the first key.
    struct NoEntries;
    impl<'de> DeserializeSeed<'de> for NoEntries {
        type Value = bool;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_map(self)
        }
    }
    impl<'de> Visitor<'de> for NoEntries {
        type Value = bool;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
            Ok(map.next_key::<IgnoredAny>()?.is_none())
        }
    }
    let text = schema.get();
    text.starts_with('{')
        && !declares_property(text)
        && serde_json::Deserializer::from_str(text)
            .deserialize_map(Schema)
            .unwrap_or(false)
}

/// Whether `schema` (valid JSON) opens `{"type":"object","properties":{"` or
/// `{"properties":{"`, with any whitespace between the tokens: then it declares a property and
/// is not empty. Nearly every real tool schema is laid out so, and this spares it the parse in
/// `is_empty_object` (whose early stop costs serde_json two errors, each placed by line).
fn declares_property(schema: &str) -> bool {
    const TYPE_FIRST: [&str; 9] = [
        "{",
        "\"type\"",
        ":",
        "\"object\"",
        ",",
        "\"properties\"",
        ":",
        "{",
        "\"",
    ];
    const PROPERTIES_FIRST: [&str; 5] = ["{", "\"properties\"", ":", "{", "\""];
    let opens = |tokens: &[&str]| {
        let mut rest = schema;
        tokens.iter().all(|token| {
            let next = rest.trim_start_matches([' ', '\t', '\n', '\r']);
            next.strip_prefix(token).map(|after| rest = after).is_some()
        })
    };
    opens(&TYPE_FIRST) || opens(&PROPERTIES_FIRST)
}

/// Writes `value` as `kind`; a value of another shape (e.g. `true` for a schema), or one deeper
/// than `MAX_DEPTH`, is copied.
fn walk(value: &RawValue, kind: Kind, out: &mut Vec<u8>, depth: usize) {
    let text = value.get();
    let mark = out.len();
    let mut de = serde_json::Deserializer::from_str(text);
    let visitor = Walk {
        out: &mut *out,
        kind,
        depth: depth + 1,
    };
    let walked = match kind {
        _ if depth >= MAX_DEPTH => false,
        Kind::SchemaList if text.starts_with('[') => de.deserialize_seq(visitor).is_ok(),
        Kind::Schema | Kind::SchemaMap if text.starts_with('{') => {
            de.deserialize_map(visitor).is_ok()
        }
        _ => false,
    };
    if !walked {
        out.truncate(mark);
        out.extend_from_slice(text.as_bytes());
    }
}

/// What a walked JSON value holds.
#[derive(Clone, Copy)]
enum Kind {
    /// A schema object: its keys decide what their values are.
    Schema,
    /// A map from names to schemas (`properties`, `$defs`, …).
    SchemaMap,
    /// A list of schemas (`anyOf`, `prefixItems`, …).
    SchemaList,
}

struct Walk<'o> {
    out: &'o mut Vec<u8>,
    kind: Kind,
    /// The depth of the values this visitor's children are walked at.
    depth: usize,
}

impl Walk<'_> {
    fn key(&mut self, first: bool, key: &str) {
        if !first {
            self.out.push(b',');
        }
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *self.out, key);
        self.out.push(b':');
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON Schema")
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        self.out.push(b'{');
        let mut first = true;
        while let Some(CowStr(key)) = map.next_key()? {
            let value: &RawValue = map.next_value()?;
            let key = &*key;
            match self.kind {
                Kind::SchemaMap => {
                    self.key(first, key);
                    walk(value, Kind::Schema, self.out, self.depth);
                }
                _ if NON_SCHEMA_KEYS.contains(&key) => continue,
                _ => {
                    self.key(first, key);
                    if SCHEMA_MAPS.contains(&key) {
                        walk(value, Kind::SchemaMap, self.out, self.depth);
                    } else if SCHEMA_VALUES.contains(&key) {
                        // A single schema or a list of them.
                        let kind = if value.get().starts_with('[') {
                            Kind::SchemaList
                        } else {
                            Kind::Schema
                        };
                        walk(value, kind, self.out, self.depth);
                    } else {
                        self.out.extend_from_slice(value.get().as_bytes());
                    }
                }
            }
            first = false;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.out.push(b'[');
        let mut first = true;
        while let Some(item) = seq.next_element::<&RawValue>()? {
            if !first {
                self.out.push(b',');
            }
            walk(item, Kind::Schema, self.out, self.depth);
            first = false;
        }
        self.out.push(b']');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Box<RawValue> {
        RawValue::from_string(text.to_owned()).expect("valid JSON")
    }

    #[test]
    fn a_declared_property_is_seen_from_the_opening_tokens() {
        for text in [
            r#"{"type":"object","properties":{"a":{"type":"string"}}}"#,
            r#"{"type": "object", "properties": {"path": {"type": "string"}}}"#,
            "{\r\n \"type\" :\t\"object\" ,\n \"properties\" : {\n  \"a\": {}}}",
            r#"{"properties":{"a":true},"type":"object"}"#,
            r#"{ "properties" : { "a" : true } }"#,
        ] {
            assert!(declares_property(text), "{text}");
            assert!(!is_empty_object(&raw(text)), "{text}");
        }
        for text in [
            r#"{"type":"object","properties":{}}"#,
            r#"{"type":"object","properties":{ }}"#,
            r#"{"properties":{}}"#,
            r#"{"type":"string","properties":{"a":1}}"#,
            r#"{"type":"objects","properties":{"a":1}}"#,
            r#"{"typed":"object","properties":{"a":1}}"#,
            r#"{"title":"t","type":"object","properties":{"a":1}}"#,
            r#"{"type":"object"}"#,
            "{",
            "",
        ] {
            assert!(!declares_property(text), "{text}");
        }
        // Not recognised from its opening, still read right.
        assert!(!is_empty_object(&raw(
            r#"{"title":"t","type":"object","properties":{"a":1}}"#
        )));
        assert!(is_empty_object(&raw(
            r#"{"type": "object", "properties": { }}"#
        )));
    }

    #[test]
    fn clean_leaves_a_schema_without_its_keys_untouched() {
        let text = "{\"type\": \"object\",\n \"properties\": {\"s\": {\"$ref\": \"#/$defs/x\"}}}";
        let schema = raw(text);
        assert!(matches!(clean(&schema), Cow::Borrowed(_)));
        for dirty in [
            r#"{"$schema":"x","type":"object"}"#,
            r#"{"type":"object","strict":true}"#,
            r#"{"$comment":"c","type":"object"}"#,
            r#"{"\u0073trict":true}"#,
        ] {
            let schema = raw(dirty);
            let cleaned = clean(&schema);
            assert!(matches!(cleaned, Cow::Owned(_)), "{dirty}");
        }
        assert_eq!(
            clean(&raw(r#"{"strict":true,"type":"object"}"#)).get(),
            r#"{"type":"object"}"#
        );
        // A property named like a dropped key survives.
        assert_eq!(
            clean(&raw(
                r#"{"properties":{"strict":{"type":"boolean"}},"$schema":"x"}"#
            ))
            .get(),
            r#"{"properties":{"strict":{"type":"boolean"}}}"#
        );
    }
}
