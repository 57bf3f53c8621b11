#!/usr/bin/env bash
# Builds the benchmark's disk images in $BENCH_DIR (default /var/tmp/bulwark-bench):
#   day1.img  a 4 GiB raw disk holding a real ext4 filesystem: system files (from this
#             machine's /usr), generated text, and random data, with free space left over
#   day2.img  day1 with a few percent of its blocks changed by editing files inside the
#             filesystem (debugfs: files replaced, a log rewritten, a new file), not by
#             poking bytes
# Deterministic for a given machine: the random and text data come from fixed seeds.
# Needs mkfs.ext4 and debugfs (e2fsprogs) and openssl; no root.
set -euo pipefail
D=${BENCH_DIR:-/var/tmp/bulwark-bench}
SIZE_MIB=${IMAGE_MIB:-4096}
export PATH="$PATH:/usr/sbin:/sbin"
mkdir -p "$D"
if [ -f "$D/day2.img" ] && [ "$(cat "$D/.images-version" 2>/dev/null)" = "v1-$SIZE_MIB" ]; then
  echo "images already in $D"; exit 0
fi
rm -rf "$D/src" "$D/day1.img" "$D/day2.img" "$D/.images-version"
mkdir -p "$D/src/random" "$D/src/text" "$D/src/system"

# Deterministic bytes: AES-CTR keystream under a fixed key.
stream() { (set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass "pass:$1" -pbkdf2 </dev/zero 2>/dev/null | head -c "$2"); }

scale=$((SIZE_MIB * 1024 * 1024 / 4294967296))   # 1 for the 4 GiB image
[ "$scale" -ge 1 ] || scale=1
n_random=$((SIZE_MIB / 16))       # 4 MiB files: a quarter of the disk
n_text=$((SIZE_MIB / 40))         # 4 MiB files: a tenth of the disk
echo "generating $n_random random and $n_text text files of 4 MiB"
for i in $(seq 1 "$n_random"); do stream "random-$i" 4194304 > "$D/src/random/r$i.bin"; done
python3 - "$D/src/text" "$n_text" <<'PY'
import random, sys
out, n = sys.argv[1], int(sys.argv[2])
rng = random.Random(20261126)
vocab = ["backup","restore","chain","block","immutable","sealed","repository","kernel","error",
         "warning","info","user","session","disk","volume","snapshot","retention","clone","expiry",
         "verify","network","client","server","request","response","latency","throughput"] + \
        ["w%04d" % i for i in range(3000)]
for i in range(1, n + 1):
    lines, size = [], 0
    while size < 4 * 1024 * 1024:
        line = "2026-11-%02d %02d:%02d:%02d host%d %s\n" % (rng.randint(1, 28), rng.randint(0, 23),
               rng.randint(0, 59), rng.randint(0, 59), rng.randint(1, 40),
               " ".join(rng.choice(vocab) for _ in range(rng.randint(5, 16))))
        lines.append(line); size += len(line)
    open("%s/t%d.log" % (out, i), "w").write("".join(lines)[:4 * 1024 * 1024])
PY
# System files: a fifth of the disk from this machine's /usr (binaries, libraries, docs).
budget=$((SIZE_MIB * 1024 / 5))   # KiB
used=0
while IFS= read -r -d '' f; do
  sz=$(( ($(stat -c %s "$f") + 1023) / 1024 ))
  [ $((used + sz)) -le "$budget" ] || break
  rel=${f#/usr/}; mkdir -p "$D/src/system/$(dirname "$rel")"
  cp -p "$f" "$D/src/system/$rel" 2>/dev/null || continue
  used=$((used + sz))
done < <(find /usr/bin /usr/share /usr/lib/x86_64-linux-gnu -xdev -type f -size -64M -print0 2>/dev/null | sort -z)
echo "copied $((used / 1024)) MiB of system files"
mkfs.ext4 -q -F -b 4096 -d "$D/src" "$D/day1.img" "${SIZE_MIB}M"
cp --sparse=always "$D/day1.img" "$D/day2.img"

# Day 2: replace 1 in 40 random files, rewrite 1 in 20 logs, add a new 32 MiB file.
cmds="$D/day2.debugfs"; : > "$cmds"
mkdir -p "$D/day2-new"
for i in $(seq 1 40 "$n_random"); do
  stream "day2-random-$i" 4194304 > "$D/day2-new/r$i.bin"
  echo "rm random/r$i.bin" >> "$cmds"; echo "write $D/day2-new/r$i.bin random/r$i.bin" >> "$cmds"
done
for i in $(seq 1 20 "$n_text"); do
  { head -c 3000000 "$D/src/text/t$i.log"; stream "day2-text-$i" 600000 | base64 -w 120; } | head -c 4194304 > "$D/day2-new/t$i.log"
  echo "rm text/t$i.log" >> "$cmds"; echo "write $D/day2-new/t$i.log text/t$i.log" >> "$cmds"
done
stream day2-new 33554432 > "$D/day2-new/new.bin"
echo "write $D/day2-new/new.bin random/new.bin" >> "$cmds"
debugfs -w -f "$cmds" "$D/day2.img" >/dev/null 2>&1
rm -rf "$D/src" "$D/day2-new"
echo "v1-$SIZE_MIB" > "$D/.images-version"
ls -ls "$D"/*.img
