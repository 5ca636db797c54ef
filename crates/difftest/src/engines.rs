//! The two concrete engines as [`MapFactory`]s: [`Kernel`] (bpf(2) through
//! `bpfmaps_kernel::map::KernelMap`) and [`User`] (shared memory through
//! `bpfmaps_maps::UserMap`).
//!
//! Owns nothing but the adaptation of each engine's creation error to [`CreateError`].

use bpfmaps_abi::{MapDef, MapOps};

use crate::engine::{CreateError, MapFactory};

/// The kernel engine: every map is a real kernel map created with `BPF_MAP_CREATE`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Kernel;

impl MapFactory for Kernel {
    fn engine_name(&self) -> &'static str {
        "kernel"
    }

    fn create(&self, def: &MapDef) -> Result<Box<dyn MapOps>, CreateError> {
        match bpfmaps_kernel::map::KernelMap::create(def) {
            Ok(map) => Ok(Box::new(map)),
            Err(bpfmaps_kernel::Error::Sys(e)) => Err(CreateError::Errno(e.errno)),
            Err(bpfmaps_kernel::Error::Map(e)) => match e.errno() {
                Some(errno) => Err(CreateError::Errno(errno)),
                None => Err(CreateError::Other(e.to_string())),
            },
            Err(e) => Err(CreateError::Other(e.to_string())),
        }
    }
}

/// The user engine: every map lives in shared memory, registered in the default store
/// (`bpfmaps_maps::pin_root`).
#[cfg(feature = "user-engine")]
#[derive(Clone, Copy, Debug, Default)]
pub struct User;

/// The candidate engine of the differential suites: [`User`] when the `user-engine` feature is
/// on, otherwise [`Kernel`] (a kernel-vs-kernel run that validates the harness itself).
#[cfg(feature = "user-engine")]
pub type Candidate = User;

/// The candidate engine of the differential suites: [`User`] when the `user-engine` feature is
/// on, otherwise [`Kernel`] (a kernel-vs-kernel run that validates the harness itself).
#[cfg(not(feature = "user-engine"))]
pub type Candidate = Kernel;

#[cfg(feature = "user-engine")]
impl MapFactory for User {
    fn engine_name(&self) -> &'static str {
        "user"
    }

    fn create(&self, def: &MapDef) -> Result<Box<dyn MapOps>, CreateError> {
        match bpfmaps_maps::UserMap::create(def) {
            Ok(map) => Ok(Box::new(map)),
            Err(e @ bpfmaps_maps::UserMapError::Unsupported(_)) => {
                Err(CreateError::Unsupported(e.to_string()))
            }
            Err(e) => match e.errno() {
                Some(errno) => Err(CreateError::Errno(errno)),
                None => Err(CreateError::Other(e.to_string())),
            },
        }
    }
}
