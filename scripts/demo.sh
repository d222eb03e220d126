#!/usr/bin/env bash
# The main job, until the HA agent exists: three contenders elect a leader, the leader is
# killed, another takes over; fencing tokens are printed. Arguments go to the demo
# (`--backend etcd|zookeeper|memory`, `--ttl 3`, `--kills 2`, `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec cargo run --quiet -p dcs-tests --bin election -- "$@"
