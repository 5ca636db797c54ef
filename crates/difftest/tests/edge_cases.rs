//! Hand-written edge cases from kernel-map-semantics.md section 10 (and the rules they point
//! to): each scenario states what the kernel returns at every step, checks that the kernel does,
//! and checks that the candidate engine gives the same full outcome (values, counts, cursors)
//! and the same final contents.

use bpfmaps_abi::map_flags::{BPF_F_NO_COMMON_LRU, BPF_F_ZERO_SEED};
use bpfmaps_abi::update_flags::{BPF_ANY, BPF_EXIST, BPF_F_LOCK, BPF_NOEXIST};
use bpfmaps_abi::{Errno, MapDef, MapType};
use bpfmaps_difftest::engines::{Candidate, Kernel};
use bpfmaps_difftest::op::{apply, MapState, Outcome};
use bpfmaps_difftest::{contents, kernel_usable, sys, CreateError, Cursor, MapFactory, Op};

fn def(
    map_type: MapType,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
) -> MapDef {
    MapDef::new(
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags,
        "edge",
    )
}

fn k(n: u32) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

fn v(len: usize, byte: u8) -> Vec<u8> {
    vec![byte; len]
}

fn upd(key: u32, value: Vec<u8>, flags: u64) -> Op {
    Op::Update {
        key: k(key),
        value,
        flags,
    }
}

fn lookup(key: u32) -> Op {
    Op::Lookup {
        key: k(key),
        flags: 0,
    }
}

const OK: Result<(), Errno> = Ok(());

/// What one step must give on the kernel: the errno, and optionally the batch count.
struct Step {
    op: Op,
    /// `None` when the kernel's result depends on the hash layout or LRU state: then only
    /// kernel = candidate is checked.
    result: Option<Result<(), Errno>>,
    count: Option<u32>,
}

fn s(op: Op, result: Result<(), Errno>) -> Step {
    Step {
        op,
        result: Some(result),
        count: None,
    }
}

fn sc(op: Op, result: Result<(), Errno>, count: u32) -> Step {
    Step {
        op,
        result: Some(result),
        count: Some(count),
    }
}

/// A step whose kernel result is not stated, only compared.
fn any(op: Op) -> Step {
    Step {
        op,
        result: None,
        count: None,
    }
}

/// Runs `steps` on a kernel map and a candidate map of `def`; returns the kernel's outcomes.
fn scenario(name: &str, def: &MapDef, steps: &[Step]) -> Option<Vec<Outcome>> {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return None,
        Err(why) => panic!("{why}"),
    }
    let candidate = Candidate::default();
    let a = Kernel
        .create(def)
        .unwrap_or_else(|e| panic!("{name}: kernel create: {e}"));
    let b = match candidate.create(def) {
        Ok(b) => b,
        Err(CreateError::Unsupported(why)) => {
            println!("NOT COVERED: {name}: {why}");
            return None;
        }
        Err(e) => panic!("{name}: candidate create: {e}"),
    };
    let (mut sa, mut sb) = (MapState::default(), MapState::default());
    let mut outcomes = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let oa = apply(&*a, &mut sa, &step.op);
        let ob = apply(&*b, &mut sb, &step.op);
        let got = oa.result.map_err(|e| e.errno().unwrap_or(Errno(-1)));
        if let Some(expected) = step.result {
            assert_eq!(
                got, expected,
                "{name}: step {i} {:?}: the kernel gave {oa:?}",
                step.op
            );
        }
        if let Some(count) = step.count {
            assert_eq!(
                oa.count,
                Some(count),
                "{name}: step {i} {:?}: kernel count",
                step.op
            );
        }
        assert_eq!(
            oa,
            ob,
            "{name}: step {i} {:?}: kernel vs {}",
            step.op,
            candidate.engine_name()
        );
        outcomes.push(oa);
    }
    assert_eq!(
        contents(&*a),
        contents(&*b),
        "{name}: final contents, kernel vs candidate"
    );
    Some(outcomes)
}

