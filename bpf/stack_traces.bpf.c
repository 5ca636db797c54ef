// SPDX-License-Identifier: GPL-2.0
/*
 * stack_traces: a STACK_TRACE map filled by bpf_get_stackid for the user and the kernel stack,
 * and a HASH counting each (process, user stack, kernel stack) triple. The process id sits beside
 * the user stack id because user addresses only mean something within that process.
 *
 * Trigger: syscalls:sys_enter_sched_get_priority_max of target_tgid (0 = every process).
 * Maps:
 *   stack_traces  STACK_TRACE  1024 entries, key u32 stack id -> value u64 ips[127]
 *                 (frames from the innermost; unused slots zero)
 *   stack_counts  HASH  key struct stack_key {
 *                     u32 tgid;
 *                     s32 user_stack_id;    bpf_get_stackid(BPF_F_USER_STACK), or -errno
 *                     s32 kernel_stack_id;  bpf_get_stackid(0), or -errno
 *                 }  (12 bytes, no padding) -> value u64 calls
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

#define MAX_STACK_DEPTH 127

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1024);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} stack_traces SEC(".maps");

struct stack_key {
	__u32 tgid;
	__s32 user_stack_id;
	__s32 kernel_stack_id;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, struct stack_key);
	__type(value, __u64);
} stack_counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_sched_get_priority_max")
int record_stacks(struct trace_event_raw_sys_enter *ctx)
{
	struct stack_key key = {};
	__u64 one = 1;
	__u64 *count;

	if (!tgid_wanted(target_tgid))
		return 0;

	key.tgid = current_tgid();
	key.user_stack_id = bpf_get_stackid(ctx, &stack_traces, BPF_F_USER_STACK);
	key.kernel_stack_id = bpf_get_stackid(ctx, &stack_traces, 0);

	count = bpf_map_lookup_elem(&stack_counts, &key);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&stack_counts, &key, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
