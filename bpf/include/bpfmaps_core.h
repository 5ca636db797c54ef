/* SPDX-License-Identifier: GPL-2.0 */
/* What newer libbpf headers have and Debian's libbpf 1.1 lacks. */
#ifndef BPFMAPS_CORE_H
#define BPFMAPS_CORE_H

/* True when the weak kernel symbol `sym` was found by the loader (libbpf >= 1.2's macro). */
#ifndef bpf_ksym_exists
#define bpf_ksym_exists(sym) ({						\
	_Static_assert(!__builtin_constant_p(!!sym), #sym " should be marked as __weak"); \
	!!sym;								\
})
#endif

#endif
