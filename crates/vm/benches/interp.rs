//! The interpreter against rbpf's interpreter on the same bytecode: ALU loops, byte loads from the
//! context, stack traffic and a division-heavy primality test. Criterion measures each pair; at
//! the end a direct timing of both prints the ratio (rbpf time / bpfmaps time, above 1 means
//! bpfmaps is faster). Results are checked equal before timing.

#![expect(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use bpfmaps_abi::insn::slots_to_bytes;
use bpfmaps_vm::{asm, Config, Executable, HelperSet, NoHelpers, NoPseudo, Vm};
use criterion::{criterion_group, Criterion};

/// A benchmark program: name, conformance-syntax source, context bytes.
struct Program {
    name: &'static str,
    source: &'static str,
    mem: Vec<u8>,
}

fn programs() -> Vec<Program> {
    vec![
        Program {
            name: "alu_loop",
            source: "mov %r0, 0\nmov %r3, 0\nloop:\nadd %r0, %r3\nxor %r0, 0x5a5a\nmul %r0, 3\n\
                     rsh %r0, 1\nadd32 %r0, 7\narsh %r0, 1\nadd %r3, 1\njlt %r3, 10000, loop\nexit",
            mem: Vec::new(),
        },
        Program {
            name: "ctx_byte_sum",
            source: "mov %r0, 0\nmov %r3, 0\nmov %r4, %r1\nloop:\nldxb %r5, [%r4]\nadd %r0, %r5\n\
                     add %r4, 1\nadd %r3, 1\njlt %r3, 4096, loop\nexit",
            mem: (0..4096u32).map(|i| (i * 7) as u8).collect(),
        },
        Program {
            name: "stack_traffic",
            source: "mov %r0, 0\nmov %r3, 0\nloop:\nstxdw [%r10-8], %r3\nldxdw %r5, [%r10-8]\n\
                     add %r0, %r5\nstxw [%r10-16], %r0\nldxw %r6, [%r10-16]\nxor %r0, %r6\n\
                     add %r3, 1\njlt %r3, 10000, loop\nexit",
            mem: Vec::new(),
        },
        Program {
            name: "prime_10007",
            source: "mov %r1, 10007\nmov %r0, 0x1\nmov %r2, 0x2\njgt %r1, 0x2, L3\nja exit\nL2:\n\
                     add %r2, 0x1\nmov %r0, 0x1\njge %r2, %r1, exit\nL3:\nmov %r3, %r1\n\
                     div %r3, %r2\nmul %r3, %r2\nmov %r4, %r1\nsub %r4, %r3\nmov %r0, 0x0\n\
                     jne %r4, 0x0, L2\nexit",
            mem: Vec::new(),
        },
    ]
}

/// Both engines prepared for one program.
struct Pair {
    name: &'static str,
    exe: Executable,
    bytes: Vec<u8>,
    mem: Vec<u8>,
}

fn prepare() -> Vec<Pair> {
    programs()
        .into_iter()
        .map(|program| {
            let slots = asm::assemble(program.source).expect("benchmark program assembles");
            let exe = Executable::new(&slots, HelperSet::default(), &mut NoPseudo)
                .expect("benchmark program loads");
            Pair {
                name: program.name,
                exe,
                bytes: slots_to_bytes(&slots),
                mem: program.mem,
            }
        })
        .collect()
}

fn config() -> Config {
    Config {
        instruction_budget: u64::MAX,
        ..Config::default()
    }
}

fn bench(c: &mut Criterion) {
    for pair in prepare() {
        let mut vm = Vm::new(config());
        let mut mem = pair.mem.clone();
        let rbpf = rbpf::EbpfVmMbuff::new(Some(&pair.bytes)).expect("rbpf accepts the program");
        let ours = vm.run(&pair.exe, &mut mem, &mut NoHelpers).expect("runs");
        let theirs = rbpf.execute_program(&pair.mem, &[]).expect("rbpf runs");
        assert_eq!(ours, theirs, "{}: engines disagree", pair.name);

        let mut group = c.benchmark_group(pair.name);
        group.bench_function("bpfmaps", |b| {
            b.iter(|| black_box(vm.run(&pair.exe, &mut mem, &mut NoHelpers)))
        });
        group.bench_function("rbpf", |b| {
            b.iter(|| black_box(rbpf.execute_program(&pair.mem, &[])))
        });
        group.finish();
    }
}

/// Mean time of one call of `run`, over batches filling `window`, taking the fastest batch.
fn time(window: Duration, mut run: impl FnMut()) -> Duration {
    let mut best = Duration::MAX;
    let deadline = Instant::now() + window;
    while Instant::now() < deadline {
        let start = Instant::now();
        for _ in 0..20 {
            run();
        }
        best = best.min(start.elapsed() / 20);
    }
    best
}

fn print_ratios() {
    println!("\ninterpreter ratio (rbpf time / bpfmaps time; above 1 = bpfmaps faster):");
    for pair in prepare() {
        let mut vm = Vm::new(config());
        let mut mem = pair.mem.clone();
        let rbpf = rbpf::EbpfVmMbuff::new(Some(&pair.bytes)).expect("rbpf accepts the program");
        let window = Duration::from_millis(700);
        let ours = time(window, || {
            black_box(vm.run(&pair.exe, &mut mem, &mut NoHelpers).ok());
        });
        let insns = vm.instructions_executed();
        let theirs = time(window, || {
            black_box(rbpf.execute_program(&pair.mem, &[]).ok());
        });
        println!(
            "  {:<14} {insns:>7} insns  bpfmaps {:>9.1} us ({:.2} ns/insn)  rbpf {:>9.1} us  ratio {:.2}",
            pair.name,
            ours.as_secs_f64() * 1e6,
            ours.as_secs_f64() * 1e9 / insns as f64,
            theirs.as_secs_f64() * 1e6,
            theirs.as_secs_f64() / ours.as_secs_f64(),
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
    targets = bench
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    print_ratios();
}
