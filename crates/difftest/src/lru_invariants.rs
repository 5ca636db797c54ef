//! The LRU invariants, checked on one map alone, for runs where eviction is not deterministic
//! (the caller is not pinned to one CPU, so the kernel's per-CPU free lists differ from run to
//! run): an LRU map is a lossy map that never fails an update for lack of room.
//!
//! Owns [`LruChecker`] and [`run_lru_invariants`]. The exact, victim-for-victim comparison of LRU
//! maps is [`crate::runner::DiffRunner`] with the test thread pinned.
//!
//! The model: every key the map may hold maps to the only value it may hold. A key missing from
//! the model is certainly absent. Evictions only remove keys, so a lookup may miss a modelled key,
//! but it must never return another value, a delete or `EEXIST` must never concern a key the
//! model says is absent, and `E2BIG` never appears.

use std::collections::HashMap;

use bpfmaps_abi::{update_flags, Errno, MapError, MapOps};
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

use crate::engine::MapFactory;
use crate::op::{apply, MapState, Op};
use crate::runner::{contents, count_ops};
use crate::strategy::{ops_strategy, OpSpace};
use crate::{Comparison, SuiteConfig, SuiteReport};

/// Applies operations to one LRU map and checks each outcome against the lossy-map model.
pub struct LruChecker<'m> {
    map: &'m dyn MapOps,
    model: HashMap<Vec<u8>, Vec<u8>>,
    state: MapState,
    frozen: bool,
}

fn errno(r: &Result<(), MapError>) -> Option<Errno> {
    r.as_ref().err().and_then(|e| e.errno())
}

