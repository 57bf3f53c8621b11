#!/usr/bin/env bash
# Live sources and changed-block tracking (issue 15; results in docs/performance.md,
# "Live sources and changed-block tracking"). On the 4 GiB image of bench/make-images.sh,
# as a qcow2 (64 KiB clusters):
#   - a full backup through qemu-nbd (NBD) next to the same disk as a raw file;
#   - 1 % of the 64 KiB clusters rewritten (random, seeded), then the incremental through
#     Bulwark's dirty bitmap (--cbt), the same incremental by re-reading and hashing, and
#     restic and borg on the raw image with the same change.
#   RUNS=3 bench/cbt.sh     median of 3 runs per step (default 3)
#   COLD=0 bench/cbt.sh     keep the page cache (default: dropped before each step as root)
#   KEEP=1 bench/cbt.sh     keep the work folder ($BENCH_DIR/cbt, about 15 GiB) afterwards
set -euo pipefail
cd "$(dirname "$0")/.."
for t in qemu-img qemu-io qemu-nbd qemu-storage-daemon restic borg; do
  command -v "$t" >/dev/null || { echo "needs $t (apt-get install qemu-utils restic borgbackup)" >&2; exit 2; }
done
cargo build --release -q --bin bulwark --bin bulwark-repo
bench/make-images.sh
exec python3 bench/cbt.py
