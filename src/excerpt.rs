//! Quoting what a client sent. An error body or a log line shows at most a short excerpt of a
//! client's value (a model name, a field, a URL, serde's quote of a bad value), so that a 10 MB
//! field never comes back whole in a 400 nor fills one log line. Every such quote goes through
//! `excerpt`; `serde_error` applies it to serde's messages, which quote the offending value.

use std::borrow::Cow;

/// Characters of a client's value an error message or log line quotes.
pub const EXCERPT_CHARS: usize = 100;

/// `text` cut to its first [`EXCERPT_CHARS`] characters (on a character boundary), with "…"
/// when something was cut.
pub fn excerpt(text: &str) -> Cow<'_, str> {
    excerpt_to(text, EXCERPT_CHARS)
}

/// [`excerpt`] with another length, for what is longer by nature (a whole message, a path).
pub fn excerpt_to(text: &str, max_chars: usize) -> Cow<'_, str> {
    match text.char_indices().nth(max_chars) {
        None => Cow::Borrowed(text),
        Some((cut, _)) => Cow::Owned(format!("{}…", &text[..cut])),
    }
}

/// A serde_json error as a message, its quote of the client's value cut to an excerpt. serde
/// writes `invalid type: string "<value>", expected …`, `unknown variant `<value>`, expected …`
/// and the like: what precedes its last ", expected " holds the value, what follows is ours.
pub fn serde_error(e: &serde_json::Error) -> String {
    let full = e.to_string();
    let position = if e.line() == 0 {
        String::new()
    } else {
        format!(" at line {} column {}", e.line(), e.column())
    };
    let core = full.strip_suffix(position.as_str()).unwrap_or(&full);
    let capped = match core.rsplit_once(", expected ") {
        Some((quote, expected)) => format!(
            "{}, expected {}",
            excerpt(quote),
            excerpt_to(expected, 2 * EXCERPT_CHARS)
        ),
        None => excerpt_to(core, 2 * EXCERPT_CHARS).into_owned(),
    };
    capped + &position
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, max: usize, expected: &str) {
        assert_eq!(excerpt_to(text, max), expected, "{text:?} to {max}");
    }

    #[test]
    fn excerpts_cut_on_character_boundaries() {
        check("", 3, "");
        check("abc", 3, "abc");
        check("abcd", 3, "abc…");
        check("ééééé", 2, "éé…");
        check("日本語テキスト", 3, "日本語…");
        check("a🦀b", 2, "a🦀…");
        assert_eq!(excerpt(&"x".repeat(100)), "x".repeat(100));
        assert_eq!(
            excerpt(&"x".repeat(10_000)).chars().count(),
            EXCERPT_CHARS + 1
        );
    }

    fn error_of(json: &str) -> String {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Wants {
            n: u32,
            e: Option<Kind>,
        }
        #[derive(serde::Deserialize, Debug)]
        enum Kind {
            #[serde(rename = "low")]
            Low,
        }
        match serde_json::from_str::<Wants>(json) {
            Ok(w) => panic!("parsed {w:?}"),
            Err(e) => serde_error(&e),
        }
    }

    #[test]
    fn serde_messages_quote_a_short_excerpt() {
        let big = "y".repeat(1_000_000);
        let message = error_of(&format!(r#"{{"n": "{big}"}}"#));
        assert!(message.len() < 300, "{message}");
        assert!(
            message.starts_with("invalid type: string \"yyy"),
            "{message}"
        );
        assert!(
            message.ends_with("…, expected u32 at line 1 column 1000008"),
            "{message}"
        );

        let message = error_of(&format!(r#"{{"n": 1, "e": "{big}"}}"#));
        assert!(message.len() < 300, "{message}");
        assert!(message.contains("expected `low`"), "{message}");

        // Short messages are left as serde wrote them.
        let short = serde_json::from_str::<u32>("\"abc\"").err();
        let short = short.as_ref().map(serde_error).unwrap_or_default();
        assert_eq!(
            short,
            "invalid type: string \"abc\", expected u32 at line 1 column 5"
        );
        let syntax = serde_json::from_str::<u32>("").err();
        let syntax = syntax.as_ref().map(serde_error).unwrap_or_default();
        assert_eq!(syntax, "EOF while parsing a value at line 1 column 0");
    }
}
