#!/usr/bin/env bash
# Side-by-side benchmark against restic and BorgBackup (installed from the distribution's
# packages) and rustic, on the same deterministic 4 GiB images as bench/run.sh. Run as root so the page
# cache can be dropped before every step.   Example: sudo bench/compare.sh --runs 3
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v restic >/dev/null || ! command -v borg >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup >/dev/null
  else
    echo "install restic and borgbackup first (apt-get install restic borgbackup)" >&2; exit 2
  fi
fi
# rustic (the Rust restic) is not packaged in Debian 12: built from crates.io once, into
# /opt/rustic, when cargo can reach the registry; left out of the table otherwise.
if ! command -v rustic >/dev/null && [ ! -x /opt/rustic/bin/rustic ] && [ "$(id -u)" = 0 ]; then
  cargo install -q --locked --root /opt/rustic rustic-rs || echo "NOTE: cargo install rustic-rs failed; rustic is left out" >&2
fi
cargo build --release -q --bin bulwark --bin bulwark-repo --bin bulwark-limits
bench/make-images.sh
exec python3 bench/compare.py "$@"
