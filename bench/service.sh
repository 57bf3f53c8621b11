# Sourced by network.sh, network-clients.sh and copy.sh (not run on its own): a work folder under
# /var/tmp, a throw-away system user for the service when root (the service refuses root),
# and `bulwark-repo serve` on 127.0.0.1; the server, the folder and the user are removed on
# exit. Needs $BIN (the release binaries).
#   service_workdir NAME      sets WORK (and USER_CREATED when root) and the cleanup
#   as_service CMD...         runs CMD as the service user (as is when not root)
#   service_init REPO         `bulwark-repo init` as the service user; sets FP
#   service_start REPO ARG... starts `bulwark-repo serve REPO ARG...`; sets SERVER_PID, ADDR
#   bench_prepare             builds the release binaries and the images (if missing); sets
#                             BENCH_DIR, RUNS (1), COLD (1), BIN, D1, D2 (day 1 and 2), SIZE
#   service_token REPO CLIENT an enrollment token for CLIENT (printed)
#   service_enroll REPO CLIENT [ARG...]
#                             enrolls `bulwark ARG...` (e.g. --config-dir DIR) as CLIENT
#   drop                      drops the page cache before a cold step (root, COLD not 0)
#   now                       seconds since the epoch, with nanoseconds
#   median                    the median of the numbers on stdin, one a line

bench_prepare() {
  export BENCH_DIR=${BENCH_DIR:-/var/tmp/bulwark-bench}
  RUNS=${RUNS:-1}
  COLD=${COLD:-1}
  cargo build --release -q --bin bulwark --bin bulwark-repo
  BIN=$PWD/target/release
  [ -f "$BENCH_DIR/day2.img" ] || bench/make-images.sh
  D1=$BENCH_DIR/day1.img
  D2=$BENCH_DIR/day2.img
  SIZE=$(stat -c %s "$D1")
}

USER_CREATED=""
SERVER_PID=""
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null || true
  rm -rf "$WORK"
  [ -n "$USER_CREATED" ] && userdel "$USER_CREATED" 2>/dev/null || true
}

service_workdir() {
  WORK=$(mktemp -d "/var/tmp/bulwark-$1.XXXXXX")
  chmod 755 "$WORK"
  trap cleanup EXIT
  if [ "$(id -u)" = 0 ]; then
    USER_CREATED=bw$1$$
    useradd --system --no-create-home --shell /usr/sbin/nologin "$USER_CREATED"
    chown "$USER_CREATED" "$WORK"
  fi
}

as_service() {
  if [ -n "$USER_CREATED" ]; then
    setpriv --reuid="$USER_CREATED" --regid="$USER_CREATED" --clear-groups "$@"
  else
    "$@"
  fi
}

service_init() {
  FP=$(as_service "$BIN/bulwark-repo" --json init "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["fingerprint"])')
  # A benchmark gives every run its own job from one client: lift the per-client limits
  # (docs/protocol.md) that would otherwise refuse the 9th job of the day.
  sed -i -e 's/^new_jobs_per_day = .*/new_jobs_per_day = 100000/' \
    -e 's/^new_bytes_per_day = .*/new_bytes_per_day = "100%"/' \
    -e 's/^sealed_bytes = .*/sealed_bytes = "100%"/' "$1/repository.toml"
}

service_start() {
  local repo=$1; shift
  # A plain background command (not through as_service, a function that would run in a
  # subshell) so that $! is the server itself and the cleanup really stops it.
  if [ -n "$USER_CREATED" ]; then
    setpriv --reuid="$USER_CREATED" --regid="$USER_CREATED" --clear-groups \
      "$BIN/bulwark-repo" serve "$repo" --listen 127.0.0.1:0 "$@" >"$WORK/serve.out" 2>"$WORK/serve.log" &
  else
    "$BIN/bulwark-repo" serve "$repo" --listen 127.0.0.1:0 "$@" >"$WORK/serve.out" 2>"$WORK/serve.log" &
  fi
  SERVER_PID=$!
  for _ in $(seq 1 100); do grep -q listening "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
  ADDR=$(sed -n 's/^listening on //p' "$WORK/serve.out")
  [ -n "$ADDR" ] || { echo "bulwark-repo serve did not start:" >&2; cat "$WORK/serve.log" >&2; exit 1; }
}

service_token() {
  as_service "$BIN/bulwark-repo" --json enroll "$1" --client "$2" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])'
}

service_enroll() {
  local repo=$1 client=$2 token; shift 2
  token=$(service_token "$repo" "$client")
  "$BIN/bulwark" "$@" enroll "$ADDR" "$token" --fingerprint "$FP" >/dev/null
}

drop() { if [ "${COLD:-1}" != 0 ] && [ "$(id -u)" = 0 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi; }
now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
