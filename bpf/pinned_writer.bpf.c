// SPDX-License-Identifier: GPL-2.0
/*
 * pinned_writer: writes a map pinned by name, which pinned_reader (another object) reuses.
 *
 * Trigger: syscalls:sys_enter_sched_rr_get_interval of target_tgid (0 = every process).
 * Maps:
 *   pinned_counts  HASH, pinning LIBBPF_PIN_BY_NAME (pin dir/pinned_counts), 256 entries,
 *                  key u32 tgid -> value u64 calls. Must stay identical to pinned_reader's.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pinned_counts SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_sched_rr_get_interval")
int write_pinned(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = current_tgid();
	__u64 zero = 0;
	__u64 *count;

	if (!tgid_wanted(target_tgid))
		return 0;
	count = bpf_map_lookup_elem(&pinned_counts, &tgid);
	if (!count) {
		bpf_map_update_elem(&pinned_counts, &tgid, &zero, BPF_NOEXIST);
		count = bpf_map_lookup_elem(&pinned_counts, &tgid);
		if (!count)
			return 0;
	}
	__sync_fetch_and_add(count, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
