//! Fetching the http(s) image and PDF URLs of a request, so Gemini gets the bytes inline.
//!
//! `translate` is pure: it lists the URLs (`remote_media_urls`), this module fetches them, and
//! the bytes go back in through `Extras::media`. Each fetch is bounded (size, time, redirects;
//! all of a request's images share one size budget, and their bytes are reserved against the
//! process-wide `server.memory_budget`: 503 when it is full) and must answer with an image. Unless `upstream.fetch_private_urls` is on, a URL whose host
//! is, or resolves to, a loopback, private, link-local or otherwise non-public address is
//! refused, redirects included: the check runs in the DNS resolver and on every redirect hop,
//! so a public name that resolves to 10.0.0.1 is caught after resolution. Every failure is the
//! client's 400, naming the URL. Fetches go direct, never through `upstream.proxy` (that proxy
//! is for key-bearing traffic to Google, and would resolve names beyond our check).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::Url;

use crate::error::ProxyError;
use crate::translate::FetchedFile;

/// Largest image fetched (Gemini's inline data limit was 20 MB for years; keep to it).
pub const MAX_BYTES: usize = 20 * 1024 * 1024;
/// All images of one request together (they are held in memory, then base64 in the body).
pub const MAX_TOTAL_BYTES: usize = 40 * 1024 * 1024;
/// Whole fetch, connect to last byte.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// URLs fetched for one request.
pub const MAX_URLS: usize = 16;
const MAX_REDIRECTS: usize = 5;

/// Fetches every URL (each once), or fails with a 400 naming the first that failed; `param`
/// is the dialect's field that holds the URLs (`messages`, `input`).
pub async fn fetch_all(
    urls: &[&str],
    allow_private: bool,
    param: &'static str,
) -> Result<HashMap<String, FetchedFile>, ProxyError> {
    let mut unique: Vec<&str> = Vec::with_capacity(urls.len());
    for url in urls {
        if !unique.contains(url) {
            unique.push(url);
        }
    }
    if unique.len() > MAX_URLS {
        return Err(ProxyError::BadRequest {
            message: format!(
                "too many media URLs ({}); at most {MAX_URLS} per request: send the others inline (base64)",
                unique.len()
            ),
            param: Some(param.into()),
        });
    }
    let client = client(allow_private).map_err(ProxyError::Internal)?;
    let budget = AtomicUsize::new(MAX_TOTAL_BYTES);
    let budget = &budget;
    let fetched = futures_util::future::join_all(unique.iter().map(|url| async move {
        let result = tokio::time::timeout(TIMEOUT, fetch(client, url, allow_private, budget)).await;
        match result {
            Ok(Ok(file)) => Ok((url.to_string(), file)),
            Ok(Err(Failed::Url(reason))) => Err(failure(url, &reason, param)),
            Ok(Err(Failed::Busy)) => Err(ProxyError::Overloaded {
                what: "memory budget for fetched images",
            }),
            Err(_) => Err(failure(
                url,
                &format!("no complete answer within {}s", TIMEOUT.as_secs()),
                param,
            )),
        }
    }))
    .await;
    fetched.into_iter().collect()
}

fn failure(url: &str, reason: &str, param: &'static str) -> ProxyError {
    let shown = crate::excerpt::excerpt(url);
    ProxyError::BadRequest {
        message: format!("could not fetch {shown}: {reason}"),
        param: Some(param.into()),
    }
}

/// Why one fetch failed: the URL's fault (a 400 naming it), or the proxy's memory budget is
/// held by other requests (a 503 to retry).
enum Failed {
    Url(String),
    Busy,
}

impl From<String> for Failed {
    fn from(reason: String) -> Self {
        Failed::Url(reason)
    }
}

async fn fetch(
    client: &reqwest::Client,
    url: &str,
    allow_private: bool,
    budget: &AtomicUsize,
) -> Result<FetchedFile, Failed> {
    let parsed = Url::parse(url).map_err(|e| format!("not a valid URL ({e})"))?;
    check_literal_host(&parsed, allow_private)?;
    let response = client
        .get(parsed)
        .header(reqwest::header::ACCEPT, "image/*, application/pdf")
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the server answered HTTP {}", status.as_u16()).into());
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BYTES as u64)
    {
        return Err(format!("larger than {} MiB", MAX_BYTES / (1024 * 1024)).into());
    }
    let declared = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .unwrap_or_default();
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| describe(&e))?;
        if body.len() + chunk.len() > MAX_BYTES {
            return Err(format!("larger than {} MiB", MAX_BYTES / (1024 * 1024)).into());
        }
        let taken = budget.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
            left.checked_sub(chunk.len())
        });
        if taken.is_err() {
            return Err(Failed::Url(format!(
                "the request's images together exceed {} MiB",
                MAX_TOTAL_BYTES / (1024 * 1024)
            )));
        }
        match crate::admission::reserve(chunk.len() as u64) {
            Ok(()) => {}
            Err(crate::admission::Refusal::Busy) => return Err(Failed::Busy),
            Err(crate::admission::Refusal::TooBig { limit }) => {
                return Err(Failed::Url(format!(
                    "larger than the proxy's memory budget ({limit} bytes, server.memory_budget)"
                )))
            }
        }
        body.extend_from_slice(&chunk);
    }
    let mime_type = if declared.starts_with("image/") || declared == "application/pdf" {
        declared
    } else if let Some(sniffed) = sniff(&body) {
        // Object stores often say application/octet-stream (or nothing) for images.
        sniffed.to_string()
    } else {
        let shown = if declared.is_empty() {
            "no content type"
        } else {
            declared.as_str()
        };
        return Err(Failed::Url(format!("not an image or a PDF ({shown})")));
    };
    Ok(FetchedFile {
        mime_type,
        bytes: body,
    })
}

