// SPDX-License-Identifier: GPL-2.0
/*
 * null_deref: a program the verifier must reject, for testing how the loader reports a
 * verifier rejection. It dereferences the result of bpf_map_lookup_elem without checking it
 * for NULL ("R0 invalid mem access 'map_value_or_null'").
 *
 * Trigger (never attached): syscalls:sys_enter_getppid.
 * Maps:
 *   values  HASH 1 entry, key u32 -> value u64 (a HASH: the verifier knows that an ARRAY
 *           lookup with a constant in-range key cannot return NULL)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} values SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getppid")
int unchecked_lookup(struct trace_event_raw_sys_enter *ctx)
{
	__u32 zero = 0;
	__u64 *value = bpf_map_lookup_elem(&values, &zero);

	*value += 1; /* no NULL check: rejected */
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
