#!/usr/bin/env bash
# Ingest through two collector replicas behind HAProxy against one replica, same run: starts a
# throwaway PostgreSQL 15 cluster (bench/pg_cluster.sh), a single-node Garage when garage is
# installed (else local archive directories, one shared by the two replicas), one replica on
# database `one` and two replicas on database `two`, and HAProxy on loopback with a frontend
# for each (the same balancer settings as the reference deployment in docs/collector.md).
# Then the bench uploads the same fresh snapshots through both frontends, a round at a time,
# and prints MB/s for each and the ratio. Everything listens on 127.0.0.1 and is stopped on
# exit. Knobs: FLIGHTREC_BENCH_ROUNDS (3), FLIGHTREC_BENCH_FILES (16 per round),
# FLIGHTREC_BENCH_UPLOADERS (4 at a time), FLIGHTREC_BENCH_RECORDS (90000 per CPU, ~8 MB),
# BALANCE (the pair's HAProxy balance algorithm, leastconn).
# Usage: bench/collector_replicas.sh   (as root or not; needs haproxy and PostgreSQL 15)
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/pg_cluster.sh
HAPROXY=${HAPROXY:-/usr/sbin/haproxy}
BALANCE=${BALANCE:-leastconn} # the pair's balance algorithm
[ -x "$HAPROXY" ] || { echo "haproxy is not installed (Debian: haproxy)" >&2; exit 1; }
GARAGE=$(command -v garage || { [ -x "$HOME/.cargo/bin/garage" ] && echo "$HOME/.cargo/bin/garage"; } || true)

cargo build --quiet --release -p flightrec-collector --bin flightrec-collector
COLLECTOR=target/release/flightrec-collector

work=$(mktemp -d /tmp/flightrec-replicas.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    pg_stop
    rm -rf "$work"
}
trap cleanup EXIT

pg_start
pg_createdb one
pg_createdb two

# archive_toml NAME: the [storage] archive settings of the deployment NAME (one or two).
if [ -n "$GARAGE" ]; then
    rpc=$(free_port) s3=$(free_port)
    cat >"$work/garage.toml" <<EOT
