//! The proof that the user engine behaves like the kernel: a differential harness that runs the
//! same map operations on two engines and compares every observable outcome, the proptest
//! strategies that generate those operations, the multi-process helpers, and the map benchmark
//! (`run_map_bench`) that `cargo bench` and `bpfmaps bench` share.
//!
//! Architecture invariant: the harness ([`op`], [`runner`], [`strategy`], [`lru_invariants`])
//! is engine-neutral: it sees maps only as `&dyn MapOps` and obtains them from a
//! [`engine::MapFactory`]. Only [`engines`] names the concrete kernel and user engines.
//!
//! Code map: [`known`] holds the open divergences every suite skips (each naming its kernel
//! rule); [`bench`] the benchmark; [`worker`] what the multi-process tests share with their
//! child binary `difftest-worker`; [`sys`] the few OS calls the harness makes itself. The suites
//! are in `tests/`: `differential` (generated sequences per map type), `helpers` (program-side
//! calls through `BPF_PROG_TEST_RUN` interleaved with syscalls), `creation` (the errno matrix),
//! `edge_cases` (hand-written section 10 cases), `pinning`, `multiprocess`, `harness` (the
//! harness catches deliberately broken engines) and `bench_smoke`.
//!
//! A larger run: `BPFMAPS_DIFF_CASES=10000 cargo test -p bpfmaps-difftest --release`.
//!
//! ```no_run
//! use bpfmaps_abi::{map_flags, MapDef, MapType};
//! use bpfmaps_difftest::{engines, run_differential, Comparison, SuiteConfig};
//!
//! let def = MapDef {
//!     map_type: MapType::Hash,
//!     key_size: 4,
//!     value_size: 8,
//!     max_entries: 8,
//!     map_flags: map_flags::BPF_F_ZERO_SEED,
//!     name: "diff".into(),
//! };
//! let config = SuiteConfig::new(def, Comparison::Exact);
//! let report = run_differential(&engines::Kernel, &engines::Candidate::default(), &config, &[]).unwrap();
//! println!("{} cases, {} ops", report.cases, report.ops);
//! ```

pub mod bench;
pub mod engine;
pub mod engines;
pub mod known;
pub mod lru_invariants;
pub mod op;
pub mod runner;
pub mod strategy;
pub mod sys;
pub mod worker;

use std::sync::atomic::{AtomicU64, Ordering};

use bpfmaps_abi::MapDef;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestError, TestRng, TestRunner};

pub use bench::{run_map_bench, BenchConfig, BenchError, BenchOp, BenchRow};
pub use engine::{CreateError, MapFactory};
pub use op::{apply, Cursor, Op, Outcome};
pub use runner::{
    contents, op_totals, op_totals_line, Comparison, Contents, DiffRunner, Divergence,
    KnownDivergence,
};
pub use strategy::{key_bytes, op_strategy, ops_strategy, OpSpace};

/// The environment variable that sets the number of proptest cases per map definition (default
/// [`DEFAULT_CASES`]): `BPFMAPS_DIFF_CASES=10000 cargo test -p bpfmaps-difftest --release`.
pub const CASES_ENV: &str = "BPFMAPS_DIFF_CASES";

/// Cases per map definition when [`CASES_ENV`] is unset: small enough for the whole suite to
/// stay well under a minute.
pub const DEFAULT_CASES: u32 = 40;

/// The environment variable that makes kernel tests return early (after saying why) instead of
/// failing when the kernel cannot be used.
pub const SKIP_KERNEL_ENV: &str = "BPFMAPS_SKIP_KERNEL";

/// The fixed proptest seed of the suites, so `cargo test` is reproducible.
pub const FIXED_SEED: [u8; 32] = *b"bpfmaps differential suite seed!";

/// How one differential suite runs.
#[derive(Clone, Debug)]
pub struct SuiteConfig {
    /// The map definition both engines create for every case.
    pub def: MapDef,
    /// How outcomes are compared.
    pub comparison: Comparison,
    /// proptest cases (each a fresh pair of maps and one op sequence).
    pub cases: u32,
    /// The longest op sequence.
    pub max_ops: usize,
    /// Generate `BPF_MAP_FREEZE` occasionally.
    pub with_freeze: bool,
    /// The proptest seed.
    pub seed: [u8; 32],
}

impl SuiteConfig {
    /// A config with the case count from [`CASES_ENV`] (or [`DEFAULT_CASES`]), sequences of up
    /// to 64 operations, freezes included, and the fixed seed.
    pub fn new(def: MapDef, comparison: Comparison) -> SuiteConfig {
        SuiteConfig {
            def,
            comparison,
            cases: cases_from_env(),
            max_ops: 64,
            with_freeze: true,
            seed: FIXED_SEED,
        }
    }
}