impl<'m> LruChecker<'m> {
    /// A checker over an empty LRU map.
    pub fn new(map: &'m dyn MapOps) -> LruChecker<'m> {
        LruChecker {
            map,
            model: HashMap::new(),
            state: MapState::default(),
            frozen: false,
        }
    }

    /// Applies `op` and checks its outcome.
    pub fn step(&mut self, op: &Op) -> Result<(), String> {
        let out = apply(self.map, &mut self.state, op);
        let e = errno(&out.result);
        let fail = |what: &str| Err(format!("{what}: {op:?} gave {out:?}"));
        if e == Some(Errno::E2BIG) {
            return fail("an LRU operation returned E2BIG");
        }
        if self.frozen && matches!(op, Op::Update { .. } | Op::Delete { .. }) {
            return if e == Some(Errno::EPERM) {
                Ok(())
            } else {
                fail("write after freeze")
            };
        }
        match op {
            Op::Update { key, value, flags } => {
                let valid = *flags <= update_flags::BPF_EXIST;
                match e {
                    None if *flags == update_flags::BPF_EXIST && !self.model.contains_key(key) => {
                        return fail("BPF_EXIST succeeded for a key the model says is absent");
                    }
                    None if valid => {
                        self.model.insert(key.clone(), value.clone());
                    }
                    Some(Errno::EINVAL) if !valid => {}
                    Some(Errno::EEXIST) if *flags == update_flags::BPF_NOEXIST => {
                        if !self.model.contains_key(key) {
                            return fail("EEXIST for a key the model says is absent");
                        }
                    }
                    Some(Errno::ENOENT) if *flags == update_flags::BPF_EXIST => {
                        self.model.remove(key);
                    }
                    _ => return fail("unexpected update result"),
                }
            }
            Op::Lookup { key, flags } => match e {
                None if *flags == 0 => {
                    let got = out.value.as_deref().unwrap_or(&[]);
                    if self.model.get(key).map(Vec::as_slice) != Some(got) {
                        return fail("lookup returned a value the model does not allow");
                    }
                }
                Some(Errno::ENOENT) if *flags == 0 => {
                    self.model.remove(key);
                }
                Some(Errno::EINVAL) if *flags != 0 => {}
                _ => return fail("unexpected lookup result"),
            },
            Op::Delete { key } => match e {
                None if self.model.remove(key).is_some() => {}
                Some(Errno::ENOENT) => {
                    self.model.remove(key);
                }
                _ => return fail("unexpected delete result"),
            },
            Op::LookupAndDelete { key, flags } => match e {
                None if *flags == 0 => {
                    let got = out.value.as_deref().unwrap_or(&[]);
                    if self.model.remove(key).as_deref() != Some(got) {
                        return fail("lookup_and_delete returned a value the model does not allow");
                    }
                }
                Some(Errno::ENOENT) if *flags == 0 => {
                    self.model.remove(key);
                }
                Some(Errno::EINVAL) if *flags != 0 => {}
                Some(Errno::EPERM) if self.frozen => {}
                _ => return fail("unexpected lookup_and_delete result"),
            },
            Op::Freeze => {
                if e.is_none() {
                    self.frozen = true;
                }
            }
            Op::GetNextKey { .. }
            | Op::LookupBatch { .. }
            | Op::LookupAndDeleteBatch { .. }
            | Op::UpdateBatch { .. }
            | Op::DeleteBatch { .. } => {
                // Batches are not generated for invariant runs; a walk is checked at the end.
            }
        }
        Ok(())
    }

    /// Checks the final contents: no more than max_entries keys, no key twice, every key and
    /// value allowed by the model.
    pub fn finish(&self) -> Result<(), String> {
        let info = self.map.info();
        let walked = contents(self.map)?;
        if walked.len() > info.max_entries as usize {
            return Err(format!(
                "{} keys in a map of {}",
                walked.len(),
                info.max_entries
            ));
        }
        let mut seen = std::collections::HashSet::new();
        for (key, value) in &walked {
            if !seen.insert(key.clone()) {
                return Err(format!("key {key:02x?} visited twice"));
            }
            if self.model.get(key) != Some(value) {
                return Err(format!(
                    "key {key:02x?} holds {value:02x?}, the model allows {:02x?}",
                    self.model.get(key)
                ));
            }
        }
        Ok(())
    }
}

/// Runs `config.cases` generated op sequences (updates, lookups, deletes, lookup-and-deletes,
/// freezes) on fresh maps from `factory` and checks the LRU invariants on each.
pub fn run_lru_invariants(
    factory: &dyn MapFactory,
    config: &SuiteConfig,
) -> Result<SuiteReport, String> {
    let possible_cpus = crate::sys::possible_cpus().map_err(|e| format!("possible CPUs: {e}"))?;
    if let Err(crate::CreateError::Unsupported(why)) = factory.create(&config.def) {
        return Ok(SuiteReport {
            cases: 0,
            not_covered: Some(why),
            ops: 0,
        });
    }
    let space = OpSpace {
        def: config.def.clone(),
        possible_cpus: u32::try_from(possible_cpus).unwrap_or(u32::MAX),
        comparison: Comparison::Unordered,
        with_freeze: config.with_freeze,
    };
    let strategy =
        proptest::strategy::Strategy::prop_map(ops_strategy(&space, config.max_ops), |ops| {
            ops.into_iter()
                .filter(|op| {
                    matches!(
                        op,
                        Op::Update { .. }
                            | Op::Lookup { .. }
                            | Op::Delete { .. }
                            | Op::LookupAndDelete { .. }
                            | Op::Freeze
                    )
                })
                .collect::<Vec<Op>>()
        });
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: config.cases,
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::from_seed(RngAlgorithm::ChaCha, &config.seed),
    );
    let ops_total = std::sync::atomic::AtomicU64::new(0);
    let outcome = runner.run(&strategy, |ops| {
        let map = factory
            .create(&config.def)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut checker = LruChecker::new(&*map);
        for op in &ops {
            checker.step(op).map_err(TestCaseError::fail)?;
        }
        checker.finish().map_err(TestCaseError::fail)?;
        ops_total.fetch_add(ops.len() as u64, std::sync::atomic::Ordering::Relaxed);
        count_ops(config.def.map_type, ops.len() as u64);
        Ok(())
    });
    match outcome {
        Ok(()) => Ok(SuiteReport {
            cases: config.cases,
            not_covered: None,
            ops: ops_total.load(std::sync::atomic::Ordering::Relaxed),
        }),
        Err(TestError::Fail(reason, ops)) => Err(format!(
            "{} engine: {reason}\nminimal sequence: {ops:#?}",
            factory.engine_name()
        )),
        Err(TestError::Abort(reason)) => Err(format!("aborted: {reason}")),
    }
}
