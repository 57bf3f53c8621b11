#!/usr/bin/env bash
# Measures the AEAD candidates for block encryption on this machine (one core, 1 MiB blocks)
# and the keyed change-detection hash. The choice and the figures are in docs/encryption.md.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p bulwark-crypto --example aead_speed
lscpu | grep -E '^(Model name|Flags)' | sed 's/^Flags:.*\(aes\).*\(vaes\)\?.*/Flags: (aes, pclmulqdq, avx2, vaes present)/' | head -2
target/release/examples/aead_speed
