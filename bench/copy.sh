#!/usr/bin/env bash
# Backup copy jobs (docs/copy-jobs.md): copy throughput over TLS on 127.0.0.1 next to backup
# throughput over the same service, and the bytes an incremental copy sends against the
# incremental's new stored bytes. Standalone: builds release binaries and the images.
#   bench/copy.sh                 images from $BENCH_DIR (default /var/tmp/bulwark-bench), made
#                                 by bench/make-images.sh if missing (IMAGE_MIB, default 4096)
#   RUNS=3 bench/copy.sh          median of 3 runs per step
#   COLD=0 bench/copy.sh          keep the page cache (default: dropped before each step as root)
# The source is a local repository folder; the target is `bulwark-repo serve` as a throw-away
# system user when root. Every run copies a job of its own, so each copy starts from nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/service.sh
bench_prepare
service_workdir copybench
js() { python3 -c "import json,sys; v=json.load(sys.stdin); print($1)"; }

SREPO=$WORK/source
"$BIN/bulwark-repo" init "$SREPO" >/dev/null
TREPO=$WORK/net/repo
mkdir -p "$WORK/net"; [ -n "$USER_CREATED" ] && chown "$USER_CREATED" "$WORK/net"
service_init "$TREPO"
service_start "$TREPO" --max-connections 8
export BULWARK_CONFIG_DIR=$WORK/client
service_enroll "$TREPO" copier

backup_t=(); full_t=(); inc_t=(); full_sent=(); inc_sent=(); inc_new=()
for r in $(seq 1 "$RUNS"); do
  # Backup over the same service, for comparison.
  drop
  a=$(now); "$BIN/bulwark" backup --repo "$ADDR" --job "bk-$r" "$D1" >/dev/null; b=$(now)
  backup_t+=("$(echo "$b - $a" | bc -l)")
  # The source job: day 1, copied; then day 2, copied.
  "$BIN/bulwark" backup --repo "$SREPO" --job "cp-$r" "$D1" >/dev/null
  drop
  a=$(now); out=$("$BIN/bulwark" --json copy --from "$SREPO" --to "$ADDR" --job "cp-$r"); b=$(now)
  full_t+=("$(echo "$b - $a" | bc -l)")
  full_sent+=("$(echo "$out" | js 'v["bytes_sent"]')")
  new=$("$BIN/bulwark" --json backup --repo "$SREPO" --job "cp-$r" "$D2" | js 'v["bytes_stored"]')
  drop
  a=$(now); out=$("$BIN/bulwark" --json copy --from "$SREPO" --to "$ADDR" --job "cp-$r"); b=$(now)
  inc_t+=("$(echo "$b - $a" | bc -l)")
  inc_sent+=("$(echo "$out" | js 'v["bytes_sent"]')")
  inc_new+=("$new")
  # Both sides hold the same points with the same digests.
  "$BIN/bulwark" copy --verify --from "$SREPO" --to "$ADDR" --job "cp-$r" >/dev/null \
    || { echo "copy --verify failed for cp-$r" >&2; exit 1; }
done
bt=$(printf '%s\n' "${backup_t[@]}" | median)
ft=$(printf '%s\n' "${full_t[@]}" | median)
it=$(printf '%s\n' "${inc_t[@]}" | median)
fs=$(printf '%s\n' "${full_sent[@]}" | median)
is=$(printf '%s\n' "${inc_sent[@]}" | median)
in=$(printf '%s\n' "${inc_new[@]}" | median)
SERVICE_HWM=$(awk '/^VmHWM/ {print $2 " " $3}' "/proc/$SERVER_PID/status" 2>/dev/null || echo unknown)
echo "image: $D1 / day2 ($((SIZE / 1048576)) MiB), $(nproc) cores, runs=$RUNS, cold cache=$COLD"
printf 'backup over TLS (full, day 1):  %6.2f s  %5d MB/s of disk\n' "$bt" "$(echo "$SIZE / $bt / 1000000" | bc)"
printf 'copy of that full over TLS:     %6.2f s  %5d MB/s of disk, %d MB/s of stored bytes sent (%d bytes)\n' \
  "$ft" "$(echo "$SIZE / $ft / 1000000" | bc)" "$(echo "$fs / $ft / 1000000" | bc)" "$fs"
printf 'copy of the incremental:        %6.2f s  sent %d bytes for %d new stored bytes: %s x\n' \
  "$it" "$is" "$in" "$(echo "scale=4; $is / $in" | bc)"
echo "service peak RSS (VmHWM): $SERVICE_HWM"
