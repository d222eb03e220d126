//! Real-server fixtures, the `Dcs` conformance suite, emulators and the chaos harness.

pub mod conformance;
pub mod fixtures;
pub mod require;