/// The image (or PDF) type from the first bytes, for servers that do not say.
fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"%PDF-") {
        Some("application/pdf")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// A host written as an IP address is never resolved, so the resolver cannot check it.
fn check_literal_host(url: &Url, allow_private: bool) -> Result<(), String> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https URLs are fetched".into());
    }
    let Some(host) = url.host_str() else {
        return Err("the URL has no host".into());
    };
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = bare.parse::<IpAddr>() else {
        return Ok(()); // a name: the resolver checks what it resolves to
    };
    if !allow_private && !is_public(ip) {
        return Err(format!(
            "{ip} is not a public address (set upstream.fetch_private_urls = true to allow it)"
        ));
    }
    Ok(())
}

/// A reqwest error as its kind and source chain (the resolver's refusal is in there).
fn describe(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_redirect() {
        "redirect refused".to_string()
    } else if e.is_connect() {
        "connection failed".to_string()
    } else {
        "request failed".to_string()
    };
    crate::upstream::push_sources(&mut text, e);
    text
}

/// One client per policy, built on first use and kept (connection pools, TLS setup).
fn client(allow_private: bool) -> Result<&'static reqwest::Client, String> {
    static GUARDED: OnceLock<reqwest::Client> = OnceLock::new();
    static OPEN: OnceLock<reqwest::Client> = OnceLock::new();
    let cell = if allow_private { &OPEN } else { &GUARDED };
    if let Some(c) = cell.get() {
        return Ok(c);
    }
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(10))
        .user_agent(concat!("gemini-rotator/", env!("CARGO_PKG_VERSION")))
        .redirect(reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() >= MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            match check_literal_host(attempt.url(), allow_private) {
                Ok(()) => attempt.follow(),
                Err(reason) => attempt.error(reason),
            }
        }));
    if !allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    let built = builder
        .build()
        .map_err(|e| format!("cannot build the media client: {e}"))?;
    Ok(cell.get_or_init(|| built))
}

/// Resolves with the system resolver and keeps only public addresses.
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all.into_iter().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                let refusal: Box<dyn std::error::Error + Send + Sync> = format!(
                    "{host} resolves to no public address (set upstream.fetch_private_urls = true to allow it)"
                )
                .into();
                return Err(refusal);
            }
            let addrs: Addrs = Box::new(public.into_iter());
            Ok(addrs)
        })
    }
}

/// Whether `ip` is a globally routable unicast address: not loopback, private, link-local,
/// carrier-grade NAT, unspecified, multicast, broadcast, documentation or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b))
        || (a == 192 && b == 0 && c == 0)
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    // NAT64 (64:ff9b::/96) carries an IPv4 address in its last 32 bits.
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
        let [x, y] = [s[6], s[7]];
        return is_public_v4(Ipv4Addr::new(
            (x >> 8) as u8,
            x as u8,
            (y >> 8) as u8,
            y as u8,
        ));
    }
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible (deprecated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses() {
        let check = |ip: &str, public: bool| {
            let parsed: IpAddr = ip.parse().unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            assert_eq!(is_public(parsed), public, "{ip}");
        };
        check("8.8.8.8", true);
        check("142.250.74.46", true);
        check("2a00:1450:4001:82a::200e", true);
        check("127.0.0.1", false);
        check("127.9.9.9", false);
        check("10.1.2.3", false);
        check("172.16.0.1", false);
        check("172.31.255.255", false);
        check("192.168.1.1", false);
        check("169.254.169.254", false); // cloud metadata
        check("100.64.0.1", false);
        check("0.0.0.0", false);
        check("255.255.255.255", false);
        check("224.0.0.1", false);
        check("::1", false);
        check("::", false);
        check("fe80::1", false);
        check("fd00::1", false);
        check("::ffff:127.0.0.1", false);
        check("::ffff:8.8.8.8", true);
        check("64:ff9b::a00:1", false);
    }

    #[test]
    fn literal_hosts() {
        let check = |url: &str, allow: bool, ok: bool| {
            let parsed = Url::parse(url).expect("test URL");
            assert_eq!(check_literal_host(&parsed, allow).is_ok(), ok, "{url}");
        };
        check("http://127.0.0.1:8080/a.png", false, false);
        check("http://127.0.0.1:8080/a.png", true, true);
        check("http://[::1]/a.png", false, false);
        check("https://example.com/a.png", false, true);
        check("ftp://example.com/a.png", true, false);
    }

    #[test]
    fn sniffing() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\nrest"), Some("image/png"));
        assert_eq!(sniff(&[0xff, 0xd8, 0xff, 0xe0]), Some("image/jpeg"));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some("image/webp"));
        assert_eq!(sniff(b"%PDF-1.7\n"), Some("application/pdf"));
        assert_eq!(sniff(b"<html>"), None);
    }
}
