//! The BPF helpers of the user engine: [`Host`], the VM's [`HelperHost`] for one invocation of a
//! program on one CPU slot. Return values and errnos are the kernel's (see each helper); an
//! argument the kernel's verifier would have refused (not a map handle, a map of the wrong type,
//! a pointer that is not a reserved record) stops the run with a trap naming the instruction.
//!
//! What the user engine's helpers see of "the current task": the calling thread of the host
//! process (its tgid/tid, uid/gid, comm, stack), and the invocation's CPU slot as the CPU; or, for
//! [`crate::Program::run_for_task`], the given [`Task`] (a traced task): its ids, comm, CPU, user
//! memory (`probe_read_user(_str)`; legacy `probe_read(_str)` tries the program's regions first)
//! and frame-pointer stack.
//!
//! | helper | user-engine behaviour |
//! | --- | --- |
//! | `map_lookup_elem` | lends the value (this CPU's slot for per-CPU maps) as a VM region; NULL on a miss; LRU lookups set the ref bit |
//! | `map_update_elem`, `map_delete_elem` | the maps crate's helper paths, errnos negated |
//! | `map_lookup_percpu_elem` | the value of CPU `cpu`; NULL for `cpu >= possible CPUs` or a non-per-CPU map |
//! | `ringbuf_reserve/submit/discard/output/query` | reserve lends the record until submit/discard unmaps it (use after submit traps) |
//! | `perf_event_output` | `BPF_F_CURRENT_CPU` is the invocation's CPU slot |
//! | `get_stackid` | `BPF_F_USER_STACK`: the calling thread's stack as glibc `backtrace()` reports it (innermost first, the runtime's own frames included); a kernel stack does not exist here: `-EFAULT` |
//! | `ktime_get_ns`, `ktime_get_boot_ns` | `CLOCK_MONOTONIC`, `CLOCK_BOOTTIME` |
//! | `get_current_pid_tgid`, `get_current_uid_gid`, `get_current_comm` | the calling thread, or the [`Task`] |
//! | `get_smp_processor_id` | the invocation's CPU slot, or the CPU the [`Task`] last ran on |
//! | `get_prandom_u32` | a per-thread xorshift generator |
//! | `trace_printk` | formats the kernel's subset and appends a line to [`crate::trace::trace_pipe_path`] |
//! | `get_current_task`, `get_current_task_btf` | an opaque non-null handle per thread ([`crate::task::TASK_HANDLE_BASE`]` + tid`): no task struct exists, so reading through it with `probe_read_kernel` zero-fills and returns `-EFAULT`, and a direct load traps |
//! | `current_task_under_cgroup` | 1 when the calling thread's cgroup2 directory (`/proc/thread-self/cgroup`) or an ancestor is the slot's cgroup, else 0; `-E2BIG` past the end, `-EAGAIN` for an empty slot |
//! | `get_stack` | `BPF_F_USER_STACK`: the calling thread's stack as for `get_stackid` (with `BPF_F_USER_BUILD_ID`: records of status `BPF_STACK_BUILD_ID_IP`); a kernel stack: `-EFAULT`, buffer zeroed |
//! | `probe_read_user/kernel(_str)`, `probe_read(_str)` | read only from regions the program was given; anything else zero-fills and returns `-EFAULT`; with a [`Task`], `probe_read_user(_str)` read the task's memory |
//! | `loop` | calls the callback up to `nr_loops` times (`-EINVAL` for flags, `-E2BIG` above 2^23 loops), returns the number of calls |
//! | `for_each_map_elem` | calls the callback with the map, a read-only copy of the key and the lent value, in the map's iteration order; returns the number of calls |

use std::cell::Cell;
use std::collections::HashMap;

use bpfmaps_abi::helper::ids;
use bpfmaps_abi::map_type::stackid_flags;
use bpfmaps_abi::Errno;
use bpfmaps_maps::cgroup_array::CgroupArray;
use bpfmaps_maps::perf_event_array::PerfEventArray;
use bpfmaps_maps::ringbuf::RingBuf;
use bpfmaps_maps::stack_trace::StackTraceMap;
use bpfmaps_vm::{Access, Callbacks, HelperError, HelperHost, Memory, Region};

