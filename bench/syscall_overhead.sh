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
# FLIGHTREC (a flightrec binary to measure instead of building target/release/flightrec),
# CONFIGS (the configurations, in order, default "baseline flightrec ftrace empty clock"; one
# more exists: `histograms`, flightrec as above with /metrics on loopback and the in-kernel
# syscall latency histogram on, which bench/histogram_cost.sh measures).
set -euo pipefail

CALLS=${CALLS:-2000000}
REPS=${REPS:-7}
CPU=${CPU:-1}
read -r -a configs <<<"${CONFIGS:-baseline flightrec ftrace empty clock}"
RING_SIZE=8MiB
BUFFER_KB=8192

PIN_DIR=/sys/fs/bpf/flightrec-bench
SOCKET=/tmp/flightrec-bench.sock
TRACEFS=/sys/kernel/tracing
INSTANCE=$TRACEFS/instances/flightrec-bench

script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
root=$(cd -- "$script_dir/.." && pwd)
bin=${FLIGHTREC:-$root/target/release/flightrec}

die() {
    echo "syscall_overhead: $*" >&2
    exit 1
}
note() { echo "syscall_overhead: $*" >&2; }

# ---------------------------------------------------------------------------------------------
# Preconditions.

if [[ $EUID -ne 0 ]]; then
    die "must run as root (it loads eBPF programs and writes tracefs): sudo bash bench/syscall_overhead.sh"
fi
for v in CALLS REPS CPU; do
    [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
done
((CALLS > 0 && REPS > 0)) || die "CALLS and REPS must be positive"
((${#configs[@]} > 0)) || die "CONFIGS is empty"
for c in "${configs[@]}"; do
    case $c in
    baseline | flightrec | histograms | ftrace | empty | clock) ;;
    *) die "CONFIGS: unknown configuration '$c' (baseline flightrec histograms ftrace empty clock)" ;;
    esac
done
for tool in gcc taskset mountpoint timeout awk sort; do
    command -v "$tool" >/dev/null || die "needs $tool in PATH"
done
ncpu=$(nproc --all)
((ncpu >= 2)) || die "needs at least 2 CPUs (the loop gets one, the daemon another)"
((CPU < ncpu)) || die "CPU=$CPU does not exist (this machine has $ncpu)"
if ((CPU == 0)); then house_cpu=1; else house_cpu=0; fi

# ---------------------------------------------------------------------------------------------
# Cleanup: runs on every exit path; each step tolerates "already gone".

tmp=""
daemon_pid=""
mounted_tracefs=0

stop_daemon() {
    [[ -n $daemon_pid ]] || return 0
    # SIGINT is repeated: a daemon still loading its programs has no handler yet, and as a
    # background job of a script it inherits SIGINT ignored until it installs one.
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$daemon_pid" 2>/dev/null || break
        if ((i % 10 == 0)); then kill -INT "$daemon_pid" 2>/dev/null || true; fi
        sleep 0.05
    done
    if kill -0 "$daemon_pid" 2>/dev/null; then
        note "daemon $daemon_pid ignored SIGINT for 5 s; sending SIGKILL"
        kill -KILL "$daemon_pid" 2>/dev/null || true
    fi
    wait "$daemon_pid" 2>/dev/null || true
    daemon_pid=""
}

teardown_flightrec() {
    if [[ -e $PIN_DIR ]]; then
        "$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 ||
            note "flightrec teardown --pin-dir $PIN_DIR failed"
    fi
    [[ -e $PIN_DIR ]] && note "WARNING: $PIN_DIR still exists"
    rm -f -- "$SOCKET"
}

remove_instance() {
    [[ -d $INSTANCE ]] || return 0
    echo 0 >"$INSTANCE/events/raw_syscalls/enable" 2>/dev/null || true
    echo 0 >"$INSTANCE/tracing_on" 2>/dev/null || true
    rmdir "$INSTANCE" 2>/dev/null || note "WARNING: could not remove $INSTANCE (is its trace_pipe open?)"
}

cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    stop_daemon
    teardown_flightrec
    remove_instance
    if ((mounted_tracefs)); then umount "$TRACEFS" 2>/dev/null; fi
    [[ -n $tmp ]] && rm -rf -- "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------
# Build flightrec (release) unless the binary is newer than everything it is built from.

sources_newer() {
    [[ -n $(find "$root/Cargo.toml" "$root/Cargo.lock" "$root/rust-toolchain.toml" \
        "$root/recorder" "$root/schemas" -type f -newer "$bin" -print -quit 2>/dev/null) ]]
}
if [[ -z ${FLIGHTREC:-} ]] && { [[ ! -x $bin ]] || sources_newer; }; then
    # cargo decides what really changed (it leaves the binary alone when nothing did).
    note "building flightrec (cargo build --release -p flightrec)"
    (cd -- "$root" && cargo build --release -p flightrec) || die "cargo build failed"
fi

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

if ! mountpoint -q "$TRACEFS"; then
    mount -t tracefs nodev "$TRACEFS" || die "cannot mount tracefs on $TRACEFS"
    mounted_tracefs=1
fi
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

flightrec_on() {
    local config=$tmp/flightrec.toml
    if [[ ${1:-} == --histograms ]]; then
        config=$tmp/flightrec-histograms.toml
        shift
    fi
    : >"$tmp/daemon.log"
    taskset -c "$house_cpu" "$bin" record --config "$config" --pin-dir "$PIN_DIR" \
        --socket "$SOCKET" --ring-size "$RING_SIZE" "$@" >>"$tmp/daemon.log" 2>&1 &
    daemon_pid=$!
    local i
    for ((i = 0; i < 300; i++)); do
        if ! kill -0 "$daemon_pid" 2>/dev/null; then
            tail -n 20 "$tmp/daemon.log" >&2
            die "flightrec record exited before answering (log above)"
        fi
        "$bin" status --socket "$SOCKET" >/dev/null 2>&1 && return 0
        sleep 0.05
    done
    tail -n 20 "$tmp/daemon.log" >&2
    die "flightrec record did not answer on $SOCKET within 15 s"
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
        flightrec_on
        v=$(measure)
        flightrec_off
        ;;
    histograms)
        flightrec_on --histograms
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
        flightrec_on --bench-floor "$1"
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
    *) echo "$1" ;;
    esac
}

echo
printf '%-12s %14s %10s %16s\n' configuration "ns/call (med)" "min" "overhead (ns)"
for c in baseline flightrec histograms ftrace empty clock; do
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
if has flightrec && has histograms; then
    awk -v h="${med[histograms]}" -v f="${med[flightrec]}" 'BEGIN {
        printf "histograms on minus off: %.1f ns per syscall (one sys_enter and one sys_exit event)\n", h - f
    }'
fi
