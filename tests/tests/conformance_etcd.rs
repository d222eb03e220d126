//! The conformance suite against real etcd started by the fixtures: `etcd::single::<property>`
//! on a single member, `etcd::cluster::<property>` on a 3-member cluster; the tests running at
//! the same time share one server of each kind (see `EtcdBackend`).
//! `cargo test -p dcs-tests --test conformance_etcd -- etcd::`.

mod etcd {
    use dcs_tests::conformance::EtcdBackend;

    dcs_tests::conformance_suite!(
        single,
        setup = EtcdBackend::single(),
        test = [tokio::test(flavor = "multi_thread", worker_threads = 2)]
    );

    dcs_tests::conformance_suite!(
        cluster,
        setup = EtcdBackend::cluster(),
        test = [tokio::test(flavor = "multi_thread", worker_threads = 2)]
    );
}