#[test]
fn full_hash_insert_is_e2big_and_flag_errors_take_priority() {
    let d = def(MapType::Hash, 4, 8, 2, BPF_F_ZERO_SEED);
    scenario(
        "full hash",
        &d,
        &[
            s(upd(0, v(8, 1), BPF_ANY), OK),
            s(upd(1, v(8, 2), BPF_NOEXIST), OK),
            s(upd(2, v(8, 3), BPF_ANY), Err(Errno::E2BIG)),
            s(upd(2, v(8, 3), BPF_NOEXIST), Err(Errno::E2BIG)),
            s(upd(0, v(8, 4), BPF_NOEXIST), Err(Errno::EEXIST)),
            s(upd(5, v(8, 4), BPF_EXIST), Err(Errno::ENOENT)),
            s(upd(0, v(8, 5), BPF_ANY), OK),
            s(upd(1, v(8, 6), BPF_EXIST), OK),
            s(upd(0, v(8, 6), 3), Err(Errno::EINVAL)),
            s(upd(0, v(8, 6), BPF_F_LOCK), Err(Errno::EINVAL)),
            s(
                Op::Lookup {
                    key: k(0),
                    flags: BPF_F_LOCK,
                },
                Err(Errno::EINVAL),
            ),
            s(
                Op::Lookup {
                    key: k(0),
                    flags: 1,
                },
                Err(Errno::EINVAL),
            ),
            s(Op::Delete { key: k(7) }, Err(Errno::ENOENT)),
            s(
                Op::LookupAndDelete {
                    key: k(1),
                    flags: 0,
                },
                OK,
            ),
            s(
                Op::LookupAndDelete {
                    key: k(1),
                    flags: 0,
                },
                Err(Errno::ENOENT),
            ),
            s(upd(2, v(8, 7), BPF_ANY), OK),
        ],
    );
}

#[test]
fn lru_never_fails_for_room_and_evicts_in_insertion_order_from_one_cpu() {
    sys::pin_current_thread_to_cpu(0).expect("pin to CPU 0");
    let d = def(MapType::LruHash, 4, 8, 4, BPF_F_ZERO_SEED);
    let mut steps: Vec<Step> = (0..12)
        .map(|i| s(upd(i, v(8, i as u8), BPF_ANY), OK))
        .collect();
    // A failing update can still evict; the candidate must evict the same keys.
    steps.push(s(upd(11, v(8, 0), BPF_NOEXIST), Err(Errno::EEXIST)));
    steps.extend((0..12).map(|i| any(lookup(i))));
    scenario("lru eviction", &d, &steps);
    let d = def(
        MapType::LruHash,
        4,
        8,
        4,
        BPF_F_ZERO_SEED | BPF_F_NO_COMMON_LRU,
    );
    let steps: Vec<Step> = (0..10)
        .map(|i| s(upd(i, v(8, i as u8), BPF_ANY), OK))
        .collect();
    scenario("lru no-common", &d, &steps);
}

