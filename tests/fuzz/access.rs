//! Who is calling and where to: the client address from forwarding headers through trusted
//! proxies (`access::client_ip`, `forwarded_https`), IP rules (`check_ip`), credentials
//! (`authenticate`, `query_param`) and routing (`router::route`). Property: no panic, and:
//! an untrusted peer's headers change nothing; a forwarded address comes from the headers;
//! a denied address matches a deny rule; a doubled slash does not change a route.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use gemini_rotator::access::{self, canonical};
use gemini_rotator::config::{Access, Auth, ClientToken, IpRule, ModelGlobs, RealIpHeader};
use gemini_rotator::router::{self, Dialect, Gate};
use gemini_rotator::secret::Token;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use ipnet::IpNet;
use proptest::prelude::*;

use crate::{fuzz_config, mutated_bytes, seeds};

const CLIENT_TOKEN: &str = "sk-fuzz-client-token-0123456789";
const ADMIN_TOKEN: &str = "sk-fuzz-admin-token-9876543210";

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        prop::sample::select(vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3)),
            IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
            IpAddr::V4(Ipv4Addr::new(192, 168, 1, 1)),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
            IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()),
            IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped()),
            "2001:db8::1".parse().expect("an address"),
            "fe80::1".parse().expect("an address"),
        ]),
        any::<[u8; 4]>().prop_map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        any::<[u8; 16]>().prop_map(|b| IpAddr::V6(Ipv6Addr::from(b))),
    ]
}

fn net() -> impl Strategy<Value = IpNet> {
    prop_oneof![
        prop::sample::select(vec![
            "127.0.0.0/8",
            "10.0.0.0/8",
            "10.0.0.1/32",
            "::1/128",
            "0.0.0.0/0",
            "::/0",
            "2001:db8::/32",
            "::ffff:10.0.0.0/104",
            "192.168.0.0/16",
        ])
        .prop_map(|s| s.parse().expect("a network")),
        (ip(), 0u8..=128).prop_map(|(ip, len)| {
            let len = if ip.is_ipv4() { len % 33 } else { len };
            IpNet::new(ip, len).expect("a prefix within range").trunc()
        }),
    ]
}

/// One hop as written in a header, and the address it names (if any we chose).
fn hop() -> impl Strategy<Value = (String, Option<IpAddr>)> {
    prop_oneof![
        4 => ip().prop_map(|ip| (ip.to_string(), Some(ip))),
        1 => ip().prop_map(|ip| match ip {
            IpAddr::V4(_) => (format!("{ip}:8080"), Some(ip)),
            IpAddr::V6(_) => (format!("\"[{ip}]:443\""), Some(ip)),
        }),
        1 => prop::sample::select(vec!["unknown", "", "_hidden", "[", "[zz", "\"", "1.2.3", "::ffff:"])
            .prop_map(|s| (s.to_string(), None)),
    ]
}

