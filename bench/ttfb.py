#!/usr/bin/env python3
"""Time to first streamed byte, for bench/run.sh.

Usage: ttfb.py HOST:PORT PATH TOKEN BODY_FILE SAMPLES

Sends SAMPLES streaming POSTs one after another, each on a fresh loopback connection
(`Connection: close`, connect time excluded), and measures from the request's last byte to the
first byte of the first SSE event (`data:`) in the response body. Prints one JSON line:
{"p50_ms":…, "p99_ms":…, "last_p50_ms":…, "n":…, "errors":…} where last_* is the time to the
end of the stream (a buffered stream would show first == last).
"""
import json
import socket
import sys
import time


def one(host, port, path, token, body, timeout=10.0):
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {token}\r\nx-goog-api-key: {token}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        s.sendall(request)
        buf = b""
        first = None
        deadline = start + timeout
        while time.perf_counter() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
            if first is None:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep and not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(head.split(b"\r\n")[0].decode(errors="replace"))
                if sep and b"data:" in rest:
                    first = time.perf_counter() - start
        last = time.perf_counter() - start
        if first is None:
            raise RuntimeError("no SSE event in the response")
        return first, last


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    addr, path, token, body_file, samples = sys.argv[1:6]
    host, port = addr.rsplit(":", 1)
    port = int(port)
    with open(body_file, "rb") as f:
        body = f.read()
    firsts, lasts, errors = [], [], 0
    for _ in range(min(int(samples), 10000)):
        try:
            first, last = one(host, port, path, token, body)
            firsts.append(first * 1000)
            lasts.append(last * 1000)
        except (OSError, RuntimeError) as e:
            errors += 1
            if errors == 1:
                print(f"ttfb: {path}: {e}", file=sys.stderr)
            if errors > 10:
                break
    if not firsts:
        print(json.dumps({"n": 0, "errors": errors}))
        return
    print(
        json.dumps(
            {
                "p50_ms": pct(firsts, 50),
                "p99_ms": pct(firsts, 99),
                "last_p50_ms": pct(lasts, 50),
                "n": len(firsts),
                "errors": errors,
            }
        )
    )


if __name__ == "__main__":
    main()
