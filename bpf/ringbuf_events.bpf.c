// SPDX-License-Identifier: GPL-2.0
/*
 * ringbuf_events: a RINGBUF fed three ways in a pattern a consumer can predict exactly.
 *
 * Trigger: syscalls:sys_enter_sched_getscheduler of target_tgid (0 = every process). Each call
 * with pid argument A produces, in this order:
 *   1. bpf_ringbuf_reserve + bpf_ringbuf_submit of {kind 1, tgid, A}
 *   2. bpf_ringbuf_reserve + bpf_ringbuf_discard of {kind 2, tgid, A} (never delivered)
 *   3. bpf_ringbuf_output of {kind 3, tgid, A}
 * so a consumer sees (1, A), (3, A) per call, and the ring holds three 24-byte records per call.
 * Maps:
 *   events         RINGBUF  16384 bytes; records are struct rb_event {
 *                      u32 kind;  1 submitted, 2 discarded, 3 output
 *                      u32 tgid;
 *                      u64 arg;   the syscall's first argument
 *                  }  (16 bytes)
 *   ringbuf_drops  ARRAY 1 entry, key u32 0 -> value u64 reservations or outputs that failed
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

#define RB_KIND_SUBMITTED 1
#define RB_KIND_DISCARDED 2
#define RB_KIND_OUTPUT 3

const volatile __u32 target_tgid = 0;

struct rb_event {
	__u32 kind;
	__u32 tgid;
	__u64 arg;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ringbuf_drops SEC(".maps");

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *drops = bpf_map_lookup_elem(&ringbuf_drops, &zero);

	if (drops)
		__sync_fetch_and_add(drops, 1);
}

SEC("tracepoint/syscalls/sys_enter_sched_getscheduler")
int ringbuf_pattern(struct trace_event_raw_sys_enter *ctx)
{
	struct rb_event *event;
	struct rb_event copy = {};
	__u32 tgid = current_tgid();

	if (!tgid_wanted(target_tgid))
		return 0;

	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (event) {
		event->kind = RB_KIND_SUBMITTED;
		event->tgid = tgid;
		event->arg = ctx->args[0];
		bpf_ringbuf_submit(event, 0);
	} else {
		count_drop();
	}

	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (event) {
		event->kind = RB_KIND_DISCARDED;
		event->tgid = tgid;
		event->arg = ctx->args[0];
		bpf_ringbuf_discard(event, 0);
	} else {
		count_drop();
	}

	copy.kind = RB_KIND_OUTPUT;
	copy.tgid = tgid;
	copy.arg = ctx->args[0];
	if (bpf_ringbuf_output(&events, &copy, sizeof(copy), 0) != 0)
		count_drop();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