use crate::lent::{MapValue, RingRecord};
use crate::loader::{LoadedMap, MAP_HANDLE_BASE};
use crate::program::ProgramInner;
use crate::task::{self, Task};

/// The helper ids the user engine provides; a program calling another is refused at load.
pub fn supported_helpers() -> &'static [u32] {
    &[
        ids::map_lookup_elem,
        ids::map_update_elem,
        ids::map_delete_elem,
        ids::probe_read,
        ids::ktime_get_ns,
        ids::trace_printk,
        ids::get_prandom_u32,
        ids::get_smp_processor_id,
        ids::get_current_pid_tgid,
        ids::get_current_uid_gid,
        ids::get_current_comm,
        ids::perf_event_output,
        ids::get_stackid,
        ids::probe_read_str,
        ids::probe_read_user,
        ids::probe_read_kernel,
        ids::probe_read_user_str,
        ids::probe_read_kernel_str,
        ids::ktime_get_boot_ns,
        ids::ringbuf_output,
        ids::ringbuf_reserve,
        ids::ringbuf_submit,
        ids::ringbuf_discard,
        ids::ringbuf_query,
        ids::map_lookup_percpu_elem,
        ids::loop_,
        ids::for_each_map_elem,
        task::GET_CURRENT_TASK,
        task::GET_CURRENT_TASK_BTF,
        task::CURRENT_TASK_UNDER_CGROUP,
        ids::get_stack,
    ]
}

/// A reserved, not yet submitted ring buffer record of this run.
struct Reserved {
    addr: u64,
    map_index: usize,
    payload_offset: u64,
}

/// The helper host of one invocation.
pub(crate) struct Host<'p> {
    program: &'p ProgramInner,
    cpu: u32,
    /// Guest addresses of map values already lent in this run, by (map index, value offset), so
    /// repeated lookups reuse one region.
    lent: HashMap<(usize, usize), u64>,
    reserved: Vec<Reserved>,
    /// The task the run is for; `None`: the calling thread.
    pub(crate) task: Option<&'p dyn Task>,
}

fn bad_arg(arg: u8, reason: &'static str) -> HelperError {
    HelperError::InvalidArgument { arg, reason }
}

fn errno_return(result: Result<(), Errno>) -> u64 {
    match result {
        Ok(()) => 0,
        Err(e) => e.as_helper_return(),
    }
}

pub(crate) fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec)
        .unwrap_or(0)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
}

/// `(tgid << 32) | tid` of the calling thread.
pub(crate) fn current_pid_tgid() -> u64 {
    let tgid = u64::from(std::process::id());
    let tid = u64::from(bpfmaps_maps::region::thread_id());
    (tgid << 32) | tid
}

/// The calling thread's name (the kernel's `comm`, at most 15 bytes).
pub(crate) fn current_comm() -> [u8; 16] {
    let mut name = [0u8; 16];
    // SAFETY: PR_GET_NAME writes at most 16 bytes (NUL included) to the pointed buffer, which is
    // 16 bytes long and lives across the call.
    let rc = unsafe { libc::prctl(libc::PR_GET_NAME, name.as_mut_ptr(), 0, 0, 0) };
    if rc != 0 {
        name = [0; 16];
    }
    name[15] = 0;
    name
}

thread_local! {
    static PRANDOM: Cell<u64> = const { Cell::new(0) };
}

fn prandom_u32() -> u32 {
    PRANDOM.with(|state| {
        let mut x = state.get();
        if x == 0 {
            x = clock_ns(libc::CLOCK_MONOTONIC) ^ (current_pid_tgid().rotate_left(17)) | 1;
        }
        // xorshift64*.
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        state.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    })
}

