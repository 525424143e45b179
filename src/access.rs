//! Who is calling: where the request comes from (`Origin`: the TCP peer, and the one forwarding
//! header `server.real_ip_header` only when that peer is a trusted proxy), the IP allow/deny
//! rules, and the bearer token that turns a request into a `Caller`.
//!
//! Loopback privilege (admin without an admin token, the lockout's exemption) comes from the
//! TCP peer alone, never from a forwarded address, and the tokenless admin also needs a loopback
//! `Host` (a DNS-rebound page names its own host) and no forwarding header of any kind (a local
//! reverse proxy forwards for others). Token comparison is constant-time and looks at every
//! configured token, so timing reveals nothing about which one nearly matched. Nothing here
//! logs a credential.

use std::net::IpAddr;

use http::HeaderMap;
use ipnet::IpNet;

use crate::config::{self, IpRule, ModelGlobs, RealIpHeader};
use crate::error::ProxyError;
use crate::router::{Dialect, Gate};

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The client address after trusted-proxy resolution.
    pub ip: IpAddr,
    /// The client token's name; `None` when the proxy is open (`auth.open`) or for the
    /// tokenless loopback admin.
    pub token_name: Option<String>,
    models: Option<ModelGlobs>,
    pub admin: bool,
    /// The client reached us over HTTPS, by a trusted proxy's word (`forwarded_https`); the
    /// dashboard's session cookie is `Secure` then.
    pub https: bool,
    /// See `Origin::loopback_peer`.
    pub loopback_peer: bool,
    /// See `Origin::local`.
    pub local: bool,
    /// See `Origin::trusted_peer`.
    pub trusted_peer: bool,
}

impl Caller {
    /// A caller with no credential (yet): what the open gates see.
    pub fn anonymous(origin: &Origin) -> Caller {
        Caller {
            ip: origin.ip,
            token_name: None,
            models: None,
            admin: false,
            https: origin.https,
            loopback_peer: origin.loopback_peer,
            local: origin.local,
            trusted_peer: origin.trusted_peer,
        }
    }

    /// An admin known by a dashboard session rather than a token.
    pub fn admin_session(origin: &Origin) -> Caller {
        Caller {
            token_name: Some("dashboard".to_string()),
            admin: true,
            ..Caller::anonymous(origin)
        }
    }

    /// This caller acting as `token` (the Live API's ephemeral tokens act for the client
    /// token that minted them: its name in the stats, its model list).
    pub fn as_token(&self, token: &config::ClientToken) -> Caller {
        Caller {
            token_name: Some(token.name.clone()),
            models: token.models.clone(),
            admin: false,
            ..self.clone()
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

/// Where one request comes from, decided once before anything else looks at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// The client address after trusted-proxy resolution.
    pub ip: IpAddr,
    /// `ip` is the TCP peer itself (no forwarding header was believed) and it is loopback:
    /// this machine, or a local reverse proxy not in `trusted_proxies` through which every
    /// client would look the same. Never locked out (`lockout`).
    pub loopback_peer: bool,
    /// `loopback_peer`, asking for a loopback `Host` (`localhost`, `127.x.y.z`, `[::1]`, any
    /// port) and carrying no forwarding header of any kind: a program on this machine talking
    /// to us directly. With no admin token configured, only such a caller is admin.
    pub local: bool,
    /// See `forwarded_https`.
    pub https: bool,
    /// The TCP peer is one of `server.trusted_proxies`: its `X-Forwarded-Host` names the
    /// address clients used (the upload URLs the proxy hands out).
    pub trusted_peer: bool,
}

/// Decides a request's `Origin` from its TCP peer and headers.
pub fn origin(peer: IpAddr, headers: &HeaderMap, server: &config::Server) -> Origin {
    let trusted = &server.trusted_proxies;
    let (ip, forwarded) = client_ip(peer, headers, trusted, &server.real_ip_header);
    let loopback_peer = !forwarded && ip.is_loopback();
    let local = loopback_peer
        && loopback_host(headers)
        && !carries_forwarding(headers, &server.real_ip_header);
    Origin {
        ip,
        loopback_peer,
        local,
        https: forwarded_https(peer, headers, trusted),
        trusted_peer: is_trusted(canonical(peer), trusted),
    }
}

/// Every header a proxy uses to say whom it forwards for.
const FORWARDING_HEADERS: [&str; 3] = ["x-forwarded-for", "forwarded", "x-real-ip"];

fn carries_forwarding(headers: &HeaderMap, configured: &RealIpHeader) -> bool {
    FORWARDING_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name))
        || headers.contains_key(configured.name())
}

