#!/usr/bin/env bash
# The end-to-end benchmark (SPEC §8), in one command: bench/run.sh
#
# Builds the release proxy and the fake upstream (examples/bench_upstream.rs), installs `oha`
# if missing, starts both on loopback, and drives: the fake directly, then the proxy on
# /v1beta/...:generateContent and on /v1/chat/completions. Prints a markdown table.
#
# Knobs (environment): DURATION (load run length, default 10s), CONNS (default 64),
# RATE (fixed-rate runs, default 500 rps), RATE_SECS (default 10), TTFB_SAMPLES (default 200),
# STREAMS (concurrent open streams to hold, default 9000; 0 = skip), OHA (path to oha),
# NO_BUILD=1 with PROXY_BIN / FAKE_BIN to run prebuilt binaries,
# AWAKE=1 to keep every CPU from halting while idle (a diagnostic: see bench/README.md),
# STORE=memory|file|redis: the proxy's `[state] store` (default memory; redis starts a
# redis-server of its own on a free loopback port, installing Debian's package when missing).
# Every run is bounded in time and count; everything listens on 127.0.0.1 only.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DURATION="${DURATION:-10s}"
CONNS="${CONNS:-64}"
RATE="${RATE:-500}"
RATE_SECS="${RATE_SECS:-10}"
TTFB_SAMPLES="${TTFB_SAMPLES:-200}"
STREAMS="${STREAMS:-9000}"
STORE="${STORE:-memory}"
case "$STORE" in
    memory | file | redis) ;;
    *) echo "bench: STORE must be memory, file or redis, not '$STORE'" >&2; exit 2 ;;
esac
TOKEN="sk-bench-token-0123456789abcdef"

log() { printf '%s\n' "bench: $*" >&2; }

# --- build -----------------------------------------------------------------------------------
PROXY_BIN="${PROXY_BIN:-$ROOT/target/release/gemini-rotator}"
FAKE_BIN="${FAKE_BIN:-$ROOT/target/release/examples/bench_upstream}"
if [ "${NO_BUILD:-0}" != 1 ]; then
    log "building the release proxy and the fake upstream"
    # Two builds: together, the example's dev-dependency features (tokio test-util…) would be
    # unified into the proxy binary, and the bench must measure the binary users run.
    cargo build --release --quiet --bin gemini-rotator
    cargo build --release --quiet --example bench_upstream
fi

OHA="${OHA:-}"
if [ -z "$OHA" ]; then
    if command -v oha >/dev/null 2>&1; then
        OHA="$(command -v oha)"
    elif [ -x "$ROOT/target/bench-tools/bin/oha" ]; then
        OHA="$ROOT/target/bench-tools/bin/oha"
    else
        log "installing oha into target/bench-tools (once)"
        cargo install oha --locked --quiet --root "$ROOT/target/bench-tools"
        OHA="$ROOT/target/bench-tools/bin/oha"
    fi
fi

if [ "$STORE" = redis ] && ! command -v redis-server >/dev/null 2>&1; then
    log "installing redis-server (Debian's package)"
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null
fi

# --- start -----------------------------------------------------------------------------------
WORK="$(mktemp -d -t gemini-rotator-bench.XXXXXX)"
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

# Both programs run from fresh copies: on the reference VM, a binary executed straight from
# target/ (as the linker wrote it) measured up to 0.5 ms slower per streamed request than a
# byte-identical copy; copying treats the fake and the proxy alike.
cp "$FAKE_BIN" "$WORK/bench_upstream"
cp "$PROXY_BIN" "$WORK/gemini-rotator"
FAKE_BIN="$WORK/bench_upstream"
PROXY_BIN="$WORK/gemini-rotator"

# AWAKE=1: one spinner per CPU at SCHED_IDLE priority, so it only runs when nothing else wants
# the CPU, and a CPU never halts. On a VM, waking a halted virtual CPU costs the host a round
# trip; this shows how much of the low-load numbers is that cost rather than the programs' work.
if [ "${AWAKE:-0}" = 1 ]; then
    for _ in $(seq 1 "$(nproc)"); do
        chrt --idle 0 bash -c 'while :; do :; done' &
        PIDS+=("$!")
    done
fi

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

"$FAKE_BIN" 127.0.0.1:0 >"$WORK/fake.out" 2>&1 &
FAKE_PID=$!
PIDS+=("$FAKE_PID")
for _ in $(seq 1 100); do
    grep -q '^listening on ' "$WORK/fake.out" 2>/dev/null && break
    sleep 0.05
