// SPDX-License-Identifier: GPL-2.0
// A CO-RE read inside a bpf-to-bpf function that two programs call: the relocation is recorded
// once, in .text, and must be applied in both programs' copies of the function.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct___x {
	unsigned int __state;
} __attribute__((preserve_access_index));

__u64 seen[2] = {};

static __noinline __u64 task_state(struct task_struct *task)
{
	return BPF_CORE_READ((struct task_struct___x *)task, __state) +
	       BPF_CORE_READ(task, tgid);
}

SEC("raw_tp/sys_enter")
int first(void *ctx)
{
	seen[0] = task_state((struct task_struct *)bpf_get_current_task());
	return 0;
}

SEC("raw_tp/sys_exit")
int second(void *ctx)
{
	seen[1] = task_state((struct task_struct *)bpf_get_current_task()) + 1;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