/// Whether the request's `Host` names this machine: `localhost` (or a name under
/// `.localhost`), an address in 127.0.0.0/8, or `[::1]`, with or without a port. A missing or
/// unreadable `Host` is not loopback.
pub fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let host = host.trim();
    let name = if let Some(rest) = host.strip_prefix('[') {
        // `[::1]` or `[::1]:7860`
        let Some((inner, after)) = rest.split_once(']') else {
            return false;
        };
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return false;
        }
        return inner
            .parse::<std::net::Ipv6Addr>()
            .is_ok_and(|ip| ip.is_loopback());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if is_port(port) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if let Ok(ip) = name.parse::<std::net::Ipv4Addr>() {
        return ip.is_loopback();
    }
    name == "localhost" || name.ends_with(".localhost")
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
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

/// The client's address, and whether a forwarding header decided it. Only `header` (the one
/// `server.real_ip_header` names) is read, and only when the TCP peer is a trusted proxy; a
/// chain (`X-Forwarded-For`, `Forwarded`) is walked right to left past trusted hops, and the
/// first untrusted hop is the client.
pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[IpNet],
    header: &RealIpHeader,
) -> (IpAddr, bool) {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return (peer, false);
    }
    let Some(hops) = forwarded_hops(headers, header) else {
        return (peer, false);
    };
    if let RealIpHeader::Single(_) = header {
        // One address, set by the proxy: it is the client, trusted or not.
        return (hops.last().copied().flatten().unwrap_or(peer), true);
    }
    let mut current = peer;
    for hop in hops.iter().rev() {
        let Some(ip) = hop else {
            // A hop we cannot read: stop at the last address we could vouch for.
            return (current, true);
        };
        current = *ip;
        if !is_trusted(current, trusted) {
            return (current, true);
        }
    }
    (current, true)
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

/// The addresses `header` carries, client first (`None` marks an unreadable one); `None` when
/// the request does not carry it.
fn forwarded_hops(headers: &HeaderMap, header: &RealIpHeader) -> Option<Vec<Option<IpAddr>>> {
    let values: Vec<&str> = headers
        .get_all(header.name())
        .iter()
        .map(|v| v.to_str().unwrap_or("\u{0}"))
        .collect();
    if values.is_empty() {
        return None;
    }
    let joined = values.join(",");
    let hops = match header {
        RealIpHeader::Forwarded => joined
            .split(',')
            .map(|element| {
                element.split(';').find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    k.trim()
                        .eq_ignore_ascii_case("for")
                        .then(|| parse_hop(v.trim()))
                        .flatten()
                })
            })
            .collect(),
        RealIpHeader::XForwardedFor | RealIpHeader::Single(_) => {
            joined.split(',').map(|h| parse_hop(h.trim())).collect()
        }
    };
    Some(hops)
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
    pub rule: DecidingRule,
}

/// The rule that decided, shown (`Display`) as e.g. `deny[0] 10.0.0.0/8`, `allow[1] *`, or
/// `no allow rule matched`. Kept as data: every request is checked, few verdicts are shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecidingRule {
    Deny(usize, IpRule),
    Allow(usize, IpRule),
    NoAllowMatched,
}

impl std::fmt::Display for DecidingRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (list, i, rule) = match self {
            DecidingRule::Deny(i, rule) => ("deny", i, rule),
            DecidingRule::Allow(i, rule) => ("allow", i, rule),
            DecidingRule::NoAllowMatched => return f.write_str("no allow rule matched"),
        };
        match rule {
            IpRule::Any => write!(f, "{list}[{i}] *"),
            IpRule::Net(net) => write!(f, "{list}[{i}] {net}"),
        }
    }
}

fn rule_matches(rule: &IpRule, ip: IpAddr) -> bool {
    match rule {
        IpRule::Any => true,
        IpRule::Net(net) => net.contains(&ip),
    }
}

/// Deny rules first, then allow rules. An empty allow list (refused by validation) allows
/// nobody: a rule set never fails open.
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
            rule: DecidingRule::Deny(i, rule.clone()),
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
            rule: DecidingRule::Allow(i, rule.clone()),
        },
        None => IpVerdict {
            allowed: false,
            rule: DecidingRule::NoAllowMatched,
        },
    }
}

