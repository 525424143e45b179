#!/usr/bin/env python3
"""Turns the files bench/run.sh wrote into the markdown table, the SPEC §8 checks and the budget
verdicts of issue #19 (the proxy against nginx in the same run; with BASE_BIN, this build against
the base build).

Usage: report.py WORK_DIR CLK_TCK
"""
import json
import os
import platform
import sys

work, clk_tck = sys.argv[1], int(sys.argv[2])
STORE = os.environ.get("STORE", "memory")
NGINX_VERSION = os.environ.get("NGINX_VERSION", "")
# The base columns (BASE_BIN: an older build of the proxy) only when that run wrote them.
BASE = os.path.exists(os.path.join(work, "base_v1beta.load.json"))
NAMES = ["direct", "nginx", "v1beta", "v1"] + (["base_v1beta", "base_v1"] if BASE else [])
# The columns that are this build of the proxy.
PROXIED = ["v1beta", "v1"]
TITLES = {
    "direct": "fake upstream, direct",
    "nginx": f"nginx {NGINX_VERSION} `/v1beta/…:generateContent`".replace("  ", " "),
    "v1beta": "proxy `/v1beta/…:generateContent`",
    "v1": "proxy `/v1/chat/completions`",
    "base_v1beta": "base build `/v1beta/…`",
    "base_v1": "base build `/v1/…`",
}


