#!/usr/bin/env bash
# What one run of each syscall program costs, from the kernel's own BPF statistics.
#
#   bash bench/program_cost.sh            (as root, from anywhere)
#
# A getpid loop pinned to one CPU runs while `flightrec record` (syscalls class only, 8 MiB
# rings) is attached with `kernel.bpf_stats_enabled=1`; the kernel then times every run of
# every program, and the script prints run_time_ns / run_cnt of `sys_enter` and `sys_exit`.
# Rounds alternate between the recording programs and the clock floor
# (`--bench-floor clock`: programs that read the clock once and return), so that the two are
# compared under the same drift of the machine.
#
# Why beside bench/syscall_overhead.sh: that script times whole getpid calls, in which the
# programs are a third, and its runs differ by about +/-5 ns per call; this one times the
# programs alone and its rounds differ by about +/-2 ns per run. The statistics add two clock
# reads to every run of every program (of the floor as well): the difference between the two
# configurations is what recording costs above the clock read, the absolute figures are not
# those of a machine with the statistics off.
#
# Environment: CALLS (getpid calls per round, default 3000000), REPS (rounds of each
# configuration, default 5), CPU (the loop's CPU, default 1), FLIGHTREC (a flightrec binary to
# measure instead of building target/release/flightrec).
set -euo pipefail

CALLS=${CALLS:-3000000}
REPS=${REPS:-5}
CPU=${CPU:-1}
PIN_DIR=/sys/fs/bpf/flightrec-bench-cost
SOCKET=/tmp/flightrec-bench-cost.sock

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
BENCH=program_cost
source "$script_dir/lib.sh"

bench_preconditions "CALLS REPS CPU" "gcc taskset bpftool awk sort"
((CALLS > 0 && REPS > 0)) || die "CALLS and REPS must be positive"

stats_before=""
bench_cleanup_extra() {
    [[ -n $stats_before ]] && sysctl -q kernel.bpf_stats_enabled="$stats_before"
}
tmp=""
bench_traps
bench_build

tmp=$(mktemp -d /tmp/flightrec-bench.XXXXXX)
bench_getpid_loop
echo "$SYSCALLS_ONLY" >"$tmp/flightrec.toml"
stats_before=$(sysctl -n kernel.bpf_stats_enabled)
teardown_flightrec

# Prints "ENTER EXIT": ns per run of the daemon's sys_enter and sys_exit over one round.
round() {
    : >"$tmp/daemon.log"
    flightrec_on "$tmp/flightrec.toml" 8MiB "$@"
    sysctl -q kernel.bpf_stats_enabled=1
    "$tmp/getpid_loop" "$CPU" "$CALLS" 1 >/dev/null
    # The newest program of each name is this round's (the others' pins are torn down).
    local id out=""
    for p in sys_enter sys_exit; do
        id=$(bpftool prog show name "$p" | awk -F: '/^[0-9]+:/ { id = $1 } END { print id }')
        [[ -n $id ]] || die "no $p program is loaded"
        out+=$(bpftool prog show id "$id" | awk '
            { for (i = 1; i < NF; i++) { if ($i == "run_time_ns") t = $(i + 1); if ($i == "run_cnt") n = $(i + 1) } }
            END { if (n > 0) printf "%.1f ", t / n; else print "none " }')
    done
    sysctl -q kernel.bpf_stats_enabled=0
    stop_daemon
    teardown_flightrec
    echo "$out"
}

note "$(date -u +%FT%TZ), kernel $(uname -r), $REPS rounds x $CALLS getpid calls on CPU $CPU"
declare -a rec_enter rec_exit clk_enter clk_exit
for ((r = 1; r <= REPS; r++)); do
    read -r a b <<<"$(round)"
    read -r c d <<<"$(round --bench-floor clock)"
    [[ $a != none && $c != none ]] || die "a program never ran during round $r; the figure is void"
    rec_enter+=("$a") rec_exit+=("$b") clk_enter+=("$c") clk_exit+=("$d")
    printf 'round %d/%d: recording %s %s  clock floor %s %s ns/run (sys_enter sys_exit)\n' "$r" "$REPS" "$a" "$b" "$c" "$d"
done

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
re=$(median "${rec_enter[@]}") rx=$(median "${rec_exit[@]}")
ce=$(median "${clk_enter[@]}") cx=$(median "${clk_exit[@]}")
echo
printf '%-12s %10s %10s\n' "ns per run" sys_enter sys_exit
printf '%-12s %10s %10s\n' recording "$re" "$rx"
printf '%-12s %10s %10s\n' "clock floor" "$ce" "$cx"
awk -v re="$re" -v rx="$rx" -v ce="$ce" -v cx="$cx" 'BEGIN {
    printf "above the clock floor: sys_enter %.1f, sys_exit %.1f ns per event (medians of the rounds)\n", re - ce, rx - cx
}'
