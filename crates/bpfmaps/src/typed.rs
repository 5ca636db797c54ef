//! A typed layer over the byte-level [`MapOps`]: keys and values are [`bytemuck::Pod`] types
//! whose bytes are exactly what the program sees (`#[repr(C)]`, no padding unless declared as
//! explicit fields, since the kernel compares keys byte for byte).

use std::marker::PhantomData;

use bytemuck::Pod;

use bpfmaps_abi::cpus::percpu_stride;
use bpfmaps_abi::{Errno, MapError, MapOps, MapResult};

/// Why a typed view cannot be made over a map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TypedError {
    /// `size_of::<K>()` differs from the map's key size.
    #[error("key type is {got} bytes but the map's keys are {expected}")]
    KeySize {
        /// The map's key size.
        expected: usize,
        /// `size_of::<K>()`.
        got: usize,
    },
    /// `size_of::<V>()` differs from the map's value size.
    #[error("value type is {got} bytes but the map's values are {expected}")]
    ValueSize {
        /// The map's value size (one CPU's slot for per-CPU maps).
        expected: usize,
        /// `size_of::<V>()`.
        got: usize,
    },
}

/// A map seen with key type `K` and value type `V` (one CPU's value for per-CPU maps).
pub struct TypedMap<'m, K, V> {
    ops: &'m dyn MapOps,
    value_buf: usize,
    possible_cpus: usize,
    percpu: bool,
    _types: PhantomData<(K, V)>,
}

impl<'m, K: Pod, V: Pod> TypedMap<'m, K, V> {
    /// Views `ops` with types `K` and `V`, checking their sizes against the map.
    pub fn new(ops: &'m dyn MapOps) -> Result<Self, TypedError> {
        let info = ops.info();
        if size_of::<K>() != info.key_size as usize {
            return Err(TypedError::KeySize {
                expected: info.key_size as usize,
                got: size_of::<K>(),
            });
        }
        if size_of::<V>() != info.value_size as usize {
            return Err(TypedError::ValueSize {
                expected: info.value_size as usize,
                got: size_of::<V>(),
            });
        }
        Ok(TypedMap {
            ops,
            value_buf: info.user_value_size(),
            possible_cpus: info.possible_cpus as usize,
            percpu: info.map_type.is_percpu(),
            _types: PhantomData,
        })
    }

    /// The value of `key`, or `None` when it is absent (`ENOENT`). For a per-CPU map, the sum is
    /// not taken: this returns CPU 0's slot; use [`TypedMap::get_percpu`].
    pub fn get(&self, key: &K) -> MapResult<Option<V>> {
        Ok(self.get_percpu(key)?.map(|v| v[0]))
    }

    /// The value of `key` on every possible CPU (one element for a map that is not per-CPU).
    pub fn get_percpu(&self, key: &K) -> MapResult<Option<Vec<V>>> {
        let mut buf = vec![0u8; self.value_buf];
        match self.ops.lookup(bytemuck::bytes_of(key), &mut buf, 0) {
            Ok(()) => Ok(Some(self.split(&buf))),
            Err(MapError::Errno(Errno::ENOENT)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `value` (to every CPU's slot for a per-CPU map) with update `flags`.
    pub fn insert(&self, key: &K, value: &V, flags: u64) -> MapResult<()> {
        let buf = if self.percpu {
            let stride = percpu_stride(size_of::<V>());
            let mut buf = vec![0u8; self.value_buf];
            for slot in buf.chunks_mut(stride) {
                slot[..size_of::<V>()].copy_from_slice(bytemuck::bytes_of(value));
            }
            buf
        } else {
            bytemuck::bytes_of(value).to_vec()
        };
        self.ops.update(bytemuck::bytes_of(key), &buf, flags)
    }

    /// Removes `key`; `false` when it was absent.
    pub fn remove(&self, key: &K) -> MapResult<bool> {
        match self.ops.delete(bytemuck::bytes_of(key)) {
            Ok(()) => Ok(true),
            Err(MapError::Errno(Errno::ENOENT)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Every key, in the engine's get_next_key order.
    pub fn keys(&self) -> MapResult<Vec<K>> {
        let mut out = Vec::new();
        let mut cur: Option<K> = None;
        let mut next = K::zeroed();
        loop {
            let prev = cur.as_ref().map(bytemuck::bytes_of);
            match self
                .ops
                .get_next_key(prev, bytemuck::bytes_of_mut(&mut next))
            {
                Ok(()) => {
                    out.push(next);
                    cur = Some(next);
                }
                Err(MapError::Errno(Errno::ENOENT)) => return Ok(out),
                Err(e) => return Err(e),
            }
        }
    }

    fn split(&self, buf: &[u8]) -> Vec<V> {
        if !self.percpu {
            return vec![bytemuck::pod_read_unaligned(buf)];
        }
        let stride = percpu_stride(size_of::<V>());
        (0..self.possible_cpus)
            .map(|cpu| {
                bytemuck::pod_read_unaligned(&buf[cpu * stride..cpu * stride + size_of::<V>()])
            })
            .collect()
    }
}

/// Sums per-CPU counters, the usual aggregation of a per-CPU map's value.
pub fn sum_percpu<V: Copy + Into<u64>>(values: &[V]) -> u64 {
    values
        .iter()
        .map(|v| (*v).into())
        .fold(0u64, u64::wrapping_add)
}
