#!/usr/bin/env bash
# Per-syscall overhead of flightrec next to the kernel's own ftrace ring, in one run.
#
#   bash bench/syscall_overhead.sh            (as root, from anywhere)
#
# A getpid loop pinned to one CPU is timed in five configurations, interleaved round by round
# so slow drift of the VM hits all of them alike:
#   baseline   nothing attached
#   flightrec  `flightrec record` with only the syscalls class (raw_syscalls enter + exit),
#              8 MiB rings; started, measured, stopped and torn down in every round
#   ftrace     a dedicated tracefs instance recording raw_syscalls, 8 MiB per CPU, overwrite on
#   empty      floor 1: the same daemon and attach points, programs that return at once
#              (`flightrec record --bench-floor empty`)
#   clock      floor 2: programs that read the clock once per event and return
#              (`--bench-floor clock`): the least a timestamped recorder can cost
# and the median ns/call of each, the overhead over baseline, and the ratios of flightrec's
# overhead to ftrace's and to the clock floor are printed. Nothing stays attached afterwards,
# also on error or Ctrl-C.
#
# Environment: CALLS (per repetition, default 2000000), REPS (rounds, default 7), CPU (the CPU
# the loop runs on, default 1; everything else this script starts runs on another CPU),
# FLIGHTREC (a flightrec binary to measure instead of building target/release/flightrec).
set -euo pipefail

CALLS=${CALLS:-2000000}
REPS=${REPS:-7}
CPU=${CPU:-1}
RING_SIZE=8MiB
BUFFER_KB=8192

PIN_DIR=/sys/fs/bpf/flightrec-bench
SOCKET=/tmp/flightrec-bench.sock

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
BENCH=syscall_overhead
# shellcheck source=bench/lib.sh
source "$script_dir/lib.sh"
INSTANCE=$TRACEFS/instances/flightrec-bench

# ---------------------------------------------------------------------------------------------
# Preconditions.

bench_preconditions "CALLS REPS CPU" "gcc taskset mountpoint timeout awk sort"
((CALLS > 0 && REPS > 0)) || die "CALLS and REPS must be positive"

# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit path; each step tolerates "already gone".

tmp=""
bench_traps

# ---------------------------------------------------------------------------------------------
# Build flightrec (release) unless the binary is newer than everything it is built from.

bench_build

tmp=$(mktemp -d /tmp/flightrec-bench.XXXXXX)
gcc -O2 -Wall -Wextra -o "$tmp/getpid_loop" "$script_dir/getpid_loop.c" || die "compiling getpid_loop.c failed"
cat >"$tmp/flightrec.toml" <<'EOF'
[events]
syscalls = true
sched = false
process = false
block = false
irq = false
EOF

# Everything this script runs from now on (daemon, status calls, tracefs writes) stays off the
# measured CPU; getpid_loop moves itself there.
taskset -pc "$house_cpu" $$ >/dev/null || die "cannot pin the script to CPU $house_cpu"

# ---------------------------------------------------------------------------------------------
# Stale state from an interrupted run, and other tracers that would skew every figure.

if "$bin" status --socket "$SOCKET" >/dev/null 2>&1; then
    die "a flightrec daemon is answering on $SOCKET; stop it first (then: $bin teardown --pin-dir $PIN_DIR)"
fi
if [[ -e $PIN_DIR || -e $SOCKET ]]; then
    note "removing stale $PIN_DIR / $SOCKET from an earlier run"
    teardown_flightrec
fi

bench_tracefs
if [[ -d $INSTANCE ]]; then
    note "removing stale ftrace instance $INSTANCE"
    remove_instance
    [[ -d $INSTANCE ]] && die "stale $INSTANCE is busy"
fi

others=$(find /sys/fs/bpf -mindepth 2 -maxdepth 2 -name 'link_sys_enter' \
    ! -path "$PIN_DIR/*" 2>/dev/null || true)
if [[ -n $others ]]; then
    note "WARNING: other flightrec pins record syscalls and will inflate every figure:"
    note "  $others"
fi
if [[ -s $TRACEFS/set_event ]] && [[ $(cat "$TRACEFS/tracing_on") == 1 ]]; then
    note "WARNING: the top-level ftrace instance has events enabled: $(tr '\n' ' ' <"$TRACEFS/set_event")"
fi

# ---------------------------------------------------------------------------------------------
# The configurations.

measure() {
    "$tmp/getpid_loop" "$CPU" "$CALLS" 1
}

