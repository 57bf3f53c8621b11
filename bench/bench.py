#!/usr/bin/env python3
"""Bulwark benchmark driver: full backup, incremental and restore of the benchmark images,
each step with the page cache dropped first, medians of several runs, next to the machine's
own limits. Usage: bench.py [--runs N] [--dir D] [--block-sizes] [--sparse] [--levels]
[--scattered [--against OLD_BULWARK]]. Needs root to drop
the page cache (it says so and measures warm otherwise)."""
import argparse, json, os, shutil, statistics, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")

ENV = dict(os.environ, BULWARK_PASSPHRASE=os.environ.get("BULWARK_PASSPHRASE", "bulwark bench passphrase"))

def drop_caches():
    try:
        subprocess.run(["sync"], check=True)
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False

def timed(cmd):
    """Runs cmd under GNU time; returns (wall s, cpu s, peak RSS MiB, stdout)."""
    fmt = "%e %U %S %M"
    p = subprocess.run(["/usr/bin/time", "-f", fmt, "-o", "/tmp/bulwark-bench.time"] + cmd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    if p.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), p.stderr))
    wall, user, sys_, rss = open("/tmp/bulwark-bench.time").read().split()[-4:]
    return float(wall), float(user) + float(sys_), int(rss) / 1024.0, p.stdout

def fresh_repo(path):
    """An empty repository at path (an earlier one there is removed)."""
    shutil.rmtree(path, ignore_errors=True)
    subprocess.run([os.path.join(BIN, "bulwark-repo"), "init", path], check=True, stdout=subprocess.DEVNULL)

def bulwark(*args):
    return [os.path.join(BIN, "bulwark")] + list(args)

def med(xs):
    return statistics.median(xs)