/// A header value from hops, with the separators and spacing clients really use.
fn header_value(hops: &[(String, Option<IpAddr>)], forwarded: bool, sep: &str) -> String {
    hops.iter()
        .map(|(h, _)| {
            if forwarded {
                format!("for={h};proto=https")
            } else {
                h.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(sep)
}

/// One hop as written, and the address it names.
type Hop = (String, Option<IpAddr>);

#[derive(Debug, Clone)]
struct Headers {
    /// `(header name, hops, separator)`.
    entries: Vec<(&'static str, Vec<Hop>, &'static str)>,
    extra: Vec<(&'static str, Vec<u8>)>,
}

fn headers() -> impl Strategy<Value = Headers> {
    let entry = (
        prop::sample::select(vec![
            "x-forwarded-for",
            "forwarded",
            "x-real-ip",
            "x-forwarded-for",
        ]),
        prop::collection::vec(hop(), 0..5),
        prop::sample::select(vec![",", ", ", " ,", ",,"]),
    );
    let extra = (
        prop::sample::select(vec![
            "x-forwarded-proto",
            "forwarded",
            "authorization",
            "x-goog-api-key",
            "x-forwarded-for",
            "host",
        ]),
        prop_oneof![
            prop::sample::select(vec![
                "https",
                "http",
                "HTTPS, http",
                "by=10.0.0.1;proto=https",
                "proto=\"https\"",
                "Bearer sk-fuzz-client-token-0123456789",
                "bearer  sk-fuzz-admin-token-9876543210 ",
                "Basic abc",
                "Bearer",
                "sk-fuzz-client-token-0123456789",
                "",
            ])
            .prop_map(|s| s.as_bytes().to_vec()),
            prop::collection::vec(any::<u8>(), 0..24),
        ],
    );
    (
        prop::collection::vec(entry, 0..3),
        prop::collection::vec(extra, 0..3),
    )
        .prop_map(|(entries, extra)| Headers { entries, extra })
}

fn header_map(h: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, hops, sep) in &h.entries {
        let value = header_value(hops, *name == "forwarded", sep);
        if let Ok(v) = HeaderValue::from_str(&value) {
            map.append(HeaderName::from_static(name), v);
        }
    }
    for (name, bytes) in &h.extra {
        // Header values may hold any byte but control characters; invalid ones are skipped,
        // as hyper would have refused them.
        if let Ok(v) = HeaderValue::from_bytes(bytes) {
            map.append(HeaderName::from_static(name), v);
        }
    }
    map
}

/// The header kinds a trusted proxy may be said to set (`server.real_ip_header`).
fn real_ip_headers() -> [RealIpHeader; 3] {
    [
        RealIpHeader::XForwardedFor,
        RealIpHeader::Forwarded,
        RealIpHeader::Single(HeaderName::from_static("x-real-ip")),
    ]
}

fn check_client_ip(peer: IpAddr, h: &Headers, trusted: &[IpNet]) -> Result<(), TestCaseError> {
    for header in real_ip_headers() {
        check_client_ip_by(peer, h, trusted, &header)?;
    }
    Ok(())
}

fn check_client_ip_by(
    peer: IpAddr,
    h: &Headers,
    trusted: &[IpNet],
    header: &RealIpHeader,
) -> Result<(), TestCaseError> {
    let headers = header_map(h);
    let (got, forwarded) = access::client_ip(peer, &headers, trusted, header);
    let peer_c = canonical(peer);
    prop_assert!(
        forwarded || got == peer_c,
        "an address not from a header must be the peer"
    );
    let peer_trusted = trusted.iter().any(|n| n.contains(&peer_c));
    if !peer_trusted {
        prop_assert_eq!(got, peer_c, "an untrusted peer's headers were believed");
        prop_assert!(!access::forwarded_https(peer, &headers, trusted));
    } else if got != peer_c {
        let named = h
            .entries
            .iter()
            .flat_map(|(_, hops, _)| hops.iter().filter_map(|(_, ip)| *ip))
            .any(|ip| canonical(ip) == got);
        prop_assert!(named, "{} is neither the peer nor a forwarded hop", got);
    }
    let _ = access::forwarded_https(peer, &headers, trusted);
    Ok(())
}

fn rule() -> impl Strategy<Value = IpRule> {
    prop_oneof![1 => Just(IpRule::Any), 6 => net().prop_map(IpRule::Net)]
}

fn auth(with_tokens: bool, with_admin: bool) -> Auth {
    let mut auth = Auth::default();
    if with_tokens {
        auth.tokens.push(ClientToken {
            name: "cline".into(),
            token: Token::new(CLIENT_TOKEN),
            models: Some(ModelGlobs(vec![
                glob::Pattern::new("gemini-2.5-*").expect("a glob")
            ])),
        });
    }
    if with_admin {
        auth.admin_tokens.push(Token::new(ADMIN_TOKEN));
    }
    auth
}

fn path() -> impl Strategy<Value = String> {
    let segment = prop_oneof![
        prop::sample::select(vec![
            "v1",
            "v1beta",
            "models",
            "chat",
            "completions",
            "embeddings",
            "gemini-2.5-flash",
            "gemini-2.5-flash:generateContent",
            "x:streamGenerateContent",
            ":countTokens",
            "dashboard",
            "api",
            "state",
            "admin",
            "reload",
            "health",
            "",
            "..",
            "%2F",
            "ü",
            ":",
        ])
        .prop_map(str::to_owned),
        "[a-zA-Z0-9:._%-]{0,8}",
    ];
    prop::collection::vec(segment, 0..5).prop_map(|s| format!("/{}", s.join("/")))
}

fn method() -> impl Strategy<Value = Method> {
    prop::sample::select(vec![
        Method::GET,
        Method::POST,
        Method::HEAD,
        Method::PUT,
        Method::DELETE,
        Method::OPTIONS,
        Method::from_bytes(b"BREW").expect("a method"),
    ])
}

#[test]
fn seeds_as_they_are() {
    // Each line: `peer|trusted nets (space-separated)|X-Forwarded-For|Forwarded`.
    for (name, file) in crate::corpus("access") {
        let text = String::from_utf8(file).expect("UTF-8 seeds");
        for line in text
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        {
            run_seed_line(line.as_bytes()).unwrap_or_else(|e| panic!("{name}: {line}: {e}"));
        }
    }
}

/// Runs one seed line (also mutated); a line that no longer reads is skipped.
fn run_seed_line(line: &[u8]) -> Result<(), TestCaseError> {
    let text = String::from_utf8_lossy(line);
    let mut fields = text.split('|');
    let Some(Ok(peer)) = fields.next().map(|p| p.trim().parse::<IpAddr>()) else {
        return Ok(());
    };
    let trusted: Vec<IpNet> = fields
        .next()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let mut headers = HeaderMap::new();
    for name in ["x-forwarded-for", "forwarded"] {
        if let Some(v) = fields.next().and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.append(name, v);
        }
    }
    for header in real_ip_headers() {
        let (got, _) = access::client_ip(peer, &headers, &trusted, &header);
        if !trusted.iter().any(|n| n.contains(&canonical(peer))) {
            prop_assert_eq!(got, canonical(peer));
        }
    }
    let _ = access::forwarded_https(peer, &headers, &trusted);
    Ok(())
}

proptest! {
    #![proptest_config(fuzz_config("access", 9000))]

    #[test]
    fn client_address(peer in ip(), h in headers(), trusted in prop::collection::vec(net(), 0..4)) {
        check_client_ip(peer, &h, &trusted)?;
    }

    #[test]
    fn mutated_seed_lines(line in mutated_bytes(seeds("access"))) {
        for l in line.split(|&b| b == b'\n') {
            run_seed_line(l)?;
        }
    }

    #[test]
    fn ip_rules(ip in ip(), allow in prop::collection::vec(rule(), 0..4), deny in prop::collection::vec(rule(), 0..4)) {
        let rules = Access { allow: allow.clone(), deny: deny.clone(), max_token_failures: 10 };
        let verdict = access::check_ip(ip, &rules);
        let ip = canonical(ip);
        if deny.iter().any(|r| r.matches(ip)) {
            prop_assert!(!verdict.allowed, "{} matches a deny rule: {:?}", ip, verdict);
        }
        if verdict.allowed {
            prop_assert!(allow.is_empty() || allow.iter().any(|r| r.matches(ip)), "{:?}", verdict);
        }
    }

    #[test]
    fn credentials(
        h in headers(),
        query in prop_oneof![
            Just(None),
            Just(Some(format!("key={CLIENT_TOKEN}"))),
            Just(Some(format!("alt=sse&key={ADMIN_TOKEN}"))),
            "[a-z=&%+0-9A-F]{0,24}".prop_map(Some),
        ],
        gate in prop::sample::select(vec![Gate::Probe, Gate::Open, Gate::Client, Gate::Admin]),
        dialect in prop::sample::select(vec![Dialect::OpenAi, Dialect::Google]),
        tokens in any::<bool>(),
        admins in any::<bool>(),
        peer in ip(),
    ) {
        let headers = header_map(&h);
        let auth = auth(tokens, admins);
        let origin = access::Origin {
            ip: peer,
            loopback_peer: peer.is_loopback(),
            local: false,
            https: false,
            trusted_peer: false,
        };
        let result = access::authenticate(gate, dialect, &headers, query.as_deref(), &auth, &origin);
        if let Ok(caller) = &result {
            if caller.admin && admins && gate == Gate::Admin {
                // An admin by token: the admin token was presented somewhere.
                let presented = format!("{headers:?}{query:?}");
                prop_assert!(presented.contains(ADMIN_TOKEN), "admin without the admin token");
            }
        }
        if let Some(q) = &query {
            for name in ["key", "alt", "", "x"] {
                let _ = access::query_param(q, name);
            }
        }
    }

    #[test]
    fn query_params(query in "\\PC{0,32}", name in "[a-z%]{0,4}") {
        if let Some(value) = access::query_param(&query, &name) {
            if !query.contains('%') && !query.contains('+') {
                prop_assert!(query.contains(&*value), "{:?} not in {:?}", value, query);
            }
        }
    }

    #[test]
    fn routes(method in method(), path in path(), raw in "\\PC{0,24}", at in any::<usize>()) {
        let route = router::route(&method, &path);
        let _ = (route.name(), route.gate(), route.dialect());
        let _ = router::route(&method, &raw);
        // A doubled slash (what a base URL ending in `/` gives) is the same route.
        let slashes: Vec<usize> = path.match_indices('/').map(|(i, _)| i).collect();
        let i = slashes[at % slashes.len()];
        let doubled = format!("{}/{}", &path[..i], &path[i..]);
        prop_assert_eq!(router::route(&method, &doubled), route, "{} vs {}", doubled, path);
    }
}
