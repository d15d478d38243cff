#!/usr/bin/env bash
# Throughput of `flightrec analyze` on a real snapshot of a syscall storm.
#
#   sudo bash bench/analyze_throughput.sh
#
# Records with 768 MiB rings per CPU while a loop of CALLS getpgid calls runs on every CPU
# (plus a find over /usr for variety), takes one snapshot, then times, on that file:
#   dump      `flightrec dump --summary`               (decode and merge on one thread)
#   analyze1  `flightrec analyze --json --single-thread`  (every analysis, one thread)
#   analyze   `flightrec analyze --json`               (every analysis; each CPU's stream
#                                                      decoded on a thread of its own)
# and prints events/s of each, the ratios, and peak RSS. Nothing stays attached.
#
# Environment: CALLS (getpgid calls per CPU, default 2900000), KEEP=1 keeps the snapshot.
set -euo pipefail

CALLS=${CALLS:-2900000}
PIN_DIR=/sys/fs/bpf/flightrec-bench-analyze
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$script_dir/.." && pwd)
bin=$root/target/release/flightrec
load=$root/target/release/workload

die() {
    echo "analyze_throughput: $*" >&2
    exit 1
}
note() { echo "analyze_throughput: $*" >&2; }

[[ $EUID -eq 0 ]] || die "must run as root (it loads eBPF programs): sudo bash bench/analyze_throughput.sh"
[[ $CALLS =~ ^[0-9]+$ ]] || die "CALLS must be a positive integer"
command -v /usr/bin/time >/dev/null || die "needs /usr/bin/time (Debian package time)"

tmp=$(mktemp -d /tmp/flightrec-bench-analyze.XXXXXX)
daemon_pid=""
cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if [[ -n $daemon_pid ]]; then
        kill -INT "$daemon_pid" 2>/dev/null
        wait "$daemon_pid" 2>/dev/null
    fi
    "$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1
    if [[ ${KEEP:-0} == 1 ]]; then note "kept $tmp"; else rm -rf -- "$tmp"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

note "building release binaries"
(cd "$root" && cargo build --release --quiet -p flightrec -p flightrec-tests --bin flightrec --bin workload)

cat >"$tmp/flightrec.toml" <<TOML
[recorder]
ring_size = "768MiB"
pin_dir = "$PIN_DIR"
control_socket = "$tmp/control.sock"
spool_dir = "$tmp/spool"
TOML
"$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 || true
"$bin" record -c "$tmp/flightrec.toml" >"$tmp/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 100); do
    "$bin" status -c "$tmp/flightrec.toml" >/dev/null 2>&1 && break
    sleep 0.2
done
"$bin" status -c "$tmp/flightrec.toml" >/dev/null || die "daemon did not start: $(cat "$tmp/daemon.log")"

note "loading: $CALLS getpgid calls on each of $(nproc) CPUs, and find /usr"
pids=()
for ((cpu = 0; cpu < $(nproc); cpu++)); do
    "$load" getpgid "$CALLS" "$cpu" &
    pids+=($!)
done
find /usr -xdev >/dev/null 2>&1 &
find_pid=$!
wait "${pids[@]}"
kill "$find_pid" 2>/dev/null || true
wait "$find_pid" 2>/dev/null || true

file=$("$bin" snapshot record -c "$tmp/flightrec.toml" -n bench | tail -1)
kill -INT "$daemon_pid"
wait "$daemon_pid" 2>/dev/null || true
daemon_pid=""
"$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 || true

events=$("$bin" analyze --json "$file" | python3 -c 'import json,sys; print(json.load(sys.stdin)["window"]["events"])')
bytes=$((events * 96))
note "snapshot $(du -h "$file" | cut -f1) compressed, $events events = $((bytes / 1048576)) MiB of records"

timed() { # label, command...: prints "wall_s rss_kb"
    local label=$1
    shift
    /usr/bin/time -f '%e %M' -o "$tmp/time.$label" "$@" >/dev/null
    cat "$tmp/time.$label"
}
read -r dump_s dump_kb < <(timed dump "$bin" dump --summary "$file")
read -r one_s one_kb < <(timed analyze1 "$bin" analyze --json --single-thread "$file")
read -r an_s an_kb < <(timed analyze "$bin" analyze --json "$file")
awk -v e="$events" -v d="$dump_s" -v o="$one_s" -v a="$an_s" \
    -v dk="$dump_kb" -v ok="$one_kb" -v ak="$an_kb" 'BEGIN {
    printf "%-9s %9s %14s %12s\n", "reader", "wall s", "events/s", "peak RSS"
    printf "%-9s %9.2f %14.0f %9.0f MiB\n", "dump", d, e / d, dk / 1024
    printf "%-9s %9.2f %14.0f %9.0f MiB\n", "analyze1", o, e / o, ok / 1024
    printf "%-9s %9.2f %14.0f %9.0f MiB\n", "analyze", a, e / a, ak / 1024
    printf "analyze with decoding threads: %.2fx one thread; %.2fx the time of decoding alone\n", o / a, a / d
}'