/// The credential a client presented: `Authorization: Bearer T`, on `/v1beta` also
/// `x-goog-api-key: T` or `?key=T` (Google SDKs and the Gemini CLI send those), and on
/// `/v1/messages` also `x-api-key: T` (Anthropic's SDKs).
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
    // Anthropic's SDKs (and Claude Code with ANTHROPIC_API_KEY) send `x-api-key: T`.
    if dialect == Dialect::Anthropic {
        return headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(Into::into);
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
    origin: &Origin,
) -> Result<Caller, ProxyError> {
    let open = Caller::anonymous(origin);
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
                return if origin.local {
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
            // Validation allows no tokens only with `auth.open`; both are checked so that an
            // empty list alone never opens the proxy.
            if auth.tokens.is_empty() && auth.open {
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
        check_ip_with(
            &RealIpHeader::XForwardedFor,
            peer,
            headers,
            trusted,
            expected,
        );
    }

    fn check_ip_with(
        kind: &RealIpHeader,
        peer: &str,
        headers: &[(&str, &str)],
        trusted: &[&str],
        expected: &str,
    ) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap_or(http::header::FROM),
                v.parse().unwrap_or(http::HeaderValue::from_static("")),
            );
        }
        let peer: IpAddr = peer.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let (got, _) = client_ip(peer, &map, &nets(trusted), kind);
        assert_eq!(
            got.to_string(),
            expected,
            "{kind:?}: peer {peer} headers {headers:?}"
        );
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
        let forwarded = RealIpHeader::Forwarded;
        check_ip_with(
            &forwarded,
            "10.0.0.2",
            &[(
                "forwarded",
                "for=192.0.2.60;proto=http, for=\"[2001:db8:cafe::17]:4711\"",
            )],
            &["10.0.0.0/8"],
            "2001:db8:cafe::17",
        );
        let real_ip = RealIpHeader::Single(http::HeaderName::from_static("x-real-ip"));
        check_ip_with(
            &real_ip,
            "10.0.0.2",
            &[("x-real-ip", "192.0.2.7")],
            &["10.0.0.0/8"],
            "192.0.2.7",
        );
        // The nearest proxy's value counts when the header came twice.
        check_ip_with(
            &real_ip,
            "10.0.0.2",
            &[("x-real-ip", "127.0.0.1, 192.0.2.7")],
            &["10.0.0.0/8"],
            "192.0.2.7",
        );
        // Only the configured header counts: the others are what a client may have sent.
        check_ip_from(
            "10.0.0.2",
            &[("x-real-ip", "192.0.2.7"), ("forwarded", "for=192.0.2.8")],
            &["10.0.0.0/8"],
            "10.0.0.2",
        );
        check_ip_with(
            &real_ip,
            "10.0.0.2",
            &[("x-forwarded-for", "192.0.2.9")],
            &["10.0.0.0/8"],
            "10.0.0.2",
        );
        check_ip_with(
            &RealIpHeader::Single(http::HeaderName::from_static("cf-connecting-ip")),
            "10.0.0.2",
            &[
                ("cf-connecting-ip", "2001:db8::7"),
                ("x-forwarded-for", "1.1.1.1"),
            ],
            &["10.0.0.0/8"],
            "2001:db8::7",
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
        // Never open by an empty list (validation refuses one anyway).
        check("1.2.3.4", &[], &[], false);
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
            open: tokens.is_empty(),
        }
    }

    fn from(ip: IpAddr, local: bool) -> Origin {
        Origin {
            ip,
            loopback_peer: ip.is_loopback(),
            local,
            https: false,
            trusted_peer: false,
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
            authenticate(Gate::Client, d, &headers(h), q, &a, &from(REMOTE, false))
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
        // No tokens and `auth.open`: open; no tokens alone: closed.
        let mut open = auth(&[], &[]);
        let anyone = |a: &config::Auth| {
            authenticate(
                Gate::Client,
                Dialect::OpenAi,
                &headers(&[]),
                None,
                a,
                &from(REMOTE, false),
            )
        };
        assert!(anyone(&open).is_ok());
        open.open = false;
        assert!(matches!(anyone(&open), Err(ProxyError::Unauthorized)));
    }

    #[test]
    fn admin_gate() {
        let with_admin = auth(&[("tok-a", None)], &["adm"]);
        let none = auth(&[("tok-a", None)], &[]);
        let gate = |a: &config::Auth, h: &[(&str, &str)], ip: IpAddr| {
            authenticate(
                Gate::Admin,
                Dialect::OpenAi,
                &headers(h),
                None,
                a,
                &from(ip, ip.is_loopback()),
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
        // A loopback address that is not `local` (forwarded, or a foreign Host) is not admin.
        let not_local = Origin {
            local: false,
            ..from(LOOPBACK, true)
        };
        assert!(matches!(
            authenticate(
                Gate::Admin,
                Dialect::OpenAi,
                &headers(&[]),
                None,
                &none,
                &not_local
            ),
            Err(ProxyError::AdminOnly)
        ));
        assert!(matches!(
            gate(&none, &[("authorization", "Bearer tok-a")], REMOTE),
            Err(ProxyError::AdminOnly)
        ));
    }

    #[test]
    fn only_this_machine_asking_directly_is_local() {
        let server = |trusted: &[&str], header: RealIpHeader| config::Server {
            listen: "127.0.0.1:0".into(),
            trusted_proxies: nets(trusted),
            max_body: 1,
            header_timeout: std::time::Duration::from_secs(1),
            shutdown_grace: std::time::Duration::ZERO,
            metrics_public: false,
            reload_poll: std::time::Duration::ZERO,
            workers: 1,
            real_ip_header: header,
            max_connections: 1,
            max_in_flight: 1,
            memory_budget: 1,
            body_timeout: std::time::Duration::from_secs(1),
            write_timeout: std::time::Duration::from_secs(1),
            max_upload: 1,
            public_url: None,
            cors_origins: config::CorsOrigins::None,
        };
        let direct = server(&[], RealIpHeader::XForwardedFor);
        let behind = server(&["127.0.0.1/32"], RealIpHeader::XForwardedFor);
        let check = |srv: &config::Server, peer: IpAddr, h: &[(&str, &str)], local, exempt| {
            let o = origin(peer, &headers(h), srv);
            assert_eq!(
                (o.local, o.loopback_peer),
                (local, exempt),
                "peer {peer} {h:?}: {o:?}"
            );
        };
        for host in [
            "localhost",
            "localhost:7860",
            "LOCALHOST.",
            "app.localhost:80",
            "127.0.0.1",
            "127.1.2.3:7860",
            "[::1]",
            "[::1]:7860",
        ] {
            check(&direct, LOOPBACK, &[("host", host)], true, true);
        }
        // DNS rebinding: a page on evil.example resolved to 127.0.0.1 sends its own name.
        for host in [
            "evil.example",
            "evil.example:7860",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
            "[::2]:7860",
            "[::1]x",
            "localhost:port",
            "",
        ] {
            check(&direct, LOOPBACK, &[("host", host)], false, true);
        }
        check(&direct, LOOPBACK, &[], false, true);
        // Not this machine.
        check(&direct, REMOTE, &[("host", "localhost")], false, false);
        // A forwarding header of any kind: someone else, through a local proxy.
        for name in ["x-forwarded-for", "forwarded", "x-real-ip"] {
            check(
                &direct,
                LOOPBACK,
                &[("host", "localhost"), (name, "203.0.113.9")],
                false,
                true,
            );
        }
        // Through a trusted proxy, a forwarded loopback address is not the TCP peer's.
        check(
            &behind,
            LOOPBACK,
            &[("host", "localhost"), ("x-forwarded-for", "127.0.0.1")],
            false,
            false,
        );
        check(
            &behind,
            LOOPBACK,
            &[("host", "localhost"), ("x-forwarded-for", "203.0.113.9")],
            false,
            false,
        );
        // A trusted proxy that sends no header is the client itself.
        check(&behind, LOOPBACK, &[("host", "localhost")], true, true);
    }

    #[test]
    fn query_params_decode() {
        assert_eq!(query_param("a=1&key=x%2By", "key").as_deref(), Some("x+y"));
        assert_eq!(query_param("key=a+b", "key").as_deref(), Some("a b"));
        assert_eq!(query_param("a=1", "key"), None);
        assert_eq!(query_param("key=%zz", "key").as_deref(), Some("%zz"));
    }
}