/// Captures the calling thread's user stack: return addresses, innermost first.
fn capture_user_stack(max: usize) -> Vec<u64> {
    let mut frames: Vec<*mut libc::c_void> = vec![std::ptr::null_mut(); max.clamp(1, 512)];
    let len = libc::c_int::try_from(frames.len()).unwrap_or(libc::c_int::MAX);
    // SAFETY: `frames` has room for `len` pointers; backtrace writes at most that many and
    // returns how many it wrote. The pointers are only turned into integers, never dereferenced.
    let got = unsafe { libc::backtrace(frames.as_mut_ptr(), len) };
    let got = usize::try_from(got).unwrap_or(0).min(frames.len());
    // Frame 0 is this function; the stack starts at its caller.
    frames[..got].iter().skip(1).map(|&p| p as u64).collect()
}

impl<'p> Host<'p> {
    /// A host for one run of `program` on CPU slot `cpu`.
    pub(crate) fn new(program: &'p ProgramInner, cpu: u32) -> Self {
        Host {
            program,
            cpu,
            lent: HashMap::new(),
            reserved: Vec::new(),
            task: None,
        }
    }

    /// Discards every record the run reserved and did not submit (the kernel's verifier makes
    /// that impossible; a trapped run can leave some), so the ring does not stay blocked.
    pub(crate) fn finish(&mut self) {
        for record in self.reserved.drain(..) {
            if let Some(map) = self.program.shared.maps.get(record.map_index) {
                if let Some(ring) = map.map.backend().as_any().downcast_ref::<RingBuf>() {
                    if let Some(handle) = ring.handle_at(record.payload_offset) {
                        let _ = ring.discard(handle, 0);
                    }
                }
            }
        }
    }

    fn map(&self, handle: u64, arg: u8) -> Result<(usize, &'p LoadedMap), HelperError> {
        let index = handle
            .checked_sub(MAP_HANDLE_BASE)
            .and_then(|i| usize::try_from(i).ok())
            .ok_or(bad_arg(arg, "not a map"))?;
        let map = self
            .program
            .shared
            .maps
            .get(index)
            .ok_or(bad_arg(arg, "not a map"))?;
        Ok((index, map))
    }

    fn key(&self, map: &LoadedMap, addr: u64, mem: &Memory<'_>) -> Result<Vec<u8>, HelperError> {
        Ok(mem.read_vec(addr, u64::from(map.spec.def.key_size))?)
    }

    /// Lends the value at `value` of map `index` and returns its guest address.
    fn lend(
        &mut self,
        index: usize,
        map: &LoadedMap,
        value: bpfmaps_maps::ValueRef,
        mem: &mut Memory<'_>,
    ) -> Result<u64, HelperError> {
        if let Some(&addr) = self.lent.get(&(index, value.offset)) {
            return Ok(addr);
        }
        let region = Region::host(
            Box::new(MapValue {
                map: map.map.clone(),
                offset: value.offset,
                len: value.len,
            }),
            map.program_access,
        );
        let addr = mem.map(region)?;
        self.lent.insert((index, value.offset), addr);
        Ok(addr)
    }

    fn ring(map: &LoadedMap, arg: u8) -> Result<&RingBuf, HelperError> {
        map.map
            .backend()
            .as_any()
            .downcast_ref::<RingBuf>()
            .ok_or(bad_arg(arg, "not a ring buffer map"))
    }

    fn commit(
        &mut self,
        addr: u64,
        flags: u64,
        discard: bool,
        mem: &mut Memory<'_>,
    ) -> Result<u64, HelperError> {
        let position = self
            .reserved
            .iter()
            .position(|r| r.addr == addr)
            .ok_or(bad_arg(1, "not a reserved ring buffer record"))?;
        let record = self.reserved.swap_remove(position);
        // Unmap first: any later use of the pointer traps.
        mem.unmap(addr);
        let map = self
            .program
            .shared
            .maps
            .get(record.map_index)
            .ok_or(bad_arg(1, "not a reserved ring buffer record"))?;
        let ring = Self::ring(map, 1)?;
        if let Some(handle) = ring.handle_at(record.payload_offset) {
            let _ = if discard {
                ring.discard(handle, flags)
            } else {
                ring.submit(handle, flags)
            };
        }
        Ok(0)
    }

