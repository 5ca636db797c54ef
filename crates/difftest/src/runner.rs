//! The differential runner: applies each operation to two maps of the same definition (the
//! reference, normally the kernel, and the candidate, normally the user engine), compares the full
//! observable outcomes, and at the end compares the final contents.
//!
//! Owns [`DiffRunner`], [`Comparison`], [`Divergence`], [`Contents`], the op counters and the
//! known-divergence list type. It does not create maps (see [`crate::engine`]) nor generate
//! operations (see [`crate::strategy`]).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bpfmaps_abi::{Errno, MapDef, MapError, MapInfo, MapOps, MapType};

use crate::op::{apply, MapState, Op, Outcome};

/// How strictly two maps are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Every outcome byte for byte, and the final iteration order key for key. Right for arrays,
    /// for hash maps created with `BPF_F_ZERO_SEED`, and for LRU maps driven from one CPU.
    Exact,
    /// Hash maps with a random seed: order-dependent operations are compared by result kind and
    /// as sets; the final contents as a set.
    Unordered,
}

/// A known divergence between the engines, kept so the suite stays green while it is recorded:
/// operations it matches are skipped (and counted) instead of run, and the `map_flags` bits it
/// names are left out of the info comparison.
#[derive(Clone, Copy, Debug)]
pub struct KnownDivergence {
    /// The map type it applies to, `None` for every type.
    pub map_type: Option<MapType>,
    /// The kernel rule the candidate breaks, in words (with the doc section or kernel function).
    pub rule: &'static str,
    /// Which operations are affected.
    pub matches: fn(&MapDef, &Op) -> bool,
    /// `map_flags` bits whose reported value ([`MapInfo::map_flags`]) is not compared.
    pub info_flags_ignored: u32,
}

impl KnownDivergence {
    /// True when the entry concerns maps of `def`'s type.
    pub fn applies_to(&self, def: &MapDef) -> bool {
        self.map_type.is_none_or(|t| t == def.map_type)
    }
}

/// An op matcher for [`KnownDivergence::matches`] that matches nothing (info-only entries).
pub fn no_op(_: &MapDef, _: &Op) -> bool {
    false
}

/// Why two maps were found to differ.
#[derive(Clone, Debug)]
pub struct Divergence {
    /// The map definition.
    pub def: Box<MapDef>,
    /// Index of the operation in the sequence (`None` for creation or final contents).
    pub step: Option<usize>,
    /// What differed, in words.
    pub what: String,
    /// The operation (when a step diverged).
    pub op: Option<Box<Op>>,
    /// The reference's side.
    pub reference: String,
    /// The candidate's side.
    pub candidate: String,
}

impl fmt::Display for Divergence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {:?}", self.what, self.def)?;
        if let Some(step) = self.step {
            write!(f, " at step {step}")?;
        }
        if let Some(op) = &self.op {
            write!(f, "\n  op:        {op:?}")?;
        }
        write!(
            f,
            "\n  reference: {}\n  candidate: {}",
            self.reference, self.candidate
        )
    }
}

impl std::error::Error for Divergence {}

/// Op counters shared by every runner in the process, per map type name.
static OPS_EXECUTED: Mutex<BTreeMap<&'static str, u64>> = Mutex::new(BTreeMap::new());
static OPS_SKIPPED: AtomicU64 = AtomicU64::new(0);

/// Adds `n` executed operations for `map_type` (a differential op is applied to both maps and
/// counted once; an invariant-run op is counted on the engine it ran on).
pub fn count_ops(map_type: MapType, n: u64) {
    if let Ok(mut counts) = OPS_EXECUTED.lock() {
        let entry = counts.entry(map_type.name()).or_insert(0);
        *entry = entry.saturating_add(n);
    }
}

/// The operations executed so far in this process, per map type name, and the number skipped
/// by known divergences.
pub fn op_totals() -> (BTreeMap<&'static str, u64>, u64) {
    let counts = OPS_EXECUTED.lock().map(|c| c.clone()).unwrap_or_default();
    (counts, OPS_SKIPPED.load(Ordering::Relaxed))
}

