#!/usr/bin/env bash
# The collector's PostgreSQL catalog under many snapshots: starts a throwaway PostgreSQL 15
# cluster (Debian's binaries, as the postgres user when run as root) in a temporary directory,
# fills it with FLIGHTREC_BENCH_PG_ROWS generated entries (default 1000000; the issue asks for
# 10000000, which takes a while) and prints p50/p99 per 50-entry page of each browse filter.
# Usage: FLIGHTREC_BENCH_PG_ROWS=10000000 bench/collector_pg.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/pg_cluster.sh
trap pg_stop EXIT
pg_start shared_buffers=512MB max_wal_size=4GB
pg_createdb bench
export FLIGHTREC_BENCH_PG_URL="postgres://flightrec@127.0.0.1:$PG_PORT/bench"
cargo bench --quiet -p flightrec-collector --bench collector -- catalog-pg
