// SPDX-License-Identifier: GPL-2.0
/*
 * percpu_bump.bpf.c: a non-atomic read-modify-write of a per-CPU value, for
 * crates/runtime/tests/cpu_slots.rs (user engine only, never attached). Two processes running
 * `bump` at once lose increments unless each invocation owns its CPU slot exclusively.
 *
 * Build (from this directory):
 *   clang -target bpf -g -O2 -fdebug-compilation-dir=. -I../../../../bpf/include \
 *       -I/usr/include/$(gcc -print-multiarch) \
 *       -c percpu_bump.bpf.c -o percpu_bump.bpf.o
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} bump_counts SEC(".maps");

SEC("tracepoint/test/bump")
int bump(void *ctx)
{
	__u32 zero = 0;
	volatile __u64 *value = bpf_map_lookup_elem(&bump_counts, &zero);
	volatile __u64 spin = 0;
	__u64 seen;
	int i;

	if (!value)
		return 1;
	/* Read, linger (widening the window another invocation on this slot would hit), write. */
	seen = *value;
	for (i = 0; i < 16; i++)
		spin += i;
	*value = seen + 1;
	return 0;
}

/* The cheapest program: no helper, no map, for measuring per-invocation overhead. */
SEC("tracepoint/test/nothing")
int nothing(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
