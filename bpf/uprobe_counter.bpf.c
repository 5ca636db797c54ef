// SPDX-License-Identifier: GPL-2.0
/*
 * uprobe_counter: user-space probes whose sections name no target (SEC("uprobe"),
 * SEC("uretprobe")), as libbpf-tools write them: the target comes from user space
 * (`bpfmaps run --uprobe PROG=PATH:SYMBOL`, `AttachOptions::uprobes`).
 *
 * Trigger: every call of (return from) the probed function, by target_tgid (0 = every process).
 * Maps:
 *   uprobe_calls  HASH 64, key u32 tgid -> value u64 calls (entry probe)
 *   uretprobe_calls  HASH 64, key u32 tgid -> value u64 returns (return probe)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} uprobe_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u64);
} uretprobe_calls SEC(".maps");

static __always_inline void count(void *calls)
{
	__u32 tgid = current_tgid();
	__u64 one = 1;
	__u64 *value;

	if (!tgid_wanted(target_tgid))
		return;
	value = bpf_map_lookup_elem(calls, &tgid);
	if (value)
		__sync_fetch_and_add(value, 1);
	else
		bpf_map_update_elem(calls, &tgid, &one, BPF_NOEXIST);
}

SEC("uprobe")
int count_entry(void *ctx)
{
	count(&uprobe_calls);
	return 0;
}

SEC("uretprobe")
int count_return(void *ctx)
{
	count(&uretprobe_calls);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
