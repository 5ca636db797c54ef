// SPDX-License-Identifier: GPL-2.0
/*
 * raw_tp_counter: a raw tracepoint program (attached by name, no tracefs event id involved).
 *
 * Trigger: raw tracepoint sys_enter (every system call) of target_tgid (0 = every process). Its
 * context is struct bpf_raw_tracepoint_args: args[0] is the struct pt_regs pointer, args[1] the
 * system call number.
 * Maps:
 *   syscall_counts  HASH 512 entries, key u32 syscall number (x86-64 numbering) -> value u64 calls
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} syscall_counts SEC(".maps");

SEC("raw_tracepoint/sys_enter")
int count_syscalls(struct bpf_raw_tracepoint_args *ctx)
{
	__u32 nr = (__u32)ctx->args[1];
	__u64 one = 1;
	__u64 *count;

	if (!tgid_wanted(target_tgid))
		return 0;
	count = bpf_map_lookup_elem(&syscall_counts, &nr);
	if (count)
		__sync_fetch_and_add(count, 1);
	else
		bpf_map_update_elem(&syscall_counts, &nr, &one, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
