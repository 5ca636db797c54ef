#!/usr/bin/env bash
# The test command: installs what is missing, rebuilds the BPF objects from source (so the tests
# run on what the C says, not only on the committed objects), then runs every test of the
# workspace, kernel tests included (they need root and BPF; set BPFMAPS_SKIP_KERNEL=1 to skip
# them on purpose).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/setup.sh
# Rebuild in place and check that the kernel loads every object (bpftool prog loadall).
bash bpf/build.sh --check --out bpf/obj
export PATH="$PATH:/usr/sbin"
cargo test --workspace --no-fail-fast
