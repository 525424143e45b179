//! Who is calling: the client's address (believing forwarding headers only from trusted
//! proxies), the IP allow/deny rules, and the bearer token that turns a request into a `Caller`.
//!
//! Token comparison is constant-time and looks at every configured token, so timing reveals
//! nothing about which one nearly matched. Nothing here logs a credential.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{self, IpRule, ModelGlobs};
use crate::error::ProxyError;
use crate::router::{Dialect, Gate};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client address after trusted-proxy resolution.
    pub ip: IpAddr,
    /// The client token's name; `None` when the proxy is open (no tokens configured).
    pub token_name: Option<String>,
    models: Option<ModelGlobs>,
    pub admin: bool,
    /// The client reached us over HTTPS, by a trusted proxy's word (`forwarded_https`); the
    /// dashboard's session cookie is `Secure` then.
    pub https: bool,
}

impl Caller {
    /// An admin known by a dashboard session rather than a token.
    pub fn admin_session(ip: IpAddr, https: bool) -> Caller {
        Caller {
            ip,
            token_name: Some("dashboard".to_string()),
            models: None,
            admin: true,
            https,
        }
    }

    /// Whether this caller's token may use `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|globs| globs.matches(model))
    }

    pub fn check_model(&self, model: &str) -> Result<(), ProxyError> {
        if self.allows(model) {
            Ok(())
        } else {
            Err(ProxyError::ModelNotAllowed {
                model: model.to_string(),
            })
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) become IPv4 so IPv4 rules match them.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

fn is_trusted(ip: IpAddr, trusted: &[IpNet]) -> bool {
    trusted.iter().any(|net| net.contains(&ip))
}

/// The client's address. Forwarding headers (`X-Forwarded-For`, then `Forwarded`, then
/// `X-Real-IP`) are believed only when the TCP peer is a trusted proxy; the chain is walked
/// right to left past trusted hops, and the first untrusted hop is the client.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let hops = forwarded_hops(headers);
    let mut current = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else {
            // A hop we cannot read: stop at the last address we could vouch for.
            return current;
        };
        current = *ip;
        if !is_trusted(current, trusted) {
            return current;
        }
    }
    current
}

/// Whether the client's connection was HTTPS, as the trusted proxy in front says: the last
/// (nearest proxy's) `X-Forwarded-Proto` value, else the last `Forwarded` element's `proto`.
/// From anyone else the headers mean nothing: the proxy itself speaks plain HTTP.
pub fn forwarded_https(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> bool {
    if !is_trusted(canonical(peer), trusted) {
        return false;
    }
    let last = |name: &str| -> Option<String> {
        let values = headers.get_all(name).iter().filter_map(|v| v.to_str().ok());
        values
            .flat_map(|v| v.split(','))
            .last()
            .map(|v| v.trim().to_string())
    };
    let proto = last("x-forwarded-proto").or_else(|| {
        last("forwarded")?.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("proto")
                .then(|| v.trim().trim_matches('"').to_string())
        })
    });
    proto.is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The forwarding chain, client first. `None` marks an unreadable hop.
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let joined = |name: &str| -> Option<String> {
        let values: Vec<&str> = headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        (!values.is_empty()).then(|| values.join(","))
    };
    if let Some(xff) = joined("x-forwarded-for") {
        return xff.split(',').map(|h| parse_hop(h.trim())).collect();
    }
    if let Some(fwd) = joined("forwarded") {
        return fwd
            .split(',')
            .filter_map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(v.trim()))
                })
            })
            .collect();
    }
    if let Some(real) = joined("x-real-ip") {
        return vec![parse_hop(real.trim())];
    }
    Vec::new()
}

/// Reads `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `"[2001:db8::1]:443"`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let s = raw.trim_matches('"');
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Some(canonical(sa.ip()));
    }
    let inner = s.strip_prefix('[')?.split(']').next()?;
    inner.parse::<IpAddr>().ok().map(canonical)
}

/// The result of checking an address against the rules, and which rule decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpVerdict {
    pub allowed: bool,
    /// e.g. `deny[0] 10.0.0.0/8`, `allow[1] *`, or `no allow rule matched`.
    pub rule: String,
}