done
FAKE_ADDR="$(sed -n 's/^listening on //p' "$WORK/fake.out")"
[ -n "$FAKE_ADDR" ] || { log "the fake upstream did not start"; cat "$WORK/fake.out" >&2; exit 1; }

# STORE=redis: a Redis of the run's own, on loopback, keeping nothing on disk.
STATE_TOML="store = \"$STORE\""
REDIS_PID=""
if [ "$STORE" = redis ]; then
    REDIS_PORT="$(free_port)"
    mkdir -p "$WORK/redis"
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --dir "$WORK/redis" --logfile "$WORK/redis.log" &
    REDIS_PID=$!
    PIDS+=("$REDIS_PID")
    for _ in $(seq 1 100); do
        [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
        sleep 0.05
    done
    [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] ||
        { log "redis-server did not start"; cat "$WORK/redis.log" >&2; exit 1; }
    STATE_TOML="$STATE_TOML
url = \"redis://127.0.0.1:$REDIS_PORT/0\""
    log "redis-server $(redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT"
elif [ "$STORE" = file ]; then
    # Outside the watched config folder: the snapshot is rewritten every 2 s under load.
    mkdir -p "$WORK/state"
    STATE_TOML="$STATE_TOML
path = \"$WORK/state/gemini-rotator.state\""
fi

# The proxy's config folder is watched for edits: results are written next to it, not in it.
CONF="$WORK/proxy"
mkdir -p "$CONF"
for i in $(seq 1 100); do
    printf 'AIzaFAKE-bench-key-%05d-xxxxxxxxxxxxxxxx\n' "$i"
done >"$CONF/keys.txt"
PROXY_PORT="$(free_port)"
PROXY_ADDR="127.0.0.1:$PROXY_PORT"
cat >"$CONF/config.toml" <<EOF
[server]
listen = "$PROXY_ADDR"
reload_poll = "0s"
[upstream]
base_url = "http://$FAKE_ADDR"
[auth]
tokens = ["$TOKEN"]
[pool]
key_files = ["keys.txt"]
[models]
list = "static"
static = ["gemini-2.5-flash"]
[logging]
level = "warn"
[state]
$STATE_TOML
EOF
"$PROXY_BIN" --config "$CONF/config.toml" >"$WORK/proxy.log" 2>&1 &
PROXY_PID=$!
PIDS+=("$PROXY_PID")
for _ in $(seq 1 100); do
    python3 - "$PROXY_PORT" <<'PY' 2>/dev/null && break
import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=0.2).close()
PY
    sleep 0.05
done
kill -0 "$PROXY_PID" 2>/dev/null || { log "the proxy did not start"; cat "$WORK/proxy.log" >&2; exit 1; }
sleep 0.5

rss_kib() { awk -v k="$2" '$1 == k":" { print $2 }' "/proc/$1/status"; }
# user ticks, system ticks, context switches (all threads; a worker blocks and wakes per I/O wait)
# (A thread that ends while its status is read, or a failed read, must not shift the fields:
# a reading without all three numbers is dropped below, never subtracted.)
cpu_now() {
    local stat switches
    stat="$(awk '{ print $14, $15 }' "/proc/$1/stat" 2>/dev/null || true)"
    switches="$({ cat /proc/"$1"/task/*/status 2>/dev/null || true; } |
        awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }')"
    echo "$stat $switches"
}
# "before" and "after" readings -> {"user","sys","switches"}, or null if either is incomplete.
cpu_delta() {
    paste -d' ' <(echo "$1") <(echo "$2") | awk '
        NF == 6 && $4 >= $1 && $5 >= $2 {
            printf "{\"user\": %d, \"sys\": %d, \"switches\": %d}\n", $4-$1, $5-$2, $6-$3; next }
        { print "null" }'
}
RSS_IDLE="$(rss_kib "$PROXY_PID" VmRSS)"
log "fake upstream on $FAKE_ADDR, proxy on $PROXY_ADDR (pid $PROXY_PID, idle RSS ${RSS_IDLE} KiB, store $STORE)"

FAKE="http://$FAKE_ADDR"
PROXY="http://$PROXY_ADDR"
GEN="/v1beta/models/gemini-2.5-flash:generateContent"
# name | url | body file | credential header (the fake wants a key, the proxy a client token)
TARGETS=(
    "direct|$FAKE$GEN|bench/bodies/gemini.json|x-goog-api-key: AIzaFAKE-direct"
    "v1beta|$PROXY$GEN|bench/bodies/gemini.json|authorization: Bearer $TOKEN"
    "v1|$PROXY/v1/chat/completions|bench/bodies/chat.json|authorization: Bearer $TOKEN"
)