/// Formats [`op_totals`] as one line, for a test to print at its end.
pub fn op_totals_line(label: &str) -> String {
    let (counts, skipped) = op_totals();
    let total: u64 = counts.values().sum();
    let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!(
        "difftest {label}: {total} ops executed ({}), {skipped} skipped",
        parts.join(" ")
    )
}

/// The final contents of a map, in iteration order: `(key, user-space value)` pairs.
pub type Contents = Vec<(Vec<u8>, Vec<u8>)>;

/// Walks `map` with get_next_key from the start and looks up each key. Stops with an error
/// description when the walk is longer than `4 × max_entries + 16` (a cycle) or an operation
/// fails unexpectedly.
pub fn contents(map: &dyn MapOps) -> Result<Contents, String> {
    let info = map.info();
    let key_len = info.key_size as usize;
    let limit = (info.max_entries as usize)
        .saturating_mul(4)
        .saturating_add(16);
    let mut out = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    loop {
        let mut next = vec![0u8; key_len];
        match map.get_next_key(current.as_deref(), &mut next) {
            Ok(()) => {}
            Err(MapError::Errno(Errno::ENOENT)) => break,
            Err(e) => return Err(format!("get_next_key failed during the walk: {e}")),
        }
        let mut value = vec![0u8; info.user_value_size()];
        let value = match map.lookup(&next, &mut value, 0) {
            Ok(()) => value,
            Err(e) => return Err(format!("lookup of walked key {next:02x?} failed: {e}")),
        };
        out.push((next.clone(), value));
        if out.len() > limit {
            return Err(format!(
                "get_next_key walk exceeded {limit} steps (a cycle?)"
            ));
        }
        current = Some(next);
    }
    Ok(out)
}

/// Compares the parts of two [`MapInfo`]s both engines must agree on (not the id).
pub fn compare_info(
    def: &MapDef,
    reference: &MapInfo,
    candidate: &MapInfo,
) -> Result<(), Divergence> {
    compare_info_except(def, reference, candidate, &[])
}

/// [`compare_info`], leaving out the `map_flags` bits the applicable `exceptions` name.
pub fn compare_info_except(
    def: &MapDef,
    reference: &MapInfo,
    candidate: &MapInfo,
    exceptions: &[KnownDivergence],
) -> Result<(), Divergence> {
    let ignored = exceptions
        .iter()
        .filter(|e| e.applies_to(def))
        .fold(0u32, |bits, e| bits | e.info_flags_ignored);
    let pick = |i: &MapInfo| {
        (
            i.map_type,
            i.key_size,
            i.value_size,
            i.max_entries,
            i.map_flags & !ignored,
            i.possible_cpus,
            i.frozen,
        )
    };
    if pick(reference) != pick(candidate) {
        return Err(Divergence {
            def: Box::new(def.clone()),
            step: None,
            what: "map info differs".into(),
            op: None,
            reference: format!("{reference:?}"),
            candidate: format!("{candidate:?}"),
        });
    }
    Ok(())
}

/// Drives two maps of one definition through the same operations and compares them.
pub struct DiffRunner<'m> {
    def: MapDef,
    reference: &'m dyn MapOps,
    candidate: &'m dyn MapOps,
    comparison: Comparison,
    exceptions: &'m [KnownDivergence],
    reference_state: MapState,
    candidate_state: MapState,
    steps: usize,
    executed: u64,
}

