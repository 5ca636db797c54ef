// SPDX-License-Identifier: GPL-2.0
/*
 * unattachable: an object with programs this machine cannot attach next to one it can, for
 * `--skip-unattachable`: a kprobe (no kprobes without CONFIG_KPROBES) and a tracepoint of
 * another architecture (syscalls:sys_enter_arm_sync_file_range exists on 32-bit ARM only).
 *
 * Trigger: getresgid(2) of target_tgid (0 = every process) for the attachable program.
 * Maps:
 *   getresgid_calls  ARRAY 1, key u32 0 -> value u64 calls (the tracepoint that exists)
 *   never_calls      ARRAY 1, key u32 0 -> value u64 calls of the programs that never attach
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} getresgid_calls SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} never_calls SEC(".maps");

static __always_inline void bump(void *map)
{
	__u32 zero = 0;
	__u64 *value;

	if (!tgid_wanted(target_tgid))
		return;
	value = bpf_map_lookup_elem(map, &zero);
	if (value)
		__sync_fetch_and_add(value, 1);
}

SEC("tracepoint/syscalls/sys_enter_getresgid")
int count_getresgid(struct trace_event_raw_sys_enter *ctx)
{
	bump(&getresgid_calls);
	return 0;
}

SEC("kprobe/do_nanosleep")
int probe_nanosleep(void *ctx)
{
	bump(&never_calls);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_arm_sync_file_range")
int arm_only(struct trace_event_raw_sys_enter *ctx)
{
	bump(&never_calls);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
