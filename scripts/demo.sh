#!/usr/bin/env bash
# The main job on one machine, no external services: build flightrec, start the recorder
# daemon, make some activity, take a snapshot, print a summary of it, then stop and detach.
# Needs root (eBPF) and stable Rust; the compiled eBPF object is in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "demo: needs root to load eBPF programs (try: sudo $0)" >&2
    exit 1
fi

out=${1:-snapshots}
run=$(mktemp -d /tmp/flightrec-demo.XXXXXX)
sock="$run/control.sock"
pins=/sys/fs/bpf/flightrec-demo
bin=target/release/flightrec

echo "== building flightrec (release)"
cargo build --release --quiet -p flightrec

cleanup() {
    if [ -n "${daemon:-}" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"
        wait "$daemon" || true
    fi
    "$bin" teardown --pin-dir "$pins" || true
    rm -rf "$run"
}
trap cleanup EXIT

echo "== starting the recorder"
"$bin" record --ring-size 8MiB --pin-dir "$pins" --socket "$sock" &
daemon=$!
for _ in $(seq 1 100); do
    "$bin" status --socket "$sock" >/dev/null 2>&1 && break
    sleep 0.1
done
"$bin" status --socket "$sock"

echo "== making some activity (file write + fsync, a few processes)"
dd if=/dev/zero of="$run/data" bs=1M count=8 conv=fsync status=none
ls -R /etc >/dev/null
sleep 0.2

echo "== taking a snapshot"
mkdir -p "$out"
file=$("$bin" snapshot record --socket "$sock" -o "$out" --name demo --reason "demo run" | tail -n 1)
echo "snapshot written to $file"

echo "== summary"
"$bin" dump --summary "$file"
echo
echo "Every event: $bin dump $file   (or --json)"