fn rule_text(rule: &IpRule) -> String {
    match rule {
        IpRule::Any => "*".to_string(),
        IpRule::Net(net) => net.to_string(),
    }
}

fn rule_matches(rule: &IpRule, ip: IpAddr) -> bool {
    match rule {
        IpRule::Any => true,
        IpRule::Net(net) => net.contains(&ip),
    }
}

/// Deny rules first, then allow rules. An empty allow list allows everyone (like `["*"]`).
pub fn check_ip(ip: IpAddr, rules: &config::Access) -> IpVerdict {
    let ip = canonical(ip);
    if let Some((i, rule)) = rules
        .deny
        .iter()
        .enumerate()
        .find(|(_, r)| rule_matches(r, ip))
    {
        return IpVerdict {
            allowed: false,
            rule: format!("deny[{i}] {}", rule_text(rule)),
        };
    }
    if rules.allow.is_empty() {
        return IpVerdict {
            allowed: true,
            rule: "allow is empty: everyone".to_string(),
        };
    }
    match rules
        .allow
        .iter()
        .enumerate()
        .find(|(_, r)| rule_matches(r, ip))
    {
        Some((i, rule)) => IpVerdict {
            allowed: true,
            rule: format!("allow[{i}] {}", rule_text(rule)),
        },
        None => IpVerdict {
            allowed: false,
            rule: "no allow rule matched".to_string(),
        },
    }
}

/// The credential a client presented: `Authorization: Bearer T`, and on `/v1beta` also
/// `x-goog-api-key: T` or `?key=T` (Google SDKs and the Gemini CLI send those).
fn presented_credential<'a>(
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    dialect: Dialect,
) -> Option<std::borrow::Cow<'a, str>> {
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim())
                .filter(|t| !t.is_empty())
        });
    if let Some(token) = bearer {
        return Some(token.into());
    }
    if dialect != Dialect::Google {
        return None;
    }
    if let Some(key) = headers
        .get("x-goog-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        return Some(key.into());
    }
    query_param(query?, "key").filter(|k| !k.is_empty())
}

/// One query parameter, percent-decoded.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<std::borrow::Cow<'a, str>> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('%') && !s.contains('+') {
        return s.into();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned().into()
}

