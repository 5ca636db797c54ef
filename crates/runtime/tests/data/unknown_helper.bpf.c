// SPDX-License-Identifier: GPL-2.0
/*
 * unknown_helper.bpf.c: a program calling helper id 9999, which no kernel (and not the user
 * engine) provides: loading the object must fail, naming the instruction. For
 * crates/runtime/tests/rules.rs.
 *
 * Build (from this directory):
 *   clang -target bpf -g -O2 -fdebug-compilation-dir=. -I../../../../bpf/include \
 *       -I/usr/include/$(gcc -print-multiarch) \
 *       -c unknown_helper.bpf.c -o unknown_helper.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

static long (*no_such_helper)(void) = (void *)9999;

SEC("tracepoint/rules/unknown_helper")
int unknown_helper(struct trace_event_raw_sys_enter *ctx)
{
	return no_such_helper() + 1;
}

char LICENSE[] SEC("license") = "GPL";