#[test]
fn array_rules_noexist_delete_out_of_range_and_iteration() {
    let d = def(MapType::Array, 4, 4, 3, 0);
    scenario(
        "array",
        &d,
        &[
            s(lookup(0), OK),
            s(upd(0, v(4, 1), BPF_NOEXIST), Err(Errno::EEXIST)),
            s(upd(1, v(4, 2), BPF_EXIST), OK),
            s(upd(3, v(4, 2), BPF_ANY), Err(Errno::E2BIG)),
            s(lookup(3), Err(Errno::ENOENT)),
            s(Op::Delete { key: k(0) }, Err(Errno::EINVAL)),
            s(Op::Delete { key: k(99) }, Err(Errno::EINVAL)),
            s(
                Op::LookupAndDelete {
                    key: k(0),
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
            ),
            s(Op::GetNextKey { key: None }, OK),
            s(Op::GetNextKey { key: Some(k(99)) }, OK),
            s(Op::GetNextKey { key: Some(k(1)) }, OK),
            s(Op::GetNextKey { key: Some(k(2)) }, Err(Errno::ENOENT)),
            s(upd(0, v(4, 3), 4), Err(Errno::EINVAL)),
            sc(
                Op::LookupAndDeleteBatch {
                    cursor: Cursor::Start,
                    count: 2,
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
                2,
            ),
            sc(
                Op::DeleteBatch {
                    keys: vec![k(0)],
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
                1,
            ),
            sc(
                Op::LookupBatch {
                    cursor: Cursor::Start,
                    count: 2,
                    elem_flags: 0,
                    flags: 0,
                },
                OK,
                2,
            ),
            sc(
                Op::LookupBatch {
                    cursor: Cursor::Continue,
                    count: 2,
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOENT),
                1,
            ),
        ],
    );
    let outcomes = scenario(
        "array get_next_key from an out-of-range index",
        &d,
        &[s(
            Op::GetNextKey {
                key: Some(k(u32::MAX)),
            },
            OK,
        )],
    );
    if let Some(o) = outcomes {
        assert_eq!(
            o[0].value.as_deref(),
            Some(&k(0)[..]),
            "out-of-range index continues at 0"
        );
    }
}

#[test]
fn hash_get_next_key_restarts_on_a_missing_key_and_replacement_moves_the_key() {
    let d = def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED);
    let mut steps: Vec<Step> = (0..8)
        .map(|i| s(upd(i, v(8, i as u8), BPF_ANY), OK))
        .collect();
    steps.push(s(Op::GetNextKey { key: Some(k(100)) }, OK));
    steps.push(s(Op::GetNextKey { key: None }, OK));
    for i in 0..8 {
        steps.push(s(upd(i, v(8, 0x40 + i as u8), BPF_EXIST), OK));
        steps.push(any(Op::GetNextKey { key: Some(k(i)) }));
    }
    let outcomes = scenario("hash order", &d, &steps);
    if let Some(o) = outcomes {
        assert_eq!(
            o[8].value, o[9].value,
            "a missing key restarts at the first key"
        );
    }
}

#[test]
fn percpu_padding_round_trips_and_bad_flags_are_einval() {
    let cpus = sys::possible_cpus().expect("possible CPUs");
    let d = def(MapType::PercpuHash, 4, 4, 4, BPF_F_ZERO_SEED);
    let mut value = Vec::new();
    for cpu in 0..cpus {
        value.extend_from_slice(&(cpu as u32 + 1).to_le_bytes());
        value.extend_from_slice(&0xdead_beefu32.to_le_bytes());
    }
    let outcomes = scenario(
        "percpu padding",
        &d,
        &[
            s(upd(1, value.clone(), BPF_ANY), OK),
            s(lookup(1), OK),
            s(upd(1, value.clone(), 8), Err(Errno::EINVAL)),
            s(upd(1, value.clone(), 16), Err(Errno::EINVAL)),
        ],
    );
    if let Some(o) = outcomes {
        assert_eq!(
            o[1].value.as_deref(),
            Some(&value[..]),
            "padding comes back as given"
        );
    }
    let d = def(MapType::PercpuArray, 4, 4, 2, 0);
    scenario(
        "percpu array",
        &d,
        &[
            s(lookup(1), OK),
            s(upd(0, value.clone(), 0), OK),
            s(lookup(0), OK),
        ],
    );
}

#[test]
fn unsupported_operations_return_enotsupp_524() {
    let rb = def(MapType::Ringbuf, 0, 0, 4096, 0);
    scenario(
        "ringbuf syscalls",
        &rb,
        &[
            s(
                Op::Lookup {
                    key: vec![],
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
            ),
            s(
                Op::Update {
                    key: vec![],
                    value: vec![],
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
            ),
            s(Op::Delete { key: vec![] }, Err(Errno::ENOTSUPP)),
            s(Op::GetNextKey { key: None }, Err(Errno::ENOTSUPP)),
            s(
                Op::LookupBatch {
                    cursor: Cursor::Start,
                    count: 1,
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
            ),
        ],
    );
    let perf = def(MapType::PerfEventArray, 4, 4, 2, 0);
    scenario(
        "perf event array syscalls",
        &perf,
        &[
            s(lookup(0), Err(Errno::ENOTSUPP)),
            s(Op::Delete { key: k(0) }, Err(Errno::ENOENT)),
            s(Op::Delete { key: k(2) }, Err(Errno::E2BIG)),
            s(upd(0, v(4, 0), BPF_NOEXIST), Err(Errno::EINVAL)),
            s(upd(5, v(4, 0), BPF_ANY), Err(Errno::E2BIG)),
            s(Op::GetNextKey { key: None }, OK),
            s(
                Op::LookupBatch {
                    cursor: Cursor::Start,
                    count: 1,
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
            ),
        ],
    );
}

#[test]
fn stack_map_syscall_rules() {
    let d = def(MapType::StackTrace, 4, 8 * 4, 3, 0);
    scenario(
        "stack trace",
        &d,
        &[
            s(lookup(0), Err(Errno::ENOENT)),
            s(lookup(4), Err(Errno::ENOENT)),
            s(upd(0, v(32, 0), BPF_ANY), Err(Errno::EINVAL)),
            s(Op::Delete { key: k(1) }, Err(Errno::ENOENT)),
            s(Op::Delete { key: k(4) }, Err(Errno::E2BIG)),
            s(Op::GetNextKey { key: None }, Err(Errno::ENOENT)),
            s(
                Op::DeleteBatch {
                    keys: vec![k(0)],
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOTSUPP),
            ),
        ],
    );
}

#[test]
fn batch_rules_flags_counts_and_end() {
    let d = def(MapType::Hash, 4, 8, 8, BPF_F_ZERO_SEED);
    let mut steps: Vec<Step> = (1..=6)
        .map(|i| s(upd(i, v(8, i as u8), BPF_ANY), OK))
        .collect();
    steps.extend([
        sc(
            Op::UpdateBatch {
                keys: vec![k(7)],
                values: vec![v(8, 7)],
                elem_flags: BPF_NOEXIST,
                flags: 0,
            },
            Err(Errno::EINVAL),
            1,
        ),
        sc(
            Op::UpdateBatch {
                keys: vec![k(7)],
                values: vec![v(8, 7)],
                elem_flags: BPF_EXIST,
                flags: 0,
            },
            Err(Errno::EINVAL),
            1,
        ),
        sc(
            Op::LookupBatch {
                cursor: Cursor::Start,
                count: 8,
                elem_flags: 0,
                flags: 1,
            },
            Err(Errno::EINVAL),
            8,
        ),
        sc(
            Op::LookupBatch {
                cursor: Cursor::Start,
                count: 0,
                elem_flags: 0,
                flags: 0,
            },
            OK,
            0,
        ),
        sc(
            Op::LookupBatch {
                cursor: Cursor::Start,
                count: 16,
                elem_flags: 0,
                flags: 0,
            },
            Err(Errno::ENOENT),
            6,
        ),
        sc(
            Op::LookupBatch {
                cursor: Cursor::Raw(8),
                count: 16,
                elem_flags: 0,
                flags: 0,
            },
            Err(Errno::ENOENT),
            0,
        ),
        sc(
            Op::DeleteBatch {
                keys: vec![k(1), k(99), k(2)],
                elem_flags: 0,
                flags: 1,
            },
            Err(Errno::ENOENT),
            1,
        ),
        sc(
            Op::UpdateBatch {
                keys: vec![k(1), k(9)],
                values: vec![v(8, 9), v(8, 9)],
                elem_flags: 0,
                flags: 1,
            },
            OK,
            2,
        ),
        any(Op::LookupAndDeleteBatch {
            cursor: Cursor::Start,
            count: 3,
            elem_flags: 0,
            flags: 0,
        }),
        s(
            Op::LookupAndDeleteBatch {
                cursor: Cursor::Continue,
                count: 16,
                elem_flags: 0,
                flags: 0,
            },
            Err(Errno::ENOENT),
        ),
        s(Op::GetNextKey { key: None }, Err(Errno::ENOENT)),
    ]);
    scenario("hash batches", &d, &steps);
}

#[test]
fn freeze_makes_every_syscall_write_eperm() {
    let d = def(MapType::Hash, 4, 8, 4, BPF_F_ZERO_SEED);
    scenario(
        "freeze",
        &d,
        &[
            s(upd(1, v(8, 1), BPF_ANY), OK),
            s(Op::Freeze, OK),
            s(upd(1, v(8, 2), BPF_ANY), Err(Errno::EPERM)),
            s(upd(2, v(8, 2), 3), Err(Errno::EPERM)),
            s(Op::Delete { key: k(1) }, Err(Errno::EPERM)),
            s(
                Op::LookupAndDelete {
                    key: k(1),
                    flags: 0,
                },
                Err(Errno::EPERM),
            ),
            s(lookup(1), OK),
            s(Op::Freeze, Err(Errno::EPERM)),
            sc(
                Op::UpdateBatch {
                    keys: vec![k(3)],
                    values: vec![v(8, 3)],
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::EPERM),
                1,
            ),
            sc(
                Op::LookupBatch {
                    cursor: Cursor::Start,
                    count: 4,
                    elem_flags: 0,
                    flags: 0,
                },
                Err(Errno::ENOENT),
                1,
            ),
        ],
    );
}

#[test]
fn no_common_lru_holds_max_entries_over_cpus_from_one_writer() {
    sys::pin_current_thread_to_cpu(0).expect("pin to CPU 0");
    let cpus = sys::possible_cpus().expect("possible CPUs") as u32;
    let d = def(
        MapType::LruHash,
        4,
        8,
        8,
        BPF_F_NO_COMMON_LRU | BPF_F_ZERO_SEED,
    );
    let steps: Vec<Step> = (0..16).map(|i| s(upd(i, v(8, 1), BPF_ANY), OK)).collect();
    if scenario("no-common lru capacity", &d, &steps).is_some() {
        let map = Kernel.create(&d).expect("kernel map");
        for i in 0..16u32 {
            map.update(&k(i), &v(8, 1), 0)
                .expect("LRU update never fails for room");
        }
        let held = contents(&*map).expect("walk").len() as u32;
        assert_eq!(
            held,
            8 / cpus,
            "a single-CPU writer fills only its CPU's share"
        );
    }
}

/// The semantics doc (2.5): 10 000 single-CPU inserts into a 10 000-entry LRU map leave 9 888
/// keys (target_free batches evict early). The user engine must keep exactly the same keys.
#[test]
fn lru_population_from_one_cpu_keeps_the_kernels_keys() {
    sys::pin_current_thread_to_cpu(0).expect("pin to CPU 0");
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let d = def(MapType::LruHash, 4, 8, 10_000, 0);
    let kernel = Kernel.create(&d).expect("kernel map");
    bpfmaps_difftest::bench::populate(&*kernel, 10_000).expect("kernel populate");
    let mut kernel_keys = bpfmaps_difftest::bench::existing_keys(&*kernel).expect("kernel keys");
    kernel_keys.sort_unstable();
    assert_eq!(
        kernel_keys.len(),
        9888,
        "the kernel's count after 10 000 inserts"
    );
    let candidate = match Candidate::default().create(&d) {
        Ok(m) => m,
        Err(CreateError::Unsupported(why)) => {
            println!("NOT COVERED: lru population: {why}");
            return;
        }
        Err(e) => panic!("candidate create: {e}"),
    };
    bpfmaps_difftest::bench::populate(&*candidate, 10_000).expect("candidate populate");
    let mut candidate_keys =
        bpfmaps_difftest::bench::existing_keys(&*candidate).expect("candidate keys");
    candidate_keys.sort_unstable();
    assert_eq!(
        candidate_keys, kernel_keys,
        "the engines kept different keys"
    );
}
