// SPDX-License-Identifier: GPL-2.0
/*
 * tp_btf_counter: a BTF-enabled raw tracepoint (tp_btf/sys_enter: BPF_PROG_TYPE_TRACING with
 * attach_btf_id of btf_trace_sys_enter in the kernel's BTF) and its raw_tp twin, as
 * libbpf-tools ship them so that a tool can switch one off (autoload).
 *
 * Trigger: every system call of target_tgid (0 = every process).
 * Globals (const volatile, set before load, each a different size and type):
 *   enabled      bool    false: count nothing
 *   only_nr      __u64   count only this syscall number (all ones: every syscall)
 *   weight       __u8    what each call adds
 *   comm_prefix  char[8] count only tasks whose comm starts with this ("" = every task)
 * Maps:
 *   btf_counts  HASH 512, key u32 syscall number -> value u64 weighted calls (tp_btf program)
 *   raw_counts  HASH 512, key u32 syscall number -> value u64 weighted calls (raw_tp program)
 */
#include <linux/bpf.h>
#include <stdbool.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include "bpfmaps_tracepoint.h"

struct pt_regs;

const volatile __u32 target_tgid = 0;
const volatile bool enabled = true;
const volatile __u64 only_nr = ~0ULL;
const volatile __u8 weight = 1;
const volatile char comm_prefix[8] = "";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} btf_counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 512);
	__type(key, __u32);
	__type(value, __u64);
} raw_counts SEC(".maps");

static __always_inline void count(void *counts, long id)
{
	__u32 nr = (__u32)id;
	__u64 add = weight;
	__u64 *value;
	char comm[16];

	if (!enabled || !tgid_wanted(target_tgid))
		return;
	if (only_nr != ~0ULL && (__u64)id != only_nr)
		return;
	if (comm_prefix[0]) {
		bpf_get_current_comm(comm, sizeof(comm));
		for (int i = 0; i < 8 && comm_prefix[i]; i++)
			if (comm[i] != comm_prefix[i])
				return;
	}
	value = bpf_map_lookup_elem(counts, &nr);
	if (value)
		__sync_fetch_and_add(value, add);
	else
		bpf_map_update_elem(counts, &nr, &add, BPF_NOEXIST);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(count_btf, struct pt_regs *regs, long id)
{
	count(&btf_counts, id);
	return 0;
}

SEC("raw_tp/sys_enter")
int count_raw(struct bpf_raw_tracepoint_args *ctx)
{
	count(&raw_counts, (long)ctx->args[1]);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
