//! Tests of the harness itself: kernel against kernel must agree exactly (ZERO_SEED order
//! included), and kernel against a deliberately broken kernel ("mutant": one rule changed) must
//! diverge, so a green differential suite means something.

use bpfmaps_abi::map_flags::BPF_F_ZERO_SEED;
use bpfmaps_abi::{BatchBuffers, Errno, MapDef, MapError, MapInfo, MapOps, MapResult, MapType};
use bpfmaps_difftest::engines::Kernel;
use bpfmaps_difftest::{
    kernel_usable, run_differential, Comparison, CreateError, MapFactory, SuiteConfig,
};

/// One kernel rule a mutant breaks.
#[derive(Clone, Copy, Debug)]
enum Mutation {
    /// Array delete gives ENOENT instead of EINVAL.
    ArrayDeleteEnoent,
    /// get_next_key of a missing key gives ENOENT instead of the first key.
    MissingKeyEnoent,
    /// A full hash map's insert gives ENOSPC instead of E2BIG.
    FullInsertEnospc,
    /// A batch lookup that reaches the end reports one element more.
    BatchCountOffByOne,
    /// Lookup writes the value even when it fails.
    LookupScribblesOnError,
}

struct Mutant {
    inner: Box<dyn MapOps>,
    mutation: Mutation,
}

impl MapOps for Mutant {
    fn info(&self) -> MapInfo {
        self.inner.info()
    }

    fn lookup(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()> {
        let r = self.inner.lookup(key, value, flags);
        if matches!(self.mutation, Mutation::LookupScribblesOnError) && r.is_err() {
            value.fill(0);
        }
        r
    }

    fn update(&self, key: &[u8], value: &[u8], flags: u64) -> MapResult<()> {
        match (self.inner.update(key, value, flags), self.mutation) {
            (Err(MapError::Errno(Errno::E2BIG)), Mutation::FullInsertEnospc)
                if self.info().map_type.is_hash() =>
            {
                Err(MapError::Errno(Errno::ENOSPC))
            }
            (r, _) => r,
        }
    }

    fn delete(&self, key: &[u8]) -> MapResult<()> {
        match (self.inner.delete(key), self.mutation) {
            (Err(MapError::Errno(Errno::EINVAL)), Mutation::ArrayDeleteEnoent) => {
                Err(MapError::Errno(Errno::ENOENT))
            }
            (r, _) => r,
        }
    }

    fn get_next_key(&self, key: Option<&[u8]>, next_key: &mut [u8]) -> MapResult<()> {
        if let (Some(k), Mutation::MissingKeyEnoent) = (key, self.mutation) {
            let mut probe = vec![0u8; self.info().user_value_size()];
            if self.inner.lookup(k, &mut probe, 0) == Err(MapError::Errno(Errno::ENOENT)) {
                return Err(MapError::Errno(Errno::ENOENT));
            }
        }
        self.inner.get_next_key(key, next_key)
    }

    fn lookup_and_delete(&self, key: &[u8], value: &mut [u8], flags: u64) -> MapResult<()> {
        self.inner.lookup_and_delete(key, value, flags)
    }

    fn lookup_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        let r = self
            .inner
            .lookup_batch(in_batch, out_batch, buffers, elem_flags, flags);
        if matches!(self.mutation, Mutation::BatchCountOffByOne)
            && r == Err(MapError::Errno(Errno::ENOENT))
            && buffers.count > 0
        {
            buffers.count += 1;
        }
        r
    }

    fn lookup_and_delete_batch(
        &self,
        in_batch: Option<&[u8]>,
        out_batch: &mut [u8],
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.inner
            .lookup_and_delete_batch(in_batch, out_batch, buffers, elem_flags, flags)
    }

    fn update_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.inner.update_batch(buffers, elem_flags, flags)
    }

    fn delete_batch(
        &self,
        buffers: &mut BatchBuffers<'_>,
        elem_flags: u64,
        flags: u64,
    ) -> MapResult<()> {
        self.inner.delete_batch(buffers, elem_flags, flags)
    }

    fn freeze(&self) -> MapResult<()> {
        self.inner.freeze()
    }
}

struct MutantFactory(Mutation);

impl MapFactory for MutantFactory {
    fn engine_name(&self) -> &'static str {
        "mutant kernel"
    }

    fn create(&self, def: &MapDef) -> Result<Box<dyn MapOps>, CreateError> {
        let inner = Kernel.create(def)?;
        Ok(Box::new(Mutant {
            inner,
            mutation: self.0,
        }))
    }
}

fn def(map_type: MapType, max_entries: u32, map_flags: u32) -> MapDef {
    MapDef {
        map_type,
        key_size: 4,
        value_size: 8,
        max_entries,
        map_flags,
        name: "harness".into(),
    }
}

fn kernel_ready() -> bool {
    match kernel_usable(&Kernel) {
        Ok(ready) => ready,
        Err(why) => panic!("{why}"),
    }
}

#[test]
fn kernel_against_kernel_agrees_exactly_under_zero_seed() {
    if !kernel_ready() {
        return;
    }
    for map_type in [MapType::Hash, MapType::PercpuHash, MapType::Array] {
        let flags = if map_type.is_hash() {
            BPF_F_ZERO_SEED
        } else {
            0
        };
        let config = SuiteConfig::new(def(map_type, 6, flags), Comparison::Exact);
        let report = run_differential(&Kernel, &Kernel, &config, &[])
            .unwrap_or_else(|why| panic!("kernel vs kernel diverged: {why}"));
        assert!(report.ops > 0);
    }
}

#[test]
fn random_seeds_diverge_in_order_so_exact_mode_needs_zero_seed() {
    if !kernel_ready() {
        return;
    }
    let mut config = SuiteConfig::new(def(MapType::Hash, 64, 0), Comparison::Exact);
    config.cases = 20;
    assert!(
        run_differential(&Kernel, &Kernel, &config, &[]).is_err(),
        "two randomly seeded hash maps should iterate in different orders"
    );
}

#[test]
fn every_mutant_is_caught() {
    if !kernel_ready() {
        return;
    }
    let cases = [
        (Mutation::ArrayDeleteEnoent, def(MapType::Array, 4, 0)),
        (
            Mutation::MissingKeyEnoent,
            def(MapType::Hash, 8, BPF_F_ZERO_SEED),
        ),
        (
            Mutation::FullInsertEnospc,
            def(MapType::Hash, 4, BPF_F_ZERO_SEED),
        ),
        (
            Mutation::BatchCountOffByOne,
            def(MapType::Hash, 8, BPF_F_ZERO_SEED),
        ),
        (
            Mutation::LookupScribblesOnError,
            def(MapType::PercpuHash, 8, BPF_F_ZERO_SEED),
        ),
    ];
    for (mutation, d) in cases {
        let config = SuiteConfig::new(d, Comparison::Exact);
        match run_differential(&Kernel, &MutantFactory(mutation), &config, &[]) {
            Ok(report) => panic!("{mutation:?} went unnoticed over {} ops", report.ops),
            Err(why) => {
                let first = why.lines().next().unwrap_or("");
                println!("{mutation:?} caught: {first}");
            }
        }
    }
}