/// Turns a request's credentials into a `Caller` for a route's gate.
pub fn authenticate(
    gate: Gate,
    dialect: Dialect,
    headers: &HeaderMap,
    query: Option<&str>,
    auth: &config::Auth,
    ip: IpAddr,
    https: bool,
) -> Result<Caller, ProxyError> {
    let open = Caller {
        ip,
        token_name: None,
        models: None,
        admin: false,
        https,
    };
    if matches!(gate, Gate::Probe | Gate::Open) {
        return Ok(open);
    }
    let presented = presented_credential(headers, query, dialect);
    let presented = presented.as_deref().map(str::as_bytes);

    // Look at every token so the time taken does not depend on which one matched.
    let mut admin = false;
    let mut client = None;
    if let Some(p) = presented {
        for token in &auth.admin_tokens {
            admin |= token.matches(p);
        }
        for token in &auth.tokens {
            if token.token.matches(p) && client.is_none() {
                client = Some(token);
            }
        }
    }

    match gate {
        Gate::Probe | Gate::Open => Ok(open),
        Gate::Admin => {
            if admin {
                return Ok(Caller {
                    token_name: Some("admin".to_string()),
                    admin: true,
                    ..open
                });
            }
            if auth.admin_tokens.is_empty() {
                return if ip.is_loopback() {
                    Ok(Caller {
                        admin: true,
                        ..open
                    })
                } else {
                    Err(ProxyError::AdminOnly)
                };
            }
            match (presented, client) {
                (Some(_), Some(_)) => Err(ProxyError::AdminOnly),
                _ => Err(ProxyError::Unauthorized),
            }
        }
        Gate::Client => {
            if let Some(token) = client {
                return Ok(Caller {
                    token_name: Some(token.name.clone()),
                    models: token.models.clone(),
                    ..open
                });
            }
            if admin {
                return Ok(Caller {
                    token_name: Some("admin".to_string()),
                    admin: true,
                    ..open
                });
            }
            if auth.tokens.is_empty() {
                return Ok(open);
            }
            Err(ProxyError::Unauthorized)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ClientToken;
    use crate::secret::Token;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().filter_map(|s| s.parse().ok()).collect()
    }

    fn check_ip_from(peer: &str, headers: &[(&str, &str)], trusted: &[&str], expected: &str) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(http::header::FROM),
                v.parse().unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        let peer: IpAddr = peer.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let got = client_ip(peer, &map, &nets(trusted));
        assert_eq!(got.to_string(), expected, "peer {peer} headers {headers:?}");
    }

    #[test]
    fn client_ip_through_trusted_proxies() {
        // Untrusted peer: headers ignored.
        check_ip_from(
            "203.0.113.9",
            &[("x-forwarded-for", "1.1.1.1")],
            &["10.0.0.0/8"],
            "203.0.113.9",
        );
        // Trusted peer: the rightmost untrusted hop is the client.
        check_ip_from(
            "10.0.0.2",
            &[("x-forwarded-for", "6.6.6.6, 1.1.1.1, 10.0.0.3")],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        // Spoofed leftmost entries do not win.
        check_ip_from(
            "10.0.0.2",
            &[
                ("x-forwarded-for", "127.0.0.1"),
                ("x-forwarded-for", "8.8.8.8"),
            ],
            &["10.0.0.0/8"],
            "8.8.8.8",
        );
        check_ip_from(
            "10.0.0.2",
            &[(
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
            )],
            &["10.0.0.0/8"],
            "2001:db8:cafe::17",
        );
        check_ip_from(
            "10.0.0.2",
            &[("x-real-ip", "192.0.2.7")],
            &["10.0.0.0/8"],
            "192.0.2.7",
        );
        // All hops trusted: the leftmost.
        check_ip_from(
            "10.0.0.2",
            &[("x-forwarded-for", "10.1.1.1")],
            &["10.0.0.0/8"],
            "10.1.1.1",
        );
        // Garbage hop: stop at the last vouched address.
        check_ip_from(
            "10.0.0.2",
            &[("x-forwarded-for", "1.1.1.1, nonsense")],
            &["10.0.0.0/8"],
            "10.0.0.2",
        );
        // IPv4-mapped IPv6 peer matches IPv4 rules and is reported as IPv4.
        check_ip_from(
            "::ffff:10.0.0.2",
            &[("x-forwarded-for", "1.1.1.1")],
            &["10.0.0.0/8"],
            "1.1.1.1",
        );
        check_ip_from("::ffff:203.0.113.9", &[], &[], "203.0.113.9");
    }

    fn rules(allow: &[&str], deny: &[&str]) -> config::Access {
        let parse = |list: &[&str]| -> Vec<IpRule> {
            list.iter()
                .map(|s| match *s {
                    "*" => IpRule::Any,
                    s => IpRule::Net(s.parse().unwrap_or_else(|_| {
                        IpNet::from(s.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0])))
                    })),
                })
                .collect()
        };
        config::Access {
            allow: parse(allow),
            deny: parse(deny),
            max_token_failures: 10,
        }
    }

    #[test]
    fn ip_rules() {
        let check = |ip: &str, allow: &[&str], deny: &[&str], allowed: bool| {
            let ip: IpAddr = ip.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
            let verdict = check_ip(ip, &rules(allow, deny));
            assert_eq!(
                verdict.allowed, allowed,
                "{ip} allow={allow:?} deny={deny:?}: {verdict:?}"
            );
        };
        check("1.2.3.4", &["*"], &[], true);
        check("1.2.3.4", &["10.0.0.0/8"], &[], false);
        check("10.9.9.9", &["10.0.0.0/8"], &[], true);
        check("10.9.9.9", &["*"], &["10.9.0.0/16"], false);
        check("::ffff:10.9.9.9", &["10.0.0.0/8"], &[], true);
        check("2001:db8::5", &["2001:db8::/32"], &[], true);
        check("2001:db8::5", &["2001:db8::5/128"], &[], true);
        check("2001:db9::5", &["2001:db8::/32"], &[], false);
        check("1.2.3.4", &[], &[], true);
    }

    fn auth(tokens: &[(&str, Option<&str>)], admin: &[&str]) -> config::Auth {
        config::Auth {
            tokens: tokens
                .iter()
                .map(|(t, glob)| ClientToken {
                    name: format!("name-{t}"),
                    token: Token::new(*t),
                    models: glob
                        .map(|g| ModelGlobs(vec![glob::Pattern::new(g).unwrap_or_default()])),
                })
                .collect(),
            admin_tokens: admin.iter().map(|t| Token::new(*t)).collect(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(http::header::FROM),
                v.parse().unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        map
    }

    const LOOPBACK: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);
    const REMOTE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 5));

    #[test]
    fn client_tokens() {
        let a = auth(
            &[("tok-a", None), ("tok-b", Some("gemini-2.5-*"))],
            &["adm"],
        );
        let ok = |h: &[(&str, &str)], q: Option<&str>, d: Dialect| {
            authenticate(Gate::Client, d, &headers(h), q, &a, REMOTE, false)
        };
        assert_eq!(
            ok(&[("authorization", "Bearer tok-a")], None, Dialect::OpenAi)
                .map(|c| c.token_name)
                .ok()
                .flatten()
                .as_deref(),
            Some("name-tok-a")
        );
        assert!(matches!(
            ok(&[("authorization", "Bearer nope")], None, Dialect::OpenAi),
            Err(ProxyError::Unauthorized)
        ));
        assert!(matches!(
            ok(&[], None, Dialect::OpenAi),
            Err(ProxyError::Unauthorized)
        ));
        // Google credentials only on the Google dialect.
        assert!(ok(&[("x-goog-api-key", "tok-a")], None, Dialect::Google).is_ok());
        assert!(ok(&[("x-goog-api-key", "tok-a")], None, Dialect::OpenAi).is_err());
        assert!(ok(&[], Some("alt=sse&key=tok-a"), Dialect::Google).is_ok());
        // Admin tokens also work on client routes.
        assert!(ok(&[("authorization", "bearer adm")], None, Dialect::OpenAi).is_ok());
        // Model globs.
        let b = ok(&[("authorization", "Bearer tok-b")], None, Dialect::OpenAi);
        let Ok(b) = b else {
            panic!("tok-b must authenticate")
        };
        assert!(b.allows("gemini-2.5-pro"));
        assert!(!b.allows("gemini-3-pro-preview"));
        // No tokens: open.
        let open = auth(&[], &[]);
        assert!(authenticate(
            Gate::Client,
            Dialect::OpenAi,
            &headers(&[]),
            None,
            &open,
            REMOTE,
            false
        )
        .is_ok());
    }

    #[test]
    fn admin_gate() {
        let with_admin = auth(&[("tok-a", None)], &["adm"]);
        let none = auth(&[("tok-a", None)], &[]);
        let gate = |a: &config::Auth, h: &[(&str, &str)], ip| {
            authenticate(
                Gate::Admin,
                Dialect::OpenAi,
                &headers(h),
                None,
                a,
                ip,
                false,
            )
        };
        assert!(gate(&with_admin, &[("authorization", "Bearer adm")], REMOTE).is_ok());
        assert!(matches!(
            gate(&with_admin, &[("authorization", "Bearer tok-a")], REMOTE),
            Err(ProxyError::AdminOnly)
        ));
        assert!(matches!(
            gate(&with_admin, &[], LOOPBACK),
            Err(ProxyError::Unauthorized)
        ));
        assert!(gate(&none, &[], LOOPBACK).is_ok());
        assert!(matches!(
            gate(&none, &[("authorization", "Bearer tok-a")], REMOTE),
            Err(ProxyError::AdminOnly)
        ));
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param("a=1&key=x%2By", "key").as_deref(), Some("x+y"));
        assert_eq!(query_param("key=a+b", "key").as_deref(), Some("a b"));
        assert_eq!(query_param("a=1", "key"), None);
        assert_eq!(query_param("key=%zz", "key").as_deref(), Some("%zz"));
    }
}