flightrec_off() {
    # Proof that the measured calls were recorded (floors: that nothing was): records held in
    # the measured CPU's ring.
    local held
    held=$("$bin" status --socket "$SOCKET" | awk -v c="$CPU" '
        $1 == "cpu" { h = $0; gsub(/at rate/, "at_rate", h); n = split(h, f, " ")
                       for (i = 1; i <= n; i++) if (f[i] == "held") col = i }
        col && $1 == c { print $col }') ||
        die "flightrec status failed after the measurement"
    if [[ ${1:-record} == record ]]; then
        [[ ${held:-0} -gt 0 ]] || die "flightrec recorded nothing on CPU $CPU; the figure is void"
    else
        [[ ${held:-0} -eq 0 ]] || die "the $1 floor recorded $held events on CPU $CPU; the figure is void"
    fi
    stop_daemon
    "$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 || die "flightrec teardown failed"
    [[ ! -e $PIN_DIR ]] || die "$PIN_DIR still exists after teardown"
}

ftrace_setup() {
    mkdir "$INSTANCE"
    echo "$BUFFER_KB" >"$INSTANCE/buffer_size_kb"
    echo 1 >"$INSTANCE/options/overwrite"
    echo 0 >"$INSTANCE/events/raw_syscalls/enable"
    echo 1 >"$INSTANCE/tracing_on"
}

ftrace_on() {
    echo 1 >"$INSTANCE/events/raw_syscalls/enable"
}

ftrace_off() {
    echo 0 >"$INSTANCE/events/raw_syscalls/enable"
    local n
    n=$(awk '/^(entries|overrun):/ { s += $2 } END { print s + 0 }' \
        "$INSTANCE/per_cpu/cpu$CPU/stats")
    ((n > 0)) || die "ftrace recorded nothing on CPU $CPU; the figure is void"
    echo >"$INSTANCE/trace" # empty the buffer for the next round
}

ftrace_setup

declare -a base=() frec=() ftr=() empty=() clock=()
run_one() {
    case $1 in
    baseline) base+=("$(measure)") ;;
    flightrec)
        flightrec_on "$tmp/flightrec.toml" "$RING_SIZE"
        frec+=("$(measure)")
        flightrec_off
        ;;
    ftrace)
        ftrace_on
        ftr+=("$(measure)")
        ftrace_off
        ;;
    empty | clock)
        flightrec_on "$tmp/flightrec.toml" "$RING_SIZE" --bench-floor "$1"
        if [[ $1 == empty ]]; then empty+=("$(measure)"); else clock+=("$(measure)"); fi
        flightrec_off "$1"
        ;;
    esac
}

configs=(baseline flightrec ftrace empty clock)
start_s=$SECONDS
echo "syscall_overhead: $(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $ncpu CPUs," \
    "loop on CPU $CPU, $REPS rounds x $CALLS getpid calls per configuration"
for ((r = 0; r < REPS; r++)); do
    # Each round starts one configuration later.
    for ((k = 0; k < ${#configs[@]}; k++)); do
        run_one "${configs[(r + k) % ${#configs[@]}]}"
    done
    printf 'round %d/%d: baseline %s  flightrec %s  ftrace %s  empty %s  clock %s ns/call\n' \
        $((r + 1)) "$REPS" "${base[r]}" "${frec[r]}" "${ftr[r]}" "${empty[r]}" "${clock[r]}"
done

# ---------------------------------------------------------------------------------------------
# Report.

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minimum() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { printf "%.1f", $1 }'; }

m_base=$(median "${base[@]}")
m_frec=$(median "${frec[@]}")
m_ftr=$(median "${ftr[@]}")
m_empty=$(median "${empty[@]}")
m_clock=$(median "${clock[@]}")
over() { awk -v a="$1" -v b="$m_base" 'BEGIN { printf "%.1f", a - b }'; }
o_frec=$(over "$m_frec")
o_ftr=$(over "$m_ftr")
o_empty=$(over "$m_empty")
o_clock=$(over "$m_clock")

echo
printf '%-12s %14s %10s %16s\n' configuration "ns/call (med)" "min" "overhead (ns)"
printf '%-12s %14s %10s %16s\n' baseline "$m_base" "$(minimum "${base[@]}")" "-"
printf '%-12s %14s %10s %16s\n' flightrec "$m_frec" "$(minimum "${frec[@]}")" "$o_frec"
printf '%-12s %14s %10s %16s\n' ftrace "$m_ftr" "$(minimum "${ftr[@]}")" "$o_ftr"
printf '%-12s %14s %10s %16s\n' "floor empty" "$m_empty" "$(minimum "${empty[@]}")" "$o_empty"
printf '%-12s %14s %10s %16s\n' "floor clock" "$m_clock" "$(minimum "${clock[@]}")" "$o_clock"
echo "($REPS rounds of $CALLS calls, medians; measuring took $((SECONDS - start_s)) s)"
awk -v f="$o_frec" -v t="$o_ftr" 'BEGIN {
    if (t > 0) printf "ratio flightrec/ftrace overhead: %.2f (target <= 0.5)\n", f / t
    else print "ratio flightrec/ftrace overhead: n/a (ftrace overhead not positive) (target <= 0.5)"
}'
awk -v f="$o_frec" -v c="$o_clock" -v e="$o_empty" 'BEGIN {
    if (c > 0) printf "ratio flightrec/clock floor overhead: %.2f (target <= 1.1); above the clock floor: %.1f ns/call\n", f / c, f - c
    else print "ratio flightrec/clock floor overhead: n/a (clock floor overhead not positive)"
    if (e > 0) printf "ratio flightrec/empty floor overhead: %.2f (target <= 1.3)\n", f / e
}'
