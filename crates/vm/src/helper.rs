//! What the host plugs into the VM: the set of helper ids it provides ([`HelperSet`], checked at
//! load time), the helpers themselves ([`HelperHost`], called at run time with the guest memory),
//! [`Callbacks`], through which a helper runs a callback function of the program, and
//! [`PseudoResolver`], the load-time hook that turns `lddw` map pseudo immediates into values.
//!
//! It knows no helper's meaning: the user engine implements map and ring buffer helpers on top.

use std::collections::BTreeSet;

use crate::error::HelperError;
use crate::memory::Memory;

/// The helper ids a host provides; a program calling any other id is refused at load.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperSet {
    ids: BTreeSet<u32>,
}

impl HelperSet {
    /// A set of the given ids.
    pub fn new(ids: impl IntoIterator<Item = u32>) -> Self {
        HelperSet {
            ids: ids.into_iter().collect(),
        }
    }

    /// Whether `id` is provided.
    pub fn contains(&self, id: u32) -> bool {
        self.ids.contains(&id)
    }

    /// The provided ids in increasing order.
    pub fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.iter().copied()
    }
}

/// The host side of helper calls.
pub trait HelperHost {
    /// Runs helper `id` with r1-r5 and returns r0. Guest pointers in `args` are guest addresses:
    /// read and write them through `mem`, which checks every access. Map values, ring buffer
    /// records or buffers the helper hands to the program are mapped with [`Memory::map`] and
    /// returned as their guest address.
    fn call(&mut self, id: u32, args: [u64; 5], mem: &mut Memory<'_>) -> Result<u64, HelperError>;

    /// Like [`HelperHost::call`], for helpers that call back into the program (`bpf_loop`,
    /// `bpf_for_each_map_elem`): `callbacks` runs a callback function of the program. The
    /// interpreter always calls this method; the default forwards to [`HelperHost::call`].
    fn call_with_callbacks(
        &mut self,
        id: u32,
        args: [u64; 5],
        mem: &mut Memory<'_>,
        callbacks: &mut dyn Callbacks,
    ) -> Result<u64, HelperError> {
        let _ = callbacks;
        self.call(id, args, mem)
    }

    /// Called once before each run: map the fixed regions load-time addresses point at
    /// ([`Memory::map_fixed`]), such as global data. The default maps nothing.
    fn prepare(&mut self, mem: &mut Memory<'_>) -> Result<(), HelperError> {
        let _ = mem;
        Ok(())
    }
}

/// The interpreter's side of callbacks, handed to [`HelperHost::call_with_callbacks`].
pub trait Callbacks {
    /// Runs the program's callback function `callback` (the value an `lddw` function reference
    /// loaded, [`crate::memory::CALLBACK_BASE`]` + slot`) with r1-r5 = `args` in a new stack frame
    /// (the caller's stack stays reachable through pointers), sharing the run's memory, helpers
    /// and instruction budget, and returns its r0.
    ///
    /// Errors: [`HelperError::InvalidArgument`] (argument `arg`) when `callback` is not a
    /// function reference of this program; [`HelperError::CallbackTrapped`] when the callback
    /// trapped (the helper should return that error unchanged: the run ends with the trap).
    fn invoke(
        &mut self,
        host: &mut dyn HelperHost,
        mem: &mut Memory<'_>,
        callback: u64,
        arg: u8,
        args: [u64; 5],
    ) -> Result<u64, HelperError>;
}

/// A host without helpers.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHelpers;

impl HelperHost for NoHelpers {
    fn call(
        &mut self,
        _id: u32,
        _args: [u64; 5],
        _mem: &mut Memory<'_>,
    ) -> Result<u64, HelperError> {
        Err(HelperError::Unavailable)
    }
}

/// Resolves `lddw` pseudo immediates at load time (`src_reg` 1 = map fd/handle, 2 = map value
/// address, ...). The returned value becomes the instruction's 64-bit immediate: a map handle the
/// host's helpers understand, or a guest address in a fixed region
/// ([`fixed_region_address`](crate::memory::fixed_region_address)) the host maps in
/// [`HelperHost::prepare`].
pub trait PseudoResolver {
    /// The value for the `lddw` at slot `index` with pseudo kind `pseudo` and the immediates of
    /// its two slots, or `None` when it cannot be resolved (the load fails).
    fn resolve(&mut self, index: usize, pseudo: u8, imm_lo: i32, imm_hi: i32) -> Option<u64>;
}

/// A resolver that resolves nothing: plain programs whose `lddw`s are all immediates.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoPseudo;

impl PseudoResolver for NoPseudo {
    fn resolve(&mut self, _index: usize, _pseudo: u8, _imm_lo: i32, _imm_hi: i32) -> Option<u64> {
        None
    }
}
