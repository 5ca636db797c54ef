//! How the suites obtain maps: [`MapFactory`], one per engine, so the harness stays
//! engine-neutral and can run kernel-vs-kernel, kernel-vs-user or user-vs-user.
//!
//! Owns the factory trait and [`CreateError`]. The concrete engines live in [`crate::engines`].

use bpfmaps_abi::{Errno, MapDef, MapOps};

/// Why a factory could not create a map.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CreateError {
    /// The engine refused the definition with this errno, as `BPF_MAP_CREATE` would.
    #[error("map creation failed: {0}")]
    Errno(Errno),
    /// The engine does not implement this map type (yet). Suites report such types as not
    /// covered instead of comparing them.
    #[error("map creation failed: {0}")]
    Unsupported(String),
    /// Creation failed for a reason that is not a map-creation errno (an I/O problem, say).
    #[error("map creation failed: {0}")]
    Other(String),
}

/// Something that creates maps of one engine from a [`MapDef`].
pub trait MapFactory: Send + Sync {
    /// The engine's name as reports print it (`"kernel"`, `"user"`).
    fn engine_name(&self) -> &'static str;

    /// Creates a map of `def`, or says which errno the engine gave.
    fn create(&self, def: &MapDef) -> Result<Box<dyn MapOps>, CreateError>;
}
