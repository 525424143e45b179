#!/usr/bin/env python3
"""Holds many streams open through the proxy at once, for bench/run.sh.

Usage: streams.py HOST:PORT TOKEN COUNT PROXY_PID

Opens COUNT /v1beta streamGenerateContent?alt=sse requests on a model the fake upstream streams
slowly (`…-hold`: events 20 s apart), waits (at most 60 s) until each has received its first
event, reads the proxy's RSS while all are open, then closes them all. Prints one JSON line:
{"ok":…, "count":…, "open_s":…, "rss_kib":…}.
"""
import asyncio
import json
import sys
import time

PATH = "/v1beta/models/gemini-2.5-flash-hold:streamGenerateContent?alt=sse"
BODY = b'{"contents":[{"role":"user","parts":[{"text":"hold"}]}]}'


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def one(host, port, token, ready, writers, gate):
    async with gate:
        reader, writer = await asyncio.open_connection(host, port)
    writers.append(writer)
    writer.write(
        (
            f"POST {PATH} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
        ).encode()
        + BODY
    )
    await writer.drain()
    buf = b""
    while b"data:" not in buf:
        chunk = await reader.read(4096)
        if not chunk:
            return
        buf += chunk
    if buf.startswith(b"HTTP/1.1 200"):
        ready.append(1)


async def main():
    addr, token, count, pid = sys.argv[1:5]
    host, port = addr.rsplit(":", 1)
    count = min(int(count), 20000)
    ready, writers = [], []
    gate = asyncio.Semaphore(256)  # connects in flight at once
    start = time.perf_counter()
    tasks = [asyncio.create_task(one(host, int(port), token, ready, writers, gate)) for _ in range(count)]
    try:
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)
    except asyncio.TimeoutError:
        pass
    opened = time.perf_counter() - start
    rss = rss_kib(pid)
    for w in writers:
        w.close()
    for t in tasks:
        t.cancel()
    print(json.dumps({"ok": len(ready), "count": count, "open_s": round(opened, 2), "rss_kib": rss}))


asyncio.run(main())
