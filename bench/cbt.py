"""bench/cbt.sh's measurements (see there). Prints a Markdown table for docs/performance.md."""
import json, os, random, shutil, statistics, subprocess, sys, time

D = os.environ.get("BENCH_DIR", "/var/tmp/bulwark-bench")
RUNS = int(os.environ.get("RUNS", "3"))
COLD = os.environ.get("COLD", "1") == "1" and os.geteuid() == 0
B = os.path.abspath("target/release/bulwark")
W = os.path.join(D, "cbt")
CLUSTER = 65536
env = dict(os.environ, RESTIC_PASSWORD="bench", BORG_PASSPHRASE="", BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes")

def sh(*a, **k):
    r = subprocess.run(a, capture_output=True, text=True, env=env, **k)
    if r.returncode != 0:
        sys.exit(f"{' '.join(a[:6])} failed ({r.returncode}): {r.stderr.strip()}")
    return r.stdout

def drop():
    if COLD:
        subprocess.run(["sync"]); open("/proc/sys/vm/drop_caches", "w").write("3\n")

def timed(*a):
    drop()
    t = time.monotonic(); out = sh(*a); return time.monotonic() - t, out

def bulwark(job, src, *extra):
    s, out = timed(B, "backup", "--json", "--repo", f"{W}/repo", "--job", job, src, *extra)
    r = json.loads(out); r["wall"] = s; return r

shutil.rmtree(W, ignore_errors=True); os.makedirs(W)
sh("target/release/bulwark-repo", "init", f"{W}/repo")
# Enough points a day for the runs below.
cfg = f"{W}/repo/repository.toml"
txt = open(cfg).read()
if "max_points_per_day" in txt:
    import re; txt = re.sub(r"max_points_per_day\s*=\s*\d+", "max_points_per_day = 1000", txt)
else:
    txt += "\nmax_points_per_day = 1000\n"
open(cfg, "w").write(txt)
raw = f"{W}/disk.raw"; qcow = f"{W}/disk.qcow2"
sh("cp", "--sparse=always", f"{D}/day1.img", raw)
sh("qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=64k", raw, qcow)
size = os.path.getsize(raw)

full_raw, full_nbd = [], []
for i in range(RUNS):
    for job, src, into in ((f"fullraw{i}", raw, full_raw), (f"fullnbd{i}", qcow, full_nbd)):
        into.append(bulwark(job, src)["wall"])
        shutil.rmtree(f"{W}/repo/store/{job}")  # keep the disk from filling up

bulwark("cbt", qcow, "--cbt")
bulwark("cbt64", qcow, "--cbt", "--block-size", "64K")
bulwark("hash", qcow)
sh("restic", "init", "-r", f"{W}/restic")
sh("restic", "-r", f"{W}/restic", "backup", raw)
sh("borg", "init", "-e", "none", f"{W}/borg")
sh("borg", "create", f"{W}/borg::base", raw)

rng = random.Random(20261201)
rows = {k: [] for k in ["cbt", "cbt_read", "dirty", "dirty_blocks", "cbt64", "cbt64_read", "hash", "hash_read", "restic", "borg"]}
clusters = size // CLUSTER
for i in range(RUNS):
    offs = sorted(rng.sample(range(clusters), clusters // 100))
    for fmt, img in (("qcow2", qcow), ("raw", raw)):
        cmd = ["qemu-io", "-f", fmt]
        for o in offs:
            cmd += ["-c", f"write -P {(i * 37 + o) % 251 + 1} {o * CLUSTER} 64k"]
        sh(*cmd, img)
    r = bulwark("cbt", qcow, "--cbt")
    assert r["cbt"]["used"], r["cbt"]
    rows["cbt"].append(r["wall"]); rows["cbt_read"].append(r["bytes_read"])
    rows["dirty"].append(len(offs) * CLUSTER); rows["dirty_blocks"].append(r["cbt"]["dirty_block_bytes"])
    r = bulwark("cbt64", qcow, "--cbt")
    assert r["cbt"]["used"], r["cbt"]
    rows["cbt64"].append(r["wall"]); rows["cbt64_read"].append(r["bytes_read"])
    h = bulwark("hash", qcow)
    rows["hash"].append(h["wall"]); rows["hash_read"].append(h["bytes_read"])
    rows["restic"].append(timed("restic", "-r", f"{W}/restic", "backup", raw)[0])
    rows["borg"].append(timed("borg", "create", f"{W}/borg::run{i}", raw)[0])

m = {k: statistics.median(v) for k, v in rows.items()}
mib = lambda b: f"{b / 2**20:.1f} MiB"
fr, fn = statistics.median(full_raw), statistics.median(full_nbd)
print(f"runs: {RUNS}, cold cache: {COLD}, disk {size / 2**30:.0f} GiB, {clusters // 100} of {clusters} clusters of 64 KiB rewritten per run\n")
print("| step | median time | bytes read | notes |")
print("|---|---|---|---|")
print(f"| full, raw file | {fr:.2f} s | {mib(size)} (data extents only) | {size / fr / 1e6:.0f} MB/s of disk |")
print(f"| full, same disk as qcow2 through qemu-nbd | {fn:.2f} s | | {size / fn / 1e6:.0f} MB/s, {100 * fr / fn:.0f} % of the raw file's speed |")
print(f"| incremental through the dirty bitmap (`--cbt`) | {m['cbt']:.2f} s | {mib(m['cbt_read'])} | dirty {mib(m['dirty'])}, {mib(m['dirty_blocks'])} in whole 1 MiB blocks: read / dirty blocks = {m['cbt_read'] / m['dirty_blocks']:.2f} |")
print(f"| the same through the dirty bitmap, chain of 64 KiB blocks (`--block-size 64K`) | {m['cbt64']:.2f} s | {mib(m['cbt64_read'])} | read / dirty = {m['cbt64_read'] / m['dirty']:.2f}; {m['restic'] / m['cbt64']:.1f}× faster than restic, {m['borg'] / m['cbt64']:.1f}× than borg |")
print(f"| same incremental by re-reading and hashing | {m['hash']:.2f} s | {mib(m['hash_read'])} | {m['hash'] / m['cbt']:.1f}× the CBT incremental's time |")
print(f"| restic 0.14 backup of the raw image | {m['restic']:.2f} s | whole file | CBT incremental {m['restic'] / m['cbt']:.1f}× faster |")
print(f"| borg create of the raw image | {m['borg']:.2f} s | whole file | CBT incremental {m['borg'] / m['cbt']:.1f}× faster |")

if os.environ.get("KEEP") != "1":
    shutil.rmtree(W, ignore_errors=True)
