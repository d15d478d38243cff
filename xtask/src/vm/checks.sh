# The kernel matrix's checks, run by the guest's /init on each kernel and by `cargo xtask
# vm-test` on the host kernel. POSIX sh (busybox or dash). Prints progress, then one last line:
# `PASS <details>` or `FAIL <details>`.
#
# Environment: EXPECT (pass|refuse), FLIGHTREC (the release binary), TESTS (the privileged test
# executable), TEST_NAMES (space-separated, run with --exact), WORKLOAD (the planted workload),
# WORK (a scratch directory on a real block device).

fail() {
    echo "FAIL $*"
    exit 1
}

mkdir -p "$WORK" || fail "cannot create $WORK"
pins=/sys/fs/bpf/flightrec-vm-check
sock="$WORK/control.sock"
snaps="$WORK/snapshots"
config="$WORK/recorder.toml"
# A scratch directory of an earlier run (the host's persists) holds outputs that must not exist.
rm -rf "$snaps" "$WORK/ctf" "$WORK/trace.perfetto-trace" "$WORK/trace.dat"
mkdir -p "$snaps"
"$FLIGHTREC" teardown --pin-dir "$pins" >/dev/null 2>&1
cat >"$config" <<EOF
[recorder]
ring_size = "2MiB"
pin_dir = "$pins"
control_socket = "$sock"
spool_dir = "$snaps"
snapshot_dirs = ["$snaps"]
EOF

if [ "$EXPECT" = refuse ]; then
    # The chosen behaviour where the verifier lacks BPF_ATOMIC with BPF_FETCH: exit 2 with one
    # line naming the feature, the kernel that added it and this kernel, before loading anything.
    "$FLIGHTREC" record --config "$config" >"$WORK/out" 2>"$WORK/err"
    rc=$?
    lines=$(wc -l <"$WORK/err")
    want="flightrec: error: kernel feature missing: the BPF atomic fetch-add and compare-and-exchange instructions (BPF_ATOMIC with BPF_FETCH), which Linux 5.12 added; this kernel is $(uname -r)"
    cat "$WORK/err"
    [ "$rc" = 2 ] || fail "record exited $rc, not 2"
    [ "$lines" = 1 ] || fail "record printed $lines lines, not one"
    [ "$(cat "$WORK/err")" = "$want" ] || fail "record's refusal is not the expected sentence"
    [ ! -e "$pins" ] || fail "record pinned something before refusing"
    echo "PASS refused in one line, exit 2"
    exit 0
fi

# The privileged tests, each asserting its event class's fields against a planted workload.
count=0
for t in $TEST_NAMES; do count=$((count + 1)); done
# shellcheck disable=SC2086 # TEST_NAMES is a list
CI=true "$TESTS" --exact --test-threads=1 $TEST_NAMES >"$WORK/tests.log" 2>&1
rc=$?
cat "$WORK/tests.log"
# A verifier refusal's log stays in the guest: the end of the first one goes to the console.
if [ "$rc" != 0 ]; then
    for log in /tmp/flightrec-verifier-*.log; do
        [ -f "$log" ] || continue
        echo "--- last lines of $log"
        tail -n 30 "$log"
        break
    done
fi
[ "$rc" = 0 ] || fail "privileged tests failed (exit $rc): $(grep -E '^test .* FAILED$' "$WORK/tests.log" | tr '\n' ' ')"
grep -q "test result: ok. $count passed" "$WORK/tests.log" || fail "not all $count privileged tests ran"

# The binary as a user runs it: daemon, snapshot of a planted workload, dump, analyze, exports.
"$FLIGHTREC" record --config "$config" 2>"$WORK/daemon.err" &
daemon=$!
up=0
i=0
while [ $i -lt 600 ]; do
    if "$FLIGHTREC" status --socket "$sock" >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 "$daemon" 2>/dev/null || break
    sleep 0.2
    i=$((i + 1))
done
[ $up = 1 ] || fail "the daemon did not come up: $(cat "$WORK/daemon.err")"
"$WORKLOAD" getpgid 1000 &
pid=$!
wait $pid || fail "the workload failed"
path=$("$FLIGHTREC" snapshot record --name vm -o "$snaps" --socket "$sock" | tail -n 1)
[ -f "$path" ] || fail "snapshot record wrote no file"
kill -TERM "$daemon"
wait "$daemon" || fail "the daemon did not stop cleanly: $(cat "$WORK/daemon.err")"
"$FLIGHTREC" teardown --pin-dir "$pins" >/dev/null || fail "teardown failed"

"$FLIGHTREC" dump --json "$path" >"$WORK/dump.json" || fail "dump failed"
calls=$(grep '"name":"syscall_entry_getpgid"' "$WORK/dump.json" | grep -c "\"tid\":$pid,")
[ "$calls" = 1000 ] || fail "the snapshot holds $calls of 1000 planted getpgid calls"
"$FLIGHTREC" analyze "$path" >"$WORK/analyze.txt" || fail "analyze failed"
grep -q getpgid "$WORK/analyze.txt" || fail "analyze does not show the getpgid calls"
"$FLIGHTREC" analyze --json "$path" >"$WORK/analyze.json" || fail "analyze --json failed"

"$FLIGHTREC" export "$path" --format ctf -o "$WORK/ctf" || fail "export ctf failed"
head -c 200 "$WORK/ctf/kernel/metadata" | grep -q "CTF 1.8" || fail "the CTF export has no CTF 1.8 metadata"
"$FLIGHTREC" export "$path" --format perfetto -o "$WORK/trace.perfetto-trace" ||
    fail "export perfetto failed"
[ -s "$WORK/trace.perfetto-trace" ] || fail "the Perfetto export is empty"
"$FLIGHTREC" export "$path" --format tracedat -o "$WORK/trace.dat" || fail "export tracedat failed"
head -c 10 "$WORK/trace.dat" | grep -q tracing || fail "trace.dat has no tracing magic"

echo "PASS $count/$count privileged tests; record, snapshot record ($calls/1000 getpgid), dump, analyze, export ctf/perfetto/tracedat"
