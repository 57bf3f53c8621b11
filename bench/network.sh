#!/usr/bin/env bash
# Local vs network throughput on the same images: full backup (day1), incremental (day2) and
# restore, once into a local repository and once through `bulwark-repo serve` over TLS on
# 127.0.0.1. Standalone: builds release binaries and the images it needs.
#   bench/network.sh                 uses $BENCH_DIR (default /var/tmp/bulwark-bench), made by
#                                    bench/make-images.sh if missing (IMAGE_MIB, default 4096)
#   RUNS=3 bench/network.sh          median of 3 runs per step
#   COLD=0 bench/network.sh          keep the page cache (default: dropped before each step
#                                    when root, as bench/run.sh does)
# The service runs as a throw-away system user when root (the service refuses root), else as
# the current user. Prints MB/s of disk size for each step and network/local ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/service.sh
bench_prepare
service_workdir netbench
# Median wall seconds of "$@" over RUNS runs; `prep` runs (untimed) before each.
timed() {
  local prep=$1; shift
  local ts=()
  for _ in $(seq 1 "$RUNS"); do
    eval "$prep"
    drop
    local a b; a=$(now); "$@" >/dev/null || { echo "failed: $*" >&2; exit 1; }; b=$(now)
    ts+=("$(echo "$b - $a" | bc -l)")
  done
  printf '%s\n' "${ts[@]}" | median
}
mbs() { echo "scale=0; $SIZE / $1 / 1000000" | bc -l; }

# Local repository.
LREPO=$WORK/local
reset_local() { rm -rf "$LREPO" "$WORK/out.img"; "$BIN/bulwark-repo" init "$LREPO" >/dev/null; }
l_full=$(timed 'reset_local' "$BIN/bulwark" backup --repo "$LREPO" --job bench "$D1")
l_inc=$(timed 'reset_local; "$BIN/bulwark" backup --repo "$LREPO" --job bench "$D1" >/dev/null' \
  "$BIN/bulwark" backup --repo "$LREPO" --job bench "$D2")
l_res=$(timed 'rm -f "$WORK/out.img"' "$BIN/bulwark" restore --repo "$LREPO" --job bench "$WORK/out.img")
rm -rf "$LREPO" "$WORK/out.img"

# The same through the service.
NREPO=$WORK/net/repo
mkdir -p "$WORK/net"; [ -n "$USER_CREATED" ] && chown "$USER_CREATED" "$WORK/net"
service_init "$NREPO"
service_start "$NREPO" --max-connections 8
export BULWARK_CONFIG_DIR=$WORK/client
# One client, enrolled once (the service rate-limits enrollment attempts per address); each
# run uses a job of its own, so a full is a full. `timed` runs in a subshell, so the step's
# name keeps the job names of different steps apart.
service_enroll "$NREPO" bench
n=0
newjob() { n=$((n + 1)); JOB="bench-$1-$n"; }
nb() { local cmd=$1; shift; "$BIN/bulwark" "$cmd" --repo "$ADDR" --job "$JOB" "$@"; }
n_full=$(timed 'newjob full' nb backup "$D1")
n_inc=$(timed 'newjob inc; nb backup "$D1" >/dev/null' nb backup "$D2")
n_res=$(timed 'newjob res; nb backup "$D1" >/dev/null; nb backup "$D2" >/dev/null; rm -f "$WORK/out.img"' nb restore "$WORK/out.img")
cmp -s "$WORK/out.img" "$D2" || { echo "network restore differs from day2.img" >&2; exit 1; }
# The service's peak memory over every step above (it runs as $SERVER_PID: setpriv execs).
SERVICE_HWM=$(awk '/^VmHWM/ {print $2 " " $3}' "/proc/$SERVER_PID/status" 2>/dev/null || echo unknown)

echo "image: $D1 / day2 ($((SIZE / 1048576)) MiB), $(nproc) cores, runs=$RUNS, cold cache=$COLD"
printf '%-12s %12s %12s %8s\n' step "local MB/s" "network MB/s" ratio
for s in full inc res; do
  l=l_$s; n=n_$s
  lm=$(mbs "${!l}"); nm=$(mbs "${!n}")
  printf '%-12s %12s %12s %7s%%\n' "$s" "$lm" "$nm" "$(echo "scale=0; 100 * ${!l} / ${!n}" | bc -l)"
done
echo "service peak RSS (VmHWM): $SERVICE_HWM"
