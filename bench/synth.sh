#!/usr/bin/env bash
# Synthetic-full benchmark: backs up the 4 GiB benchmark image (day 1 full, day 2
# incremental) into a repository on XFS with reflink and into one on ext4, then times
# `bulwark-repo synthesize` on each (page cache dropped first) and reports the physical bytes
# it added (free-space drop and the space report's physical total) next to the image size.
# Targets (issue 5): on XFS <= 1 s and < 1 % of the image; on ext4 the copy time is reported.
# Needs root (loop mounts, drop_caches), xfsprogs, e2fsprogs, openssl, python3.
# Usage: sudo bench/synth.sh     (BENCH_DIR, default /var/tmp/bulwark-bench, holds the images)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
[ "$(id -u)" = 0 ] || { echo "bench/synth.sh needs root (loop mounts)"; exit 2; }
D=${BENCH_DIR:-/var/tmp/bulwark-bench}
mkdir -p "$D"
cargo build --release -q --bin bulwark --bin bulwark-repo
BIN=$PWD/target/release

# The images: the main benchmark's when its script exists, else a simpler equivalent.
if [ -x bench/make-images.sh ]; then
  BENCH_DIR=$D bench/make-images.sh
elif [ ! -f "$D/day2.img" ]; then
  echo "generating a 4 GiB ext4 image (random, text and zero regions) and a day-2 copy"
  stream() { (set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 </dev/zero 2>/dev/null | head -c "$2"); }
  rm -rf "$D/src"; mkdir -p "$D/src/random" "$D/src/text" "$D/day2-new"
  for i in $(seq 1 256); do stream "random-$i" 4194304 > "$D/src/random/r$i.bin"; done
  for i in $(seq 1 100); do stream "text-$i" 3145728 | base64 -w 100 | head -c 4194304 > "$D/src/text/t$i.log"; done
  mkfs.ext4 -q -F -b 4096 -d "$D/src" "$D/day1.img" 4096M
  cp --sparse=always "$D/day1.img" "$D/day2.img"
  cmds="$D/day2.debugfs"; : > "$cmds"
  for i in $(seq 1 40 256); do
    stream "day2-random-$i" 4194304 > "$D/day2-new/r$i.bin"
    echo "rm random/r$i.bin" >> "$cmds"; echo "write $D/day2-new/r$i.bin random/r$i.bin" >> "$cmds"
  done
  debugfs -w -f "$cmds" "$D/day2.img" >/dev/null 2>&1
  rm -rf "$D/src" "$D/day2-new"
fi
IMG_BYTES=$(stat -c %s "$D/day1.img")

W=$(mktemp -d /var/tmp/bulwark-synth-bench.XXXXXX)
cleanup() {
  for m in "$W"/mnt-*; do
    [ -d "$m" ] || continue
    chattr -R -i "$m" 2>/dev/null || true
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  rm -rf "$W"
}
trap cleanup EXIT

free_bytes() { sync; python3 -c 'import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_bavail*s.f_frsize)' "$1"; }
json_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }

run_on() { # name, mkfs command...
  local name=$1; shift
  local img="$W/$name.img" mnt="$W/mnt-$name"
  truncate -s 16G "$img"; mkdir -p "$mnt"
  "$@" "$img" >/dev/null
  mount -o loop "$img" "$mnt"
  local repo="$mnt/repo"
  "$BIN/bulwark-repo" init "$repo" >/dev/null 2>&1
  "$BIN/bulwark" backup --repo "$repo" --job bench "$D/day1.img" >/dev/null
  "$BIN/bulwark" backup --repo "$repo" --job bench "$D/day2.img" >/dev/null
  "$BIN/bulwark-repo" space "$repo" --json > "$W/$name-space-before.json"
  local before; before=$(free_bytes "$mnt")
  sync; echo 3 > /proc/sys/vm/drop_caches
  local t0 t1; t0=$(date +%s.%N)
  "$BIN/bulwark-repo" synthesize "$repo" --job bench --json > "$W/$name-synth.json"
  t1=$(date +%s.%N)
  local after; after=$(free_bytes "$mnt")
  "$BIN/bulwark-repo" space "$repo" --json > "$W/$name-space-after.json"
  # Restore the synthetic full and compare it with day 2: the result must be identical.
  "$BIN/bulwark" restore --repo "$repo" --job bench "$W/$name-restored.img" >/dev/null
  cmp -s "$W/$name-restored.img" "$D/day2.img" && ident=yes || ident=NO
  rm -f "$W/$name-restored.img"
  local p0 p1; p0=$(json_field "$W/$name-space-before.json" physical_bytes); p1=$(json_field "$W/$name-space-after.json" physical_bytes)
  python3 - "$name" "$t0" "$t1" "$before" "$after" "$p0" "$p1" "$IMG_BYTES" "$W/$name-synth.json" "$ident" <<'PY'
import json, sys
name, t0, t1, before, after, p0, p1, img, out, ident = sys.argv[1:]
o = json.load(open(out))
drop, phys = int(before) - int(after), int(p1) - int(p0)
print(f"{name:5} method={o['method']:5} blocks={o['blocks']} wall={float(t1)-float(t0):.3f}s "
      f"(synthesize {o['seconds']:.3f}s) cloned={int(o['bytes_cloned'])/2**20:.1f} MiB "
      f"copied={int(o['bytes_copied'])/2**20:.1f} MiB clone_calls={o['clone_calls']} | "
      f"free space -{drop/2**20:.2f} MiB ({100*drop/int(img):.3f} % of the image), "
      f"physical +{phys/2**20:.2f} MiB ({100*phys/int(img):.3f} %) | restores identical to day 2: {ident}")
if o.get("fallback_reason"): print(f"      fallback: {o['fallback_reason']}")
PY
  chattr -R -i "$mnt" 2>/dev/null || true
  umount "$mnt"; rm -f "$img"
}

echo "image: $D/day1.img + day2.img ($((IMG_BYTES / 1048576)) MiB), $(nproc) cores, $(uname -r)"
run_on xfs mkfs.xfs -q -f -m reflink=1
run_on ext4 mkfs.ext4 -q -F
