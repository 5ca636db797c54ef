// Test object for bpfmaps-obj: a CO-RE field access, which the user engine cannot relocate.
// Built with: clang -target bpf -g -O2 -c core_reloc.c -o core_reloc.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct fake_task {
	int pid;
	int tgid;
} __attribute__((preserve_access_index));

SEC("raw_tracepoint/sched_switch")
int core_prog(struct bpf_raw_tracepoint_args *ctx)
{
	struct fake_task *t = (struct fake_task *)ctx->args[0];
	int tgid = 0;
	bpf_probe_read_kernel(&tgid, sizeof(tgid), &t->tgid);
	return tgid;
}

char _license[] SEC("license") = "GPL";
