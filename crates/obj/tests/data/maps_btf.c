// Test object for bpfmaps-obj: BTF-defined maps, global data sections, bpf-to-bpf calls and
// several program sections. Built with: clang -target bpf -g -O2 -c maps_btf.c -o maps_btf.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct value_t {
	__u64 count;
	__u32 flags;
	char comm[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct value_t);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
} percpu_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 128);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__type(key, __u64);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pinned_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16384);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
} perf_out SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 256);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, 127 * sizeof(__u64));
} a_very_long_stack_map_name SEC(".maps");

const volatile __u32 target_pid = 0;
const volatile __u64 threshold = 7;
const volatile __u8 verbose = 1;
__u64 total = 5;
__u32 hits;
__u32 custom_var SEC(".data.custom") = 3;

static __attribute__((noinline)) int bump(__u32 key)
{
	struct value_t *v = bpf_map_lookup_elem(&counts, &key);
	if (v) {
		__sync_fetch_and_add(&v->count, 1);
		return 1;
	}
	struct value_t init = { .count = 1 };
	bpf_map_update_elem(&counts, &key, &init, BPF_NOEXIST);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_openat")
int trace_openat(void *ctx)
{
	__u32 pid = bpf_get_current_pid_tgid() >> 32;
	if (target_pid && pid != target_pid)
		return 0;
	hits++;
	total += threshold;
	custom_var++;
	if (verbose)
		bpf_printk("openat %d", pid);
	return bump(pid);
}

SEC("raw_tracepoint/sys_enter")
int raw_enter(void *ctx)
{
	__u32 key = 0;
	__u64 *v = bpf_map_lookup_elem(&percpu_stats, &key);
	if (v)
		*v += 1;
	__u64 id = bpf_get_current_pid_tgid();
	__u32 one = 1;
	bpf_map_update_elem(&pinned_lru, &id, &one, BPF_ANY);
	bpf_get_stackid(ctx, &a_very_long_stack_map_name, BPF_F_USER_STACK);
	return bump(key);
}

SEC("socket")
int sock_prog(struct __sk_buff *skb)
{
	__u32 *rec = bpf_ringbuf_reserve(&events, sizeof(__u32), 0);
	if (rec) {
		*rec = skb->len;
		bpf_ringbuf_submit(rec, 0);
	}
	return 0;
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx)
{
	__u64 v = total;
	bpf_perf_event_output(ctx, &perf_out, BPF_F_CURRENT_CPU, &v, sizeof(v));
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
