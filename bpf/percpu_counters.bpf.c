// SPDX-License-Identifier: GPL-2.0
/*
 * percpu_counters: PERCPU_ARRAY and PERCPU_HASH counters (each CPU counts into its own slot;
 * user space sums the slots).
 *
 * Trigger: syscalls:sys_enter_getsid of target_tgid (0 = every process).
 * Maps:
 *   total_calls  PERCPU_ARRAY  1 entry, key u32 0 -> value u64 calls on this CPU
 *   calls_by_arg PERCPU_HASH   key u32 (getsid's pid argument, truncated) -> value u64 calls on
 *                              this CPU (inserted with BPF_NOEXIST, then incremented in place)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} total_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} calls_by_arg SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getsid")
int count_getsid(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero_key = 0;
	__u32 arg = (__u32)ctx->args[0];
	__u64 zero = 0;
	__u64 *count;

	if (!tgid_wanted(target_tgid))
		return 0;

	count = bpf_map_lookup_elem(&total_calls, &zero_key);
	if (count)
		*count += 1; /* this CPU's slot: no other CPU writes it */

	count = bpf_map_lookup_elem(&calls_by_arg, &arg);
	if (!count) {
		bpf_map_update_elem(&calls_by_arg, &arg, &zero, BPF_NOEXIST);
		count = bpf_map_lookup_elem(&calls_by_arg, &arg);
		if (!count)
			return 0;
	}
	*count += 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
