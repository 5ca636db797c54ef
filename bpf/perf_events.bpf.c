// SPDX-License-Identifier: GPL-2.0
/*
 * perf_events: a PERF_EVENT_ARRAY written with bpf_perf_event_output(BPF_F_CURRENT_CPU).
 *
 * Trigger: syscalls:sys_enter_getpriority of target_tgid (0 = every process); one sample per call.
 * Maps:
 *   perf_out       PERF_EVENT_ARRAY  key u32 cpu -> value u32 perf event fd; max_entries left 0
 *                  in the object, so the loader sets it to the number of possible CPUs (as libbpf)
 *                  Samples are struct perf_sample {
 *                      u32 tgid;
 *                      u32 cpu;   bpf_get_smp_processor_id()
 *                      u64 who;   getpriority's second argument
 *                  }  (16 bytes; the kernel reports raw_size 20, with 4 bytes of padding)
 *   output_errors  ARRAY 1 entry, key u32 0 -> value u64 outputs that failed (no reader
 *                  installed on this CPU: ENOENT; ring full: ENOSPC, also counted by the kernel
 *                  as lost samples)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct perf_sample {
	__u32 tgid;
	__u32 cpu;
	__u64 who;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} output_errors SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_getpriority")
int perf_sample_getpriority(struct trace_event_raw_sys_enter *ctx)
{
	struct perf_sample sample = {};
	__u32 zero = 0;
	__u64 *errors;

	if (!tgid_wanted(target_tgid))
		return 0;

	sample.tgid = current_tgid();
	sample.cpu = bpf_get_smp_processor_id();
	sample.who = ctx->args[1];
	if (bpf_perf_event_output(ctx, &perf_out, BPF_F_CURRENT_CPU, &sample, sizeof(sample)) != 0) {
		errors = bpf_map_lookup_elem(&output_errors, &zero);
		if (errors)
			__sync_fetch_and_add(errors, 1);
	}
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
