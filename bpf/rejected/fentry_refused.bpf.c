// SPDX-License-Identifier: GPL-2.0
/*
 * fentry_refused: an fentry program (a BPF trampoline on do_nanosleep). This project's kernels
 * refuse BPF_PROG_LOAD of fentry/fexit programs with EPERM (libbpf and bpftool too), so the
 * loader must report that clearly; on a kernel with trampolines it would load.
 */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("fentry/do_nanosleep")
int on_nanosleep(void *ctx)
{
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
