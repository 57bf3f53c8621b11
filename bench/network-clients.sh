#!/usr/bin/env bash
# Fair share among concurrent clients: N clients (default 8), each enrolled with its own
# certificate, back up the same image at the same moment through one `bulwark-repo serve`
# on 127.0.0.1, then restore it at the same moment. Reports each client's MB/s, the spread
# (slowest ÷ fastest), Jain's fairness index (1 = perfectly even, 1/N = one client gets
# everything) and the aggregate throughput, next to one client alone.
#   bench/network-clients.sh               8 clients, the 4 GiB day1.img of $BENCH_DIR
#   CLIENTS=4 bench/network-clients.sh
# Runs once (a concurrent step is itself N measurements); page cache dropped before each
# step when root. Needs about (N + 1) × the repository size of one image on /var/tmp.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_DIR=${BENCH_DIR:-/var/tmp/bulwark-bench}
CLIENTS=${CLIENTS:-8}
cargo build --release -q --bin bulwark --bin bulwark-repo
BIN=$PWD/target/release
[ -f "$BENCH_DIR/day1.img" ] || bench/make-images.sh
IMG=$BENCH_DIR/day1.img
SIZE=$(stat -c %s "$IMG")
. bench/service.sh
service_workdir netclients

[ "$(id -u)" = 0 ] || echo "not root: the page cache is not dropped between steps" >&2
REPO=$WORK/repo
service_init "$REPO"
service_start "$REPO"

# One configuration folder per client: each is its own enrolled identity. Enrollment is
# rate-limited per address, so this paces itself when it has to.
for i in $(seq 0 "$CLIENTS"); do
  for attempt in 1 2 3; do
    service_enroll "$REPO" "c$i" --config-dir "$WORK/cfg$i" 2>"$WORK/enroll.err" && break
    grep -q "rate limited" "$WORK/enroll.err" || { cat "$WORK/enroll.err" >&2; exit 1; }
    sleep 61
  done
done
client() { local i=$1; shift; "$BIN/bulwark" --config-dir "$WORK/cfg$i" "$@" >/dev/null; }

# Client 0 alone, for the single-client figure.
drop
a=$(now); client 0 backup --repo "$ADDR" --job solo "$IMG"; b=$(now)
solo_b=$(echo "$b - $a" | bc -l)
drop
a=$(now); client 0 restore --repo "$ADDR" --job solo "$WORK/solo.out"; b=$(now)
solo_r=$(echo "$b - $a" | bc -l)
rm -f "$WORK/solo.out"

# Clients 1..N at once, each with its own job (job names belong to one client): each writes
# its wall seconds to a file.
concurrent() {
  local step=$1 pids=()
  drop
  local a; a=$(now)
  for i in $(seq 1 "$CLIENTS"); do
    (
      s=$(now)
      if [ "$step" = backup ]; then
        client "$i" backup --repo "$ADDR" --job "disk$i" "$IMG"
      else
        client "$i" restore --repo "$ADDR" --job "disk$i" "$WORK/out$i.img"
      fi
      e=$(now)
      echo "$e - $s" | bc -l >"$WORK/$step.$i"
    ) &
    pids+=($!)
  done
  local failed=0
  for p in "${pids[@]}"; do wait "$p" || failed=1; done
  [ "$failed" = 0 ] || { echo "a concurrent $step failed; service log: $WORK/serve.log" >&2; exit 1; }
  local b; b=$(now)
  echo "$b - $a" | bc -l >"$WORK/$step.total"
}
concurrent backup
concurrent restore
for i in $(seq 1 "$CLIENTS"); do
  cmp -s "$WORK/out$i.img" "$IMG" || { echo "client $i restored a different disk" >&2; exit 1; }
  rm -f "$WORK/out$i.img"
done

python3 - "$WORK" "$CLIENTS" "$SIZE" "$solo_b" "$solo_r" <<'EOF'
import statistics, sys
work, n, size, solo_b, solo_r = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"image {size // 2**20} MiB, {n} clients at once, one service on 127.0.0.1")
print(f"{'step':8} {'alone MB/s':>11} {'each: min':>10} {'median':>8} {'max':>8} {'slowest/fastest':>16} {'Jain':>6} {'aggregate MB/s':>15}")
for step, solo in (("backup", solo_b), ("restore", solo_r)):
    secs = [float(open(f"{work}/{step}.{i}").read()) for i in range(1, n + 1)]
    total = float(open(f"{work}/{step}.total").read())
    rates = [size / s / 1e6 for s in secs]
    jain = sum(rates) ** 2 / (n * sum(r * r for r in rates))
    print(f"{step:8} {size / solo / 1e6:11.0f} {min(rates):10.0f} {statistics.median(rates):8.0f} {max(rates):8.0f}"
          f" {max(secs) / min(secs):16.2f} {jain:6.3f} {n * size / total / 1e6:15.0f}")
EOF
echo "service peak RSS (VmHWM): $(awk '/^VmHWM/ {print $2 " " $3}' "/proc/$SERVER_PID/status" 2>/dev/null || echo unknown)"
