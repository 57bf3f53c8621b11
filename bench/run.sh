#!/usr/bin/env bash
# The Bulwark benchmark: builds release binaries, makes the 4 GiB benchmark images (once),
# then measures full backup, incremental and restore (median of 3, page cache dropped before
# each step when root) next to the machine's limits. Extra flags go to bench.py
# (--runs N, --block-sizes, --sparse).  Example: sudo bench/run.sh --block-sizes --sparse
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q --bin bulwark --bin bulwark-repo --bin bulwark-limits
bench/make-images.sh
exec python3 bench/bench.py "$@"
