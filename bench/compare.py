#!/usr/bin/env python3
"""Side-by-side benchmark: Bulwark against restic and BorgBackup on the same images, in one
run. For each tool, in alternation and --runs times: full backup of day1.img, incremental of
day2.img, restore of the latest; page cache dropped before every step (root); median wall
time, CPU time, peak RSS and repository size; each tool's ratio to Bulwark.

Fairness notes: every tool backs up the same path (a hard link named disk.img that points at
day 1, then day 2), so each sees a changed file and uses its own change detection; restic
and rustic always encrypt (AES-256 + Poly1305), borg runs with --encryption=repokey-blake2 (AES-256-CTR +
BLAKE2b MAC), "bulwark-enc" with a symmetric key file (docs/encryption.md; its passphrase
through BULWARK_PASSPHRASE, so Argon2id runs once per command, as restic's and borg's KDFs do)
and plain "bulwark" unencrypted, for the cost of encryption. Compression: Bulwark zstd -1,
restic 'auto' (zstd), rustic its default (zstd), borg lz4 and zstd,1. Ratios are against the first Bulwark tool listed.
"""
import argparse, json, os, shutil, statistics, subprocess, sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release")
ENV = dict(os.environ, RESTIC_PASSWORD="bench", RUSTIC_PASSWORD="bench", BORG_PASSPHRASE="bench", BULWARK_PASSPHRASE="bench",
           BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")

from bench import drop_caches  # the one copy, in bench/bench.py

def timed(cmd, cwd=None):
    p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", "/tmp/bulwark-compare.time"] + cmd,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=cwd)
    if p.returncode != 0:
        sys.exit("command failed: %s\n%s" % (" ".join(cmd), p.stderr[-3000:]))
    wall, user, sys_, rss = open("/tmp/bulwark-compare.time").read().split()[-4:]
    return float(wall), float(user) + float(sys_), int(rss) / 1024.0

def du(path):
    return int(subprocess.run(["du", "-sb", path], stdout=subprocess.PIPE, text=True, check=True).stdout.split()[0])

class Bulwark:
    name = "Bulwark (local, zstd -1)"
    def init(self, repo):
        subprocess.run([os.path.join(BIN, "bulwark-repo"), "init", repo], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def backup(self, repo, path):
        return [os.path.join(BIN, "bulwark"), "backup", "--repo", repo, "--job", "bench", path]
    def restore(self, repo, out_dir):
        return [os.path.join(BIN, "bulwark"), "restore", "--repo", repo, "--job", "bench", os.path.join(out_dir, "disk.img")], None

class BulwarkEncrypted(Bulwark):
    name = "Bulwark encrypted (symmetric key, zstd -1)"
    def init(self, repo):
        Bulwark.init(self, repo)
        self.key = os.path.join(os.path.dirname(repo), "cmp-bulwark.key")
        if os.path.exists(self.key):
            os.remove(self.key)
        subprocess.run([os.path.join(BIN, "bulwark"), "key", "create", "--out", self.key], check=True, env=ENV,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def backup(self, repo, path):
        return Bulwark.backup(self, repo, path) + ["--key", self.key]
    def restore(self, repo, out_dir):
        cmd, cwd = Bulwark.restore(self, repo, out_dir)
        return cmd[:-1] + ["--key", self.key, cmd[-1]], cwd

class Restic:
    name = "restic 0.14 (zstd auto, encrypted)"
    def init(self, repo):
        subprocess.run(["restic", "init", "--repo", repo], check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def backup(self, repo, path):
        return ["restic", "--repo", repo, "backup", "--quiet", path]
    def restore(self, repo, out_dir):
        return ["restic", "--repo", repo, "restore", "latest", "--target", out_dir], None

class Rustic:
    """rustic (the Rust implementation of restic, same repository format): `cargo install
    rustic-rs`; found on PATH or at $RUSTIC."""
    def __init__(self):
        self.exe = os.environ.get("RUSTIC") or shutil.which("rustic") or "/opt/rustic/bin/rustic"
        try:
            v = subprocess.run([self.exe, "--version"], stdout=subprocess.PIPE, text=True).stdout.split()
            self.name = "rustic %s (zstd default, encrypted)" % (v[-1] if v else "?")
        except OSError:
            self.name = "rustic (not installed)"
    def init(self, repo):
        subprocess.run([self.exe, "--repository", repo, "init"], check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    def backup(self, repo, path):
        return [self.exe, "--repository", repo, "backup", path]
    def restore(self, repo, out_dir):
        return [self.exe, "--repository", repo, "restore", "latest", out_dir], None

class Borg:
    def __init__(self, comp):
        self.comp = comp
        self.name = "borg 1.2 (%s, repokey-blake2)" % comp
    def init(self, repo):
        subprocess.run(["borg", "init", "--encryption=repokey-blake2", repo], check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.n = 0
    def backup(self, repo, path):
        self.n += 1
        return ["borg", "create", "--compression", self.comp, "%s::a%d" % (repo, self.n), path]
    def restore(self, repo, out_dir):
        return ["borg", "extract", "%s::a%d" % (repo, self.n)], out_dir

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dir", default=os.environ.get("BENCH_DIR", "/var/tmp/bulwark-bench"))
    ap.add_argument("--tools", default="bulwark-enc,bulwark,restic,rustic,borg-lz4,borg-zstd",
                    help="comma-separated; rustic is skipped with a note when it is not installed")
    a = ap.parse_args()
    d = a.dir
    day1, day2 = os.path.join(d, "day1.img"), os.path.join(d, "day2.img")
    size = os.path.getsize(day1)
    cold = drop_caches()
    all_tools = {"bulwark": Bulwark(), "bulwark-enc": BulwarkEncrypted(), "restic": Restic(), "rustic": Rustic(),
                 "borg-lz4": Borg("lz4"), "borg-zstd": Borg("zstd,1")}
    tools = [all_tools[t] for t in a.tools.split(",")]
    if any(isinstance(t, Rustic) and not os.path.exists(t.exe) for t in tools):
        print("NOTE: rustic is not installed (cargo install rustic-rs); it is left out", file=sys.stderr)
        tools = [t for t in tools if not (isinstance(t, Rustic) and not os.path.exists(t.exe))]
    res = {t.name: {"full": [], "incr": [], "restore": [], "size": []} for t in tools}
    src_dir = os.path.join(d, "src")
    os.makedirs(src_dir, exist_ok=True)
    disk = os.path.join(src_dir, "disk.img")
    for run in range(a.runs):
        for t in tools:
            repo = os.path.join(d, "cmp-repo")
            out = os.path.join(d, "cmp-out")
            shutil.rmtree(repo, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            os.makedirs(out)
            t.init(repo)
            for step, day in (("full", day1), ("incr", day2)):
                if os.path.exists(disk):
                    os.remove(disk)
                os.link(day, disk)
                drop_caches()
                res[t.name][step].append(timed(t.backup(repo, disk), cwd=src_dir))
            res[t.name]["size"].append(du(repo))
            cmd, cwd = t.restore(repo, out)
            drop_caches()
            res[t.name]["restore"].append(timed(cmd, cwd=cwd))
            restored = subprocess.run(["find", out, "-name", "disk.img", "-type", "f"], stdout=subprocess.PIPE, text=True).stdout.split()
            if not restored or subprocess.run(["cmp", "-s", day2, restored[0]]).returncode != 0:
                sys.exit("%s: restored image differs from day2.img" % t.name)
            shutil.rmtree(repo)
            shutil.rmtree(out)
            print("run %d: %s done" % (run + 1, t.name), file=sys.stderr)
    os.remove(disk)
    med = lambda xs, i: statistics.median(x[i] for x in xs)
    base = res[tools[0].name]
    lines = ["Image %.2f GiB, %d runs, %s; medians. Ratio = Bulwark's speed advantage (tool time / Bulwark time)." % (
        size / 2**30, a.runs, "page cache dropped before every step" if cold else "WARM page cache (not root)"), "",
        "| tool | full | incremental | restore | peak RSS | repository after full + incr | full ratio | incr ratio | restore ratio |",
        "|---|---|---|---|---|---|---|---|---|"]
    for t in tools:
        r = res[t.name]
        f, i, rs = med(r["full"], 0), med(r["incr"], 0), med(r["restore"], 0)
        rss = max(x[2] for k in ("full", "incr", "restore") for x in r[k])
        lines.append("| %s | %.1f s (%.0f MB/s) | %.1f s | %.1f s (%.0f MB/s) | %.0f MiB | %.0f MiB | %.1f× | %.1f× | %.1f× |" % (
            t.name, f, size / f / 1e6, i, rs, size / rs / 1e6, rss, statistics.median(r["size"]) / 2**20,
            f / med(base["full"], 0), i / med(base["incr"], 0), rs / med(base["restore"], 0)))
    lines.append("")
    lines.append("CPU seconds (median) full / incr / restore: " + "; ".join(
        "%s %.1f / %.1f / %.1f" % (t.name.split(" (")[0] + (" " + t.comp if isinstance(t, Borg) else ""),
                                    med(res[t.name]["full"], 1), med(res[t.name]["incr"], 1), med(res[t.name]["restore"], 1)) for t in tools))
    names = [t.name for t in tools]
    if Bulwark.name in names and BulwarkEncrypted.name in names:
        p, e = res[Bulwark.name], res[BulwarkEncrypted.name]
        lines.append("")
        lines.append("Bulwark encrypted as a share of plain speed (plain time / encrypted time): full %.0f %%, incr %.0f %%, restore %.0f %%" % tuple(
            100 * med(p[k], 0) / med(e[k], 0) for k in ("full", "incr", "restore")))
    try:
        lines.append("")
        lines.append("Load average at the end (1/5/15 min): %.2f %.2f %.2f on %d CPUs" % (os.getloadavg() + (os.cpu_count(),)))
    except OSError:
        pass
    text = "\n".join(lines)
    print(text)
    open(os.path.join(d, "compare.md"), "w").write(text + "\n")

if __name__ == "__main__":
    main()
