// Test object for bpfmaps-obj: legacy `maps` section definitions (iproute2-style struct with
// id and pinning fields). Built with: clang -target bpf -g -O2 -c maps_legacy.c -o maps_legacy.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct legacy_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
	unsigned int id;
	unsigned int pinning;
};

struct legacy_map_def legacy_hash SEC("maps") = {
	.type = BPF_MAP_TYPE_HASH,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 64,
	.map_flags = BPF_F_NO_PREALLOC,
};

struct legacy_map_def legacy_array SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 16,
	.max_entries = 10,
	.pinning = 1,
};

SEC("tracepoint/sched/sched_switch")
int legacy_prog(void *ctx)
{
	__u32 k = 3;
	__u64 one = 1;
	bpf_map_update_elem(&legacy_hash, &k, &one, BPF_ANY);
	return bpf_map_lookup_elem(&legacy_array, &k) != 0;
}

char _license[] SEC("license") = "GPL";
