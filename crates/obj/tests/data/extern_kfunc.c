// Test object for bpfmaps-obj: a call to a kernel function (kfunc) declared extern, which only
// a kernel can resolve. Built with: clang -target bpf -g -O2 -c extern_kfunc.c -o extern_kfunc.o
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

extern void bpf_rcu_read_lock(void) __ksym;

SEC("tracepoint/syscalls/sys_enter_getpid")
int call_kfunc(void *ctx)
{
	bpf_rcu_read_lock();
	return 0;
}

char _license[] SEC("license") = "GPL";
