//! Small serde helpers the wire types share: strings borrowed from the body, and OpenAI's
//! internally tagged objects read without serde's buffering.
//!
//! serde's `Cow<str>` always copies (its `#[serde(borrow)]` only works on a bare field), and
//! `#[serde(tag = …)]` buffers every field into an owned tree before reading it again. Here a
//! string without escapes stays a slice of the body, and a tagged object keeps its fields as
//! raw JSON slices until the tag says how to read them.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

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

/// The fields of an internally tagged object (`{"role": …, …}`), in any order: the tag's value
/// and the raw JSON of each wanted field; other keys are skipped. A repeated key is an error,
/// as with derived structs.
pub(crate) struct Tagged<'a, E, const N: usize> {
    pub tag: Cow<'a, str>,
    fields: [Option<&'a RawValue>; N],
    error: PhantomData<E>,
}

impl<'a, E: de::Error, const N: usize> Tagged<'a, E, N> {
    pub(crate) fn read<'de: 'a, A: MapAccess<'de, Error = E>>(
        mut map: A,
        tag_name: &'static str,
        names: &'static [&'static str; N],
    ) -> Result<Self, A::Error> {
        let mut tag = None;
        let mut fields = [None; N];
        while let Some(CowStr(key)) = map.next_key::<CowStr<'a>>()? {
            if key == tag_name {
                if tag.is_some() {
                    return Err(de::Error::duplicate_field(tag_name));
                }
                tag = Some(map.next_value::<CowStr<'a>>()?.0);
            } else if let Some(i) = names.iter().position(|n| *n == key) {
                if fields[i].is_some() {
                    return Err(de::Error::duplicate_field(names[i]));
                }
                fields[i] = Some(map.next_value::<&'a RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        let tag = tag.ok_or_else(|| de::Error::missing_field(tag_name))?;
        Ok(Tagged {
            tag,
            fields,
            error: PhantomData,
        })
    }

    /// Field `i` read as `T`; absent (or `null`, for `Option`s) is `T::default()`.
    pub(crate) fn optional<T: Deserialize<'a> + Default>(&self, i: usize) -> Result<T, E> {
        match self.fields[i] {
            None => Ok(T::default()),
            Some(raw) => serde_json::from_str(raw.get()).map_err(E::custom),
        }
    }

    /// Field `i` read as `T`; absent is a `missing field` error.
    pub(crate) fn required<T: Deserialize<'a>>(
        &self,
        i: usize,
        name: &'static str,
    ) -> Result<T, E> {
        match self.fields[i] {
            None => Err(E::missing_field(name)),
            Some(raw) => serde_json::from_str(raw.get()).map_err(E::custom),
        }
    }
}
