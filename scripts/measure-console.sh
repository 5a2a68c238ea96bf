#!/usr/bin/env bash
# Measures the console against issue 6's goals: key-to-screen and memory
# with 1,000 shards and 3,000 servers in a real ZooKeeper, CPU while it
# checks 3,000 nodes, and idle CPU on the demo cluster. Release build;
# needs ZooKeeper, Redis and tmux like the tests. Prints the figures.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --quiet
cargo bench -p backpack-console --bench measure 2>&1 |
  grep -v '^\s*$' | grep -Ev '^(running|test result|     Running)' || true
