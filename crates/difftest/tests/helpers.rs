//! Helper-side differential suite: program-side `bpf_map_lookup_elem`, `bpf_map_update_elem` and
//! `bpf_map_delete_elem`, interleaved with syscall-side operations, on a kernel map and a
//! user-engine map of the same definition. On the kernel each helper call is a socket filter run
//! with `BPF_PROG_TEST_RUN` on CPU 0 (the test thread is pinned there); on the user engine it is
//! `UserMap::helper_*` with CPU 0. The helper results (NULL or the value's low 32 bits for a
//! lookup, 0 or −errno for update and delete), every syscall outcome and the final contents must
//! match. This is where the rules that only programs can reach are compared: per-CPU helper
//! inserts zero-filling the other CPUs' slots (2.3), helper update errnos, and LRU reference bits
//! set by program lookups only, which change the victims (2.5).
//!
//! The three programs per map read their arguments (key, value, flags) from the packet with
//! `bpf_skb_load_bytes`, so they are loaded once per case.

#![cfg(feature = "user-engine")]

use std::os::fd::AsRawFd;

use bpfmaps_abi::insn::{encode_program, pseudo, AluOp, CallTarget, Insn, JmpCond, Operand, Width};
use bpfmaps_abi::map_flags::{BPF_F_NO_COMMON_LRU, BPF_F_ZERO_SEED};
use bpfmaps_abi::{MapDef, MapType};
use bpfmaps_difftest::engines::Kernel;
use bpfmaps_difftest::known::KNOWN_DIVERGENCES;
use bpfmaps_difftest::{
    kernel_usable, op_strategy, sys, Comparison, DiffRunner, Op, OpSpace, FIXED_SEED,
};
use bpfmaps_kernel::map::KernelMap;
use bpfmaps_kernel::prog::{load, LoadedProg, ProgType};
use bpfmaps_maps::UserMap;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

/// A program-side map call.
#[derive(Clone, Debug)]
enum HelperOp {
    Lookup { key: u32 },
    Update { key: u32, value: u64, flags: u64 },
    Delete { key: u32 },
}

/// One step of a mixed sequence.
#[derive(Clone, Debug)]
enum Step {
    Syscall(Op),
    Helper(HelperOp),
}

const HELPER_LOOKUP: i32 = 1;
const HELPER_UPDATE: i32 = 2;
const HELPER_DELETE: i32 = 3;
const HELPER_SKB_LOAD_BYTES: i32 = 26;
/// Where the argument record sits in the test packet: a socket filter's skb data (offset 0 of
/// `bpf_skb_load_bytes`) starts after the 14-byte Ethernet header `BPF_PROG_TEST_RUN` strips.
const RECORD_OFFSET: usize = 14;
/// What a lookup program returns for NULL.
const NULL_RETVAL: u32 = u32::MAX;

fn mov(dst: u8, src: Operand) -> Insn {
    Insn::Alu {
        width: Width::W64,
        op: AluOp::Mov,
        dst,
        src,
    }
}

fn add(dst: u8, imm: i32) -> Insn {
    Insn::Alu {
        width: Width::W64,
        op: AluOp::Add,
        dst,
        src: Operand::Imm(imm),
    }
}

fn call(helper: i32) -> Insn {
    Insn::Call(CallTarget::Helper(helper))
}

/// The program for `helper`: copy the 24-byte argument record (key u32, pad, value u64, flags
/// u64) from the packet to r10-24, then call the helper on the map.
fn program(helper: i32, map_fd: i32) -> Vec<Insn> {
    let mut p = vec![
        mov(6, Operand::Reg(1)),
        mov(2, Operand::Imm(0)),
        mov(3, Operand::Reg(10)),
        add(3, -24),
        mov(4, Operand::Imm(24)),
        call(HELPER_SKB_LOAD_BYTES),
        Insn::Jump {
            width: Width::W64,
            cond: JmpCond::Eq,
            dst: 0,
            src: Operand::Imm(0),
            offset: 2,
        },
        mov(0, Operand::Imm(-1000)),
        Insn::Exit,
        Insn::LoadImm64 {
            dst: 1,
            pseudo: pseudo::MAP_FD,
            imm_lo: map_fd,
            imm_hi: 0,
        },
        mov(2, Operand::Reg(10)),
        add(2, -24),
    ];
    match helper {
        HELPER_LOOKUP => p.extend([
            call(HELPER_LOOKUP),
            Insn::Jump {
                width: Width::W64,
                cond: JmpCond::Ne,
                dst: 0,
                src: Operand::Imm(0),
                offset: 2,
            },
            Insn::Alu {
                width: Width::W32,
                op: AluOp::Mov,
                dst: 0,
                src: Operand::Imm(-1),
            },
            Insn::Exit,
            Insn::Load {
                size: 4,
                signed: false,
                dst: 0,
                src: 0,
                off: 0,
            },
            Insn::Exit,
        ]),
        HELPER_UPDATE => p.extend([
            mov(3, Operand::Reg(10)),
            add(3, -16),
            Insn::Load {
                size: 8,
                signed: false,
                dst: 4,
                src: 10,
                off: -8,
            },
            call(HELPER_UPDATE),
            Insn::Exit,
        ]),
        _ => p.extend([call(HELPER_DELETE), Insn::Exit]),
    }
    p
}

