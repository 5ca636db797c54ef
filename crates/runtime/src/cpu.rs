//! CPU slots: a program invocation owns one of the possible CPUs' slots for its whole run, alone,
//! as a BPF program owns its CPU (preemption disabled) in the kernel. That is what makes per-CPU
//! map values safe to update without atomics, and what `bpf_get_smp_processor_id` returns.
//!
//! The allocator is process-wide ([`CpuSlots::global`]): a thread asking for a slot gets the slot
//! of the CPU it is running on when that one is free, else the lowest free slot, and waits when
//! every slot is busy. Architecture invariant: the exclusivity holds between threads of one
//! process; two processes running programs on the same maps each have their own allocator (the
//! per-CPU slots they update concurrently may then race, like two kernels would).

use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// A set of CPU slots, each free or owned by one invocation.
#[derive(Debug)]
pub struct CpuSlots {
    busy: Mutex<Vec<bool>>,
    freed: Condvar,
}

/// An owned CPU slot; dropping it frees the slot and wakes one waiter.
#[derive(Debug)]
pub struct CpuSlot<'a> {
    slots: &'a CpuSlots,
    cpu: u32,
}

impl CpuSlot<'_> {
    /// The CPU number this slot stands for.
    pub fn cpu(&self) -> u32 {
        self.cpu
    }
}

impl Drop for CpuSlot<'_> {
    fn drop(&mut self) {
        let mut busy = self.slots.lock();
        if let Some(slot) = busy.get_mut(self.cpu as usize) {
            *slot = false;
        }
        drop(busy);
        self.slots.freed.notify_one();
    }
}

/// The CPU the calling thread runs on now, if the OS says.
fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions; it returns -1 on failure.
    let cpu = unsafe { libc::sched_getcpu() };
    u32::try_from(cpu).ok()
}

impl CpuSlots {
    /// `count` free slots (at least one).
    pub fn new(count: u32) -> CpuSlots {
        CpuSlots {
            busy: Mutex::new(vec![false; count.max(1) as usize]),
            freed: Condvar::new(),
        }
    }

    /// The process-wide allocator over the machine's possible CPUs.
    pub fn global() -> &'static CpuSlots {
        static GLOBAL: OnceLock<CpuSlots> = OnceLock::new();
        GLOBAL.get_or_init(|| CpuSlots::new(bpfmaps_maps::possible_cpus()))
    }

    /// Number of slots.
    pub fn count(&self) -> u32 {
        // The vector was built from a u32 count.
        self.lock().len() as u32
    }

    fn lock(&self) -> MutexGuard<'_, Vec<bool>> {
        // A poisoned lock only means a holder panicked between two plain bool writes: the
        // vector is still consistent.
        self.busy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pick(busy: &[bool]) -> Option<usize> {
        if let Some(cpu) = current_cpu().map(|c| c as usize) {
            if busy.get(cpu) == Some(&false) {
                return Some(cpu);
            }
        }
        busy.iter().position(|b| !b)
    }

    /// Takes a free slot, waiting while all are busy.
    pub fn acquire(&self) -> CpuSlot<'_> {
        let mut busy = self.lock();
        loop {
            if let Some(index) = Self::pick(&busy) {
                busy[index] = true;
                return CpuSlot {
                    slots: self,
                    cpu: index as u32,
                };
            }
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Takes slot `cpu` (waiting while it is busy); `None` when there is no such slot.
    pub fn acquire_cpu(&self, cpu: u32) -> Option<CpuSlot<'_>> {
        let mut busy = self.lock();
        let index = cpu as usize;
        busy.get(index)?;
        while busy[index] {
            busy = self.freed.wait(busy).unwrap_or_else(|e| e.into_inner());
        }
        busy[index] = true;
        Some(CpuSlot { slots: self, cpu })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn slots_are_exclusive_and_waiters_get_freed_slots() {
        let slots = CpuSlots::new(2);
        let a = slots.acquire();
        let b = slots.acquire();
        assert_ne!(a.cpu(), b.cpu());
        let inside = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let c = slots.acquire();
                inside.store(c.cpu() + 1, Ordering::SeqCst);
            });
            std::thread::sleep(std::time::Duration::from_millis(50));
            assert_eq!(inside.load(Ordering::SeqCst), 0, "all slots were busy");
            let freed = a.cpu();
            drop(a);
            while inside.load(Ordering::SeqCst) == 0 {
                std::thread::yield_now();
            }
            assert_eq!(inside.load(Ordering::SeqCst), freed + 1);
        });
        drop(b);
        assert!(slots.acquire_cpu(2).is_none());
        assert_eq!(slots.acquire_cpu(1).map(|s| s.cpu()), Some(1));
    }
}
