// SPDX-License-Identifier: GPL-2.0
/*
 * array_counter: an ARRAY indexed by u32.
 *
 * Trigger: syscalls:sys_enter_getpgid of target_tgid (0 = every process).
 * Maps:
 *   slots  ARRAY  8 entries, key u32 slot = (getpgid's pid argument) % 8 -> value u64 calls
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

#define SLOTS 8

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} slots SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpgid")
int count_getpgid(struct trace_event_raw_sys_enter *ctx)
{
	__u32 slot;
	__u64 *count;

	if (!tgid_wanted(target_tgid))
		return 0;
	slot = (__u32)(ctx->args[0] % SLOTS);
	count = bpf_map_lookup_elem(&slots, &slot);
	if (count)
		__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
