// SPDX-License-Identifier: GPL-2.0
/*
 * openat_counter: the process counter behind `bpfmaps top`.
 *
 * Trigger: syscalls:sys_enter_openat, every process (or only target_tgid when it is set).
 * Maps:
 *   counts  HASH  key u32 tgid -> value u64 number of openat calls
 *           (lookup-or-init: insert 0 with BPF_NOEXIST, look up again, __sync_fetch_and_add)
 *   comms   HASH  key u32 tgid -> value char[16] bpf_get_current_comm() of the last opener,
 *           so the COMM of a process that has exited can still be shown.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

#define TASK_COMM_LEN 16
#define MAX_PROCESSES 10240

const volatile __u32 target_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCESSES);
	__type(key, __u32);
	__type(value, __u64);
} counts SEC(".maps");

struct comm {
	char comm[TASK_COMM_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PROCESSES);
	__type(key, __u32);
	__type(value, struct comm);
} comms SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int count_openat(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tgid = current_tgid();
	__u64 zero = 0;
	__u64 *count;
	struct comm comm = {};

	if (!tgid_wanted(target_tgid))
		return 0;

	count = bpf_map_lookup_elem(&counts, &tgid);
	if (!count) {
		/* EEXIST here means another CPU inserted it first: fine, look it up again. */
		bpf_map_update_elem(&counts, &tgid, &zero, BPF_NOEXIST);
		count = bpf_map_lookup_elem(&counts, &tgid);
		if (!count)
			return 0;
	}
	__sync_fetch_and_add(count, 1);

	bpf_get_current_comm(comm.comm, sizeof(comm.comm));
	bpf_map_update_elem(&comms, &tgid, &comm, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
