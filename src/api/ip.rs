//! `GET /ip-config` (the IP rules as loaded, each explained) and `POST /test-ip {test_ip}` (a
//! dry run of the rules for one address, and the caller's own address as the proxy sees it).

use std::net::IpAddr;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::access::{self, Caller};
use crate::body::json_response;
use crate::body::{read_body, Body};
use crate::config::IpRule;
use crate::error::ProxyError;
use crate::state::Snapshot;

fn explain(rule: &IpRule) -> serde_json::Value {
    match rule {
        IpRule::Any => json!({"rule": "*", "meaning": "every address (IPv4 and IPv6)"}),
        IpRule::Net(net) if net.prefix_len() == net.max_prefix_len() => {
            json!({"rule": net.addr().to_string(), "meaning": "this single address"})
        }
        IpRule::Net(net) => json!({
            "rule": net.to_string(),
            "meaning": format!("addresses {} to {}", net.network(), net.broadcast()),
        }),
    }
}

pub fn config(snap: &Snapshot, caller: &Caller) -> Response<Body> {
    let access = &snap.config.access;
    json_response(
        StatusCode::OK,
        &json!({
            "allow": access.allow.iter().map(explain).collect::<Vec<_>>(),
            "deny": access.deny.iter().map(explain).collect::<Vec<_>>(),
            "trusted_proxies": snap.config.server.trusted_proxies.iter().map(|n| n.to_string()).collect::<Vec<_>>(),
            "evaluation": "deny rules are checked first, then allow rules; an address no allow rule \
                           matches is refused (403). The rules apply to every path, /health \
                           included, except /livez and /readyz, which answer every address.",
            "client_address": format!(
                "the TCP peer, unless the peer is in trusted_proxies: then the {} header \
                 (server.real_ip_header; a chain is walked right to left past trusted hops), and \
                 no other. IPv4-mapped IPv6 addresses match IPv4 rules.",
                snap.config.server.real_ip_header.name()
            ),
            "real_ip_header": snap.config.server.real_ip_header.name(),
            "forms": {
                "*": "every address (also \"all\")",
                "203.0.113.7": "one IPv4 address",
                "2001:db8::1": "one IPv6 address",
                "10.0.0.0/8": "an IPv4 CIDR range",
                "2001:db8::/32": "an IPv6 CIDR range",
            },
            "your_ip": caller.ip.to_string(),
        }),
    )
}

#[derive(Deserialize)]
struct TestIp {
    test_ip: String,
}

pub async fn test(
    snap: &Snapshot,
    caller: &Caller,
    req: Request<Incoming>,
) -> Result<Response<Body>, ProxyError> {
    let body = read_body(req, snap.config.server.max_body).await?;
    let ask: TestIp = serde_json::from_slice(&body).map_err(|e| ProxyError::BadRequest {
        message: format!(
            "send {{\"test_ip\": \"203.0.113.7\"}}: {}",
            crate::excerpt::serde_error(&e)
        ),
        param: Some("test_ip".into()),
    })?;
    let ip: IpAddr = ask
        .test_ip
        .trim()
        .parse()
        .map_err(|_| ProxyError::BadRequest {
            message: format!(
                "'{}' is not an IPv4 or IPv6 address",
                crate::excerpt::excerpt(&ask.test_ip)
            ),
            param: Some("test_ip".into()),
        })?;
    let verdict = access::check_ip(ip, &snap.config.access);
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "test_ip": access::canonical(ip).to_string(),
            "allowed": verdict.allowed,
            "rule": verdict.rule.to_string(),
            "your_ip": caller.ip.to_string(),
            "your_ip_allowed": access::check_ip(caller.ip, &snap.config.access).allowed,
        }),
    ))
}
