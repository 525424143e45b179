//! `gemini-rotator --healthcheck [URL]`: one plain HTTP/1.1 GET, for container health checks in
//! images that have no curl (distroless). It owns only that request: no runtime is started,
//! nothing is retried, and of the config only `server.listen` is read (without a URL, to know
//! where to knock). Every step has a short timeout, so a hung server fails the check instead
//! of hanging it. Only `http://` is spoken: the check targets the process's own port on
//! loopback, where there is no TLS.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

/// What `--healthcheck` without a URL checks when the config names no address: the default
/// port on loopback.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7860/livez";

/// `--healthcheck` without a URL: `/livez` at the address the config's `server.listen` names
/// (an unspecified host, `0.0.0.0` or `::`, is checked on loopback). Only that field is read,
/// leniently: a file that does not parse, or has no such field, means `DEFAULT_URL`.
pub fn url_from_config(config: &Path) -> String {
    #[derive(serde::Deserialize)]
    struct File {
        server: Option<Server>,
    }
    #[derive(serde::Deserialize)]
    struct Server {
        listen: Option<String>,
    }
    std::fs::read_to_string(config)
        .ok()
        .and_then(|text| toml::from_str::<File>(&text).ok())
        .and_then(|file| file.server?.listen)
        .and_then(|listen| livez_at(&listen))
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

/// `host:port` as `server.listen` takes it -> the `/livez` URL to check.
fn livez_at(listen: &str) -> Option<String> {
    if let Ok(addr) = listen.parse::<SocketAddr>() {
        let ip = match addr.ip() {
            IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        return Some(format!("http://{}/livez", SocketAddr::new(ip, addr.port())));
    }
    let (host, port) = listen.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    (!host.is_empty()).then(|| format!("http://{host}:{port}/livez"))
}

/// Connect, write and read each get this long.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// The status line is all we read; a status line longer than this is not HTTP.
const MAX_STATUS_LINE: usize = 1024;

/// GETs `url`; `Ok` carries the status line of a 2xx answer, `Err` says why the check failed.
pub fn check(url: &str) -> Result<String, String> {
    let (host, port, path) = split_url(url)?;
    let addrs: Vec<SocketAddr> = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let mut last_error = format!("{host} resolves to no address");
    for addr in addrs {
        match get(addr, &host, port, &path) {
            Ok(status) => return Ok(status),
            Err(e) => last_error = format!("{addr}: {e}"),
        }
    }
    Err(last_error)
}

/// `http://host[:port][/path]` -> (host without brackets, port, path).
fn split_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url}: unclosed [ in the host"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(format!("{url}: no host"));
    }
    let port = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| format!("{url}: bad port `{p}`"))?,
    };
    Ok((host.to_string(), port, path.to_string()))
}

fn get(addr: SocketAddr, host: &str, port: u16, path: &str) -> Result<String, String> {
    let mut stream =
        TcpStream::connect_timeout(&addr, STEP_TIMEOUT).map_err(|e| format!("connect: {e}"))?;
    stream
        .set_read_timeout(Some(STEP_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(STEP_TIMEOUT)))
        .map_err(|e| format!("socket: {e}"))?;
    let host_header = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: gemini-rotator-healthcheck\r\n\
         Connection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;

    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while head.len() < MAX_STATUS_LINE {
        match stream.read(&mut byte) {
            Ok(0) => break,
            Ok(_) if byte[0] == b'\n' => break,
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let line = String::from_utf8_lossy(&head).trim_end().to_string();
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    let code = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") || code.len() != 3 {
        return Err(format!("not an HTTP/1 answer: {line:?}"));
    }
    if code.starts_with('2') {
        Ok(line)
    } else {
        Err(line)
    }
}

#[cfg(test)]
mod tests {
    use super::{livez_at, split_url};

    #[test]
    fn listen_addresses() {
        let cases = [
            ("0.0.0.0:7860", Some("http://127.0.0.1:7860/livez")),
            ("127.0.0.1:8080", Some("http://127.0.0.1:8080/livez")),
            ("[::]:9000", Some("http://[::1]:9000/livez")),
            ("[::1]:9000", Some("http://[::1]:9000/livez")),
            ("10.1.2.3:80", Some("http://10.1.2.3:80/livez")),
            ("localhost:7861", Some("http://localhost:7861/livez")),
            ("localhost", None),
            (":7860", None),
            ("0.0.0.0:http", None),
        ];
        for (listen, expected) in cases {
            assert_eq!(livez_at(listen).as_deref(), expected, "{listen}");
        }
    }

    fn check(url: &str, expected: Option<(&str, u16, &str)>) {
        let got = split_url(url).ok();
        let got = got
            .as_ref()
            .map(|(h, p, path)| (h.as_str(), *p, path.as_str()));
        assert_eq!(got, expected, "{url}");
    }

    #[test]
    fn urls() {
        check(
            "http://127.0.0.1:7860/livez",
            Some(("127.0.0.1", 7860, "/livez")),
        );
        check("http://localhost/livez", Some(("localhost", 80, "/livez")));
        check("http://localhost:8080", Some(("localhost", 8080, "/")));
        check("http://[::1]:7860/readyz", Some(("::1", 7860, "/readyz")));
        check("http://[::1]/x?y=1", Some(("::1", 80, "/x?y=1")));
        check("https://127.0.0.1:7860/livez", None);
        check("http://:7860/livez", None);
        check("http://127.0.0.1:http/livez", None);
        check("http://[::1:7860/livez", None);
    }
}
