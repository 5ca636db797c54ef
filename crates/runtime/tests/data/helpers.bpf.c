// SPDX-License-Identifier: GPL-2.0
/*
 * helpers.bpf.c: programs that call the user engine's helpers and store what they return in
 * maps, for crates/runtime/tests/user_engine.rs (user engine only, never attached).
 *
 * Build (from this directory):
 *   clang -target bpf -g -O2 -fdebug-compilation-dir=. -I../../../../bpf/include \
 *       -I/usr/include/$(gcc -print-multiarch) \
 *       -c helpers.bpf.c -o helpers.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpfmaps_tracepoint.h"

/* Slots of `results`. */
#define R_PID_TGID 0
#define R_UID_GID 1
#define R_CPU 2
#define R_KTIME 3
#define R_BOOT 4
#define R_PRANDOM 5
#define R_PRINTK 6
#define R_PROBE_OK 7
#define R_PROBE_BAD 8
#define R_PROBE_STR 9
#define R_RB_SIZE 10
#define R_PERCPU_OTHER 11
#define R_PERCPU_BAD 12
#define R_COMM_LO 13
#define R_COMM_HI 14
#define R_LOOP_CALLS 15
#define R_LOOP_SUM 16
#define R_EACH_CALLS 17
#define R_EACH_SUM 18
#define R_LOOP_BAD_FLAGS 19
#define N_RESULTS 20

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, N_RESULTS);
	__type(key, __u32);
	__type(value, __u64);
} results SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} per_cpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32);
	__type(value, __u64);
} items SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} ring SEC(".maps");

static __always_inline void put(__u32 slot, __u64 value)
{
	bpf_map_update_elem(&results, &slot, &value, BPF_ANY);
}

SEC("tracepoint/helpers/current")
int current(struct trace_event_raw_sys_enter *ctx)
{
	char comm[16] = {};
	__u64 words[2];
	__u32 zero = 0;
	__u64 *mine;

	put(R_PID_TGID, bpf_get_current_pid_tgid());
	put(R_UID_GID, bpf_get_current_uid_gid());
	put(R_CPU, bpf_get_smp_processor_id());
	put(R_KTIME, bpf_ktime_get_ns());
	put(R_BOOT, bpf_ktime_get_boot_ns());
	put(R_PRANDOM, bpf_get_prandom_u32());
	bpf_get_current_comm(comm, sizeof(comm));
	__builtin_memcpy(words, comm, sizeof(words));
	put(R_COMM_LO, words[0]);
	put(R_COMM_HI, words[1]);
	/* This CPU's per-CPU slot, and another CPU's through lookup_percpu_elem. */
	mine = bpf_map_lookup_elem(&per_cpu, &zero);
	if (mine)
		*mine += 1;
	mine = bpf_map_lookup_percpu_elem(&per_cpu, &zero, ctx->args[0]);
	put(R_PERCPU_OTHER, mine ? *mine + 100 : 0);
	put(R_PERCPU_BAD, bpf_map_lookup_percpu_elem(&per_cpu, &zero, 4096) == 0);
	put(R_RB_SIZE, bpf_ringbuf_query(&ring, BPF_RB_RING_SIZE));
	return 0;
}

SEC("tracepoint/helpers/probe")
int probe(struct trace_event_raw_sys_enter *ctx)
{
	__u64 source = 0x1122334455667788ULL;
	__u64 copy = 0;
	char text[8] = "abc";
	char out[8] = {};
	long rc;

	rc = bpf_probe_read_kernel(&copy, sizeof(copy), &source);
	put(R_PROBE_OK, rc == 0 ? copy : 1);
	/* args[0] is an address no region covers. */
	rc = bpf_probe_read_user(&copy, sizeof(copy), (void *)ctx->args[0]);
	put(R_PROBE_BAD, (__u64)rc);
	rc = bpf_probe_read_kernel_str(out, sizeof(out), text);
	put(R_PROBE_STR, (__u64)rc);
	return 0;
}

SEC("tracepoint/helpers/printk")
int printk(struct trace_event_raw_sys_enter *ctx)
{
	long n = bpf_printk("bpfmaps %d %s", (int)ctx->args[0], "hello");

	put(R_PRINTK, (__u64)n);
	return 0;
}

struct loop_state {
	__u64 calls;
	__u64 sum;
};

static long loop_step(__u64 index, void *data)
{
	struct loop_state *state = data;

	state->calls += 1;
	state->sum += index;
	return state->sum >= 10 ? 1 : 0; /* stop once the sum reaches 10 */
}

SEC("tracepoint/helpers/loop")
int loop(struct trace_event_raw_sys_enter *ctx)
{
	struct loop_state state = {};
	long rc;

	rc = bpf_loop(ctx->args[0], loop_step, &state, 0);
	put(R_LOOP_CALLS, state.calls | ((__u64)rc << 32));
	put(R_LOOP_SUM, state.sum);
	put(R_LOOP_BAD_FLAGS, (__u64)bpf_loop(1, loop_step, &state, 1));
	return 0;
}

static long each_item(void *map, __u32 *key, __u64 *value, struct loop_state *state)
{
	state->calls += 1;
	state->sum += *key * 1000 + *value;
	*value += 1;
	return 0;
}

SEC("tracepoint/helpers/for_each")
int for_each(struct trace_event_raw_sys_enter *ctx)
{
	struct loop_state state = {};
	long rc;

	rc = bpf_for_each_map_elem(&items, each_item, &state, 0);
	put(R_EACH_CALLS, state.calls | ((__u64)rc << 32));
	put(R_EACH_SUM, state.sum);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";

/* Helpers given a destination size the program chose (args[1]) that is larger than the
 * destination: args[0] picks the helper (0 probe_read_user, 1 get_current_comm,
 * 2 probe_read_user_str). The run must stop on the destination, never size anything by it. */
SEC("tracepoint/helpers/oversized")
int oversized(struct trace_event_raw_sys_enter *ctx)
{
	char dst[16] = {};
	__u32 size = (__u32)ctx->args[1];

	if (ctx->args[0] == 0)
		bpf_probe_read_user(dst, size, (void *)0);
	else if (ctx->args[0] == 1)
		bpf_get_current_comm(dst, size);
	else
		bpf_probe_read_user_str(dst, size, (void *)0);
	put(R_PROBE_BAD, dst[0]);
	return 0;
}
