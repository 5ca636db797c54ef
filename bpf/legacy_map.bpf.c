// SPDX-License-Identifier: GPL-2.0
/*
 * legacy_map: one map declared the legacy way, as a struct bpf_map_def in SEC("maps")
 * (no BTF type information for its key and value).
 *
 * Trigger: syscalls:sys_enter_sched_get_priority_min of target_tgid (0 = every process).
 * Maps:
 *   legacy_counts  HASH (legacy definition) 128 entries, key u32 (the policy argument, truncated)
 *                  -> value u64 calls
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct bpf_map_def SEC("maps") legacy_counts = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 128,
	.map_flags = 0,
};

SEC("tracepoint/syscalls/sys_enter_sched_get_priority_min")
int count_priority_min(struct trace_event_raw_sys_enter *ctx)
{
	__u32 policy = (__u32)ctx->args[0];
	__u64 one = 1;
	__u64 *count;

	if (!tgid_wanted(target_tgid))
		return 0;

	count = bpf_map_lookup_elem(&legacy_counts, &policy);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&legacy_counts, &policy, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
