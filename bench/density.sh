#!/usr/bin/env bash
# Events kept per MiB of kernel memory: flightrec next to the kernel's own ftrace ring, both
# recording the same load at the same time.
#
#   bash bench/density.sh            (as root, from anywhere)
#
# flightrec records with 8 MiB rings and an ftrace instance with buffer_size_kb = 8192 (overwrite
# on), the same events in both. A load pinned to one CPU runs until both have wrapped many times;
# then ftrace stops and flightrec takes a snapshot at once. Events kept on the load's CPU are
# ftrace's `entries` (per_cpu/cpuN/stats) and the snapshot's records kept for that CPU. Memory:
# ftrace's is its per-CPU buffer_size_kb; flightrec's is every BPF map the daemon holds (rings,
# spill, heads, filters, rules, globals: the `memlock` of each map fd), divided by the CPU count
# (its per-CPU share).
#
# Two loads (MODE, default both):
#   getpid   a getpid storm; syscalls only (raw_syscalls in ftrace)
#   mixed    `find /` and a loopback web server answering a bounded curl loop, all on the CPU;
#            every class on (raw_syscalls, sched, block, irq and softirq events in ftrace)
#
# Environment: MODE (getpid, mixed or both), CPU (default 1), CALLS (getpid calls, default
# 3000000), REQUESTS (web requests in mixed, default 3000), FLIGHTREC (a binary to measure),
# KEEP_SUMMARY (a path prefix: keeps each mode's snapshot as PREFIX.MODE.frs and its
# `dump --summary` as PREFIX.MODE).
set -euo pipefail

MODE=${MODE:-both}
CPU=${CPU:-1}
CALLS=${CALLS:-3000000}
REQUESTS=${REQUESTS:-3000}
RING_SIZE=8MiB
BUFFER_KB=8192

PIN_DIR=/sys/fs/bpf/flightrec-density
SOCKET=/tmp/flightrec-density.sock

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
BENCH=density
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"
INSTANCE=$TRACEFS/instances/flightrec-density

[[ $MODE =~ ^(getpid|mixed|both)$ ]] || die "MODE must be getpid, mixed or both, got '$MODE'"
bench_preconditions "CPU CALLS REQUESTS" "gcc taskset mountpoint awk python3 curl find"

tmp=""
web_pid=""
bench_cleanup_extra() {
    [[ -n $web_pid ]] && kill "$web_pid" 2>/dev/null && wait "$web_pid" 2>/dev/null
}
bench_traps

bench_build
tmp=$(mktemp -d /tmp/flightrec-density.XXXXXX)
bench_getpid_loop
taskset -pc "$house_cpu" $$ >/dev/null || die "cannot pin the script to CPU $house_cpu"

if "$bin" status --socket "$SOCKET" >/dev/null 2>&1; then
    die "a flightrec daemon is answering on $SOCKET; stop it first"
fi
teardown_flightrec
bench_tracefs
remove_instance

# Sum of `memlock` over the BPF map fds of process $1, in bytes.
maps_memlock() {
    local f sum=0 m
    for f in /proc/"$1"/fdinfo/*; do
        grep -q '^map_type:' "$f" 2>/dev/null || continue
        m=$(awk '/^memlock:/ { print $2 }' "$f")
        sum=$((sum + ${m:-0}))
    done
    echo "$sum"
}

# Runs the load of mode $1 pinned to $CPU, bounded.
load() {
    case $1 in
    getpid) "$tmp/getpid_loop" "$CPU" "$CALLS" 1 >/dev/null ;;
    mixed)
        mkdir -p "$tmp/www"
        head -c 65536 /dev/urandom >"$tmp/www/blob"
        taskset -c "$CPU" python3 -m http.server --bind 127.0.0.1 --directory "$tmp/www" 0 \
            >"$tmp/web.log" 2>&1 &
        web_pid=$!
        local port="" i
        for ((i = 0; i < 100; i++)); do
            port=$(sed -n 's/.*port \([0-9]*\).*/\1/p' "$tmp/web.log" | head -n 1)
            [[ -n $port ]] && break
            sleep 0.05
        done
        [[ -n $port ]] || die "the web server did not start"
        taskset -c "$CPU" find / -xdev >/dev/null 2>&1 &
        local find_pid=$!
        for ((i = 0; i < REQUESTS; i++)); do
            taskset -c "$CPU" curl -s -o /dev/null "http://127.0.0.1:$port/blob" || true
        done
        kill "$find_pid" 2>/dev/null || true
        wait "$find_pid" 2>/dev/null || true
        kill "$web_pid" 2>/dev/null || true
        wait "$web_pid" 2>/dev/null || true
        web_pid=""
        ;;
    esac
}

