// SPDX-License-Identifier: GPL-2.0
// A CO-RE relocation that cannot be satisfied on this kernel (the field does not exist): libbpf
// poisons the instruction, and the program fails only if the path holding it runs. With
// read_missing false (the default) the verifier prunes that path and the program loads and runs;
// set true, the kernel refuses it and the user engine traps when the path runs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

struct task_struct___old {
	long no_such_field;
} __attribute__((preserve_access_index));

const volatile bool read_missing = false;

__u64 missing_out = 0;
__u64 runs = 0;

SEC("raw_tp/sys_enter")
int missing_field(void *ctx)
{
	struct task_struct___old *task = (struct task_struct___old *)bpf_get_current_task();

	__sync_fetch_and_add(&runs, 1);
	if (read_missing)
		missing_out = BPF_CORE_READ(task, no_such_field);
	else
		missing_out = 7;
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