def load(name):
    path = os.path.join(work, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        text = f.read().strip()
    try:
        return json.loads(text)
    except ValueError:
        return int(text) if text.isdigit() else text


def count(oha):
    return sum(oha.get("statusCodeDistribution", {}).values())


def non_200(oha):
    codes = oha.get("statusCodeDistribution", {})
    # Requests cut by the end of a -z run are not failures.
    errors = sum(v for k, v in oha.get("errorDistribution", {}).items() if "deadline" not in k)
    return sum(v for k, v in codes.items() if k != "200") + errors


def ms(seconds):
    return seconds * 1000.0


rows = {}
for n in NAMES:
    load_run, rate_run = load(f"{n}.load.json"), load(f"{n}.rate.json")
    stream_run = load(f"{n}.stream.json") or {"summary": {}}
    ttfb = load(f"{n}.ttfb.json") or {}
    r = {
        "rps": load_run["summary"]["requestsPerSec"],
        "load_n": count(load_run),
        "load_bad": non_200(load_run),
        "p50": ms(rate_run["latencyPercentiles"]["p50"]),
        "p99": ms(rate_run["latencyPercentiles"]["p99"]),
        "rate_n": count(rate_run),
        "rate_bad": non_200(rate_run),
        "stream_rps": stream_run["summary"].get("requestsPerSec"),
        "stream_n": count(stream_run),
        "stream_bad": non_200(stream_run) if "summary" in stream_run and stream_run["summary"] else 0,
        "ttfb": ttfb.get("p50_ms"),
        "ttfb99": ttfb.get("p99_ms"),
        "ttlb": ttfb.get("last_p50_ms"),
    }
    # CPU and context switches per request of the target's own program: the fake's on the
    # direct run (what one upstream round trip costs a program that does almost nothing),
    # nginx's master and workers on the nginx runs, the proxy's on the proxy runs.
    us = 1_000_000 / clk_tck
    for kind, served in (("load", r["load_n"]), ("rate", r["rate_n"]), ("stream", r["stream_n"])):
        cpu = load(f"{n}.{kind}.own-cpu.json")  # None when a reading was incomplete
        served = max(1, served)
        r[f"cpu_{kind}"] = cpu and (cpu["user"] + cpu["sys"]) * us / served
        r[f"sys_{kind}"] = cpu and cpu["sys"] * us / served
        r[f"switches_{kind}"] = cpu and cpu["switches"] / served
        # STORE=redis: what the Redis server spent on this run, per request served.
        redis = load(f"{n}.{kind}.redis-cpu.json")
        r[f"redis_{kind}"] = redis and (redis["user"] + redis["sys"]) * us / served
    rows[n] = r

d = rows["direct"]
g = rows["nginx"]
ttfb_key = {
    "direct": "stream",
    "nginx": "",
    "v1beta": "`:streamGenerateContent?alt=sse`",
    "v1": "`stream: true`",
    "base_v1beta": "",
    "base_v1": "",
}


def cell(v, fmt):
    return "–" if v is None else fmt.format(v)


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def minus(a, b):
    return None if a is None or b is None else a - b


lines = []
head = "| | " + " | ".join(TITLES[n] for n in NAMES) + " |"
lines.append(head)
lines.append("|---|" + "---:|" * len(NAMES))


def row(label, values):
    lines.append(f"| {label} | " + " | ".join(values) + " |")


def each(f, fmt, skip=()):
    return ["–" if n in skip else cell(f(n), fmt) for n in NAMES]


row("requests/s at 64 connections", each(lambda n: rows[n]["rps"], "{:,.0f}"))
row("… ratio to direct", each(lambda n: ratio(rows[n]["rps"], d["rps"]), "{:.2f}"))
row("… ratio to nginx", each(lambda n: ratio(rows[n]["rps"], g["rps"]), "{:.2f}", ("direct",)))
row("p50 latency at 500 rps (ms)", each(lambda n: rows[n]["p50"], "{:.3f}"))
row("… added to direct (ms)", each(lambda n: minus(rows[n]["p50"], d["p50"]), "{:+.3f}", ("direct",)))
row("p99 latency at 500 rps (ms)", each(lambda n: rows[n]["p99"], "{:.3f}"))
row(
    "time to first streamed byte, p50 (ms)",
    [cell(rows[n]["ttfb"], "{:.3f}") + (" " + ttfb_key[n] if ttfb_key[n] and n != "direct" else "") for n in NAMES],
)
row("… added to direct (ms)", each(lambda n: minus(rows[n]["ttfb"], d["ttfb"]), "{:+.3f}", ("direct",)))
row("time to last streamed byte, p50 (ms)", each(lambda n: rows[n]["ttlb"], "{:.1f}"))
for kind, label in (("load", "64 conns"), ("rate", "500 rps")):
    row(
        f"CPU per request at {label}, µs (kernel's share)¹",
        [
            "–" if rows[n][f"cpu_{kind}"] is None
            else f"{rows[n][f'cpu_{kind}']:.0f} ({rows[n][f'sys_{kind}']:.0f})"
            for n in NAMES
        ],
    )
    row("… ratio to nginx", each(lambda n: ratio(rows[n][f"cpu_{kind}"], g[f"cpu_{kind}"]), "{:.2f}", ("direct",)))
row("streamed answers/s at 64 connections²", each(lambda n: rows[n]["stream_rps"], "{:,.0f}"))
row(
    "CPU per streamed answer, µs (kernel's share)¹ ²",
    [
        "–" if rows[n]["cpu_stream"] is None
        else f"{rows[n]['cpu_stream']:.0f} ({rows[n]['sys_stream']:.0f})"
        for n in NAMES
    ],
)
row("… ratio to nginx", each(lambda n: ratio(rows[n]["cpu_stream"], g["cpu_stream"]), "{:.2f}", ("direct",)))
for kind, label in (("load", "64 conns"), ("rate", "500 rps")):
    row(
        f"context switches per request at {label}¹",
        each(lambda n: rows[n][f"switches_{kind}"], "{:.2f}"),
    )
if STORE == "redis":
    for kind, label in (("load", "64 conns"), ("rate", "500 rps")):
        row(
            f"Redis server's CPU per request at {label}, µs",
            each(lambda n: rows[n][f"redis_{kind}"], "{:.1f}", ("direct", "nginx")),
        )
row(
    "non-200 answers (load / 500 rps / streamed)",
    [f"{rows[n]['load_bad']} / {rows[n]['rate_bad']} / {rows[n]['stream_bad']}" for n in NAMES],
)

rss_idle = load("rss_idle") / 1024
rss_peak = load("rss_peak") / 1024
rss_all = load("rss_peak_all") / 1024
streams = load("streams.json")

print()
print(f"Machine: {os.cpu_count()} CPUs, {platform.machine()}, Linux {platform.release()}; "
      "load generator, proxy and fake upstream share them.")
print()
print(f"State store: `[state] store = \"{STORE}\"`"
      + (" (a redis-server of the run's own on loopback, on the same CPUs)" if STORE == "redis" else "")
      + ".")
print()
print("\n".join(lines))
print()
print("¹ the program in front of the fake: the proxy's in the proxy columns, nginx's master and "
      "workers in the nginx column; in the direct column, the fake upstream's own.")
print("² `:streamGenerateContent?alt=sse` (on `/v1`, `stream: true`): the fake's four events "
      "without gaps, read to the end.")
if os.environ.get("AWAKE") == "1":
    print("AWAKE=1: an idle-priority spinner kept every CPU from halting during this run.")
print()
print(f"Proxy RSS: idle {rss_idle:.1f} MiB, peak under the load runs {rss_peak:.1f} MiB", end="")
if streams and streams.get("count"):
    print(
        f"; {streams['ok']:,} of {streams['count']:,} streams open at once "
        f"(all opened in {streams['open_s']} s), RSS then {streams['rss_kib'] / 1024:.1f} MiB, "
        f"peak {rss_all:.1f} MiB."
    )
else:
    print(".")
print()

checks = [
    ("throughput ≥ 25% of direct", min(rows[n]["rps"] / d["rps"] for n in PROXIED) >= 0.25,
     ", ".join(f"{n} {rows[n]['rps'] / d['rps']:.0%}" for n in PROXIED)),
    ("proxy CPU ≤ 60 µs/request",
     all(rows[n]["cpu_load"] is not None and rows[n]["cpu_load"] <= 60 for n in PROXIED),
     ", ".join(f"{n} " + cell(rows[n]["cpu_load"], "{:.0f} µs") for n in PROXIED)),
    ("added median ≤ 0.15 ms at 500 rps", max(rows[n]["p50"] - d["p50"] for n in PROXIED) <= 0.15,
     ", ".join(f"{n} {rows[n]['p50'] - d['p50']:+.3f} ms" for n in PROXIED)),
]
if all(rows[n]["ttfb"] is not None for n in ["direct"] + PROXIED):
    checks.append(
        ("first streamed byte adds ≤ 0.5 ms", max(rows[n]["ttfb"] - d["ttfb"] for n in PROXIED) <= 0.5,
         ", ".join(f"{n} {rows[n]['ttfb'] - d['ttfb']:+.3f} ms" for n in PROXIED)))
checks.append(("idle RSS ≤ 20 MiB", rss_idle <= 20, f"{rss_idle:.1f} MiB"))
if streams and streams.get("count"):
    checks.append(("open streams held", streams["ok"] == streams["count"],
                   f"{streams['ok']:,}/{streams['count']:,}"))
print("| SPEC §8 | result | measured |")
print("|---|---|---|")
for label, ok, text in checks:
    print(f"| {label} | {'pass' if ok else 'MISS'} | {text} |")
print()


# The budget of issue #19: the proxy next to nginx in front of the same fake, in the same run.
def verdict(value, ok):
    return "–" if value is None else ("pass" if ok(value) else "MISS")


v, c = rows["v1beta"], rows["v1"]
budget = [
    ("`/v1beta` throughput at 64 connections ≥ 0.8× nginx's",
     ratio(v["rps"], g["rps"]), lambda x: x >= 0.8, "{:.2f}×"),
    ("`/v1beta` CPU per request ≤ 1.5× nginx's",
     ratio(v["cpu_load"], g["cpu_load"]), lambda x: x <= 1.5, "{:.2f}×"),
    ("`/v1beta` added median at 500 rps ≤ nginx's + 0.05 ms",
     minus(minus(v["p50"], d["p50"]), minus(g["p50"], d["p50"])), lambda x: x <= 0.05,
     "{:+.3f} ms beyond nginx's"),
    ("`/v1` throughput at 64 connections ≥ 0.5× direct's",
     ratio(c["rps"], d["rps"]), lambda x: x >= 0.5, "{:.2f}×"),
    ("`/v1` CPU per request ≤ 2.5× nginx's",
     ratio(c["cpu_load"], g["cpu_load"]), lambda x: x <= 2.5, "{:.2f}×"),
    ("`/v1` added time to first streamed byte ≤ 0.5 ms",
     minus(c["ttfb"], d["ttfb"]), lambda x: x <= 0.5, "{:+.3f} ms"),
    ("`/v1beta` stream relay CPU per streamed answer ≤ 1.2× nginx's",
     ratio(v["cpu_stream"], g["cpu_stream"]), lambda x: x <= 1.2, "{:.2f}×"),
]
capped = load("capped.json")


def best(side):
    """A side's round with the lowest p99 among those where every call was answered."""
    runs = [r[side] for r in capped.get("rounds", []) if r.get(side)]
    full = [r for r in runs if r.get("ok") == r.get("n") and r.get("p99_ms") is not None]
    return min(full, key=lambda r: r["p99_ms"]) if full else (runs[0] if runs else None)


if capped and best("capped") and best("uncapped"):
    cap, free = best("capped"), best("uncapped")
    both_ok = (cap.get("ok") == cap.get("n") and free.get("ok") == free.get("n")
               and cap.get("p99_ms") is not None and free.get("p99_ms") is not None)
    budget.append((
        f"{cap['n']:,} concurrent streams through one worker, h2 fake capped at "
        f"{capped['max_streams']} streams per connection: time to first byte p99 within 2 ms of "
        f"the uncapped run (better of two rounds each: {free['p99_ms']} ms uncapped, "
        f"{cap['p99_ms']} ms capped; "
        f"{cap['ok']:,}/{cap['n']:,} and {free['ok']:,}/{free['n']:,} answered)",
        (cap["p99_ms"] - free["p99_ms"]) if both_ok else float("inf"),
        lambda x: x <= 2.0, "{:+.3f} ms"))
print("| budget (issue #19, against nginx in this run) | result | measured |")
print("|---|---|---|")
for label, value, ok, fmt in budget:
    print(f"| {label} | {verdict(value, ok)} | {cell(value, fmt)} |")
print()

if BASE:
    # A/B: this build against the base build, same run, same fake.
    print("| this build ÷ base build | `/v1beta` | `/v1` |")
    print("|---|---:|---:|")
    for label, key in (
        ("requests/s at 64 connections", "rps"),
        ("CPU per request at 64 conns", "cpu_load"),
        ("CPU per request at 500 rps", "cpu_rate"),
        ("streamed answers/s", "stream_rps"),
        ("CPU per streamed answer", "cpu_stream"),
    ):
        print(f"| {label} | "
              + " | ".join(cell(ratio(rows[n][key], rows["base_" + n][key]), "{:.2f}") for n in PROXIED)
              + " |")
    print("| p50 at 500 rps, difference (ms) | "
          + " | ".join(cell(minus(rows[n]["p50"], rows["base_" + n]["p50"]), "{:+.3f}") for n in PROXIED)
          + " |")
    print()
