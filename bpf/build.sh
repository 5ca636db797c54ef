#!/usr/bin/env bash
# Builds bpfmaps' BPF programs: every bpf/NAME.bpf.c becomes bpf/obj/NAME.bpf.o, every
# bpf/rejected/NAME.bpf.c (programs the verifier must refuse, for tests of the loader's errors)
# becomes bpf/obj/rejected/NAME.bpf.o, and every bpf/core/NAME.bpf.c (CO-RE programs in the
# style of libbpf-tools) becomes bpf/obj/core/NAME.bpf.o, compiled against a vmlinux.h that is
# generated from this machine's BTF into bpf/build/ (never committed).
#
#   bpf/build.sh               rebuild the committed objects in bpf/obj/
#   bpf/build.sh --out DIR     build into DIR instead (created if missing)
#   bpf/build.sh --check [--out DIR]
#                              build into DIR (default: a fresh temporary directory), then check
#                              that the kernel loads every object (bpftool prog loadall) and print
#                              the directory; tests run on those objects with
#                              BPFMAPS_BPF_OBJ_DIR=DIR.
#
# Needs clang (-target bpf), libbpf-dev (bpf/bpf_helpers.h), bpftool (vmlinux.h) and, for --check,
# root.
# Missing Debian packages are installed when apt-get is available and we are root.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/obj"
check=0
out_given=0
while [ $# -gt 0 ]; do
    case "$1" in
        --check) check=1 ;;
        --out) shift; out="$1"; out_given=1 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
if [ "$check" = 1 ] && [ "$out_given" = 0 ]; then
    out="$(mktemp -d /tmp/bpfmaps-bpf-XXXXXX)"
fi

need_packages=()
command -v clang >/dev/null || need_packages+=(clang llvm)
[ -e /usr/include/bpf/bpf_helpers.h ] || need_packages+=(libbpf-dev)
[ -e /usr/include/asm/types.h ] || [ -e /usr/include/x86_64-linux-gnu/asm/types.h ] \
    || need_packages+=(linux-libc-dev)
command -v bpftool >/dev/null || need_packages+=(bpftool)
if [ ${#need_packages[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "build.sh: installing ${need_packages[*]}" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_packages[@]}" >&2
    else
        echo "build.sh: missing ${need_packages[*]} (install them, e.g. with apt-get)" >&2
        exit 1
    fi
fi

arch_include=""
multiarch="$(gcc -print-multiarch 2>/dev/null || true)"
if [ -n "$multiarch" ] && [ -d "/usr/include/$multiarch" ]; then
    arch_include="-I/usr/include/$multiarch"
fi

mkdir -p "$out" "$out/rejected" "$out/core"
out="$(cd "$out" && pwd)"
# vmlinux.h for the CO-RE programs, from the running kernel's BTF (or $BPFMAPS_VMLINUX_BTF).
vmlinux_btf="${BPFMAPS_VMLINUX_BTF:-/sys/kernel/btf/vmlinux}"
mkdir -p "$here/build"
if [ ! -s "$here/build/vmlinux.h" ] || [ "$vmlinux_btf" -nt "$here/build/vmlinux.h" ]; then
    bpftool btf dump file "$vmlinux_btf" format c > "$here/build/vmlinux.h.tmp"
    mv "$here/build/vmlinux.h.tmp" "$here/build/vmlinux.h"
fi
# Compile from inside bpf/ with relative paths and a relative compilation directory, so no
# absolute path reaches the debug info or BTF line info: the objects are the same byte for byte
# wherever the repository is cloned.
cd "$here"
for src in *.bpf.c rejected/*.bpf.c; do
    name="$(basename "$src" .c)"
    dest="$out"
    [ "$(dirname "$src")" = rejected ] && dest="$out/rejected"
    # shellcheck disable=SC2086 # arch_include is empty or one flag
    clang -target bpf -g -O2 -Wall -Werror -I include $arch_include \
        -fdebug-compilation-dir=. -c "$src" -o "$dest/$name.o"
done
for src in core/*.bpf.c; do
    name="$(basename "$src" .c)"
    clang -target bpf -g -O2 -Wall -Werror -D__TARGET_ARCH_x86 -I build -I include \
        -fdebug-compilation-dir=. -c "$src" -o "$out/core/$name.o"
done
cd - >/dev/null
echo "build.sh: built $(ls "$out"/*.bpf.o | wc -l) objects in $out" >&2

if [ "$check" = 1 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "build.sh --check: loading into the kernel needs root" >&2
        exit 1
    fi
    mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf
    pins="/sys/fs/bpf/bpfmaps-check-$$"
    log="$(mktemp /tmp/bpfmaps-check-XXXXXX)"
    mkdir -p "$pins"
    trap 'rm -rf "$pins" "$log"' EXIT
    status=0
    for obj in "$out"/*.bpf.o; do
        name="$(basename "$obj" .bpf.o)"
        case "$name" in
            legacy_map)
                # libbpf 1.x (and so bpftool) refuses SEC("maps") definitions by design; this
                # object is checked by bpfmaps' own loader (crates/kernel/tests/programs.rs).
                echo "skipped (libbpf 1.x has no legacy maps): $name" >&2
                continue ;;
            pinned_*)
                # LIBBPF_PIN_BY_NAME maps go to /sys/fs/bpf/MAP whatever pinmaps says: only load
                # when no such pin exists, and remove the pins this load made.
                pinned_maps=(pinned_counts)
                busy=0
                for m in "${pinned_maps[@]}"; do
                    [ ! -e "/sys/fs/bpf/$m" ] || busy=1
                done
                if [ "$busy" = 1 ]; then
                    echo "skipped (/sys/fs/bpf/${pinned_maps[*]} exists): $name" >&2
                    continue
                fi
                if bpftool prog loadall "$obj" "$pins/$name" >/dev/null 2>"$log"; then
                    echo "loads: $name" >&2
                else
                    echo "FAILED to load: $name" >&2
                    cat "$log" >&2
                    status=1
                fi
                for m in "${pinned_maps[@]}"; do rm -f "/sys/fs/bpf/$m"; done
                rm -rf "$pins/$name"
                continue ;;
        esac
        if bpftool prog loadall "$obj" "$pins/$name" pinmaps "$pins/$name-maps" >/dev/null 2>"$log"; then
            echo "loads: $name" >&2
        else
            echo "FAILED to load: $name" >&2
            cat "$log" >&2
            status=1
        fi
        rm -rf "$pins/$name" "$pins/$name-maps"
    done
    for obj in "$out"/core/*.bpf.o; do
        name="core-$(basename "$obj" .bpf.o)"
        if bpftool prog loadall "$obj" "$pins/$name" >/dev/null 2>"$log"; then
            echo "loads: $name" >&2
        else
            echo "FAILED to load: $name" >&2
            cat "$log" >&2
            status=1
        fi
        rm -rf "$pins/$name"
    done
    for obj in "$out"/rejected/*.bpf.o; do
        name="$(basename "$obj" .bpf.o)"
        if bpftool prog loadall "$obj" "$pins/$name" >/dev/null 2>"$log"; then
            echo "LOADED, but the verifier must reject it: rejected/$name" >&2
            status=1
        else
            echo "rejected as it must be: rejected/$name" >&2
        fi
        rm -rf "$pins/$name"
    done
    [ "$status" = 0 ] || exit 1
    echo "$out"
fi
