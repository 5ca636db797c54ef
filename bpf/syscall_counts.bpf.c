// SPDX-License-Identifier: GPL-2.0
/*
 * syscall_counts: every syscall entry and exit of the traced process, counted by syscall number.
 *
 * Triggers: raw_syscalls:sys_enter and raw_syscalls:sys_exit, only target_tgid when it is set.
 * Maps:
 *   enters  HASH  key u32 syscall number -> u64 entries
 *   exits   HASH  key u32 syscall number -> u64 exits
 *   errors  HASH  key u32 syscall number -> u64 exits with a return value in [-4095, -1]
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

#define COUNTER_MAP(name)                          \
	struct {                                   \
		__uint(type, BPF_MAP_TYPE_HASH);   \
		__uint(max_entries, 1024);         \
		__type(key, __u32);                \
		__type(value, __u64);              \
	} name SEC(".maps")

COUNTER_MAP(enters);
COUNTER_MAP(exits);
COUNTER_MAP(errors);

static __always_inline void bump(void *map, __u32 nr)
{
	__u64 one = 1;
	__u64 *count = bpf_map_lookup_elem(map, &nr);

	if (count)
		__sync_fetch_and_add(count, 1);
	else if (bpf_map_update_elem(map, &nr, &one, BPF_NOEXIST)) {
		/* EEXIST: another CPU inserted it first. */
		count = bpf_map_lookup_elem(map, &nr);
		if (count)
			__sync_fetch_and_add(count, 1);
	}
}

SEC("tracepoint/raw_syscalls/sys_enter")
int count_enter(struct trace_event_raw_sys_enter *ctx)
{
	if (!tgid_wanted(target_tgid))
		return 0;
	bump(&enters, (__u32)ctx->id);
	return 0;
}

SEC("tracepoint/raw_syscalls/sys_exit")
int count_exit(struct trace_event_raw_sys_exit *ctx)
{
	if (!tgid_wanted(target_tgid))
		return 0;
	bump(&exits, (__u32)ctx->id);
	if (ctx->ret < 0 && ctx->ret >= -4095)
		bump(&errors, (__u32)ctx->id);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