metadata_dir = "$work/garage/meta"
data_dir = "$work/garage/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:$rpc"
rpc_public_addr = "127.0.0.1:$rpc"
rpc_secret = "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')"
[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$s3"
root_domain = ".s3.garage.localhost"
EOT
    g() { "$GARAGE" -c "$work/garage.toml" "$@"; }
    "$GARAGE" -c "$work/garage.toml" server >"$work/garage.log" 2>&1 &
    garage_pid=$!
    pids+=("$garage_pid")
    node=
    for _ in $(seq 100); do
        node=$(g status 2>/dev/null | awk '/^ID/ {getline; print $1; exit}') || true
        [ -n "$node" ] && break
        sleep 0.1
    done
    [ -n "$node" ] || { echo "garage did not start; see $work/garage.log" >&2; exit 1; }
    g layout assign -z dc1 -c 1G "$node" >/dev/null
    g layout apply --version 1 >/dev/null
    key=$(g key create flightrec-bench)
    key_id=$(sed -n 's/^Key ID: *//p' <<<"$key")
    secret=$(sed -n 's/^Secret key: *//p' <<<"$key")
    for b in one two; do
        g bucket create "$b" >/dev/null
        g bucket allow --read --write --owner "$b" --key flightrec-bench >/dev/null
    done
    archive_toml() {
        printf 'archive = "s3"\n[storage.s3]\nendpoint = "http://127.0.0.1:%s"\nregion = "garage"\nbucket = "%s"\naccess_key_id = "%s"\nsecret_access_key = "%s"\nallow_http = true\n' \
            "$s3" "$1" "$key_id" "$secret"
    }
    echo "archive: Garage at 127.0.0.1:$s3, a bucket per deployment"
else
    archive_toml() { :; }
    echo "archive: garage is not installed: local directories, one shared by the two replicas"
fi

# replica NAME DB: starts a collector; sets ADDR to its address and PID to its process.
replica() {
    local port data
    port=$(free_port)
    data="$work/$1"
    mkdir -p "$data"
    if [ -z "$GARAGE" ]; then
        mkdir -p "$work/archive-$2"
        ln -s "$work/archive-$2" "$data/archive"
    fi
    {
        printf '[server]\nlisten = "127.0.0.1:%s"\n[storage]\ndata_dir = "%s"\n' "$port" "$data"
        archive_toml "$2"
        printf '[catalog]\nurl = "postgres://flightrec@127.0.0.1:%s/%s"\n[auth]\nopen = true\n' "$PG_PORT" "$2"
    } >"$work/$1.toml"
    RUST_LOG=warn "$COLLECTOR" serve --config "$work/$1.toml" >/dev/null 2>"$work/$1.log" &
    PID=$!
    pids+=("$PID")
    ADDR="127.0.0.1:$port"
}

wait_up() {
    for _ in $(seq 400); do
        curl -fsS -o /dev/null "http://$1/healthz" 2>/dev/null && return 0
        sleep 0.025
    done
    echo "$1 did not come up; logs in $work" >&2
    exit 1
}

replica a one
a=$ADDR a_pid=$PID
replica b two
b=$ADDR b_pid=$PID
replica c two
c=$ADDR c_pid=$PID
for r in "$a" "$b" "$c"; do wait_up "$r"; done

one_port=$(free_port) two_port=$(free_port)
cat >"$work/haproxy.cfg" <<EOT
global
    maxconn 4096
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    option http-no-delay
    option redispatch
    retries 3
    option httpchk GET /healthz
    default-server inter 1s fall 2 rise 2
frontend one
    bind 127.0.0.1:$one_port
    default_backend one
frontend two
    bind 127.0.0.1:$two_port
    default_backend two
backend one
    balance leastconn
    server a $a check
backend two
    balance $BALANCE
    server b $b check
    server c $c check
EOT
"$HAPROXY" -f "$work/haproxy.cfg" -db >/dev/null 2>"$work/haproxy.log" &
haproxy_pid=$!
pids+=("$haproxy_pid")
wait_up "127.0.0.1:$one_port"
wait_up "127.0.0.1:$two_port"

echo "load average before the runs: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
export FLIGHTREC_BENCH_ONE="http://127.0.0.1:$one_port" FLIGHTREC_BENCH_TWO="http://127.0.0.1:$two_port"
# cpu_s PID...: CPU seconds the processes used, their waited-for children included.
cpu_s() {
    local p t=0
    for p in "$@"; do
        t=$((t + $(awk '{print $14 + $15 + $16 + $17}' "/proc/$p/stat" 2>/dev/null || echo 0)))
    done
    echo "scale=1; $t / $(getconf CLK_TCK)" | bc
}
postgres_pids() { local pm; pm=$(head -1 "$PG_DIR/data/postmaster.pid"); echo "$pm" $(ps -o pid= --ppid "$pm"); }
cargo bench --quiet -p flightrec-collector --bench collector -- replicas
echo "CPU seconds over the whole run (both deployments' runs, snapshot generation in the bench" \
    "process not counted): replica alone $(cpu_s "$a_pid"), pair $(cpu_s "$b_pid") + $(cpu_s "$c_pid")," \
    "PostgreSQL $(cpu_s $(postgres_pids)), haproxy $(cpu_s "$haproxy_pid")${GARAGE:+, garage $(cpu_s "$garage_pid")}"
# Both replicas of the pair took uploads: each one's own count.
for r in "$b" "$c"; do
    n=$(curl -fsS "http://$r/metrics" | awk '/^collector_uploads_completed_total/ {print $2}')
    echo "replicas: $r completed $n uploads of the two-replica runs"
done
