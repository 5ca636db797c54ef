// Test object for bpfmaps-obj: a BTF map whose type number (99) no kernel defines.
// Built with: clang -target bpf -g -O2 -c bad_map_type.c -o bad_map_type.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, 99);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} strange SEC(".maps");

SEC("socket")
int use_strange(void *ctx)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&strange, &k) != 0;
}

char _license[] SEC("license") = "GPL";
