#!/usr/bin/env bash
# Runs every test of the workspace against real servers started by the fixtures.
# DCS_TEST_REQUIRE lists the backends and servers that must run: a missing one fails the
# run instead of skipping silently. Override it to run where a server is unavailable.
# Arguments, if any, replace `--workspace`: `scripts/test.sh -p dcs-tests -- memory::`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DCS_TEST_REQUIRE="${DCS_TEST_REQUIRE:-memory,etcd,zookeeper,postgres,patroni,netns}"
echo "test: DCS_TEST_REQUIRE=$DCS_TEST_REQUIRE"
if (($#)); then
    cargo test "$@"
else
    cargo test --workspace
fi
