// SPDX-License-Identifier: GPL-2.0
/*
 * shared_map: two programs of one object communicating through one map.
 *
 * Triggers: syscalls:sys_enter_personality writes, syscalls:sys_exit_personality reads (both only
 * for target_tgid; 0 = every process).
 * Maps:
 *   inflight  HASH  key u32 thread id -> value u64 the persona argument of the call in progress
 *             (written by the enter program, read and deleted by the exit program)
 *   results   HASH  key u32 persona argument (truncated) -> value struct call_result {
 *                 u64 calls;     completed calls with that argument
 *                 s64 last_ret;  the return value of the latest one
 *             }  (16 bytes)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
} inflight SEC(".maps");

struct call_result {
	__u64 calls;
	__s64 last_ret;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct call_result);
} results SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_personality")
int personality_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = current_tid();
	__u64 arg = ctx->args[0];

	if (!tgid_wanted(target_tgid))
		return 0;
	bpf_map_update_elem(&inflight, &tid, &arg, BPF_ANY);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_personality")
int personality_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	__u64 *arg;
	__u32 key;
	struct call_result fresh = {};
	struct call_result *result;

	if (!tgid_wanted(target_tgid))
		return 0;
	arg = bpf_map_lookup_elem(&inflight, &tid);
	if (!arg)
		return 0; /* the call started before this program was attached */
	key = (__u32)*arg;
	bpf_map_delete_elem(&inflight, &tid);

	result = bpf_map_lookup_elem(&results, &key);
	if (result) {
		__sync_fetch_and_add(&result->calls, 1);
		result->last_ret = ctx->ret;
		return 0;
	}
	fresh.calls = 1;
	fresh.last_ret = ctx->ret;
	bpf_map_update_elem(&results, &key, &fresh, BPF_NOEXIST);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
