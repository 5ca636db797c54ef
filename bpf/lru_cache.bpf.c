// SPDX-License-Identifier: GPL-2.0
/*
 * lru_cache: an LRU_HASH used as a cache of the file descriptors a process syncs.
 *
 * Trigger: syscalls:sys_enter_fdatasync of target_tgid (0 = every process); invalid fds are fine
 * (the syscall fails with EBADF after the tracepoint ran).
 * Maps:
 *   fd_cache  LRU_HASH  64 entries, key u32 fd -> value struct fd_seen {
 *                 u64 last_seen_ns;   bpf_ktime_get_ns() of the latest call
 *                 u64 hits;           calls with this fd while it stayed cached
 *             }  (16 bytes; a miss inserts {now, 1}, a hit updates in place)
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

const volatile __u32 target_tgid = 0;

struct fd_seen {
	__u64 last_seen_ns;
	__u64 hits;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct fd_seen);
} fd_cache SEC(".maps");

SEC("tracepoint/syscalls/sys_enter_fdatasync")
int cache_fdatasync(struct trace_event_raw_sys_enter *ctx)
{
	__u32 fd = (__u32)ctx->args[0];
	struct fd_seen *seen;
	struct fd_seen fresh = {};

	if (!tgid_wanted(target_tgid))
		return 0;

	seen = bpf_map_lookup_elem(&fd_cache, &fd); /* a lookup marks the entry referenced */
	if (seen) {
		seen->last_seen_ns = bpf_ktime_get_ns();
		__sync_fetch_and_add(&seen->hits, 1);
		return 0;
	}
	fresh.last_seen_ns = bpf_ktime_get_ns();
	fresh.hits = 1;
	bpf_map_update_elem(&fd_cache, &fd, &fresh, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
