// Test object for bpfmaps-obj: a legacy map definition with pinning value 7, which neither
// libbpf nor aya defines. Built with: clang -target bpf -g -O2 -c bad_legacy_pinning.c -o bad_legacy_pinning.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct legacy_map_def {
	unsigned int type, key_size, value_size, max_entries, map_flags, id, pinning;
};

struct legacy_map_def odd_pin SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY, .key_size = 4, .value_size = 4, .max_entries = 1, .pinning = 7,
};

SEC("socket")
int use_odd_pin(void *ctx)
{
	__u32 k = 0;
	return bpf_map_lookup_elem(&odd_pin, &k) != 0;
}

char _license[] SEC("license") = "GPL";
