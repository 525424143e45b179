//! The fast yes/no JSON check of a native request body.
//!
//! It exists for speed alone (issue #19): a native body is checked before any key is used, and
//! serde_json's walk cost a third of the proxy's whole work for the call; simd-json's SIMD
//! parse costs a fifth less (callgrind). It only ever says "yes" or "ask serde_json":
//! serde_json stays the reference (it words every refusal and has the last word;
//! `api::gemini`'s tests compare the two, at random too). It owns no I/O; its buffers are kept
//! per worker thread for bodies up to `REUSED_BUFFERS`.

use std::cell::RefCell;

use simd_json::Node;

/// Bodies up to this size are parsed here; larger ones (inline media, mostly base64 without
/// escapes, where serde_json's skipping is fast) are left to serde_json, sparing simd-json's
/// copies of the input.
const MAX_BODY: usize = 1024 * 1024;

/// Bodies up to this size are parsed in buffers each worker thread keeps; larger ones in
/// buffers of their own, freed after (an idle worker holds a few times this at most).
const REUSED_BUFFERS: usize = 64 * 1024;

/// `true` when simd-json reads `body` as one JSON object (valid UTF-8, nothing but whitespace
/// around it); `false` when it refuses it or it is too large to parse here: ask serde_json.
pub fn is_object(body: &[u8]) -> bool {
    thread_local! {
        static SCRATCH: RefCell<(Vec<u8>, simd_json::Buffers)> =
            RefCell::new((Vec::new(), simd_json::Buffers::new(REUSED_BUFFERS)));
    }
    if body.len() > MAX_BODY {
        return false;
    }
    // simd-json parses in place, so it reads a copy.
    let parse = |copy: &mut Vec<u8>, buffers: &mut simd_json::Buffers| {
        copy.clear();
        copy.extend_from_slice(body);
        simd_json::to_tape_with_buffers(copy, buffers)
            .is_ok_and(|tape| matches!(tape.0.first(), Some(Node::Object { .. })))
    };
    let fresh = || parse(&mut Vec::new(), &mut simd_json::Buffers::new(body.len()));
    if body.len() > REUSED_BUFFERS {
        return fresh();
    }
    SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
        Ok(mut scratch) => {
            let (copy, buffers) = &mut *scratch;
            parse(copy, buffers)
        }
        Err(_) => fresh(),
    })
}

#[cfg(test)]
mod tests {
    use super::is_object;

    #[test]
    fn only_objects_pass() {
        assert!(is_object(br#"{"a": [1, {"b": "\u00e9"}]}"#));
        assert!(is_object(b" \n{}\n"));
        for bad in [
            &b""[..],
            b"[]",
            b"1",
            b"\"x\"",
            b"{",
            b"{} {}",
            b"{\"a\": \"\xff\"}",
        ] {
            assert!(!is_object(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn large_and_deep_bodies() {
        let large = format!("{{\"pad\": \"{}\"}}", "x".repeat(200_000));
        assert!(is_object(large.as_bytes()));
        let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(super::MAX_BODY));
        assert!(!is_object(huge.as_bytes()));
        let deep = [
            b"{\"a\":".repeat(100_000),
            b"1".to_vec(),
            b"}".repeat(100_000),
        ]
        .concat();
        // simd-json refuses nesting beyond its limit: serde_json decides.
        assert!(!is_object(&deep));
    }
}