oha_run() { # name kind url body auth extra-args...
    local name="$1" kind="$2" url="$3" body="$4" auth="$5"
    shift 5
    local proxy_before fake_before redis_before=""
    proxy_before="$(cpu_now "$PROXY_PID")"
    fake_before="$(cpu_now "$FAKE_PID")"
    [ -z "$REDIS_PID" ] || redis_before="$(cpu_now "$REDIS_PID")"
    "$OHA" --no-tui --output-format json -m POST -T application/json -H "$auth" \
        -D "$body" "$@" "$url" >"$WORK/$name.$kind.json"
    # What each program spent on this run: user ticks, system ticks, context switches.
    cpu_delta "$proxy_before" "$(cpu_now "$PROXY_PID")" >"$WORK/$name.$kind.proxy-cpu.json"
    cpu_delta "$fake_before" "$(cpu_now "$FAKE_PID")" >"$WORK/$name.$kind.fake-cpu.json"
    if [ -n "$REDIS_PID" ]; then
        cpu_delta "$redis_before" "$(cpu_now "$REDIS_PID")" >"$WORK/$name.$kind.redis-cpu.json"
    fi
}

# Warm up every path (connection pools, route caches, page faults).
for t in "${TARGETS[@]}"; do
    IFS='|' read -r name url body auth <<<"$t"
    "$OHA" --no-tui --output-format quiet -m POST -T application/json -H "$auth" \
        -D "$body" -n 2000 -c "$CONNS" "$url" >/dev/null
done

for t in "${TARGETS[@]}"; do
    IFS='|' read -r name url body auth <<<"$t"
    log "$name: $CONNS connections for $DURATION"
    oha_run "$name" load "$url" "$body" "$auth" -z "$DURATION" -c "$CONNS"
done
for t in "${TARGETS[@]}"; do
    IFS='|' read -r name url body auth <<<"$t"
    log "$name: $RATE rps for ${RATE_SECS}s"
    oha_run "$name" rate "$url" "$body" "$auth" -q "$RATE" -n "$((RATE * RATE_SECS))" -c 32
done

# --- time to first streamed byte ---------------------------------------------------------------
SLOW="/v1beta/models/gemini-2.5-flash-slow:streamGenerateContent?alt=sse"
log "time to first streamed byte ($TTFB_SAMPLES samples per path)"
python3 bench/ttfb.py "$FAKE_ADDR" "$SLOW" "$TOKEN" bench/bodies/gemini.json "$TTFB_SAMPLES" \
    >"$WORK/direct.ttfb.json"
python3 bench/ttfb.py "$PROXY_ADDR" "$SLOW" "$TOKEN" bench/bodies/gemini.json "$TTFB_SAMPLES" \
    >"$WORK/v1beta.ttfb.json"
python3 bench/ttfb.py "$PROXY_ADDR" /v1/chat/completions "$TOKEN" \
    bench/bodies/chat_stream_slow.json "$TTFB_SAMPLES" >"$WORK/v1.ttfb.json"

RSS_PEAK_LOAD="$(rss_kib "$PROXY_PID" VmHWM)"

# --- many open streams -------------------------------------------------------------------------
if [ "$STREAMS" -gt 0 ]; then
    log "holding $STREAMS streams open at once"
    python3 bench/streams.py "$PROXY_ADDR" "$TOKEN" "$STREAMS" "$PROXY_PID" \
        >"$WORK/streams.json" || echo '{"ok":0}' >"$WORK/streams.json"
fi

echo "$RSS_IDLE" >"$WORK/rss_idle"
echo "$RSS_PEAK_LOAD" >"$WORK/rss_peak"
rss_kib "$PROXY_PID" VmHWM >"$WORK/rss_peak_all"
kill -0 "$PROXY_PID" 2>/dev/null || { log "the proxy died during the run"; tail -20 "$WORK/proxy.log" >&2; exit 1; }
if [ -n "$REDIS_PID" ]; then
    # 0 keys: the proxy wrote no state there; its log lines about the state say why.
    log "redis-server holds $(redis-cli -p "$REDIS_PORT" dbsize) keys after the run"
    grep -i 'state' "$WORK/proxy.log" | head -3 >&2 || true
fi
STORE="$STORE" python3 bench/report.py "$WORK" "$(getconf CLK_TCK)"
