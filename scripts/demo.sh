#!/usr/bin/env bash
# The main job: a local PostgreSQL HA cluster. Starts a real etcd and three ha-agent nodes,
# each with its own PostgreSQL 15, on free 127.0.0.1 ports in one temporary directory;
# waits for one primary and two streaming replicas, shows `ha-agent ctl list` and how to
# reach every node, and runs until Ctrl-C, then removes everything. Arguments go to the
# demo (`--backend etcd|zookeeper`, `--nodes 3`, `--duration SECONDS`, `--help`).
# The leader-election demo without PostgreSQL: `cargo run -p dcs-tests --bin election`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --quiet -p ha-agent -p dcs-tests --bins
target="${CARGO_TARGET_DIR:-target}"
exec "$target/debug/cluster" --agent "$(realpath "$target/debug/ha-agent")" "$@"