/// The three loaded programs of one kernel map.
struct KernelHelpers {
    lookup: LoadedProg,
    update: LoadedProg,
    delete: LoadedProg,
}

impl KernelHelpers {
    fn load(map: &KernelMap) -> KernelHelpers {
        let fd = map.fd().as_raw_fd();
        let get = |helper, name| {
            load(
                ProgType::SocketFilter,
                &encode_program(&program(helper, fd)),
                name,
            )
            .unwrap_or_else(|e| panic!("loading the {name} program: {e}"))
        };
        KernelHelpers {
            lookup: get(HELPER_LOOKUP, "dt_lookup"),
            update: get(HELPER_UPDATE, "dt_update"),
            delete: get(HELPER_DELETE, "dt_delete"),
        }
    }

    fn run(&self, op: &HelperOp) -> u32 {
        let (prog, key, value, flags) = match *op {
            HelperOp::Lookup { key } => (&self.lookup, key, 0, 0),
            HelperOp::Update { key, value, flags } => (&self.update, key, value, flags),
            HelperOp::Delete { key } => (&self.delete, key, 0, 0),
        };
        let mut packet = [0u8; 64];
        let at = RECORD_OFFSET;
        packet[at..at + 4].copy_from_slice(&key.to_le_bytes());
        packet[at + 8..at + 16].copy_from_slice(&value.to_le_bytes());
        packet[at + 16..at + 24].copy_from_slice(&flags.to_le_bytes());
        prog.test_run(&packet)
            .unwrap_or_else(|e| panic!("BPF_PROG_TEST_RUN: {e}"))
            .retval
    }
}

/// The user engine's answer to `op`, in the kernel program's return convention.
fn user_run(map: &UserMap, op: &HelperOp) -> u32 {
    let errno_ret = |r: Result<(), bpfmaps_abi::Errno>| match r {
        Ok(()) => 0,
        Err(e) => e.0.wrapping_neg() as u32,
    };
    match *op {
        HelperOp::Lookup { key } => match map.helper_lookup(&key.to_le_bytes(), 0) {
            None => NULL_RETVAL,
            Some(at) => {
                let mut low = [0u8; 4];
                map.region().read(at.offset, &mut low);
                u32::from_le_bytes(low)
            }
        },
        HelperOp::Update { key, value, flags } => {
            errno_ret(map.helper_update(&key.to_le_bytes(), &value.to_le_bytes(), flags, 0))
        }
        HelperOp::Delete { key } => errno_ret(map.helper_delete(&key.to_le_bytes())),
    }
}

/// A known helper-side divergence of the user engine: the matching helper calls are skipped (and
/// counted) so the suite stays green while it is open. Each names the kernel rule.
struct KnownHelperDivergence {
    map_type: MapType,
    rule: &'static str,
    matches: fn(&MapDef, &HelperOp) -> bool,
}

const KNOWN_HELPER_DIVERGENCES: &[KnownHelperDivergence] = &[];

fn steps(space: &OpSpace) -> BoxedStrategy<Vec<Step>> {
    let keys = 0..space.key_count().max(1);
    let helper = prop_oneof![
        3 => keys.clone().prop_map(|key| HelperOp::Lookup { key }),
        3 => (keys.clone(), 0u64..6, prop_oneof![6 => 0u64..3, 1 => Just(3u64), 1 => Just(4u64), 1 => Just(8u64)])
            .prop_map(|(key, value, flags)| HelperOp::Update { key, value, flags }),
        1 => keys.prop_map(|key| HelperOp::Delete { key }),
    ];
    let step = prop_oneof![
        1 => op_strategy(space).prop_map(Step::Syscall),
        1 => helper.prop_map(Step::Helper),
    ];
    proptest::collection::vec(step, 1..64).boxed()
}