impl<'m> DiffRunner<'m> {
    /// A runner over `reference` and `candidate`, both created from `def`. Checks their infos.
    pub fn new(
        def: &MapDef,
        reference: &'m dyn MapOps,
        candidate: &'m dyn MapOps,
        comparison: Comparison,
        exceptions: &'m [KnownDivergence],
    ) -> Result<DiffRunner<'m>, Divergence> {
        compare_info_except(def, &reference.info(), &candidate.info(), exceptions)?;
        Ok(DiffRunner {
            def: def.clone(),
            reference,
            candidate,
            comparison,
            exceptions,
            reference_state: MapState::default(),
            candidate_state: MapState::default(),
            steps: 0,
            executed: 0,
        })
    }

    /// Applies `op` to both maps and compares what user space observes.
    pub fn step(&mut self, op: &Op) -> Result<(), Divergence> {
        let index = self.steps;
        self.steps += 1;
        if self
            .exceptions
            .iter()
            .any(|e| e.applies_to(&self.def) && (e.matches)(&self.def, op))
        {
            OPS_SKIPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let a = apply(self.reference, &mut self.reference_state, op);
        let b = apply(self.candidate, &mut self.candidate_state, op);
        self.executed += 1;
        let same = match self.comparison {
            Comparison::Exact => a == b,
            Comparison::Unordered => unordered_equal(op, &a, &b, self.def.key_size as usize),
        };
        if same {
            Ok(())
        } else {
            Err(Divergence {
                def: Box::new(self.def.clone()),
                step: Some(index),
                what: format!("{} outcome differs", op.kind()),
                op: Some(Box::new(op.clone())),
                reference: format!("{a:?}"),
                candidate: format!("{b:?}"),
            })
        }
    }

    /// Applies every op of `ops` in order, stopping at the first divergence.
    pub fn run(&mut self, ops: &[Op]) -> Result<(), Divergence> {
        ops.iter().try_for_each(|op| self.step(op))
    }

    /// Compares the final contents (order too under [`Comparison::Exact`]) and the infos, and
    /// adds the executed operations to the process-wide counters.
    pub fn finish(self) -> Result<(), Divergence> {
        count_ops(self.def.map_type, self.executed);
        compare_info_except(
            &self.def,
            &self.reference.info(),
            &self.candidate.info(),
            self.exceptions,
        )?;
        let a = contents(self.reference);
        let b = contents(self.candidate);
        // A walk that stops with the same error on both (a ring buffer's ENOTSUPP, a perf event
        // array's lookup ENOTSUPP) is an agreement too.
        let same = match (&a, &b, self.comparison) {
            (Ok(a), Ok(b), Comparison::Exact) => a == b,
            (Ok(a), Ok(b), Comparison::Unordered) => sorted(a) == sorted(b),
            (Err(a), Err(b), _) => a == b,
            _ => false,
        };
        if same {
            Ok(())
        } else {
            Err(Divergence {
                def: Box::new(self.def),
                step: None,
                what: "final contents differ".into(),
                op: None,
                reference: format!("{a:02x?}"),
                candidate: format!("{b:02x?}"),
            })
        }
    }
}

fn sorted(c: &Contents) -> Contents {
    let mut c = c.clone();
    c.sort();
    c
}

/// The looser comparison of [`Comparison::Unordered`].
fn unordered_equal(op: &Op, a: &Outcome, b: &Outcome, key_len: usize) -> bool {
    if !op.is_order_dependent() && !matches!(op, Op::GetNextKey { .. }) {
        return a == b;
    }
    match op {
        // From the start, only "is the map empty" is seed-independent.
        Op::GetNextKey { key: None } => a.result == b.result,
        // From a key, the next one depends on the layout; only non-ENOENT errors must agree.
        Op::GetNextKey { key: Some(_) } => {
            let relevant = |o: &Outcome| match o.result {
                Err(MapError::Errno(Errno::ENOENT)) | Ok(()) => None,
                Err(e) => Some(e),
            };
            relevant(a) == relevant(b)
        }
        // Batch lookups are generated only large enough for the whole map: compare results,
        // counts and the returned elements as sets.
        _ => {
            let pairs = |o: &Outcome| -> Option<Contents> {
                let n = o.count? as usize;
                let keys = o.keys.as_ref()?;
                let values = o.values.as_ref()?;
                let value_len = if n == 0 {
                    0
                } else {
                    values.len() / (keys.len() / key_len.max(1)).max(1)
                };
                let mut v: Contents = (0..n)
                    .map(|i| {
                        (
                            keys.get(i * key_len..(i + 1) * key_len)
                                .unwrap_or(&[])
                                .to_vec(),
                            values
                                .get(i * value_len..(i + 1) * value_len)
                                .unwrap_or(&[])
                                .to_vec(),
                        )
                    })
                    .collect();
                v.sort();
                Some(v)
            };
            a.result == b.result && a.count == b.count && pairs(a) == pairs(b)
        }
    }
}
