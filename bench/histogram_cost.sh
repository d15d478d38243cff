#!/usr/bin/env bash
# What the in-kernel latency histograms cost per event, in one run: the getpid loop of
# syscall_overhead.sh timed with nothing attached, with `flightrec record` recording syscalls
# (histograms off), with the same plus the syscall latency histogram (/metrics on a loopback
# port), and with an ftrace instance recording raw_syscalls as the anchor, interleaved round by
# round. It checks that the histogram counted every measured call, and prints the median ns per
# call of each and the difference histograms on minus off: the cost per syscall, which is one
# sys_enter and one sys_exit event.
#
#   bash bench/histogram_cost.sh            (as root, from anywhere)
#
# Environment: as syscall_overhead.sh (CALLS, REPS, CPU, FLIGHTREC).
set -euo pipefail
script_dir=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
CONFIGS="baseline flightrec histograms ftrace" exec bash "$script_dir/syscall_overhead.sh"
