// Test object for bpfmaps-obj: a program in a section (`usdt`) that aya-obj does not know.
// Built with: clang -target bpf -g -O2 -c usdt_section.c -o usdt_section.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("usdt")
int in_usdt(void *ctx)
{
	return 0;
}

char _license[] SEC("license") = "GPL";
