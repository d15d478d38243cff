#!/usr/bin/env bash
# Daemon memory and time while it writes a snapshot of full rings.
#
#   bash bench/snapshot_memory.sh            (as root, from anywhere)
#
# For each ring size in SIZES (per CPU, default "96MiB 48MiB", rounded down to 64 and 32 MiB): starts `flightrec
# record` with only the syscalls class, fills every CPU's ring with a getpid storm (the ring
# wraps), then REPS times: refills the rings and takes a snapshot with `flightrec snapshot
# record`, sampling the daemon's RssAnon (/proc/PID/status) every 5 ms while it runs. Prints per
# size the median and worst peak RssAnon during the snapshots, RssAnon before them, and the
# median wall time of `snapshot record` (freeze, copy, compress, fsync, rename).
#
# Targets (docs/benchmarks.md): RssAnon < 40 MiB during a snapshot of 2 x 96 MiB rings;
# < 0.3 s for 96 MiB of rings (2 CPUs x 48 MiB).
#
# Environment: SIZES, REPS (default 5), FLIGHTREC (binary, default target/release/flightrec,
# built when missing or older than its sources).
set -euo pipefail

SIZES=${SIZES:-"96MiB 48MiB"}
REPS=${REPS:-5}

PIN_DIR=/sys/fs/bpf/flightrec-bench-snap
SOCKET=/tmp/flightrec-bench-snap.sock

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
BENCH=snapshot_memory
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"

bench_preconditions "REPS" "gcc awk sort"
((REPS > 0)) || die "REPS must be positive, got '$REPS'"

tmp=""
sampler_pid=""

bench_cleanup_extra() {
    if [[ -n $sampler_pid ]]; then kill "$sampler_pid" 2>/dev/null; wait "$sampler_pid" 2>/dev/null; fi
}
bench_traps

bench_build
[[ -x $bin ]] || die "no flightrec binary at $bin"

if [[ -e $PIN_DIR || -e $SOCKET ]]; then
    note "removing stale $PIN_DIR / $SOCKET from an earlier run"
    "$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 || true
    rm -f -- "$SOCKET"
fi

tmp=$(mktemp -d /tmp/flightrec-bench-snap.XXXXXX)
bench_getpid_loop
mkdir -m 0750 "$tmp/spool"
cat >"$tmp/flightrec.toml" <<EOF
[recorder]
spool_dir = "$tmp/spool"
$SYSCALLS_ONLY
EOF

rss_anon_kb() { awk '/^RssAnon:/ { print $2 }' "/proc/$1/status"; }

fill() {
    # Two records per call: `calls` calls wrap a ring of `slots` records by a quarter.
    local calls=$1 cpu pids=()
    for ((cpu = 0; cpu < ncpu; cpu++)); do
        "$tmp/getpid_loop" "$cpu" "$calls" 1 >/dev/null &
        pids+=($!)
    done
    wait "${pids[@]}"
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
maximum() { printf '%s\n' "$@" | sort -g | tail -n 1; }

echo "snapshot_memory: $(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $ncpu CPUs, $REPS snapshots per size, $bin"
declare -a report=()
for size in $SIZES; do
    "$bin" record --config "$tmp/flightrec.toml" --pin-dir "$PIN_DIR" --socket "$SOCKET" \
        --ring-size "$size" >>"$tmp/daemon.log" 2>&1 &
    daemon_pid=$!
    for ((i = 0; i < 300; i++)); do
        kill -0 "$daemon_pid" 2>/dev/null || { tail -n 20 "$tmp/daemon.log" >&2; die "flightrec record exited (log above)"; }
        "$bin" status --socket "$SOCKET" >/dev/null 2>&1 && break
        sleep 0.05
    done
    capacity=$("$bin" status --socket "$SOCKET" --json | grep -o '"capacity": *[0-9]*' | head -n 1 | tr -dc 0-9)
    [[ -n $capacity ]] || die "cannot read the ring capacity from flightrec status --json"
    calls=$((capacity * 5 / 8))
    declare -a peaks=() times=() before=()
    for ((r = 0; r < REPS; r++)); do
        fill "$calls"
        held=$("$bin" status --socket "$SOCKET" --json | grep -o '"held": *[0-9]*' | tr -dc '0-9\n' | sort -n | head -n 1)
        ((held >= capacity * 9 / 10)) || die "rings hold only $held of $capacity records after the storm"
        before+=("$(rss_anon_kb "$daemon_pid")")
        (
            peak=0
            while :; do
                v=$(awk '/^RssAnon:/ { print $2 }' "/proc/$daemon_pid/status" 2>/dev/null) || break
                ((v > peak)) && peak=$v
                echo "$peak" >"$tmp/peak.new" && mv -f "$tmp/peak.new" "$tmp/peak"
                sleep 0.005
            done
        ) &
        sampler_pid=$!
        until [[ -s $tmp/peak ]]; do sleep 0.01; done
        t0=$(date +%s%N)
        "$bin" snapshot record --socket "$SOCKET" --name bench >"$tmp/snap.out" 2>&1 ||
            { cat "$tmp/snap.out" >&2; die "snapshot record failed"; }
        t1=$(date +%s%N)
        sleep 0.05
        kill "$sampler_pid" 2>/dev/null || true
        wait "$sampler_pid" 2>/dev/null || true
        sampler_pid=""
        peaks+=("$(cat "$tmp/peak")")
        rm -f -- "$tmp/peak"
        times+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')")
        file=$(tail -n 1 "$tmp/snap.out")
        printf '%s round %d/%d: RssAnon before %s KiB, peak %s KiB, snapshot %s s, file %s bytes\n' \
            "$size" $((r + 1)) "$REPS" "${before[r]}" "${peaks[r]}" "${times[r]}" "$(stat -c %s "$file" 2>/dev/null || echo '?')"
        rm -f -- "$tmp"/spool/*.frs
    done
    stop_daemon
    "$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 || die "flightrec teardown failed"
    report+=("$(printf '%-8s %6d x %-8s %14s %14s %14s %12s' "$size" "$ncpu" "$capacity" \
        "$(median "${before[@]}")" "$(median "${peaks[@]}")" "$(maximum "${peaks[@]}")" "$(median "${times[@]}")")")
    unset peaks times before
done

echo
printf '%-8s %-17s %14s %14s %14s %12s\n' ring "CPUs x records" "RssAnon before" "peak (median)" "peak (max)" "time (s)"
printf '%s\n' "${report[@]}"
echo "(RssAnon in KiB; medians of $REPS snapshots; targets: peak < 40960 KiB at 96MiB per CPU on 2 CPUs, < 0.3 s for 96 MiB of rings in all)"
