/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * bpfmaps_tracepoint.h: what bpfmaps' BPF programs need beyond <linux/bpf.h> and libbpf's
 * <bpf/bpf_helpers.h>, so that no vmlinux.h (and no CO-RE) is needed.
 *
 * - The context of syscall tracepoints (syscalls:sys_enter_NAME / sys_exit_NAME), laid out as
 *   /sys/kernel/tracing/events/syscalls/<event>/format describes it: 8 bytes of common fields, the
 *   syscall number at offset 8 (an int padded to 8 bytes; read through `id` it carries the padding
 *   in its upper half, so programs do not use it), then the six arguments (sys_enter) or the return
 *   value (sys_exit) at offset 16.
 * - struct bpf_map_def, the legacy map definition of SEC("maps"), which libbpf 1.x's headers no
 *   longer provide. Five u32 fields, 20 bytes, in this order.
 * - current_tgid(): the calling process id (upper half of bpf_get_current_pid_tgid()).
 *
 * Include it after <bpf/bpf_helpers.h>.
 */
#ifndef BPFMAPS_TRACEPOINT_H
#define BPFMAPS_TRACEPOINT_H

#include <linux/types.h>

/* Context of syscalls:sys_enter_NAME. */
struct trace_event_raw_sys_enter {
	unsigned short common_type;
	unsigned char common_flags;
	unsigned char common_preempt_count;
	int common_pid;
	long id;
	unsigned long args[6];
};

/* Context of syscalls:sys_exit_NAME. */
struct trace_event_raw_sys_exit {
	unsigned short common_type;
	unsigned char common_flags;
	unsigned char common_preempt_count;
	int common_pid;
	long id;
	long ret;
};

/* Legacy map definition, for maps declared in SEC("maps"). */
struct bpf_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

/* The calling process (thread group) id. */
static __always_inline __u32 current_tgid(void)
{
	return (__u32)(bpf_get_current_pid_tgid() >> 32);
}

/* The calling thread id. */
static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

/*
 * True when the current process is the one `target` names; 0 means every process. Programs pass
 * their `const volatile __u32 target_tgid`, which the loader sets before load.
 */
static __always_inline int tgid_wanted(__u32 target)
{
	return target == 0 || target == current_tgid();
}

#endif /* BPFMAPS_TRACEPOINT_H */
