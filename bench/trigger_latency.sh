#!/usr/bin/env bash
# Trigger-to-freeze latency of the HTTP hook: starts `flightrec record` (release build, its own
# pins, socket, spool and hook port, small rings so writing each snapshot is quick), sends N
# hook triggers with a governor that admits them all, and prints p50/p90/p99 of
# "POST sent -> epoch frozen" (bench/trigger_latency.py). Root only; leaves nothing attached.
# Knobs: N (default 300).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "trigger_latency.sh: run as root (it loads eBPF programs)" >&2; exit 1; }
N="${N:-300}"
cargo build --release -q -p flightrec
BIN=target/release/flightrec
[ -n "${CARGO_TARGET_DIR:-}" ] && BIN="$CARGO_TARGET_DIR/release/flightrec"
WORK="$(mktemp -d)"
PINS=/sys/fs/bpf/flightrec-trigger-bench
TOKEN="bench-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/cfg.toml" <<CFG
[recorder]
ring_size = "1MiB"
pin_dir = "$PINS"
control_socket = "$WORK/control.sock"
spool_dir = "$WORK/spool"
compression_level = 1
[hook]
listen = "127.0.0.1:$PORT"
token = "$TOKEN"
[governor]
cooldown = "0s"
min_prefill = "0s"
host_budget = { burst = 100000, per_minute = 0 }
source_budget = { burst = 100000, per_minute = 0 }
CFG
cleanup() {
    [ -n "${DAEMON:-}" ] && kill "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
    "$BIN" teardown --pin-dir "$PINS" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
"$BIN" teardown --pin-dir "$PINS" >/dev/null 2>&1 || true
"$BIN" record -c "$WORK/cfg.toml" 2>"$WORK/daemon.log" &
DAEMON=$!
for _ in $(seq 100); do
    "$BIN" status -c "$WORK/cfg.toml" >/dev/null 2>&1 && break
    sleep 0.1
done
python3 bench/trigger_latency.py "127.0.0.1:$PORT" "$TOKEN" "$N"