/// The case count [`CASES_ENV`] asks for, or [`DEFAULT_CASES`].
pub fn cases_from_env() -> u32 {
    std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(DEFAULT_CASES)
}

/// What a differential suite did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SuiteReport {
    /// Cases run (0 when the candidate does not implement the map type).
    pub cases: u32,
    /// Set when the candidate engine does not implement the map type: nothing was compared.
    pub not_covered: Option<String>,
    /// Operations applied to both engines (creation and final walks not counted).
    pub ops: u64,
}

/// Runs `config.cases` generated op sequences on a map from `reference` and one from
/// `candidate` and compares them with [`DiffRunner`]. Returns the first (shrunk) divergence as
/// text on failure.
pub fn run_differential(
    reference: &dyn MapFactory,
    candidate: &dyn MapFactory,
    config: &SuiteConfig,
    exceptions: &[KnownDivergence],
) -> Result<SuiteReport, String> {
    let possible_cpus = sys::possible_cpus().map_err(|e| format!("possible CPUs: {e}"))?;
    if let Err(CreateError::Unsupported(why)) = candidate.create(&config.def) {
        return Ok(SuiteReport {
            cases: 0,
            not_covered: Some(why),
            ops: 0,
        });
    }
    let space = OpSpace {
        def: config.def.clone(),
        possible_cpus: u32::try_from(possible_cpus).unwrap_or(u32::MAX),
        comparison: config.comparison,
        with_freeze: config.with_freeze,
    };
    let strategy = ops_strategy(&space, config.max_ops);
    let proptest_config = Config {
        cases: config.cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        proptest_config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &config.seed),
    );
    let ops_before = AtomicU64::new(0);
    let cases = AtomicU64::new(0);
    let outcome = runner.run(&strategy, |ops| {
        cases.fetch_add(1, Ordering::Relaxed);
        let a = reference.create(&config.def);
        let b = candidate.create(&config.def);
        let (a, b) = match (a, b) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(a), Err(b)) if a == b => return Ok(()),
            (a, b) => {
                return Err(TestCaseError::fail(format!(
                    "creation differs for {:?}: {} gives {:?}, {} gives {:?}",
                    config.def,
                    reference.engine_name(),
                    a.map(|m| m.info()),
                    candidate.engine_name(),
                    b.map(|m| m.info()),
                )))
            }
        };
        let mut diff = DiffRunner::new(&config.def, &*a, &*b, config.comparison, exceptions)
            .map_err(|d| TestCaseError::fail(d.to_string()))?;
        diff.run(&ops)
            .map_err(|d| TestCaseError::fail(d.to_string()))?;
        ops_before.fetch_add(ops.len() as u64, Ordering::Relaxed);
        diff.finish()
            .map_err(|d| TestCaseError::fail(d.to_string()))
    });
    match outcome {
        Ok(()) => Ok(SuiteReport {
            cases: u32::try_from(cases.load(Ordering::Relaxed)).unwrap_or(u32::MAX),
            not_covered: None,
            ops: ops_before.load(Ordering::Relaxed),
        }),
        Err(TestError::Fail(reason, ops)) => Err(format!(
            "{reason}\nminimal failing sequence ({} ops): {ops:#?}",
            ops.len()
        )),
        Err(TestError::Abort(reason)) => Err(format!("aborted: {reason}")),
    }
}

/// Decides whether a kernel test can run: `Ok(true)` when `factory` can create a small hash map,
/// `Ok(false)` when it cannot and [`SKIP_KERNEL_ENV`] is `1` (the reason is printed), and
/// `Err(reason)` when it cannot and skipping was not asked for, so the test fails loudly.
pub fn kernel_usable(factory: &dyn MapFactory) -> Result<bool, String> {
    let probe = MapDef {
        map_type: bpfmaps_abi::MapType::Hash,
        key_size: 4,
        value_size: 4,
        max_entries: 1,
        map_flags: 0,
        name: "probe".into(),
    };
    match factory.create(&probe) {
        Ok(_) => Ok(true),
        Err(e) => {
            let why = format!(
                "the {} engine cannot create maps ({e}); kernel tests need root with CAP_BPF",
                factory.engine_name()
            );
            if std::env::var(SKIP_KERNEL_ENV).as_deref() == Ok("1") {
                eprintln!("skipping: {why} ({SKIP_KERNEL_ENV}=1)");
                Ok(false)
            } else {
                Err(format!(
                    "{why}; set {SKIP_KERNEL_ENV}=1 to skip kernel tests on purpose"
                ))
            }
        }
    }
}
