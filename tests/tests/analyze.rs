//! Privileged end-to-end tests of `flightrec analyze` on real snapshots.
