//! Privileged end-to-end tests of `flightrec export perfetto` on real snapshots.
