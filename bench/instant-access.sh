#!/usr/bin/env bash
# Instant-access benchmark (issue 16): backs up a disk image into a local repository, then
# measures `bulwark export` (NBD on a Unix socket):
#   - time to first byte: from starting `bulwark export` to the first 4 KiB read by qemu-io
#   - sequential read through the export (`qemu-img convert` from nbd+unix:// to a null-co
#     target, qemu's /dev/null)
#     next to `bulwark restore` of the same point (target >= 80 %)
#   - 4 KiB random reads per second at queue depth 1 (one qemu-io process issuing N reads),
#     over the whole disk and over a 32 MiB hot set, with the 64 MiB cache and with --cache 0
#   - peak memory (VmHWM) of the export process over the sequential read
# Medians of RUNS runs (default 3). Everything lives in a tmpfs (WORK_MIB, default 3072)
# mounted for the run and removed on exit, so the figures are of Bulwark's work, not of a
# disk: the page cache plays no part. Needs root (tmpfs mount), qemu-utils, python3.
# Usage: sudo bench/instant-access.sh      (IMAGE=path to use an existing raw image)
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/instant-access.sh needs root (tmpfs mount)"; exit 2; }
RUNS=${RUNS:-3}
IMAGE_MIB=${IMAGE_MIB:-512}
RANDOM_READS=${RANDOM_READS:-4000}
cargo build --release -q --bin bulwark --bin bulwark-repo
BIN=$PWD/target/release
W=$(mktemp -d /tmp/bulwark-ia-bench.XXXXXX)
cleanup() {
  umount "$W" 2>/dev/null || umount -l "$W" 2>/dev/null || true
  rmdir "$W" 2>/dev/null || true
}
trap cleanup EXIT INT TERM
mount -t tmpfs -o size="${WORK_MIB:-3072}m" tmpfs "$W"

if [ -n "${IMAGE:-}" ]; then
  cp --sparse=always "$IMAGE" "$W/disk.img"
else
  # A third random, a third compressible text, a third zero.
  third=$((IMAGE_MIB / 3))
  {
    (set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass pass:ia -pbkdf2 </dev/zero 2>/dev/null | head -c $((third << 20)))
    (set +o pipefail; openssl enc -aes-128-ctr -nosalt -pass pass:ib -pbkdf2 </dev/zero 2>/dev/null | base64 -w 100 | head -c $((third << 20)))
  } > "$W/disk.img"
  truncate -s $((IMAGE_MIB << 20)) "$W/disk.img"
fi
"$BIN/bulwark-repo" init "$W/repo" >/dev/null 2>&1
"$BIN/bulwark" backup --repo "$W/repo" --job vm "$W/disk.img" >/dev/null 2>&1

python3 - "$BIN/bulwark" "$W" "$RUNS" "$RANDOM_READS" <<'EOF'
import json, os, random, signal, statistics, subprocess, sys, time
bulwark, w, runs, nreads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
img = os.path.join(w, "disk.img")
size = os.path.getsize(img)
sock = os.path.join(w, "e.sock")
uri = f"nbd+unix:///?socket={sock}"

live = []

def start(cache="64M"):
    p = subprocess.Popen([bulwark, "export", "--repo", os.path.join(w, "repo"), "--job", "vm",
                          "--nbd", f"unix:{sock}", "--cache", cache],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    live.append(p)
    return p

def stop(p):
    p.send_signal(signal.SIGTERM)
    p.wait()

def hwm(p):
    for line in open(f"/proc/{p.pid}/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

def first_byte():
    t0 = time.monotonic()
    p = start()
    while True:
        r = subprocess.run(["qemu-io", "-r", "-f", "raw", "-c", "read 0 4k", uri],
                           capture_output=True)
        if r.returncode == 0 and b"failed" not in r.stdout + r.stderr:
            break
        time.sleep(0.002)
    t = time.monotonic() - t0
    stop(p)
    return t

def sequential():
    p = start()
    while not os.path.exists(sock):
        time.sleep(0.005)
    t0 = time.monotonic()
    # qemu's null-co target discards what it is given, as /dev/null would (qemu-img refuses
    # /dev/null itself as "smaller than the input").
    subprocess.run(["qemu-img", "convert", "-n", "-f", "raw", uri, "--target-image-opts",
                    f"driver=null-co,size={size}"], check=True)
    t = time.monotonic() - t0
    peak = hwm(p)
    stop(p)
    return t, peak

def restore():
    out = os.path.join(w, "restored.img")
    t0 = time.monotonic()
    subprocess.run([bulwark, "restore", "--repo", os.path.join(w, "repo"), "--job", "vm", out],
                   check=True, stdout=subprocess.DEVNULL)
    t = time.monotonic() - t0
    os.unlink(out)
    return t

def randreads(cache, span):
    p = start(cache)
    while not os.path.exists(sock):
        time.sleep(0.005)
    rng = random.Random(7)
    cmds = []
    for _ in range(nreads):
        off = rng.randrange(0, span // 4096) * 4096
        cmds += ["-c", f"read {off} 4k"]
    t0 = time.monotonic()
    subprocess.run(["qemu-io", "-r", "-f", "raw"] + cmds + [uri], check=True,
                   stdout=subprocess.DEVNULL)
    t = time.monotonic() - t0
    stop(p)
    return nreads / t

def stop_all():
    # A step that failed must not leave its export running.
    for p in live:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            p.wait()

import atexit
atexit.register(stop_all)
res = {k: [] for k in ["ttfb", "seq", "restore", "peak", "r_all_c", "r_all_n", "r_hot_c", "r_hot_n"]}
for _ in range(runs):
    res["ttfb"].append(first_byte())
    t, peak = sequential()
    res["seq"].append(t); res["peak"].append(peak)
    res["restore"].append(restore())
    res["r_all_c"].append(randreads("64M", size))
    res["r_all_n"].append(randreads("0", size))
    res["r_hot_c"].append(randreads("64M", 32 << 20))
    res["r_hot_n"].append(randreads("0", 32 << 20))
m = {k: statistics.median(v) for k, v in res.items()}
mb = size / 1e6
print(f"image: {size >> 20} MiB, {runs} runs (medians), tmpfs")
print(f"| time to first byte (start export → first 4 KiB read) | {m['ttfb']*1000:.0f} ms |")
print(f"| sequential read through the export (qemu-img convert → /dev/null) | {m['seq']:.2f} s, {mb/m['seq']:.0f} MB/s |")
print(f"| bulwark restore of the same point | {m['restore']:.2f} s, {mb/m['restore']:.0f} MB/s |")
print(f"| export ÷ restore throughput | {100*m['restore']/m['seq']:.0f} % |")
print(f"| 4 KiB random reads/s, whole disk, 64 MiB cache | {m['r_all_c']:.0f} |")
print(f"| 4 KiB random reads/s, whole disk, no cache | {m['r_all_n']:.0f} |")
print(f"| 4 KiB random reads/s, 32 MiB hot set, 64 MiB cache | {m['r_hot_c']:.0f} |")
print(f"| 4 KiB random reads/s, 32 MiB hot set, no cache | {m['r_hot_n']:.0f} |")
print(f"| peak memory of the export (VmHWM, over the sequential read) | {m['peak']/2**20:.1f} MiB |")
EOF
