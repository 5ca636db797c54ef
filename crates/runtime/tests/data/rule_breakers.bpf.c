// SPDX-License-Identifier: GPL-2.0
/*
 * rule_breakers.bpf.c: programs that break the rules the kernel's verifier enforces, for the user
 * engine's tests (crates/runtime/tests/rules.rs). The kernel refuses to load them; the user
 * engine must stop each one with a trap (or refuse it at load) and keep the host running.
 *
 * Build (from this directory):
 *   clang -target bpf -g -O2 -fdebug-compilation-dir=. -I../../../../bpf/include \
 *       -I/usr/include/$(gcc -print-multiarch) \
 *       -c rule_breakers.bpf.c -o rule_breakers.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ring SEC(".maps");

/* Reads the stack at a context-chosen index: args[0] = 1000 is far above the frame. */
SEC("tracepoint/rules/oob_stack")
int oob_stack(struct trace_event_raw_sys_enter *ctx)
{
	volatile char buf[16] = {};
	__u64 index = ctx->args[0];

	return buf[index];
}

/* Reads a context field at a context-chosen offset. */
SEC("tracepoint/rules/oob_ctx")
int oob_ctx(struct trace_event_raw_sys_enter *ctx)
{
	return (int)ctx->args[ctx->args[0]];
}

/* Writes element args[0] of an 8-byte map value: index 1 is past the value. */
SEC("tracepoint/rules/past_value")
int past_value(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&values, &zero);

	if (!value)
		return 1;
	value[ctx->args[0]] = 42;
	return 0;
}

/* Loops until args[0] is 1, which it never becomes inside the loop. */
SEC("tracepoint/rules/endless")
int endless(struct trace_event_raw_sys_enter *ctx)
{
	volatile __u64 spins = 0;

	while (ctx->args[0] != 1)
		spins++;
	return 0;
}

/* Passes args[0] as a map: not a map handle. */
SEC("tracepoint/rules/bad_map")
int bad_map(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;

	return bpf_map_lookup_elem((void *)ctx->args[0], &zero) != 0;
}

/* Updates with the flags in args[0]; returns the helper's result (-EINVAL for bad flags). */
SEC("tracepoint/rules/bad_flags")
int bad_flags(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	__u64 one = 1;

	return bpf_map_update_elem(&values, &zero, &one, ctx->args[0]);
}

/* Writes a ring buffer record after submitting it. */
SEC("tracepoint/rules/use_after_submit")
int use_after_submit(struct trace_event_raw_sys_enter *ctx)
{
	__u64 *record = bpf_ringbuf_reserve(&ring, sizeof(*record), 0);

	if (!record)
		return 1;
	*record = 7;
	bpf_ringbuf_submit(record, 0);
	*(volatile __u64 *)record = 8;
	return 0;
}

/* A bpf_loop callback that writes far past the caller's stack buffer it was given. */
static long bad_step(__u64 index, void *data)
{
	((volatile char *)data)[index * 4096] = 1;
	return 0;
}

SEC("tracepoint/rules/callback_trap")
int callback_trap(struct trace_event_raw_sys_enter *ctx)
{
	char buf[8] = {};

	return bpf_loop(ctx->args[0], bad_step, buf, 0);
}

char LICENSE[] SEC("license") = "GPL";
