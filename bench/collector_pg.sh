#!/usr/bin/env bash
# The collector's PostgreSQL catalog under many snapshots: starts a throwaway PostgreSQL 15
# cluster (Debian's binaries, as the postgres user when run as root) in a temporary directory,
# fills it with FLIGHTREC_BENCH_PG_ROWS generated entries (default 1000000; the issue asks for
# 10000000, which takes a while) and prints p50/p99 per 50-entry page of each browse filter.
# Usage: FLIGHTREC_BENCH_PG_ROWS=10000000 bench/collector_pg.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${FLIGHTREC_PG_BIN:-/usr/lib/postgresql/15/bin}
dir=$(mktemp -d /tmp/flightrec-pgbench.XXXXXX)
run=()
if [ "$(id -u)" = 0 ]; then
    id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
    chown postgres: "$dir"
    run=(runuser -u postgres --)
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() { (cd "$dir" && "${run[@]}" "$BIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1) || true; rm -rf "$dir"; }
trap cleanup EXIT
(cd "$dir" && "${run[@]}" "$BIN/initdb" -D "$dir/data" -U flightrec --auth=trust -E UTF8 --no-instructions >/dev/null)
(cd "$dir" && "${run[@]}" "$BIN/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c shared_buffers=512MB -c max_wal_size=4GB" start >/dev/null)
"${run[@]}" "$BIN/psql" -h 127.0.0.1 -p "$port" -U flightrec -d postgres -qc "CREATE DATABASE bench" 2>/dev/null ||
    (cd "$dir" && "${run[@]}" "$BIN/createdb" -h 127.0.0.1 -p "$port" -U flightrec bench)
export FLIGHTREC_BENCH_PG_URL="postgres://flightrec@127.0.0.1:$port/bench"
cargo bench --quiet -p flightrec-collector --bench collector -- catalog-pg
