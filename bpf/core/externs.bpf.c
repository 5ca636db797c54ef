// SPDX-License-Identifier: GPL-2.0
// .kconfig and .ksyms externs as libbpf-tools use them: the kernel version, configuration
// options of every kind (bool, tristate, int, string), a weak option this kernel lacks, and a
// weak kfunc that does not exist, called only behind bpf_ksym_exists.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "bpfmaps_core.h"

extern int LINUX_KERNEL_VERSION __kconfig;
extern bool CONFIG_BPF_SYSCALL __kconfig;
extern enum libbpf_tristate CONFIG_BPF_JIT __kconfig __weak;
extern enum libbpf_tristate CONFIG_BPFMAPS_NO_SUCH_OPTION __kconfig __weak;
extern int CONFIG_HZ __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[8] __kconfig __weak;

extern void bpf_bpfmaps_no_such_kfunc(void) __ksym __weak;

struct extern_values {
	__u32 kernel_version;
	__u32 bpf_syscall;
	__u32 bpf_jit;
	__u32 no_such_option;
	__u32 hz;
	__u32 kfunc_exists;
	char hostname[8];
};

struct extern_values values = {};

SEC("raw_tp/sys_enter")
int read_externs(void *ctx)
{
	values.kernel_version = LINUX_KERNEL_VERSION;
	values.bpf_syscall = CONFIG_BPF_SYSCALL;
	values.bpf_jit = CONFIG_BPF_JIT;
	values.no_such_option = CONFIG_BPFMAPS_NO_SUCH_OPTION;
	values.hz = CONFIG_HZ;
	__builtin_memcpy(values.hostname, CONFIG_DEFAULT_HOSTNAME, sizeof(values.hostname));
	values.kfunc_exists = bpf_ksym_exists(bpf_bpfmaps_no_such_kfunc);
	if (bpf_ksym_exists(bpf_bpfmaps_no_such_kfunc))
		bpf_bpfmaps_no_such_kfunc();
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
