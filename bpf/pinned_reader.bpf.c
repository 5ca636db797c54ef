// SPDX-License-Identifier: GPL-2.0
/*
 * pinned_reader: reads the map pinned_writer pins, reusing the pin instead of creating its own.
 *
 * Trigger: syscalls:sys_exit_sched_rr_get_interval of target_tgid (0 = every process), i.e.
 * after pinned_writer's sys_enter program counted the same call.
 * Maps:
 *   pinned_counts  HASH, pinning LIBBPF_PIN_BY_NAME, 256 entries, key u32 tgid -> value u64
 *                  (the same definition as pinned_writer's: only read here)
 *   reader_seen    ARRAY 1 entry, key u32 0 -> value u64 the count pinned_counts held for the
 *                  calling process at the latest exit (0 when it had none)
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

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} reader_seen SEC(".maps");

SEC("tracepoint/syscalls/sys_exit_sched_rr_get_interval")
int read_pinned(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tgid = current_tgid();
	__u32 zero = 0;
	__u64 *count;
	__u64 seen = 0;

	if (!tgid_wanted(target_tgid))
		return 0;
	count = bpf_map_lookup_elem(&pinned_counts, &tgid);
	if (count)
		seen = *count;
	bpf_map_update_elem(&reader_seen, &zero, &seen, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