def row(name, walls, cpus, rsss, size_bytes, extra=""):
    w = med(walls)
    return "| %s | %.2f s | %.0f MB/s | %.2f s | %.0f MiB | %s |" % (
        name, w, size_bytes / w / 1e6, med(cpus), max(rsss), extra)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/var/tmp/bulwark-bench"))
    ap.add_argument("--block-sizes", action="store_true", help="also compare block sizes")
    ap.add_argument("--sparse", action="store_true", help="also back up a 64 GiB sparse image")
    ap.add_argument("--scattered", action="store_true",
                    help="also back up two thin-disk-shaped 4 GiB images (1 GiB of data among holes; cold, medians of --runs)")
    ap.add_argument("--against", metavar="OLD_BULWARK",
                    help="with --scattered: alternate each run with this other bulwark binary")
    ap.add_argument("--levels", action="store_true",
                    help="also compare zstd levels (full and restore, cold, medians of --runs)")
    a = ap.parse_args()
    d = a.dir
    day1, day2 = os.path.join(d, "day1.img"), os.path.join(d, "day2.img")
    size = os.path.getsize(day1)
    cold = drop_caches()
    if not cold:
        print("NOTE: cannot drop the page cache (not root): figures are warm-cache figures")
    res = {k: ([], [], []) for k in ("full", "incr", "restore", "incr_warm", "full_enc", "restore_enc")}
    stored = {}
    lim_runs = []
    key = os.path.join(d, "bench.key")
    if not os.path.exists(key):
        subprocess.run(bulwark("key", "create", "--out", key), check=True, env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for run in range(a.runs):
        repo = os.path.join(d, "repo")
        fresh_repo(repo)
        # The limits, measured again in every run: the device's speed moves between runs.
        lim_runs.append(json.loads(subprocess.run(
            [os.path.join(BIN, "bulwark-limits"), day1, "--write-dir", repo],
            stdout=subprocess.PIPE, text=True, check=True).stdout))
        steps = [
            ("full", bulwark("backup", "--json", "--repo", repo, "--job", "bench", day1)),
            ("incr", bulwark("backup", "--json", "--repo", repo, "--job", "bench", day2)),
        ]
        for name, cmd in steps:
            drop_caches()
            w, c, r, out = timed(cmd)
            res[name][0].append(w); res[name][1].append(c); res[name][2].append(r)
            stored[name] = json.loads(out)
        out_img = os.path.join(d, "restored.img")
        if os.path.exists(out_img):
            os.remove(out_img)
        drop_caches()
        w, c, r, _ = timed(bulwark("restore", "--repo", repo, "--job", "bench", out_img))
        res["restore"][0].append(w); res["restore"][1].append(c); res["restore"][2].append(r)
        if subprocess.run(["cmp", "-s", day2, out_img]).returncode != 0:
            sys.exit("restored image differs from day2.img")
        os.remove(out_img)
        # The same full and restore, encrypted (symmetric key file), in the same run.
        enc_repo = os.path.join(d, "repo-enc")
        fresh_repo(enc_repo)
        drop_caches()
        w, c, r, _ = timed(bulwark("backup", "--json", "--repo", enc_repo, "--job", "bench", "--key", key, day1))
        res["full_enc"][0].append(w); res["full_enc"][1].append(c); res["full_enc"][2].append(r)
        drop_caches()
        w, c, r, _ = timed(bulwark("restore", "--repo", enc_repo, "--job", "bench", "--key", key, out_img))
        res["restore_enc"][0].append(w); res["restore_enc"][1].append(c); res["restore_enc"][2].append(r)
        if subprocess.run(["cmp", "-s", day1, out_img]).returncode != 0:
            sys.exit("encrypted restore differs from day1.img")
        os.remove(out_img)
        shutil.rmtree(enc_repo)
        # Warm incremental: a chain with only day 1, then day 2 read from the page cache.
        subprocess.run(bulwark("backup", "--repo", repo, "--job", "warm", day1), check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["cat", day2], stdout=subprocess.DEVNULL, check=True)
        w, c, r, _ = timed(bulwark("backup", "--json", "--repo", repo, "--job", "warm", day2))
        res["incr_warm"][0].append(w); res["incr_warm"][1].append(c); res["incr_warm"][2].append(r)
        repo_bytes = sum(os.path.getsize(os.path.join(p, f)) for p, _, fs in os.walk(os.path.join(repo, "store", "bench")) for f in fs)
        shutil.rmtree(repo)
        print("run %d done" % (run + 1), file=sys.stderr)
    inc = stored["incr"]
    limits = {k: med([l[k] for l in lim_runs]) for k in lim_runs[0] if not isinstance(lim_runs[0][k], bool)}
    data = limits["data_bytes"]
    # What a full must do at the least: read the data extents, and compress and hash them on
    # every core (zstd and BLAKE3 at the rates measured on the image's own data).
    read_s = limits["extents_read_secs"]
    compute_s = data / (limits["zstd_all_mbps"] * 1e6) + data / (limits["blake3_all_mbps"] * 1e6)
    full_limit = max(read_s, compute_s)
    # What a restore must do at the least: write the data, and read what the chain stores for
    # it (about the full's stored bytes) at the measured cold read rate, overlapped.
    write_s = limits["write_secs"]
    restore_read_s = stored["full"]["bytes_stored"] / (limits["extents_read_mbps"] * 1e6)
    # ... and both on one device at once, at the rate the copy test reached reading and writing.
    restore_io_s = (stored["full"]["bytes_stored"] + data) / (limits["copy_mbps"] * 1e6)
    restore_limit = max(write_s, restore_read_s, restore_io_s)
    pct = lambda limit, key: 100.0 * limit / med(res[key][0])
    lines = []
    lines.append("Machine: %d cores; %s page cache; image %.2f GiB (%s)" % (
        limits["cores"], "cold (dropped before each step)" if cold else "WARM", size / 2**30, day1))
    lines.append("")
    lines.append("| limit (median of %d, measured in every run) | MB/s | seconds for the image's %.2f GiB of data |" % (a.runs, data / 2**30))
    lines.append("|---|---|---|")
    lines.append("| reading the data extents (cold) | %d | %.2f s |" % (limits["extents_read_mbps"], read_s))
    lines.append("| writing as much at the same offsets, with fsync (best of buffered %.2f s / direct %.2f s) | %d | %.2f s |" % (
        limits["write_buffered_secs"], limits["write_direct_secs"], limits["write_mbps"], write_s))
    lines.append("| sequential read of the whole image (cold) | %d | |" % limits["seq_read_mbps"])
    lines.append("| BLAKE3, 1 core / all cores | %d / %d | %.2f s (all cores) |" % (limits["blake3_1_mbps"], limits["blake3_all_mbps"], data / (limits["blake3_all_mbps"] * 1e6)))
    lines.append("| zstd -%d, 1 core / all cores (sample spread over the image) | %d / %d | %.2f s (all cores) |" % (
        limits["zstd_level"], limits["zstd_1_mbps"], limits["zstd_all_mbps"], data / (limits["zstd_all_mbps"] * 1e6)))
    lines.append("| a full's limit: max(read, zstd + BLAKE3 on all cores) | | %.2f s |" % full_limit)
    lines.append("| the device reading and writing at once (copy of the data extents; both ways counted) | %d | %.2f s |" % (
        limits["copy_mbps"], limits["copy_secs"]))
    lines.append("| a restore's limit: max(write, read the %.0f MiB stored, both at the copy rate) | | %.2f s |" % (
        stored["full"]["bytes_stored"] / 2**20, restore_limit))
    lines.append("")
    lines.append("| step (median of %d) | wall | throughput (of image) | CPU | peak RSS | notes |" % a.runs)
    lines.append("|---|---|---|---|---|---|")
    f = stored["full"]
    lines.append(row("full backup", *res["full"], size, "stored %.0f MiB of %.0f MiB non-zero data" % (f["bytes_stored"] / 2**20, f["bytes_read"] / 2**20)))
    lines.append(row("incremental (day 2)", *res["incr"], size, "%d of %d blocks changed, stored %.1f MiB; %.0f %% of the read limit" % (
        inc["blocks_new"], inc["blocks_new"] + inc["blocks_unchanged"], inc["bytes_stored"] / 2**20,
        100 * read_s / med(res["incr"][0]))))
    lines.append(row("incremental, image in page cache", *res["incr_warm"], size, ""))
    lines.append(row("restore (latest)", *res["restore"], size, "byte-identical (cmp)"))
    lines.append(row("full backup, encrypted", *res["full_enc"], size, ""))
    lines.append(row("restore, encrypted", *res["restore_enc"], size, "byte-identical (cmp)"))
    lines.append("")
    lines.append("| against the limits | plain | encrypted |")
    lines.append("|---|---|---|")
    lines.append("| full: read limit / full | %.0f %% | %.0f %% |" % (pct(read_s, "full"), pct(read_s, "full_enc")))
    lines.append("| full: full's limit (max of read, compute) / full | %.0f %% | %.0f %% |" % (pct(full_limit, "full"), pct(full_limit, "full_enc")))
    lines.append("| restore: write limit / restore | %.0f %% | %.0f %% |" % (pct(write_s, "restore"), pct(write_s, "restore_enc")))
    lines.append("| restore: restore's limit / restore | %.0f %% | %.0f %% |" % (pct(restore_limit, "restore"), pct(restore_limit, "restore_enc")))
    lines.append("| encrypted as a share of plain speed | full %.0f %% | restore %.0f %% |" % (
        100.0 * med(res["full"][0]) / med(res["full_enc"][0]), 100.0 * med(res["restore"][0]) / med(res["restore_enc"][0])))
    lines.append("")
    lines.append("Repository after full + incremental: %.0f MiB" % (repo_bytes / 2**20))
    if a.sparse:
        lines += sparse(d)
    if a.scattered:
        lines += scattered(d, day1, a.runs, a.against)
    if a.block_sizes:
        lines += block_sizes(d, day1, day2, size)
    if a.levels:
        lines += levels(d, day1, size, a.runs, read_s, data)
    text = "\n".join(lines)
    print(text)
    open(os.path.join(d, "results.md"), "w").write(text + "\n")

def sparse(d):
    """Peak RSS on a 64 GiB sparse image with data at its start, middle and end."""
    img = os.path.join(d, "sparse64.img")
    with open(img, "wb") as f:
        f.truncate(64 << 30)
        for off in (0, 32 << 30, (64 << 30) - (256 << 20)):
            f.seek(off)
            f.write(os.urandom(256 << 20))
    repo = os.path.join(d, "repo-sparse")
    fresh_repo(repo)
    drop_caches()
    w, c, r, _ = timed(bulwark("backup", "--json", "--repo", repo, "--job", "sparse", img))
    out = os.path.join(d, "sparse-restored.img")
    drop_caches()
    w2, c2, r2, _ = timed(bulwark("restore", "--repo", repo, "--job", "sparse", out))
    shutil.rmtree(repo); os.remove(img); os.remove(out)
    return ["", "64 GiB sparse image (768 MiB of data): backup %.1f s, peak RSS %.0f MiB; restore %.1f s, peak RSS %.0f MiB" % (w, r, w2, r2)]

def cached_kib():
    for l in open("/proc/meminfo"):
        if l.startswith("Cached:"):
            return int(l.split()[1])
    return 0

SHAPES = (
    ("scattered: 1 MiB of data every 4 MiB", 1 << 20, 4 << 20),
    ("fragmented: 64 KiB of data every 256 KiB", 64 << 10, 256 << 10),
)

def scattered(d, day1, runs, against):
    """Thin disks' shapes: 4 GiB images holding 1 GiB of day 1's data in pieces among holes
    (SHAPES). Cold full backups (wall, CPU, how much the page cache grew) and restores (wall,
    what the restored file allocates; compared with cmp)."""
    bins = [("this build", os.path.join(BIN, "bulwark"))]
    if against:
        bins.append(("against " + against, against))
    lines = ["", "| thin 4 GiB image (1 GiB of data), cold (median of %d) | binary | full wall | full CPU | page cache grew by | restore wall | restored file allocated |" % runs,
             "|---|---|---|---|---|---|---|"]
    img = os.path.join(d, "scattered.img")
    repo = os.path.join(d, "repo-scattered")
    for shape, piece, every in SHAPES:
        with open(day1, "rb") as src, open(img, "wb") as f:
            f.truncate(4 << 30)
            pos = os.lseek(src.fileno(), 0, os.SEEK_DATA)
            for i in range((4 << 30) // every):
                chunk = os.pread(src.fileno(), piece, pos)
                pos += piece
                os.pwrite(f.fileno(), chunk, i * every)
            os.fsync(f.fileno())
        res = {name: ([], [], [], [], []) for name, _ in bins}
        out = os.path.join(d, "scattered-restored.img")
        for _ in range(runs):
            for name, b in bins:
                fresh_repo(repo)
                drop_caches()
                before = cached_kib()
                w, c, _, _ = timed([b, "backup", "--repo", repo, "--job", "scattered", img])
                res[name][0].append(w); res[name][1].append(c)
                res[name][2].append((cached_kib() - before) / 1024.0)
                drop_caches()
                w, _, _, _ = timed([b, "restore", "--repo", repo, "--job", "scattered", out])
                if subprocess.run(["cmp", "-s", img, out]).returncode != 0:
                    sys.exit("the restore of %s by %s differs from the image" % (shape, b))
                res[name][3].append(w); res[name][4].append(os.stat(out).st_blocks * 512 / 2**20)
                os.remove(out)
        for name, _ in bins:
            w, c, g, rw, ra = res[name]
            lines.append("| %s | %s | %.2f s | %.2f s | %.0f MiB | %.2f s | %.0f MiB |" % (
                shape, name, med(w), med(c), med(g), med(rw), med(ra)))
        os.remove(img)
    shutil.rmtree(repo, ignore_errors=True)
    return lines

LEVELS = ("1", "-1", "-3", "-5", "-7", "0")

def levels(d, day1, size, runs, read_s, data):
    """Full and restore of day 1 at each zstd level (0: stored raw), cold, levels in turn within
    each run so that the device's drift falls on all of them alike; shares against the read
    limit measured above."""
    res = {lv: ([], [], [], []) for lv in LEVELS}
    stored = {}
    repo = os.path.join(d, "repo-levels")
    out_img = os.path.join(d, "restored-levels.img")
    for run in range(runs):
        for lv in LEVELS:
            fresh_repo(repo)
            drop_caches()
            w, c, _, out = timed(bulwark("backup", "--json", "--repo", repo, "--job", "lv", "--compression=" + lv, day1))
            stored[lv] = json.loads(out)["bytes_stored"]
            res[lv][0].append(w); res[lv][1].append(c)
            if os.path.exists(out_img):
                os.remove(out_img)
            drop_caches()
            w, c, _, _ = timed(bulwark("restore", "--repo", repo, "--job", "lv", out_img))
            res[lv][2].append(w); res[lv][3].append(c)
            if subprocess.run(["cmp", "-s", day1, out_img]).returncode != 0:
                sys.exit("restore at level %s differs from day1.img" % lv)
            os.remove(out_img)
        print("levels: run %d done" % (run + 1), file=sys.stderr)
    shutil.rmtree(repo, ignore_errors=True)
    lines = ["", "| zstd level (`--compression`) | stored of %.0f MiB | full wall | full CPU | full: read limit / full | restore wall | restore CPU |" % (data / 2**20),
             "|---|---|---|---|---|---|---|"]
    for lv in LEVELS:
        fw, fc, rw, rc = (med(x) for x in res[lv])
        lines.append("| %s | %.0f MiB (%.0f %%) | %.2f s | %.2f s | %.0f %% | %.2f s | %.2f s |" % (
            lv, stored[lv] / 2**20, 100.0 * stored[lv] / data, fw, fc, 100.0 * read_s / fw, rw, rc))
    return lines

def block_sizes(d, day1, day2, size):
    lines = ["", "| block size | full stored | incremental: changed blocks | incremental stored | repository on disk (full + incr, with padding) | map per point | full wall (warm) | incr wall (warm) |",
             "|---|---|---|---|---|---|---|---|"]
    for bs in ("64K", "256K", "1M", "4M"):
        repo = os.path.join(d, "repo-bs")
        fresh_repo(repo)
        w1, _, _, o1 = timed(bulwark("backup", "--json", "--repo", repo, "--job", "b", "--block-size", bs, day1))
        w2, _, _, o2 = timed(bulwark("backup", "--json", "--repo", repo, "--job", "b", day2))
        f, i = json.loads(o1), json.loads(o2)
        mapped = i["blocks_new"] + i["blocks_unchanged"]
        on_disk = sum(os.path.getsize(os.path.join(p, x)) for p, _, fs in os.walk(os.path.join(repo, "store")) for x in fs)
        lines.append("| %s | %.0f MiB | %d of %d (%.1f %%) | %.1f MiB | %.0f MiB | %.0f KiB | %.2f s | %.2f s |" % (
            bs, f["bytes_stored"] / 2**20, i["blocks_new"], mapped, 100.0 * i["blocks_new"] / max(mapped, 1),
            i["bytes_stored"] / 2**20, on_disk / 2**20, mapped * 96 / 1024, w1, w2))
        shutil.rmtree(repo)
    return lines

if __name__ == "__main__":
    main()