fn def(map_type: MapType, value_size: u32, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef {
        map_type,
        key_size: 4,
        value_size,
        max_entries,
        map_flags,
        name: "helpers".into(),
    }
}

#[test]
fn helper_calls_interleaved_with_syscalls_match_kernel_on_cpu0() {
    sys::pin_current_thread_to_cpu(0).expect("pin to CPU 0");
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let cpus = u32::try_from(sys::possible_cpus().expect("possible CPUs")).unwrap_or(1);
    let defs = [
        def(MapType::Hash, 8, 6, BPF_F_ZERO_SEED),
        def(MapType::PercpuHash, 8, 6, BPF_F_ZERO_SEED),
        def(MapType::Array, 8, 5, 0),
        def(MapType::PercpuArray, 8, 4, 0),
        def(MapType::LruHash, 8, 8, BPF_F_ZERO_SEED),
        def(MapType::LruHash, 8, 16, BPF_F_ZERO_SEED),
        def(
            MapType::LruHash,
            8,
            8,
            BPF_F_ZERO_SEED | BPF_F_NO_COMMON_LRU,
        ),
        def(MapType::LruPercpuHash, 8, 8, BPF_F_ZERO_SEED),
    ];
    let mut total_steps = 0u64;
    for d in defs {
        let space = OpSpace {
            def: d.clone(),
            possible_cpus: cpus,
            comparison: Comparison::Exact,
            with_freeze: false,
        };
        let mut runner = TestRunner::new_with_rng(
            Config {
                cases: bpfmaps_difftest::cases_from_env(),
                failure_persistence: None,
                ..Config::default()
            },
            TestRng::from_seed(RngAlgorithm::ChaCha, &FIXED_SEED),
        );
        let counted = std::sync::atomic::AtomicU64::new(0);
        let skipped = std::sync::atomic::AtomicU64::new(0);
        let result = runner.run(&steps(&space), |seq| {
            let kmap = KernelMap::create(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let umap = UserMap::create(&d).map_err(|e| TestCaseError::fail(e.to_string()))?;
            let programs = KernelHelpers::load(&kmap);
            let mut diff = DiffRunner::new(&d, &kmap, &umap, Comparison::Exact, KNOWN_DIVERGENCES)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            for (i, step) in seq.iter().enumerate() {
                match step {
                    Step::Syscall(op) => diff.step(op).map_err(|e| TestCaseError::fail(e.to_string()))?,
                    Step::Helper(op)
                        if KNOWN_HELPER_DIVERGENCES
                            .iter()
                            .any(|e| e.map_type == d.map_type && (e.matches)(&d, op)) =>
                    {
                        skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Step::Helper(op) => {
                        let k = programs.run(op);
                        let u = user_run(&umap, op);
                        if k != u {
                            return Err(TestCaseError::fail(format!(
                                "step {i} helper {op:?}: kernel returned {k:#x} ({}), user {u:#x} ({})",
                                k as i32, u as i32
                            )));
                        }
                    }
                }
            }
            counted.fetch_add(seq.len() as u64, std::sync::atomic::Ordering::Relaxed);
            diff.finish().map_err(|e| TestCaseError::fail(e.to_string()))
        });
        match result {
            Ok(()) => {
                let n = counted.load(std::sync::atomic::Ordering::Relaxed);
                total_steps += n;
                println!(
                    "{} max {} flags {:#x}: {n} mixed steps, no divergence ({} helper calls \
                     skipped as known divergences)",
                    d.map_type,
                    d.max_entries,
                    d.map_flags,
                    skipped.load(std::sync::atomic::Ordering::Relaxed)
                );
            }
            Err(TestError::Fail(why, seq)) => {
                panic!(
                    "{d:?}: {why}\nminimal sequence ({} steps): {seq:#?}",
                    seq.len()
                )
            }
            Err(TestError::Abort(why)) => panic!("{d:?}: aborted: {why}"),
        }
    }
    println!("helper suite: {total_steps} mixed helper/syscall steps on both engines");
}

/// Every helper-side exception names the kernel rule it stands for.
#[test]
fn known_helper_divergences_name_their_rule() {
    for e in KNOWN_HELPER_DIVERGENCES {
        assert!(
            e.rule.len() > 10,
            "exception for {} has no rule text",
            e.map_type
        );
        let d = def(e.map_type, 8, 4, 0);
        assert!((e.matches)(
            &d,
            &HelperOp::Update {
                key: 4,
                value: 0,
                flags: 4
            }
        ));
        assert!(!(e.matches)(&d, &HelperOp::Lookup { key: 4 }));
    }
}
