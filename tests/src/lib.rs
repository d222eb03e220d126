//! Real-server fixtures, the `Dcs` conformance suite, emulators and the chaos harness.

pub mod chaos;
pub mod checker;
pub mod conformance;
pub mod fixtures;
pub mod history;
pub mod require;
pub mod sim;
