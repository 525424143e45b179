#!/usr/bin/env python3
"""Turns the files bench/run.sh wrote into the markdown table (and the SPEC §8 checks).

Usage: report.py WORK_DIR CLK_TCK
"""
import json
import os
import platform
import sys

work, clk_tck = sys.argv[1], int(sys.argv[2])
STORE = os.environ.get("STORE", "memory")
NAMES = ["direct", "v1beta", "v1"]
TITLES = {
    "direct": "fake upstream, direct",
    "v1beta": "proxy `/v1beta/…:generateContent`",
    "v1": "proxy `/v1/chat/completions`",
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
    ttfb = load(f"{n}.ttfb.json") or {}
    r = {
        "rps": load_run["summary"]["requestsPerSec"],
        "load_n": count(load_run),
        "load_bad": non_200(load_run),
        "p50": ms(rate_run["latencyPercentiles"]["p50"]),
        "p99": ms(rate_run["latencyPercentiles"]["p99"]),
        "rate_n": count(rate_run),
        "rate_bad": non_200(rate_run),
        "ttfb": ttfb.get("p50_ms"),
        "ttfb99": ttfb.get("p99_ms"),
        "ttlb": ttfb.get("last_p50_ms"),
    }
    # CPU and context switches per request: the proxy's on the proxy runs, the fake's on the
    # direct run (what one upstream round trip costs a program that does almost nothing).
    who = "fake" if n == "direct" else "proxy"
    us = 1_000_000 / clk_tck
    for kind, served in (("load", r["load_n"]), ("rate", r["rate_n"])):
        cpu = load(f"{n}.{kind}.{who}-cpu.json")  # None when a reading was incomplete
        served = max(1, served)
        r[f"cpu_{kind}"] = cpu and (cpu["user"] + cpu["sys"]) * us / served
        r[f"sys_{kind}"] = cpu and cpu["sys"] * us / served
        r[f"switches_{kind}"] = cpu and cpu["switches"] / served
        # STORE=redis: what the Redis server spent on this run, per request served.
        redis = load(f"{n}.{kind}.redis-cpu.json")
        r[f"redis_{kind}"] = redis and (redis["user"] + redis["sys"]) * us / served
    rows[n] = r

d = rows["direct"]
ttfb_key = {"direct": "stream", "v1beta": "`:streamGenerateContent?alt=sse`", "v1": "`stream: true`"}


def cell(v, fmt):
    return "–" if v is None else fmt.format(v)


lines = []
head = "| | " + " | ".join(TITLES[n] for n in NAMES) + " |"
lines.append(head)
lines.append("|---|" + "---:|" * len(NAMES))


def row(label, values):
    lines.append(f"| {label} | " + " | ".join(values) + " |")


row(f"requests/s at 64 connections", [cell(rows[n]["rps"], "{:,.0f}") for n in NAMES])
row("… ratio to direct", ["1.00"] + [f"{rows[n]['rps'] / d['rps']:.2f}" for n in NAMES[1:]])
row("p50 latency at 500 rps (ms)", [cell(rows[n]["p50"], "{:.3f}") for n in NAMES])
row("… added to direct (ms)", ["–"] + [f"{rows[n]['p50'] - d['p50']:+.3f}" for n in NAMES[1:]])
row("p99 latency at 500 rps (ms)", [cell(rows[n]["p99"], "{:.3f}") for n in NAMES])
row(
    "time to first streamed byte, p50 (ms)",
    [cell(rows[n]["ttfb"], "{:.3f}") + (" " + ttfb_key[n] if n != "direct" else "") for n in NAMES],
)
row(
    "… added to direct (ms)",
    ["–"] + [cell(None if rows[n]["ttfb"] is None or d["ttfb"] is None else rows[n]["ttfb"] - d["ttfb"], "{:+.3f}") for n in NAMES[1:]],
)
row("time to last streamed byte, p50 (ms)", [cell(rows[n]["ttlb"], "{:.1f}") for n in NAMES])
for kind, label in (("load", "64 conns"), ("rate", "500 rps")):
    row(
        f"CPU per request at {label}, µs (kernel's share)¹",
        [
            "–" if rows[n][f"cpu_{kind}"] is None
            else f"{rows[n][f'cpu_{kind}']:.0f} ({rows[n][f'sys_{kind}']:.0f})"
            for n in NAMES
        ],
    )
for kind, label in (("load", "64 conns"), ("rate", "500 rps")):
    row(
        f"context switches per request at {label}¹",
        [cell(rows[n][f"switches_{kind}"], "{:.2f}") for n in NAMES],
    )
if STORE == "redis":
    for kind, label in (("load", "64 conns"), ("rate", "500 rps")):
        row(
            f"Redis server's CPU per request at {label}, µs",
            ["–"] + [cell(rows[n][f"redis_{kind}"], "{:.1f}") for n in NAMES[1:]],
        )
row(
    "non-200 answers (load / 500 rps)",
    [f"{rows[n]['load_bad']} / {rows[n]['rate_bad']}" for n in NAMES],
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
print("¹ the proxy's in the proxy columns; in the direct column, the fake upstream's own.")
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
    ("throughput ≥ 25% of direct", min(rows[n]["rps"] / d["rps"] for n in NAMES[1:]) >= 0.25,
     ", ".join(f"{n} {rows[n]['rps'] / d['rps']:.0%}" for n in NAMES[1:])),
    ("proxy CPU ≤ 60 µs/request",
     all(rows[n]["cpu_load"] is not None and rows[n]["cpu_load"] <= 60 for n in NAMES[1:]),
     ", ".join(f"{n} " + cell(rows[n]["cpu_load"], "{:.0f} µs") for n in NAMES[1:])),
    ("added median ≤ 0.15 ms at 500 rps", max(rows[n]["p50"] - d["p50"] for n in NAMES[1:]) <= 0.15,
     ", ".join(f"{n} {rows[n]['p50'] - d['p50']:+.3f} ms" for n in NAMES[1:])),
]
if all(rows[n]["ttfb"] is not None for n in NAMES):
    checks.append(
        ("first streamed byte adds ≤ 0.5 ms", max(rows[n]["ttfb"] - d["ttfb"] for n in NAMES[1:]) <= 0.5,
         ", ".join(f"{n} {rows[n]['ttfb'] - d['ttfb']:+.3f} ms" for n in NAMES[1:])))
checks.append(("idle RSS ≤ 20 MiB", rss_idle <= 20, f"{rss_idle:.1f} MiB"))
if streams and streams.get("count"):
    checks.append(("open streams held", streams["ok"] == streams["count"],
                   f"{streams['ok']:,}/{streams['count']:,}"))
print("| SPEC §8 | result | measured |")
print("|---|---|---|")
for label, ok, text in checks:
    print(f"| {label} | {'pass' if ok else 'MISS'} | {text} |")
print()
