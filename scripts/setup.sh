#!/usr/bin/env bash
# Installs what the project needs on Debian bookworm, if missing, and builds the workspace.
# Idempotent: a second run installs nothing and only checks the build is current.
#   etcd-server, etcd-client, zookeeper, postgresql-15  real servers the tests start
#   patroni, python3-kazoo                              patronictl, the compatibility client
#                                                       (kazoo: Patroni's ZooKeeper client)
#   protobuf-compiler                                   protoc, which etcd-client's build needs
#   iproute2, nftables                                  network namespaces for the chaos tests
#   faketime                                            libfaketime: the chaos tests' agent clock jumps
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(etcd-server etcd-client zookeeper postgresql-15 patroni python3-kazoo protobuf-compiler
    iproute2 nftables faketime)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done

if ((${#missing[@]})); then
    sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo)
    echo "setup: installing ${missing[*]}"
    "${sudo[@]}" apt-get update -q
    # The tests never use the packages' own services (a system etcd on :2379, a "main"
    # PostgreSQL cluster on :5432): fixtures start their own servers on free ports.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q "${missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "setup: cargo not found; install Rust with rustup (https://rustup.rs) and re-run" >&2
    exit 1
fi

cargo build --workspace --all-targets --quiet
echo "setup: ready"