    /// `probe_read*`: copies `size` bytes from `src` in the program's own regions to `dst`;
    /// zero-fills `dst` and returns `-EFAULT` when `src` is not readable.
    fn probe_read(&self, args: [u64; 5], mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        let [dst, size, src, ..] = args;
        let len = size & 0xffff_ffff;
        match mem.read_vec(src, len) {
            Ok(bytes) => {
                mem.write(dst, &bytes)?;
                Ok(0)
            }
            Err(_) => {
                mem.check_writable(dst, len)?;
                let zeros =
                    vec![0u8; usize::try_from(len).map_err(|_| bad_arg(2, "size too large"))?];
                mem.write(dst, &zeros)?;
                Ok(Errno::EFAULT.as_helper_return())
            }
        }
    }

    /// `probe_read_user` (and legacy `probe_read` outside the program's regions) for a traced
    /// task: copies `size` bytes of the task's memory; zero-fills `dst` and returns `-EFAULT` when
    /// any of it is unreadable, as the kernel does.
    fn probe_read_task(
        task: &dyn Task,
        args: [u64; 5],
        mem: &mut Memory<'_>,
    ) -> Result<u64, HelperError> {
        let [dst, size, src, ..] = args;
        let len = size & 0xffff_ffff;
        mem.check_writable(dst, len)?;
        let mut bytes = vec![0u8; usize::try_from(len).map_err(|_| bad_arg(2, "size too large"))?];
        let got = task.read_user(src, &mut bytes);
        if got < bytes.len() {
            bytes.fill(0);
            mem.write(dst, &bytes)?;
            return Ok(Errno::EFAULT.as_helper_return());
        }
        mem.write(dst, &bytes)?;
        Ok(0)
    }

    /// `probe_read_user_str` for a traced task: the string at `src` in the task's memory, at most
    /// `size` bytes with the NUL; its length with the NUL, or `-EFAULT` when its first byte is
    /// unreadable.
    fn probe_read_str_task(
        task: &dyn Task,
        args: [u64; 5],
        mem: &mut Memory<'_>,
    ) -> Result<u64, HelperError> {
        let [dst, size, src, ..] = args;
        let size = size & 0xffff_ffff;
        if size == 0 {
            return Ok(0);
        }
        mem.check_writable(dst, size)?;
        let limit = usize::try_from(size - 1).map_err(|_| bad_arg(2, "size too large"))?;
        let mut out = Vec::with_capacity(limit + 1);
        // Read up to each page end, so a string ending just before unmapped memory is found.
        const PAGE: u64 = 4096;
        while out.len() < limit {
            let at = src.wrapping_add(out.len() as u64);
            let in_page = usize::try_from(PAGE - (at % PAGE)).unwrap_or(limit);
            let mut chunk = vec![0u8; in_page.min(limit - out.len())];
            let got = task.read_user(at, &mut chunk);
            if let Some(nul) = chunk[..got].iter().position(|&b| b == 0) {
                out.extend_from_slice(&chunk[..nul]);
                break;
            }
            out.extend_from_slice(&chunk[..got]);
            if got < chunk.len() {
                if out.is_empty() {
                    mem.write(dst, &[0])?;
                    return Ok(Errno::EFAULT.as_helper_return());
                }
                break;
            }
        }
        out.push(0);
        mem.write(dst, &out)?;
        Ok(out.len() as u64)
    }

    /// `probe_read*_str`: copies a NUL-terminated string of at most `size` bytes (NUL included)
    /// and returns its length with the NUL; `-EFAULT` when the first byte is unreadable.
    fn probe_read_str(&self, args: [u64; 5], mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        let [dst, size, src, ..] = args;
        let size = size & 0xffff_ffff;
        if size == 0 {
            return Ok(0);
        }
        // Check the destination first, as the kernel's verifier would have.
        mem.check_writable(dst, size)?;
        let mut out = Vec::new();
        let limit = size - 1;
        while (out.len() as u64) < limit {
            match mem.load::<1>(src.wrapping_add(out.len() as u64)) {
                Ok(0) => break,
                Ok(byte) => out.push(byte as u8),
                Err(_) if out.is_empty() => {
                    mem.write(dst, &[0])?;
                    return Ok(Errno::EFAULT.as_helper_return());
                }
                Err(_) => break,
            }
        }
        out.push(0);
        mem.write(dst, &out)?;
        Ok(out.len() as u64)
    }
}

