#!/usr/bin/env bash
# Per-syscall overhead of flightrec next to the kernel's own ftrace ring, in one run.
#
#   bash bench/syscall_overhead.sh            (as root, from anywhere)
#
# A getpid loop pinned to one CPU is timed in six configurations, interleaved round by round
# so slow drift of the VM hits all of them alike:
#   baseline   nothing attached
#   flightrec  `flightrec record` with only the syscalls class (raw_syscalls enter + exit),
#              8 MiB rings; started, measured, stopped and torn down in every round. No
#              program can then run in interrupt context, so rings are reserved with a plain
#              store (docs/recorder.md, "Reserving without a lock")
#   locked     the same with the irq class on as well: its programs can interrupt ours, so
#              every reservation takes the locked compare-and-swap (the getpid loop itself
#              records only the syscall events, plus the odd timer interrupt)
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
# FLIGHTREC (a flightrec binary to measure instead of building target/release/flightrec),
# CONFIGS (the configurations, in order, default "baseline flightrec locked ftrace empty clock"; one
# more exists: `histograms`, flightrec as above with /metrics on loopback and the in-kernel
# syscall latency histogram on, which bench/histogram_cost.sh measures).
set -euo pipefail

CALLS=${CALLS:-2000000}
REPS=${REPS:-7}
CPU=${CPU:-1}
read -r -a configs <<<"${CONFIGS:-baseline flightrec locked ftrace empty clock}"
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
((${#configs[@]} > 0)) || die "CONFIGS is empty"
for c in "${configs[@]}"; do
    case $c in
    baseline | flightrec | locked | histograms | ftrace | empty | clock) ;;
    *) die "CONFIGS: unknown configuration '$c' (baseline flightrec locked histograms ftrace empty clock)" ;;
    esac
done

# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit path; each step tolerates "already gone".

tmp=""
bench_traps

# ---------------------------------------------------------------------------------------------
# Build flightrec (release) unless the binary is newer than everything it is built from.

bench_build

tmp=$(mktemp -d /tmp/flightrec-bench.XXXXXX)
bench_getpid_loop
echo "$SYSCALLS_ONLY" >"$tmp/flightrec.toml"
# The same with the irq class on: its programs can interrupt ours, so reservations take the lock.
sed 's/^irq = false$/irq = true/' "$tmp/flightrec.toml" >"$tmp/flightrec-locked.toml"
# The same, with /metrics on a loopback port of the kernel's choosing, which turns the syscall
# latency histogram on (the histograms of the other classes need their programs, off here).
cat "$tmp/flightrec.toml" - >"$tmp/flightrec-histograms.toml" <<'EOF'

[metrics]
listen = "127.0.0.1:0"
histograms = ["syscall"]
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

# `flightrec_on` with this script's config and ring size; `--histograms` first: the config
# with the syscall histogram on; `--locked`: the one with the irq class on.
frec_on() {
    local config=$tmp/flightrec.toml
    if [[ ${1:-} == --histograms ]]; then
        config=$tmp/flightrec-histograms.toml
        shift
    elif [[ ${1:-} == --locked ]]; then
        config=$tmp/flightrec-locked.toml
        shift
    fi
    : >"$tmp/daemon.log"
    flightrec_on "$config" "$RING_SIZE" "$@"
}

# Proof that the histogram counted the measured calls: the getpid count on /metrics.
histograms_counted() {
    local addr host port count
    addr=$(sed -n 's|.*metrics on http://\([0-9.:]*\)/metrics.*|\1|p' "$tmp/daemon.log" | tail -n 1)
    [[ -n $addr ]] || die "the daemon did not say where /metrics listens (log: $tmp/daemon.log)"
    host=${addr%:*} port=${addr##*:}
    exec 3<>"/dev/tcp/$host/$port" || die "cannot connect to /metrics on $addr"
    printf 'GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n' "$addr" >&3
    count=$(awk '/^flightrec_syscall_latency_seconds_count\{syscall="getpid"\}/ { print $2 }' <&3)
    exec 3<&-
    [[ ${count:-0} -ge $CALLS ]] ||
        die "the syscall histogram counted ${count:-no} getpid calls, fewer than the $CALLS measured; the figure is void"
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

# ns/call of each round, by configuration, space-separated.
declare -A results=()
run_one() {
    local v
    case $1 in
    baseline) v=$(measure) ;;
    flightrec)
        frec_on
        v=$(measure)
        flightrec_off
        ;;
    locked)
        frec_on --locked
        v=$(measure)
        flightrec_off
        ;;
    histograms)
        frec_on --histograms
        v=$(measure)
        histograms_counted
        flightrec_off
        ;;
    ftrace)
        ftrace_on
        v=$(measure)
        ftrace_off
        ;;
    empty | clock)
        frec_on --bench-floor "$1"
        v=$(measure)
        flightrec_off "$1"
        ;;
    esac
    results[$1]="${results[$1]:-} $v"
}

