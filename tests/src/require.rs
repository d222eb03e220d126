//! `DCS_TEST_REQUIRE`: which backends must run, so a green run never means "all skipped".
//!
//! `DCS_TEST_REQUIRE=memory,etcd,zookeeper` turns "this server could not be started" into a
//! test failure for the listed backends. Without it, a test whose server is missing prints
//! why it skipped and passes.

use std::fmt::Display;

/// The environment variable that lists required backends, comma-separated.
pub const REQUIRE_VAR: &str = "DCS_TEST_REQUIRE";

/// Whether `DCS_TEST_REQUIRE` lists `backend` (or `all`).
#[must_use]
pub fn is_required(backend: &str) -> bool {
    std::env::var(REQUIRE_VAR).is_ok_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|item| item == backend || item == "all")
    })
}

/// Reports that `backend` cannot run: a panic (test failure) when it is required, else a
/// loud line on stderr. Callers return right after it.
pub fn skip_or_fail(backend: &str, why: impl Display) {
    assert!(
        !is_required(backend),
        "{backend} is listed in {REQUIRE_VAR} but cannot run: {why}"
    );
    eprintln!("SKIPPED {backend}: {why} (set {REQUIRE_VAR}={backend} to make this a failure)");
}
