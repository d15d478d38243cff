//! Privileged end-to-end tests of `flightrec export tracedat` on real snapshots.
