//! Privileged end-to-end tests of `flightrec export ctf` on real snapshots.