/// `BPF_MAX_LOOPS`: the most iterations `bpf_loop` accepts.
const MAX_LOOPS: u64 = 1 << 23;

impl Host<'_> {
    /// `bpf_loop(nr_loops, callback, ctx, flags)`.
    fn bpf_loop(
        &mut self,
        args: [u64; 5],
        mem: &mut Memory<'_>,
        callbacks: &mut dyn Callbacks,
    ) -> Result<u64, HelperError> {
        let [nr_loops, callback, ctx, flags, _] = args;
        let nr_loops = nr_loops & 0xffff_ffff;
        if flags != 0 {
            return Ok(Errno::EINVAL.as_helper_return());
        }
        if nr_loops > MAX_LOOPS {
            return Ok(Errno::E2BIG.as_helper_return());
        }
        for index in 0..nr_loops {
            let stop = callbacks.invoke(self, mem, callback, 2, [index, ctx, 0, 0, 0])?;
            if stop != 0 {
                return Ok(index + 1);
            }
        }
        Ok(nr_loops)
    }

    /// `bpf_for_each_map_elem(map, callback, ctx, flags)`.
    fn for_each_map_elem(
        &mut self,
        args: [u64; 5],
        mem: &mut Memory<'_>,
        callbacks: &mut dyn Callbacks,
    ) -> Result<u64, HelperError> {
        let [handle, callback, ctx, flags, _] = args;
        let (index, map) = self.map(handle, 1)?;
        if flags != 0 {
            return Ok(Errno::EINVAL.as_helper_return());
        }
        let cpu = self.cpu;
        let mut failure = None;
        // Every element's key is lent at one address, replaced element after element, so a pass
        // over a large map does not grow the region table by one entry per element.
        let mut key_addr = None;
        let result = map.map.for_each(cpu, &mut |key, value| {
            let step = (|| -> Result<bool, HelperError> {
                let key_region = Region::owned(key.to_vec(), Access::ReadOnly);
                let key_at = match key_addr {
                    Some(at) => {
                        mem.replace(at, key_region)?;
                        at
                    }
                    None => {
                        let at = mem.map(key_region)?;
                        key_addr = Some(at);
                        at
                    }
                };
                let value_addr = self.lend(index, map, value, mem)?;
                let stop =
                    callbacks.invoke(self, mem, callback, 2, [handle, key_at, value_addr, ctx, 0]);
                Ok(stop? == 0)
            })();
            match step {
                Ok(more) => more,
                Err(error) => {
                    failure = Some(error);
                    false
                }
            }
        });
        if let Some(at) = key_addr {
            mem.unmap(at);
        }
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(match result {
            Ok(calls) => u64::from(calls),
            Err(e) => e.as_helper_return(),
        })
    }
}

