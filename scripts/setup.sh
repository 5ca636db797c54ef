#!/usr/bin/env bash
# One-time setup of a fresh machine for bpfmaps' tests: the Debian packages that rebuild the BPF
# objects (clang, libbpf-dev) and the bpftool the interop tests compare against. Idempotent: it
# installs only what is missing. Needs root (it runs apt-get).
set -euo pipefail

missing=()
command -v clang >/dev/null 2>&1 || missing+=(clang)
[ -f /usr/include/bpf/bpf_helpers.h ] || missing+=(libbpf-dev)
command -v bpftool >/dev/null 2>&1 || [ -x /usr/sbin/bpftool ] || missing+=(bpftool)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
fi
