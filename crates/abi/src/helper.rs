//! BPF helper function ids (`___BPF_FUNC_MAPPER` numbers) that bpfmaps knows by name.

macro_rules! helpers {
    ($($name:ident = $value:literal;)*) => {
        /// Helper ids, named as in `include/uapi/linux/bpf.h` without the `BPF_FUNC_` prefix.
        pub mod ids {
            $(
                #[doc = concat!("`bpf_", stringify!($name), "` (", stringify!($value), ").")]
                #[allow(non_upper_case_globals)]
                pub const $name: u32 = $value;
            )*
        }

        /// The name of helper `id` (`"map_lookup_elem"`), if known.
        pub fn helper_name(id: u32) -> Option<&'static str> {
            match id {
                $($value => Some(stringify!($name)),)*
                _ => None,
            }
        }
    };
}

helpers! {
    map_lookup_elem = 1;
    map_update_elem = 2;
    map_delete_elem = 3;
    probe_read = 4;
    ktime_get_ns = 5;
    trace_printk = 6;
    get_prandom_u32 = 7;
    get_smp_processor_id = 8;
    tail_call = 12;
    get_current_pid_tgid = 14;
    get_current_uid_gid = 15;
    get_current_comm = 16;
    perf_event_output = 25;
    get_stackid = 27;
    probe_read_str = 45;
    get_stack = 67;
    probe_read_user = 112;
    probe_read_kernel = 113;
    probe_read_user_str = 114;
    probe_read_kernel_str = 115;
    ktime_get_boot_ns = 125;
    ringbuf_output = 130;
    ringbuf_reserve = 131;
    ringbuf_submit = 132;
    ringbuf_discard = 133;
    ringbuf_query = 134;
    for_each_map_elem = 164;
    loop_ = 181;
    map_lookup_percpu_elem = 195;
}

#[cfg(test)]
mod tests {
    #[test]
    fn names() {
        assert_eq!(super::helper_name(131), Some("ringbuf_reserve"));
        assert_eq!(super::ids::get_stackid, 27);
        assert_eq!(super::helper_name(9999), None);
    }
}
