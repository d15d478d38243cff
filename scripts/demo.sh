#!/usr/bin/env bash
# The main job on one machine, no external services: build flightrec and the collector, start
# a collector with its embedded defaults (loopback port 7480, data in
# /var/lib/flightrec-collector) unless one already answers there, start the recorder daemon
# uploading to it, make some activity, take a snapshot, print a summary of it, wait until the
# collector has archived it and print the URL where it can be browsed. The recorder is stopped
# and detached at the end; the collector keeps running so the URL stays valid.
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
collector_bin=target/release/flightrec-collector
collector=127.0.0.1:7480

echo "== building flightrec and flightrec-collector (release)"
cargo build --release --quiet -p flightrec -p flightrec-collector

cleanup() {
    if [ -n "${daemon:-}" ] && kill -0 "$daemon" 2>/dev/null; then
        kill -TERM "$daemon"
        wait "$daemon" || true
    fi
    "$bin" teardown --pin-dir "$pins" || true
    rm -rf "$run"
}
trap cleanup EXIT

# GET PATH on the collector with bash's /dev/tcp (no curl needed); prints the response. Sends
# the collector's admin token once it is known.
token=""
collector_get() {
    exec 3<>"/dev/tcp/${collector%:*}/${collector#*:}" || return 1
    if [ -n "$token" ]; then
        printf 'GET %s HTTP/1.0\r\nHost: %s\r\nAuthorization: Bearer %s\r\n\r\n' "$1" "$collector" "$token" >&3
    else
        printf 'GET %s HTTP/1.0\r\nHost: %s\r\n\r\n' "$1" "$collector" >&3
    fi
    cat <&3
    exec 3<&-
}

collector_up() {
    collector_get /healthz 2>/dev/null | grep -q '^ok'
}

echo "== starting the collector (embedded defaults)"
if collector_up; then
    echo "a collector already answers on $collector: using it"
else
    nohup "$collector_bin" serve >/var/log/flightrec-collector.log 2>&1 &
    collector_pid=$!
    for _ in $(seq 1 100); do
        collector_up && break
        sleep 0.1
    done
    if ! collector_up; then
        echo "demo: the collector did not start (see /var/log/flightrec-collector.log)" >&2
        exit 1
    fi
    echo "collector pid $collector_pid, log /var/log/flightrec-collector.log"
fi

# On its defaults the collector makes an admin token on first start; the demo's recorder
# uploads with it (root reads it).
token_file=/var/lib/flightrec-collector/admin.token
if [ -r "$token_file" ]; then
    token=$(head -n 1 "$token_file")
fi

echo "== starting the recorder (uploading to http://$collector)"
# The daemon writes `snapshot record -o DIR` only into directories its config names.
mkdir -p -- "$out"
out=$(cd -- "$out" && pwd)
printf '[recorder]\nspool_dir = "%s"\nsnapshot_dirs = ["%s"]\n[collector]\nurl = "http://%s"\ntoken = "%s"\n' \
    "$run/spool" "$out" "$collector" "$token" >"$run/recorder.toml"
"$bin" record -c "$run/recorder.toml" --ring-size 8MiB --pin-dir "$pins" --socket "$sock" &
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

echo "== uploading it to the collector"
# Whatever lands in the spool directory is uploaded, then removed once the collector has
# acknowledged it; a copy is renamed in so the uploader never reads it half-written.
mkdir -p "$run/spool"
cp "$file" "$run/spool/.demo.tmp"
mv "$run/spool/.demo.tmp" "$run/spool/$(basename "$file")"
for _ in $(seq 1 300); do
    [ -e "$run/spool/$(basename "$file")" ] || break
    sleep 0.1
done
"$bin" status --socket "$sock" | grep -E '^upload|^  (uploading|last error)'
if [ -e "$run/spool/$(basename "$file")" ]; then
    echo "demo: the snapshot was not uploaded within 30 s" >&2
    exit 1
fi
# The snapshot id is in the catalog listing: the newest snapshot named demo.
id=$(collector_get '/v1/snapshots?limit=1&reason=demo%20run' |
    grep -o '"snapshot_id":"[0-9a-f]*"' | head -n 1 | cut -d'"' -f4)

echo
echo "Every event: $bin dump $file   (or --json)"
echo "Browse it:   http://$collector/ui/snapshots/$id"
if [ -n "$token" ]; then
    echo "             (log in once at http://$collector/login?token=TOKEN, TOKEN in $token_file)"
fi
if [ -n "${collector_pid:-}" ]; then
    echo "The collector keeps running (pid $collector_pid); stop it with: kill $collector_pid"
fi
