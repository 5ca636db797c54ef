// SPDX-License-Identifier: GPL-2.0
/*
 * opensnoop: one ring buffer record per openat(2) of the traced processes, with the path the
 * caller passed (read from its memory with bpf_probe_read_user_str), its flags and the return
 * value (the new fd or -errno).
 *
 * Triggers: syscalls:sys_enter_openat (remember the path and flags by thread id) and
 * syscalls:sys_exit_openat (emit the record, forget the thread). Only target_tgid when set.
 * Maps:
 *   pending  HASH     key u32 tid -> struct pending (path, flags) between enter and exit
 *   events   RINGBUF  struct open_event records
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

#define PATH_LEN 256
#define TASK_COMM_LEN 16

const volatile __u32 target_tgid = 0;

struct pending {
	__s64 flags;
	__s32 path_len;
	__u32 pad;
	char path[PATH_LEN];
};

/* The record: 24 bytes of ids and results, the comm, the path (NUL-terminated). */
struct open_event {
	__u32 tgid;
	__u32 tid;
	__u32 uid;
	__s32 path_len;
	__s64 ret;
	__s64 flags;
	char comm[TASK_COMM_LEN];
	char path[PATH_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 10240);
	__type(key, __u32);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_openat")
int openat_enter(struct trace_event_raw_sys_enter *ctx)
{
	__u32 tid = current_tid();
	struct pending *p;
	struct pending zero = {};

	if (!tgid_wanted(target_tgid))
		return 0;
	if (bpf_map_update_elem(&pending, &tid, &zero, BPF_ANY))
		return 0;
	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	p->flags = (__s64)ctx->args[2];
	p->path_len = bpf_probe_read_user_str(p->path, sizeof(p->path), (const void *)ctx->args[1]);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat")
int openat_exit(struct trace_event_raw_sys_exit *ctx)
{
	__u32 tid = current_tid();
	struct pending *p;
	struct open_event *e;

	p = bpf_map_lookup_elem(&pending, &tid);
	if (!p)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (e) {
		e->tgid = current_tgid();
		e->tid = tid;
		e->uid = (__u32)bpf_get_current_uid_gid();
		e->path_len = p->path_len;
		e->ret = ctx->ret;
		e->flags = p->flags;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		__builtin_memcpy(e->path, p->path, sizeof(e->path));
		bpf_ringbuf_submit(e, 0);
	}
	bpf_map_delete_elem(&pending, &tid);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
