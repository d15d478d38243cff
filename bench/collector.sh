#!/usr/bin/env bash
# Collector benchmarks: ingest throughput on loopback through the recorder's own uploader, and
# catalog list/filter latency with 100k entries. Each line prints its DESIGN.md target.
# No root needed. Usage: bench/collector.sh [ingest|catalog]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo bench --quiet -p flightrec-collector --bench collector -- "$@"