run_mode() {
    local mode=$1 classes events
    if [[ $mode == getpid ]]; then
        classes="syscalls = true\nsched = false\nprocess = false\nblock = false\nirq = false"
        events="raw_syscalls"
    else
        classes="syscalls = true\nsched = true\nprocess = true\nblock = true\nirq = true"
        events="raw_syscalls sched/sched_switch sched/sched_wakeup sched/sched_wakeup_new
            sched/sched_process_fork sched/sched_process_exec sched/sched_process_exit
            block/block_rq_issue block/block_rq_complete irq/irq_handler_entry
            irq/irq_handler_exit irq/softirq_entry irq/softirq_exit"
    fi
    printf '[recorder]\nsnapshot_dirs = ["%s"]\n[events]\n%b\n' "$tmp" "$classes" >"$tmp/flightrec.toml"
    mkdir "$INSTANCE"
    echo "$BUFFER_KB" >"$INSTANCE/buffer_size_kb"
    echo 1 >"$INSTANCE/options/overwrite"
    local e
    for e in $events; do echo 1 >"$INSTANCE/events/$e/enable"; done
    flightrec_on "$tmp/flightrec.toml" "$RING_SIZE"
    echo 1 >"$INSTANCE/tracing_on"
    load "$mode"
    echo 0 >"$INSTANCE/tracing_on"
    local snap
    snap=$("$bin" snapshot record --socket "$SOCKET" -o "$tmp" 2>"$tmp/snap.err") ||
        die "flightrec snapshot record failed: $(cat "$tmp/snap.err")"
    local mem_f kept_f kept_t
    mem_f=$(maps_memlock "$daemon_pid")
    kept_t=$(awk '/^entries:/ { print $2 }' "$INSTANCE/per_cpu/cpu$CPU/stats")
    # `dump --summary` prints a line "cpu N    K kept, O overwritten, L lost" per CPU.
    kept_f=$("$bin" dump --summary "$snap" | awk -v c="$CPU" '$1 == "cpu" && $2 == c && $4 == "kept," { print $3; exit }')
    [[ -n $kept_f && $kept_f -gt 0 ]] || die "could not read the records kept on CPU $CPU from $snap"
    if [[ -n ${KEEP_SUMMARY:-} ]]; then
        "$bin" dump --summary "$snap" >"$KEEP_SUMMARY.$mode"
        cp "$snap" "$KEEP_SUMMARY.$mode.frs"
    fi
    stop_daemon
    teardown_flightrec
    remove_instance
    awk -v m="$mode" -v kf="$kept_f" -v mf="$mem_f" -v n="$ncpu" -v kt="$kept_t" -v bk="$BUFFER_KB" 'BEGIN {
        per_f = kf / (mf / n / 1048576); per_t = kt / (bk / 1024)
        printf "%-7s flightrec %9d events in %6.2f MiB per CPU (%.2f MiB of maps on %d CPUs): %7.0f per MiB (%.1f B/event)\n",
            m, kf, mf / n / 1048576, mf / 1048576, n, per_f, mf / n / kf
        printf "%-7s ftrace    %9d events in %6.2f MiB per CPU: %7.0f per MiB (%.1f B/event)\n",
            m, kt, bk / 1024, per_t, bk * 1024 / kt
        printf "%-7s ratio flightrec/ftrace events per MiB: %.2f (target >= %s)\n",
            m, per_f / per_t, m == "getpid" ? "2.0" : "1.5"
    }'
}

echo "density: $(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $ncpu CPUs, load on CPU $CPU"
if [[ $MODE == getpid || $MODE == both ]]; then run_mode getpid; fi
if [[ $MODE == mixed || $MODE == both ]]; then run_mode mixed; fi
