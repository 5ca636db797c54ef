// Test object for bpfmaps-obj: callbacks passed to bpf_loop and bpf_for_each_map_elem, which
// are `lddw` loads of a function address (BPF_PSEUDO_FUNC) after linking.
// Built with: clang -target bpf -g -O2 -c callbacks.c -o callbacks.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} numbers SEC(".maps");

static long add_one(__u32 index, void *ctx)
{
	*(__u64 *)ctx += index;
	return 0;
}

static long sum_elem(void *map, __u32 *key, __u64 *value, void *ctx)
{
	*(__u64 *)ctx += *value;
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_getppid")
int loops(void *ctx)
{
	__u64 total = 0;
	bpf_loop(10, add_one, &total, 0);
	bpf_for_each_map_elem(&numbers, sum_elem, &total, 0);
	return total;
}

char _license[] SEC("license") = "GPL";
