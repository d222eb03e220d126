//! The conformance suite against real ZooKeeper started by the fixtures:
//! `zookeeper::standalone::<property>` on a standalone server, `zookeeper::ensemble::<property>`
//! on a 3-member ensemble, each sharing one server per binary.
//! `cargo test -p dcs-tests --test conformance_zookeeper -- zookeeper::`.

mod zookeeper {
    use dcs_tests::conformance::ZooKeeperBackend;

    dcs_tests::conformance_suite!(
        standalone,
        setup = ZooKeeperBackend::standalone(),
        test = [tokio::test(flavor = "multi_thread", worker_threads = 2)]
    );

    dcs_tests::conformance_suite!(
        ensemble,
        setup = ZooKeeperBackend::ensemble(),
        test = [tokio::test(flavor = "multi_thread", worker_threads = 2)]
    );
}
