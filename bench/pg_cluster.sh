# Sourced by the collector benches: a throwaway PostgreSQL 15 cluster (Debian's binaries, as
# the postgres user when run as root) in a temporary directory, on a free loopback port.
# pg_start [extra -c settings...] sets PG_DIR, PG_PORT and PG_RUN; pg_createdb NAME makes a
# database; pg_stop stops the cluster and removes its directory (call it from an EXIT trap).
PG_BIN=${FLIGHTREC_PG_BIN:-/usr/lib/postgresql/15/bin}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_start() {
    PG_DIR=$(mktemp -d /tmp/flightrec-pgbench.XXXXXX)
    PG_RUN=()
    if [ "$(id -u)" = 0 ]; then
        id -u postgres >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin postgres
        chown postgres: "$PG_DIR"
        PG_RUN=(runuser -u postgres --)
    fi
    PG_PORT=$(free_port)
    local opts="-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1" s
    for s in "$@"; do opts="$opts -c $s"; done
    (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U flightrec --auth=trust -E UTF8 --no-instructions >/dev/null)
    (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/log" -w -o "$opts" start >/dev/null)
}

pg_createdb() {
    (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U flightrec "$1")
}

pg_stop() {
    [ -n "${PG_DIR:-}" ] || return 0
    (cd "$PG_DIR" && "${PG_RUN[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1) || true
    rm -rf "$PG_DIR"
}
