//! A quick run of `run_map_bench` (the function `bpfmaps bench` calls) with a small
//! configuration: one row per (map type, op), finite positive timings, ratio = kernel/user.
//! The real figures come from `cargo bench -p bpfmaps-difftest --bench maps` (release).

use bpfmaps_abi::MapType;
use bpfmaps_difftest::bench::{run_map_bench, BenchConfig, BenchError, BenchOp};
use bpfmaps_difftest::engines::Kernel;
use bpfmaps_difftest::kernel_usable;

#[test]
fn run_map_bench_reports_one_row_per_map_type_and_op() {
    match kernel_usable(&Kernel) {
        Ok(true) => {}
        Ok(false) => return,
        Err(why) => panic!("{why}"),
    }
    let config = BenchConfig {
        entries: 1000,
        ops_per_sample: 2000,
        samples: 3,
        ..BenchConfig::default()
    };
    let rows = run_map_bench(&config).unwrap_or_else(|e| panic!("run_map_bench: {e}"));
    // Types the user engine does not implement yet have no rows; HASH and ARRAY must be there.
    let expected: Vec<(MapType, BenchOp)> = config
        .map_types
        .iter()
        .flat_map(|t| [(*t, BenchOp::Lookup), (*t, BenchOp::Update)])
        .filter(|(t, _)| rows.iter().any(|r| r.map_type == *t))
        .collect();
    assert!(expected.len() >= 4, "HASH and ARRAY rows missing: {rows:?}");
    assert_eq!(
        rows.iter().map(|r| (r.map_type, r.op)).collect::<Vec<_>>(),
        expected
    );
    for row in &rows {
        assert!(row.kernel_ns.is_finite() && row.kernel_ns > 0.0, "{row:?}");
        assert!(row.user_ns.is_finite() && row.user_ns > 0.0, "{row:?}");
        assert!(
            (row.ratio - row.kernel_ns / row.user_ns).abs() < 1e-9,
            "{row:?}"
        );
    }
    print!("{}", bpfmaps_difftest::bench::format_rows(&rows));
}

#[test]
fn run_map_bench_refuses_an_empty_configuration() {
    let config = BenchConfig {
        entries: 0,
        ..BenchConfig::default()
    };
    assert!(matches!(run_map_bench(&config), Err(BenchError::Config(_))));
    let config = BenchConfig {
        samples: 0,
        map_types: vec![MapType::Hash],
        ..BenchConfig::default()
    };
    assert!(matches!(run_map_bench(&config), Err(BenchError::Config(_))));
}
