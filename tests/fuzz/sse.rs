//! The SSE parser (`sse::SseParser`). Property: the items do not depend on how the stream was
//! cut into chunks: the input whole, cut at random points (empty chunks included, as a
//! transport may deliver them) and byte by byte all give the same items, and nothing panics.

use gemini_rotator::sse::{SseItem, SseParser};
use proptest::prelude::*;

use crate::{fuzz_config, mutated_bytes, seeds, tokens_bytes};

/// What a stream is made of, for inputs dense in framing.
const ALPHABET: &[&[u8]] = &[
    b"data:",
    b"data: ",
    b"data",
    b"event: message",
    b"id: 7",
    b"retry: 10",
    b": keep-alive",
    b"\n",
    b"\r",
    b"\r\n",
    b"\n\n",
    b"\r\n\r\n",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"\\",
    b" ",
    b"\"error\"",
    b"{\"a\":1}",
    b"x",
    b"  ",
    b"\t",
    b":",
];

fn run(chunks: &[&[u8]]) -> Vec<SseItem> {
    let mut parser = SseParser::new();
    let mut items = Vec::new();
    for chunk in chunks {
        items.extend(parser.push(chunk));
    }
    items.extend(parser.finish());
    items
}

/// `input` cut at `cuts` (positions modulo its length; repeats make empty chunks).
fn cut<'a>(input: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.sort_unstable();
    let mut chunks = Vec::with_capacity(points.len() + 1);
    let mut start = 0;
    for p in points {
        chunks.push(&input[start..p]);
        start = p;
    }
    chunks.push(&input[start..]);
    chunks
}

fn check(input: &[u8], cuts: &[usize]) -> Result<(), TestCaseError> {
    let whole = run(&[input]);
    let chunked = run(&cut(input, cuts));
    prop_assert_eq!(&whole, &chunked, "cut at {:?}", cuts);
    let singles: Vec<&[u8]> = input.chunks(1).collect();
    prop_assert_eq!(&whole, &run(&singles), "byte by byte");
    // A parser is reusable after `finish`: the same input again gives the same items.
    let mut parser = SseParser::new();
    let mut again = parser.push(input);
    again.extend(parser.finish());
    again.extend(parser.push(input));
    again.extend(parser.finish());
    prop_assert_eq!(
        again.len(),
        whole.len() * 2,
        "after finish the parser starts afresh"
    );
    Ok(())
}

fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(any::<usize>(), 0..12)
}

#[test]
fn seeds_as_they_are() {
    for (name, input) in crate::corpus("sse") {
        let items = run(&[&input]);
        assert!(!items.is_empty(), "{name}: no items");
        for i in 0..=input.len() {
            let (a, b) = input.split_at(i);
            assert_eq!(run(&[a, b]), items, "{name}: split at {i}");
            assert_eq!(
                run(&[a, b"", b]),
                items,
                "{name}: split at {i} around an empty chunk"
            );
        }
    }
}

/// Found by this target: a chunk that ended in `\r`, then an empty chunk, then one starting
/// with `\n` made the `\r\n` two line ends (so one event became two).
#[test]
fn empty_chunk_after_a_carriage_return() {
    let input: &[u8] = b"data: a\r\ndata: b\r\n\r\n";
    assert_eq!(run(&[input]), vec![SseItem::Data(b"a\nb".to_vec())]);
    assert_eq!(run(&[&input[..8], b"", &input[8..]]), run(&[input]));
}

proptest! {
    #![proptest_config(fuzz_config("sse", 9000))]

    #[test]
    fn framing_dense_bytes(input in tokens_bytes(ALPHABET, 48), cuts in cuts()) {
        check(&input, &cuts)?;
    }

    #[test]
    fn mutated_streams(input in mutated_bytes(seeds("sse")), cuts in cuts()) {
        check(&input, &cuts)?;
    }

    #[test]
    fn arbitrary_bytes(input in prop::collection::vec(any::<u8>(), 0..256), cuts in cuts()) {
        check(&input, &cuts)?;
    }
}