impl HelperHost for Host<'_> {
    fn call_with_callbacks(
        &mut self,
        id: u32,
        args: [u64; 5],
        mem: &mut Memory<'_>,
        callbacks: &mut dyn Callbacks,
    ) -> Result<u64, HelperError> {
        match id {
            ids::loop_ => self.bpf_loop(args, mem, callbacks),
            ids::for_each_map_elem => self.for_each_map_elem(args, mem, callbacks),
            _ => self.call(id, args, mem),
        }
    }

    fn prepare(&mut self, mem: &mut Memory<'_>) -> Result<(), HelperError> {
        for (slot, &index) in self.program.fixed.iter().enumerate() {
            let map = self
                .program
                .shared
                .maps
                .get(index)
                .ok_or(HelperError::Unavailable)?;
            let value = map.first_value.ok_or(HelperError::Unavailable)?;
            let region = Region::host(
                Box::new(MapValue {
                    map: map.map.clone(),
                    offset: value.offset,
                    len: value.len,
                }),
                map.program_access,
            );
            let slot = u32::try_from(slot).map_err(|_| HelperError::Unavailable)?;
            mem.map_fixed(slot, region)?;
        }
        Ok(())
    }

    fn call(&mut self, id: u32, args: [u64; 5], mem: &mut Memory<'_>) -> Result<u64, HelperError> {
        let cpu = self.cpu;
        match id {
            ids::map_lookup_elem => {
                let (index, map) = self.map(args[0], 1)?;
                let key = self.key(map, args[1], mem)?;
                match map.map.helper_lookup(&key, cpu) {
                    Some(value) => self.lend(index, map, value, mem),
                    None => Ok(0),
                }
            }
            ids::map_lookup_percpu_elem => {
                let (index, map) = self.map(args[0], 1)?;
                let key = self.key(map, args[1], mem)?;
                let target = args[2] & 0xffff_ffff;
                if !map.spec.def.map_type.is_percpu()
                    || target >= u64::from(self.program.shared.possible_cpus)
                {
                    return Ok(0);
                }
                match map.map.helper_lookup(&key, target as u32) {
                    Some(value) => self.lend(index, map, value, mem),
                    None => Ok(0),
                }
            }
            ids::map_update_elem => {
                let (_, map) = self.map(args[0], 1)?;
                let key = self.key(map, args[1], mem)?;
                let value = mem.read_vec(args[2], u64::from(map.spec.def.value_size))?;
                Ok(errno_return(
                    map.map.helper_update(&key, &value, args[3], cpu),
                ))
            }
            ids::map_delete_elem => {
                let (_, map) = self.map(args[0], 1)?;
                let key = self.key(map, args[1], mem)?;
                Ok(errno_return(map.map.helper_delete(&key)))
            }
            ids::ringbuf_output => {
                let (_, map) = self.map(args[0], 1)?;
                let ring = Self::ring(map, 1)?;
                let data = mem.read_vec(args[1], args[2])?;
                Ok(errno_return(ring.output(&data, args[3])))
            }
            ids::ringbuf_reserve => {
                let (index, map) = self.map(args[0], 1)?;
                let ring = Self::ring(map, 1)?;
                let Some(handle) = ring.reserve(args[1], args[2]) else {
                    return Ok(0);
                };
                let region = Region::host(
                    Box::new(RingRecord {
                        map: map.map.clone(),
                        payload_offset: handle.payload_offset(),
                        size: handle.size(),
                    }),
                    Access::ReadWrite,
                );
                let payload_offset = handle.payload_offset();
                match mem.map(region) {
                    Ok(addr) => {
                        self.reserved.push(Reserved {
                            addr,
                            map_index: index,
                            payload_offset,
                        });
                        Ok(addr)
                    }
                    Err(fault) => {
                        let _ = ring.discard(handle, 0);
                        Err(fault.into())
                    }
                }
            }
            ids::ringbuf_submit => self.commit(args[0], args[1], false, mem),
            ids::ringbuf_discard => self.commit(args[0], args[1], true, mem),
            ids::ringbuf_query => {
                let (_, map) = self.map(args[0], 1)?;
                Ok(Self::ring(map, 1)?.query(args[1]))
            }
            ids::perf_event_output => {
                let (_, map) = self.map(args[1], 2)?;
                let perf = map
                    .map
                    .backend()
                    .as_any()
                    .downcast_ref::<PerfEventArray>()
                    .ok_or(bad_arg(2, "not a perf event array"))?;
                let data = mem.read_vec(args[3], args[4])?;
                Ok(errno_return(perf.output(args[2], cpu, &data)))
            }
            ids::get_stackid => {
                let (_, map) = self.map(args[1], 2)?;
                let stacks = map
                    .map
                    .backend()
                    .as_any()
                    .downcast_ref::<StackTraceMap>()
                    .ok_or(bad_arg(2, "not a stack trace map"))?;
                let flags = args[2];
                if flags & stackid_flags::BPF_F_USER_STACK == 0 {
                    // Flag checks first, as the kernel does; then: no kernel stack here.
                    return Ok(match stacks.get_stackid(&[], flags) {
                        Err(Errno::EINVAL) => Errno::EINVAL.as_helper_return(),
                        _ => Errno::EFAULT.as_helper_return(),
                    });
                }
                let max = bpfmaps_maps::stack_trace::perf_event_max_stack() as usize + 256;
                let ips = match self.task {
                    Some(task) => task.user_stack(max),
                    None => capture_user_stack(max),
                };
                Ok(match stacks.get_stackid(&ips, flags) {
                    Ok(id) => u64::from(id),
                    Err(e) => e.as_helper_return(),
                })
            }
            ids::ktime_get_ns => Ok(clock_ns(libc::CLOCK_MONOTONIC)),
            ids::ktime_get_boot_ns => Ok(clock_ns(libc::CLOCK_BOOTTIME)),
            ids::get_current_pid_tgid => Ok(match self.task {
                Some(task) => task.pid_tgid(),
                None => current_pid_tgid(),
            }),
            ids::get_current_uid_gid if self.task.is_some() => {
                Ok(self.task.map_or(0, |task| task.uid_gid()))
            }
            ids::get_current_uid_gid => {
                // SAFETY: getuid and getgid have no preconditions and cannot fail.
                let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
                Ok((u64::from(gid) << 32) | u64::from(uid))
            }
            ids::get_current_comm => {
                let size = args[1] & 0xffff_ffff;
                mem.check_writable(args[0], size)?;
                let len = usize::try_from(size).map_err(|_| bad_arg(2, "size too large"))?;
                let comm = match self.task {
                    Some(task) => task.comm(),
                    None => current_comm(),
                };
                let mut out = vec![0u8; len];
                let copy = comm
                    .iter()
                    .position(|&b| b == 0)
                    .unwrap_or(15)
                    .min(len.saturating_sub(1));
                out[..copy].copy_from_slice(&comm[..copy]);
                mem.write(args[0], &out)?;
                Ok(0)
            }
            ids::get_smp_processor_id => Ok(u64::from(match self.task {
                Some(task) => task.cpu(),
                None => cpu,
            })),
            ids::get_prandom_u32 => Ok(u64::from(prandom_u32())),
            ids::trace_printk => crate::trace::trace_printk(self.program, cpu, args, mem),
            ids::probe_read_user if self.task.is_some() => {
                Self::probe_read_task(self.task.ok_or(HelperError::Unavailable)?, args, mem)
            }
            ids::probe_read_user_str if self.task.is_some() => {
                Self::probe_read_str_task(self.task.ok_or(HelperError::Unavailable)?, args, mem)
            }
            // Legacy probe_read(_str) reads "any" memory: the program's regions, else the task's.
            ids::probe_read
                if self.task.is_some() && mem.read_vec(args[2], args[1] & 0xffff_ffff).is_err() =>
            {
                Self::probe_read_task(self.task.ok_or(HelperError::Unavailable)?, args, mem)
            }
            ids::probe_read_str if self.task.is_some() && mem.load::<1>(args[2]).is_err() => {
                Self::probe_read_str_task(self.task.ok_or(HelperError::Unavailable)?, args, mem)
            }
            ids::probe_read | ids::probe_read_user | ids::probe_read_kernel => {
                self.probe_read(args, mem)
            }
            ids::probe_read_str | ids::probe_read_user_str | ids::probe_read_kernel_str => {
                self.probe_read_str(args, mem)
            }
            task::GET_CURRENT_TASK | task::GET_CURRENT_TASK_BTF => Ok(task::current_task()),
            task::CURRENT_TASK_UNDER_CGROUP => {
                let (_, map) = self.map(args[0], 1)?;
                let array = map
                    .map
                    .backend()
                    .as_any()
                    .downcast_ref::<CgroupArray>()
                    .ok_or(bad_arg(1, "not a cgroup array"))?;
                Ok(task::current_task_under_cgroup(array, args[1]))
            }
            ids::get_stack => task::get_stack(args, mem, |max| {
                capture_user_stack(
                    max.min(bpfmaps_maps::stack_trace::perf_event_max_stack() as usize + 256),
                )
            }),
            _ => Err(HelperError::Unavailable),
        }
    }
}
