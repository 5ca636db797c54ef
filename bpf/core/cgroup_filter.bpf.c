// SPDX-License-Identifier: GPL-2.0
// The cgroup filter of libbpf-tools: a BPF_MAP_TYPE_CGROUP_ARRAY that user space fills with a
// cgroup directory fd, and bpf_current_task_under_cgroup on it. `under_cgroup` returns the
// helper's result for slot ctx->args[0]; `filtered` counts only under a set filter, the
// libbpf-tools way (`if (filter_cg && !bpf_current_task_under_cgroup(...))`).
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_CGROUP_ARRAY);
	__type(key, u32);
	__type(value, u32);
	__uint(max_entries, 4);
} cgroup_map SEC(".maps");

const volatile bool filter_cg = false;

__u64 counted = 0;

SEC("raw_tp/sys_enter")
int under_cgroup(struct bpf_raw_tracepoint_args *ctx)
{
	return bpf_current_task_under_cgroup(&cgroup_map, (u32)ctx->args[0]);
}

SEC("raw_tp/sys_enter")
int filtered(void *ctx)
{
	if (filter_cg && !bpf_current_task_under_cgroup(&cgroup_map, 0))
		return 0;
	__sync_fetch_and_add(&counted, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
