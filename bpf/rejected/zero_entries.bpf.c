// SPDX-License-Identifier: GPL-2.0
/*
 * zero_entries: an object whose map the kernel must refuse to create (a HASH with
 * max_entries 0: EINVAL), for testing how the loader reports a map creation failure.
 *
 * Trigger (never attached): syscalls:sys_enter_getppid.
 * Maps:
 *   empty_hash  HASH 0 entries (invalid), key u32 -> value u64
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 0);
	__type(key, __u32);
	__type(value, __u64);
} empty_hash SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int use_empty_hash(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&empty_hash, &zero);

	return value ? 1 : 0;
}

char LICENSE[] SEC("license") = "GPL";
