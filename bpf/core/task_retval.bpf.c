// SPDX-License-Identifier: GPL-2.0
// CO-RE reads of the current task that return their value in r0 and use no map, so a test can
// load bpfmaps' relocated instructions straight into the kernel (BPF_PROG_LOAD) and run them with
// BPF_PROG_TEST_RUN: the kernel reads the calling thread's task_struct at the offsets bpfmaps
// computed.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

/* Locally tgid is at offset 0; the relocation must move it to the kernel's offset. */
struct task_struct___y {
	int tgid;
} __attribute__((preserve_access_index));

SEC("raw_tp/sys_enter")
int ret_tgid(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, tgid);
}

SEC("raw_tp/sys_enter")
int ret_parent_tgid(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, real_parent, tgid);
}

SEC("raw_tp/sys_enter")
int ret_flavor_tgid(void *ctx)
{
	struct task_struct___y *task = (struct task_struct___y *)bpf_get_current_task();

	return BPF_CORE_READ(task, tgid);
}

SEC("raw_tp/sys_enter")
int ret_comm_head(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	char comm[16] = {};

	BPF_CORE_READ_STR_INTO(&comm, task, comm);
	return comm[0] | comm[1] << 8 | comm[2] << 16 | comm[3] << 24;
}

char LICENSE[] SEC("license") = "GPL";
