//! Small serde helpers the wire types share: strings borrowed from the body, and OpenAI's
//! internally tagged objects read without serde's buffering.
//!
//! serde's `Cow<str>` always copies (its `#[serde(borrow)]` only works on a bare field), and
//! `#[serde(tag = …)]` buffers every field into an owned tree before reading it again. Here a
//! string without escapes stays a slice of the body, and a tagged object's fields are read
//! straight for its variant (only fields before the tag wait, as raw JSON slices).
//! `from_body` reads a body whose UTF-8 is checked once, not string by string.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

/// `serde_json::from_slice`, with the body's UTF-8 checked once up front: from a byte slice
/// serde_json checks every string (and raw value) apart, from a `&str` it need not. A body
/// that is not UTF-8 is read by `from_slice`, so its error (message and position) stays
/// serde_json's.
pub(crate) fn from_body<'a, T: Deserialize<'a>>(body: &'a [u8]) -> serde_json::Result<T> {
    match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    }
}

/// A JSON string: borrowed from the input unless it had escapes.
pub(crate) struct CowStr<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for CowStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a str>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = CowStr<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<CowStr<'a>, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// `deserialize_with` for `Option<Cow<str>>` fields that should borrow; `null` is `None`.
pub(crate) fn opt_str<'de: 'a, 'a, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Cow<'a, str>>, D::Error> {
    Ok(Option::<CowStr<'a>>::deserialize(d)?.map(|s| s.0))
}

/// The fields of one internally tagged object (`{"role": …, …}`), read for the tag's variant.
pub(crate) trait TaggedFields<'a>: Default {
    /// The tag's key.
    const TAG: &'static str;
    /// The keys read; any other is skipped.
    const NAMES: &'static [&'static str];
    /// Reads the value of `NAMES[i]` for variant `tag` (skipping it if that variant has no
    /// such field).
    fn read<'de: 'a, D: Deserializer<'de>>(
        &mut self,
        tag: &str,
        i: usize,
        value: D,
    ) -> Result<(), D::Error>;
}

/// Reads a tagged object with its keys in any order: fields after the tag are read straight
/// away, fields before it are kept as raw JSON until the tag says how to read them. A repeated
/// key is an error, as with derived structs.
pub(crate) fn read_tagged<'de: 'a, 'a, F: TaggedFields<'a>, A: MapAccess<'de>>(
    mut map: A,
) -> Result<(Cow<'a, str>, F), A::Error> {
    let mut tag: Option<Cow<'a, str>> = None;
    let mut fields = F::default();
    let mut early: Vec<(usize, &'a RawValue)> = Vec::new();
    let mut seen = 0u64;
    while let Some(CowStr(key)) = map.next_key::<CowStr<'a>>()? {
        if key == F::TAG {
            if tag.is_some() {
                return Err(de::Error::duplicate_field(F::TAG));
            }
            tag = Some(map.next_value::<CowStr<'a>>()?.0);
        } else if let Some(i) = F::NAMES.iter().position(|n| *n == key) {
            if seen & (1 << i) != 0 {
                return Err(de::Error::duplicate_field(F::NAMES[i]));
            }
            seen |= 1 << i;
            match &tag {
                Some(tag) => map.next_value_seed(Field {
                    fields: &mut fields,
                    tag,
                    i,
                })?,
                None => early.push((i, map.next_value()?)),
            }
        } else {
            map.next_value::<IgnoredAny>()?;
        }
    }
    let tag = tag.ok_or_else(|| de::Error::missing_field(F::TAG))?;
    for (i, raw) in early {
        fields.read(&tag, i, raw).map_err(de::Error::custom)?;
    }
    Ok((tag, fields))
}

/// One field of a tagged object, read once its tag is known.
struct Field<'f, F> {
    fields: &'f mut F,
    tag: &'f str,
    i: usize,
}

impl<'de: 'a, 'a, F: TaggedFields<'a>> DeserializeSeed<'de> for Field<'_, F> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.fields.read(self.tag, self.i, d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_body_reads_like_from_slice() {
        #[derive(Deserialize, Debug)]
        struct T<'a> {
            #[serde(borrow)]
            a: Cow<'a, str>,
            #[serde(borrow)]
            raw: &'a RawValue,
        }
        let body = "{\"a\":\"caf\u{e9} \\n\",\n\"raw\": [\"\u{e9}\", {\"b\": 1}]}".as_bytes();
        let got: T = from_body(body).expect("valid");
        let want: T = serde_json::from_slice(body).expect("valid");
        assert_eq!(got.a, want.a);
        assert_eq!(got.raw.get(), want.raw.get());
        // Errors, UTF-8 ones included, are serde_json's own, at the same place.
        for bad in [
            &b"{\"a\": \"x\xff\", \"raw\": 1}"[..],
            b"{\"a\": \"x\", \"raw\": [\"\xc3\"]}",
            b"{\"a\": \"x\",\n \"raw\": [1,]}",
            b"{\"a\": 5, \"raw\": 1}",
            b"",
        ] {
            let got = from_body::<T>(bad).expect_err("invalid").to_string();
            let want = serde_json::from_slice::<T>(bad)
                .expect_err("invalid")
                .to_string();
            assert_eq!(got, want);
        }
    }
}
