#!/usr/bin/env python3
"""Many concurrent streamed calls at once, for bench/run.sh's stream-cap step (issue #19).

Usage: capped.py HOST:PORT TOKEN COUNT

Opens COUNT connections to the proxy, then sends one /v1beta streamGenerateContent?alt=sse
request on each at the same moment (the fake's `…-slow` model: four events 10 ms apart) and
measures, per call, the time from its request's last byte to the first SSE event. Run once
against a fake that caps HTTP/2 at 100 streams per connection and once against one that does
not: if calls waited for a stream slot, the capped run's p99 would grow by whole streams.
Bounded: 60 s for the whole run. Prints one JSON line:
{"n":…, "ok":…, "errors":…, "p50_ms":…, "p99_ms":…, "max_ms":…}.
"""
import asyncio
import json
import sys
import time

PATH = "/v1beta/models/gemini-2.5-flash-slow:streamGenerateContent?alt=sse"
BODY = b'{"contents":[{"role":"user","parts":[{"text":"capped"}]}]}'
LIMIT_S = 60.0


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


async def one(host, port, token, gate, start, opened, out):
    try:
        async with gate:
            reader, writer = await asyncio.open_connection(host, port)
    finally:
        opened.append(1)
    try:
        await start.wait()
        writer.write(
            (
                f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n"
                "Connection: close\r\n\r\n"
            ).encode()
            + BODY
        )
        await writer.drain()
        sent = time.perf_counter()
        buf = b""
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                raise RuntimeError("closed before the first event")
            buf += chunk
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep and not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(head.split(b"\r\n")[0].decode(errors="replace"))
            if sep and b"data:" in rest:
                out.append(time.perf_counter() - sent)
                break
        # Read the stream to its end, as a client would.
        while await reader.read(65536):
            pass
    finally:
        writer.close()


async def main():
    addr, token, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    host, port = addr.rsplit(":", 1)
    port = int(port)
    gate = asyncio.Semaphore(100)
    start = asyncio.Event()
    firsts, opened = [], []
    tasks = [
        asyncio.create_task(one(host, port, token, gate, start, opened, firsts))
        for _ in range(count)
    ]
    # Every connection open (or failed) before the requests go out together.
    for _ in range(int(LIMIT_S * 10)):
        if len(opened) == count:
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    start.set()
    done, pending = await asyncio.wait(tasks, timeout=LIMIT_S)
    for t in pending:
        t.cancel()
    errors = sum(1 for t in done if t.exception() is not None) + len(pending)
    ms = [f * 1000 for f in firsts]
    print(
        json.dumps(
            {
                "n": count,
                "ok": len(ms),
                "errors": errors,
                "p50_ms": round(pct(ms, 50), 3) if ms else None,
                "p99_ms": round(pct(ms, 99), 3) if ms else None,
                "max_ms": round(max(ms), 3) if ms else None,
            }
        )
    )


asyncio.run(main())
