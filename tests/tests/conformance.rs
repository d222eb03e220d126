//! The conformance suite, per backend: `cargo test -p dcs-tests --test conformance -- memory::`.

use dcs_tests::conformance::MemoryBackend;

dcs_tests::conformance_suite!(
    memory,
    setup = MemoryBackend::start(),
    test = [tokio::test(start_paused = true)]
);
