#!/usr/bin/env bash
# Upload and restore throughput of the S3 tier against a store with Object Lock (the local
# Ceph RGW from shared/s3/ci-s3-objectlock.sh). Not a timed test: prints a table.
#   usage: S3_ENDPOINT=... S3_ACCESS_KEY=... S3_SECRET_KEY=... bench/s3.sh [SIZE_MIB=1024]
# Needs release binaries (cargo build --release). Each run uses a new bucket.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${S3_ENDPOINT:?start the RGW (shared/s3/ci-s3-objectlock.sh start) and export its last line}"
MIB=${1:-1024}
B=target/release
W=$(mktemp -d "${TMPDIR:-/tmp}/bulwark-s3-bench.XXXXXX")
trap 'rm -rf "$W"' EXIT
printf 'access_key_id = "%s"\nsecret_access_key = "%s"\n' "$S3_ACCESS_KEY" "$S3_SECRET_KEY" > "$W/creds"
chmod 600 "$W/creds"
bucket="bench-$(date +%s)"
# Incompressible data, so that the restore point is as large as the image.
head -c $((MIB << 20)) /dev/urandom > "$W/disk.img"
$B/bulwark-repo init "$W/repo" >/dev/null 2>&1
$B/bulwark backup --repo "$W/repo" --job bench "$W/disk.img" >/dev/null
size=$(du -b --apparent-size -s "$W/repo/store" | cut -f1)
$B/bulwark-tier add "$W/repo" --endpoint "$S3_ENDPOINT" --bucket "$bucket" \
  --credentials "$W/creds" --create-bucket >/dev/null
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>"$W/err" || { cat "$W/err"; exit 2; }; e=$(date +%s.%N); awk -v a="$s" -v b="$e" 'BEGIN{printf "%.2f", b-a}'; }
sync_s=$(t $B/bulwark-tier sync "$W/repo")
verify_s=$(t $B/bulwark-tier verify "$W/repo")
import_s=$(t $B/bulwark-tier import "$W/rebuilt" --endpoint "$S3_ENDPOINT" --bucket "$bucket" --credentials "$W/creds")
restore_s=$(t $B/bulwark restore --repo "$W/rebuilt" --job bench "$W/out.img")
cmp "$W/out.img" "$W/disk.img"
mbps() { awk -v n="$size" -v s="$1" 'BEGIN{printf "%.0f", n/s/1e6}'; }
echo "S3 tier, $(nproc) cores, restore point of $((size >> 20)) MiB (incompressible), endpoint $S3_ENDPOINT"
printf '%-44s %8s %8s\n' step seconds MB/s
printf '%-44s %8.1f %8s\n' "tier sync (multipart upload + lock readback)" "$sync_s" "$(mbps "$sync_s")"
printf '%-44s %8.1f %8s\n' "tier verify (head + download + BLAKE3)" "$verify_s" "$(mbps "$verify_s")"
printf '%-44s %8.1f %8s\n' "tier import (list + download + check)" "$import_s" "$(mbps "$import_s")"
printf '%-44s %8.1f %8s\n' "bulwark restore from the tier alone" "$restore_s" "$(mbps "$restore_s")"
