# Shared by the bench scripts that run a flightrec daemon: sourced, never run. The caller sets
# BENCH (its name, for messages) and script_dir before sourcing, then PIN_DIR, SOCKET, tmp and
# house_cpu, and calls `bench_build` before starting anything. This sets root (the workspace),
# bin (FLIGHTREC, or target/release/flightrec), TRACEFS and SYSCALLS_ONLY.

root=$(cd -- "$script_dir/.." && pwd)
bin=${FLIGHTREC:-$root/target/release/flightrec}
TRACEFS=/sys/kernel/tracing
mounted_tracefs=0

die() {
    echo "$BENCH: $*" >&2
    exit 1
}
note() { echo "$BENCH: $*" >&2; }

daemon_pid=""

# Stops the daemon started by `flightrec_on`, if any.
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

# Detaches the programs and removes the pins (a stopped daemon leaves them recording).
teardown_flightrec() {
    if [[ -e $PIN_DIR ]]; then
        "$bin" teardown --pin-dir "$PIN_DIR" >/dev/null 2>&1 ||
            note "flightrec teardown --pin-dir $PIN_DIR failed"
    fi
    [[ -e $PIN_DIR ]] && note "WARNING: $PIN_DIR still exists"
    rm -f -- "$SOCKET"
}

# Builds target/release/flightrec unless FLIGHTREC names a binary or it is newer than its
# sources.
bench_build() {
    if [[ -n ${FLIGHTREC:-} ]]; then return 0; fi
    if [[ -x $bin ]] && [[ -z $(find "$root/Cargo.toml" "$root/Cargo.lock" "$root/rust-toolchain.toml" \
        "$root/recorder" "$root/schemas" -type f -newer "$bin" -print -quit 2>/dev/null) ]]; then
        return 0
    fi
    # cargo decides what really changed (it leaves the binary alone when nothing did).
    note "building flightrec (cargo build --release -p flightrec)"
    (cd -- "$root" && cargo build --release -p flightrec) || die "cargo build failed"
}

# Starts `flightrec record --config CONFIG --ring-size SIZE [ARGS...]` on the house CPU and
# waits until it answers on its socket.
flightrec_on() {
    local config=$1 size=$2
    shift 2
    taskset -c "$house_cpu" "$bin" record --config "$config" --pin-dir "$PIN_DIR" \
        --socket "$SOCKET" --ring-size "$size" "$@" >>"$tmp/daemon.log" 2>&1 &
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

# Compiles bench/getpid_loop.c (the workload of the syscall scripts) into $tmp/getpid_loop.
bench_getpid_loop() {
    gcc -O2 -Wall -Wextra -o "$tmp/getpid_loop" "$script_dir/getpid_loop.c" ||
        die "compiling getpid_loop.c failed"
}

# The [events] table of a configuration that records the syscalls class alone.
SYSCALLS_ONLY='[events]
syscalls = true
sched = false
process = false
block = false
irq = false'

# Mounts tracefs on $TRACEFS unless it is (cleanup unmounts it when mounted_tracefs=1).
bench_tracefs() {
    if ! mountpoint -q "$TRACEFS"; then
        mount -t tracefs nodev "$TRACEFS" || die "cannot mount tracefs on $TRACEFS"
        mounted_tracefs=1
    fi
}

# Refuses to run unless root, each variable named in $1 (space-separated) is a non-negative
# integer, and each tool named in $2 is in PATH. Sets ncpu, and house_cpu (where the script
# and the daemon run) off $CPU when CPU is set.
bench_preconditions() {
    [[ $EUID -eq 0 ]] || die "must run as root (it loads eBPF programs): sudo bash bench/$BENCH.sh"
    local v tool
    for v in $1; do
        [[ ${!v} =~ ^[0-9]+$ ]] || die "$v must be a non-negative integer, got '${!v}'"
    done
    for tool in $2; do
        command -v "$tool" >/dev/null || die "needs $tool in PATH"
    done
    ncpu=$(nproc --all)
    if [[ -n ${CPU:-} ]]; then
        ((ncpu >= 2)) || die "needs at least 2 CPUs (the load gets one, the daemon another)"
        ((CPU < ncpu)) || die "CPU=$CPU does not exist (this machine has $ncpu)"
        if ((CPU == 0)); then house_cpu=1; else house_cpu=0; fi
    fi
}

# Removes the ftrace instance $INSTANCE, if the script made one.
remove_instance() {
    [[ -n ${INSTANCE:-} && -d $INSTANCE ]] || return 0
    echo 0 >"$INSTANCE/tracing_on" 2>/dev/null || true
    echo 0 >"$INSTANCE/events/enable" 2>/dev/null || true
    rmdir "$INSTANCE" 2>/dev/null || note "WARNING: could not remove $INSTANCE (is its trace_pipe open?)"
}

# On every exit path (installed by `bench_traps`): the script's own `bench_cleanup_extra` if it
# has one, then the daemon, the pins, the ftrace instance, tracefs and the temp dir; each step
# tolerates "already gone".
bench_cleanup() {
    local rc=$?
    set +e
    trap - EXIT INT TERM
    if declare -F bench_cleanup_extra >/dev/null; then bench_cleanup_extra; fi
    stop_daemon
    teardown_flightrec
    remove_instance
    if ((mounted_tracefs)); then umount "$TRACEFS" 2>/dev/null; fi
    [[ -n ${tmp:-} ]] && rm -rf -- "$tmp"
    exit "$rc"
}

bench_traps() {
    trap bench_cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
