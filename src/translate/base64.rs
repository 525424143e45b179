//! Base64 as Google reads it: a check that a client's payload is base64 (without decoding
//! it), and the standard padded encoding for bytes the proxy fetched itself.

/// Whether `data` is base64 as Google's decoder reads it, checked without decoding: one
/// alphabet (standard `+/` or URL-safe `-_`, not both), at most two `=` and only at the end
/// (then the length is a multiple of 4; unpadded, no length leaves a lone 6 bits), ASCII
/// whitespace skipped.
pub fn is_base64(data: &str) -> bool {
    let (mut digits, mut padding) = (0usize, 0usize);
    let (mut standard, mut url_safe) = (false, false);
    for b in data.bytes() {
        match b {
            b' ' | b'\t' | b'\r' | b'\n' => {}
            b'=' if padding < 2 => padding += 1,
            _ if padding > 0 => return false,
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => digits += 1,
            b'+' | b'/' => {
                standard = true;
                digits += 1;
            }
            b'-' | b'_' => {
                url_safe = true;
                digits += 1;
            }
            _ => return false,
        }
    }
    let length_ok = if padding == 0 {
        digits % 4 != 1
    } else {
        (digits + padding) % 4 == 0
    };
    length_ok && !(standard && url_safe)
}

/// Standard base64 with padding, for bytes the caller fetched.
pub fn encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextet = |shift: u32| char::from(ALPHABET[((n >> shift) & 63) as usize]);
        out.push(sextet(18));
        out.push(sextet(12));
        out.push(if chunk.len() > 1 { sextet(6) } else { '=' });
        out.push(if chunk.len() > 2 { sextet(0) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::is_base64;

    fn check(data: &str, expected: bool) {
        assert_eq!(is_base64(data), expected, "{data:?}");
    }

    #[test]
    fn base64_is_checked_without_decoding() {
        check("", true);
        check("aGk=", true);
        check("aGk", true);
        check("aGVsbG8=", true);
        check("aGVsbA==", true);
        check("aGVsbA", true);
        check("+/+/", true);
        check("-_-_", true);
        check("aGVs\r\nbA==", true);
        check("aGVsbA==\n", true);
        check("a", false);
        check("aGVsb", false);
        check("aGVsbA=", false);
        check("aGVsbA===", false);
        check("aG=k", false);
        check("=", false);
        check("+/-_", false);
        check("hello world!", false);
        check("https://example.com/cat.png", false);
        check("aGk\u{e9}", false);
    }
}