if [[ " ${configs[*]} " == *" ftrace "* ]]; then ftrace_setup; fi

start_s=$SECONDS
echo "syscall_overhead: $(date -u +%Y-%m-%dT%H:%M:%SZ), kernel $(uname -r), $ncpu CPUs," \
    "loop on CPU $CPU, $REPS rounds x $CALLS getpid calls per configuration"
for ((r = 0; r < REPS; r++)); do
    # Each round starts one configuration later.
    for ((k = 0; k < ${#configs[@]}; k++)); do
        run_one "${configs[(r + k) % ${#configs[@]}]}"
    done
    line="round $((r + 1))/$REPS:"
    for c in "${configs[@]}"; do
        read -r -a vs <<<"${results[$c]}"
        line+="  $c ${vs[r]}"
    done
    echo "$line ns/call"
done

# ---------------------------------------------------------------------------------------------
# Report.

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END {
    if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
minimum() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { printf "%.1f", $1 }'; }

has() { [[ -n ${results[$1]:-} ]]; }
declare -A med=() over=()
for c in "${configs[@]}"; do
    # shellcheck disable=SC2086 # numbers, split on purpose
    med[$c]=$(median ${results[$c]})
done
label() {
    case $1 in
    empty | clock) echo "floor $1" ;;
    histograms) echo "+histograms" ;;
    locked) echo "+irq, locked" ;;
    *) echo "$1" ;;
    esac
}

echo
printf '%-12s %14s %10s %16s\n' configuration "ns/call (med)" "min" "overhead (ns)"
for c in baseline flightrec locked histograms ftrace empty clock; do
    has "$c" || continue
    if has baseline && [[ $c != baseline ]]; then
        over[$c]=$(awk -v a="${med[$c]}" -v b="${med[baseline]}" 'BEGIN { printf "%.1f", a - b }')
    fi
    # shellcheck disable=SC2086 # numbers, split on purpose
    printf '%-12s %14s %10s %16s\n' "$(label "$c")" "${med[$c]}" "$(minimum ${results[$c]})" "${over[$c]:--}"
done
echo "($REPS rounds of $CALLS calls, medians; measuring took $((SECONDS - start_s)) s)"
if has flightrec && has ftrace && has baseline; then
    awk -v f="${over[flightrec]}" -v t="${over[ftrace]}" 'BEGIN {
        if (t > 0) printf "ratio flightrec/ftrace overhead: %.2f (target <= 0.5)\n", f / t
        else print "ratio flightrec/ftrace overhead: n/a (ftrace overhead not positive) (target <= 0.5)"
    }'
fi
if has flightrec && has clock && has empty && has baseline; then
    awk -v f="${over[flightrec]}" -v c="${over[clock]}" -v e="${over[empty]}" 'BEGIN {
        if (c > 0) printf "ratio flightrec/clock floor overhead: %.2f (target <= 1.1); above the clock floor: %.1f ns/call\n", f / c, f - c
        else print "ratio flightrec/clock floor overhead: n/a (clock floor overhead not positive)"
        if (e > 0) printf "ratio flightrec/empty floor overhead: %.2f (target <= 1.3)\n", f / e
    }'
fi
if has flightrec && has locked && has clock && has baseline; then
    awk -v f="${over[flightrec]}" -v l="${over[locked]}" -v c="${over[clock]}" 'BEGIN {
        if (c > 0) printf "ratio locked/clock floor overhead: %.2f (irq class on: reservations take the lock)\n", l / c
        printf "lock cost (locked minus flightrec): %.1f ns per call (two reservations)\n", l - f
    }'
fi
if has flightrec && has histograms; then
    awk -v h="${med[histograms]}" -v f="${med[flightrec]}" 'BEGIN {
        printf "histograms on minus off: %.1f ns per syscall (one sys_enter and one sys_exit event)\n", h - f
    }'
fi
