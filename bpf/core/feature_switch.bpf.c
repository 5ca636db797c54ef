// SPDX-License-Identifier: GPL-2.0
// Feature switches in frozen .rodata, as libbpf-tools write them: a helper the user engine lacks
// (bpf_get_current_cgroup_id) sits behind `if (use_cgroup)`, and a pid filter behind
// `if (targ_pid)`. The verifier prunes the dead side; so must the user engine before it refuses
// an unknown helper.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

const volatile bool use_cgroup = false;
const volatile pid_t targ_pid = 0;

__u64 cgroup_out = 0;
__u64 pid_out = 0;
__u64 hits = 0;

SEC("raw_tp/sys_enter")
int feature_switch(void *ctx)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;

	if (targ_pid && tgid != targ_pid)
		return 0;
	if (use_cgroup)
		cgroup_out = bpf_get_current_cgroup_id();
	pid_out = BPF_CORE_READ(task, pid);
	__sync_fetch_and_add(&hits, 1);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
