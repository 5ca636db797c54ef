//! The runtime's error values: [`RuntimeError`] (an object that could not be loaded on the user
//! engine, naming the map, program or instruction) and [`PinField`] (which field of a pinned map
//! differs from the object's definition).
//!
//! Traps of a running program are not errors of this module: they are
//! [`bpfmaps_vm::Trap`] values returned by an invocation.

use std::path::PathBuf;

use bpfmaps_abi::Errno;

pub use bpfmaps_abi::PinnedMapField as PinField;

/// Why an object could not be loaded on the user engine.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The object file could not be parsed.
    #[error("parsing the object: {0}")]
    Object(#[from] bpfmaps_obj::ObjError),
    /// A load-time step on the parsed object failed: reading the target BTF, applying CO-RE
    /// relocations, filling `.kconfig` or resolving `.ksyms` externs.
    #[error("{step}: {source}")]
    Prepare {
        /// The step.
        step: &'static str,
        /// What went wrong.
        source: bpfmaps_obj::ObjError,
    },
    /// A global could not be set.
    #[error("setting a global: {0}")]
    Global(#[from] bpfmaps_obj::GlobalError),
    /// A map could not be created, opened, initialised or pinned.
    #[error("map {map:?}: {source}")]
    Map {
        /// The map's name in the object.
        map: String,
        /// The maps crate's error.
        source: bpfmaps_maps::UserMapError,
    },
    /// Writing a data section's initial value or freezing `.rodata` failed.
    #[error("map {map:?}: {what}: {errno}")]
    MapSetup {
        /// The map's name in the object.
        map: String,
        /// What was being done.
        what: &'static str,
        /// The errno.
        errno: Errno,
    },
    /// A `LIBBPF_PIN_BY_NAME` pin exists but its map differs from the object's definition.
    #[error(
        "pinned map {map:?} at {} does not match the object's definition: {field} is {found} \
         in the pin, {expected} in the object",
        path.display()
    )]
    PinnedMapMismatch {
        /// The map's name in the object.
        map: String,
        /// The pin.
        path: PathBuf,
        /// The first field that differs.
        field: PinField,
        /// The object's value.
        expected: u32,
        /// The pinned map's value.
        found: u32,
    },
    /// The user engine's map store (pin root) could not be opened.
    #[error("the user engine's pin root: {0}")]
    Store(#[from] bpfmaps_maps::StoreError),
    /// A program failed the load-time checks (the error names the instruction).
    #[error("program {program:?}: {source}")]
    Program {
        /// The program's name.
        program: String,
        /// The check that failed.
        source: bpfmaps_vm::LoadError,
    },
    /// A program calls, on a path the object's frozen `.rodata` leaves live, a helper the user
    /// engine does not implement (or a kernel function).
    #[error("program {program:?}: instruction {insn} calls {helper}, which the user engine does not support (the call is on a live path with the object's .rodata values)")]
    UnsupportedHelper {
        /// The program's name.
        program: String,
        /// The instruction index.
        insn: usize,
        /// `bpf_NAME (ID)`, `helper ID`, or `kernel function (BTF id ID)`.
        helper: String,
    },
    /// The pin root's CPU slot file (`<pin root>/.cpus/slots`) could not be created or opened.
    #[error("the CPU slots under {}: {source}", root.display())]
    CpuSlots {
        /// The pin root.
        root: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The object has no program of this name.
    #[error("the object has no program named {0:?}")]
    NoSuchProgram(String),
    /// The object has no map of this name.
    #[error("the object has no map named {0:?}")]
    NoSuchMap(String),
}
