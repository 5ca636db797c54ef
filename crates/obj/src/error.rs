//! The loader's error types: [`ObjError`] for everything that can be wrong with an object file,
//! and [`GlobalError`] for setting a global variable before load.
//!
//! Every variant names what was wrong and where (section, symbol, offset, map or program), so a
//! caller can print it as is. Nothing here panics or carries a foreign error type: messages from
//! aya-obj are kept as text under [`ObjError::Parse`] and [`ObjError::Relocation`].

/// Why an object file could not be turned into an [`crate::ObjectSpec`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ObjError {
    /// The bytes are not a readable ELF file (truncated, garbage, bad header).
    #[error("not a readable ELF object: {reason}")]
    Elf {
        /// What the ELF reader said.
        reason: String,
    },
    /// The file could not be read from disk.
    #[error("cannot read {path}: {reason}")]
    Io {
        /// The path.
        path: String,
        /// The OS error.
        reason: String,
    },
    /// The ELF file is not a little-endian 64-bit BPF relocatable object.
    #[error("not a BPF object: {reason}")]
    NotBpf {
        /// What is different (machine, class, endianness or file type).
        reason: String,
    },
    /// A section header or its contents are malformed.
    #[error("bad section #{index} `{name}`: {reason}")]
    BadSection {
        /// The section index.
        index: usize,
        /// The section name (empty when unreadable).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A symbol table entry is malformed or points outside its section.
    #[error("bad symbol #{index} `{name}`: {reason}")]
    BadSymbol {
        /// The symbol index.
        index: usize,
        /// The symbol name (empty when unreadable).
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A relocation of a code section cannot be applied.
    #[error("bad relocation in section `{section}` at byte offset {offset:#x}: {reason}")]
    BadRelocation {
        /// The code section holding the relocated instruction.
        section: String,
        /// Byte offset of the relocated instruction inside that section.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// A relocation refers to a symbol the object does not define and that is not a `.kconfig`
    /// or `.ksyms` extern of its BTF (a function of another object, say).
    #[error("unresolved extern `{symbol}` referenced from section `{section}` at byte offset {offset:#x} (only .kconfig and .ksyms externs can be resolved)")]
    UnresolvedExtern {
        /// The symbol name.
        symbol: String,
        /// The code section referring to it.
        section: String,
        /// Byte offset of the referring instruction.
        offset: u64,
    },
    /// The `.BTF` or `.BTF.ext` section is malformed.
    #[error("bad {section} section at byte offset {offset:#x}: {reason}")]
    BadBtf {
        /// `.BTF` or `.BTF.ext`.
        section: &'static str,
        /// Byte offset inside the section where the problem was found.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A map definition cannot be expressed as an abi `MapDef`.
    #[error("bad definition of map `{map}`: {reason}")]
    BadMapDef {
        /// The map's name.
        map: String,
        /// What is wrong.
        reason: String,
    },
    /// A program section name that aya-obj does not recognise.
    #[error("unsupported program section `{section}`")]
    UnsupportedProgramSection {
        /// The section name.
        section: String,
    },
    /// aya-obj rejected the object while parsing it.
    #[error("object parse error: {message}")]
    Parse {
        /// aya-obj's message with its causes.
        message: String,
    },
    /// Linking bpf-to-bpf calls or rewriting map references failed.
    #[error("relocation error in program `{program}`: {message}")]
    Relocation {
        /// The program (or function) being relocated.
        program: String,
        /// What went wrong.
        message: String,
    },
    /// A `.kconfig` or `.ksyms` extern cannot be laid out or resolved (as libbpf refuses it).
    #[error("extern `{name}`: {reason}")]
    BadExtern {
        /// The extern's name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A target BTF (the kernel's, or a file given for it) is malformed.
    #[error("bad target BTF {what}: at byte offset {offset:#x}: {reason}")]
    BadTargetBtf {
        /// What was parsed (`vmlinux`, a module name, a file path).
        what: String,
        /// Byte offset of the problem inside the blob.
        offset: usize,
        /// What is wrong.
        reason: String,
    },
    /// A CO-RE relocation cannot be applied: libbpf refuses to load the object in the same case.
    /// (A relocation that merely finds nothing in the target poisons its instruction instead.)
    #[error(transparent)]
    CoreRelocation(Box<CoreFailure>),
    /// aya-obj panicked on this input during `stage`. The loader validates input before handing it
    /// to aya-obj so this should not happen; the panic is caught and reported instead of
    /// unwinding into the caller.
    #[error("internal parser failure during {stage}: {message}")]
    ParserPanicked {
        /// Which step was running (`parse` or `relocate`).
        stage: &'static str,
        /// The panic message.
        message: String,
    },
}

/// Why a global variable could not be set.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GlobalError {
    /// No global variable of that name exists in any data section's BTF.
    #[error("unknown global variable `{name}`")]
    Unknown {
        /// The name asked for.
        name: String,
    },
    /// The bytes given do not have the variable's size.
    #[error("global variable `{name}` is {expected} bytes, got {got}")]
    SizeMismatch {
        /// The variable's name.
        name: String,
        /// The variable's size in bytes.
        expected: usize,
        /// The number of bytes given.
        got: usize,
    },
    /// A value given as text does not fit the variable's type.
    #[error("global variable `{name}` ({type_name}): {reason}")]
    BadValue {
        /// The variable's name.
        name: String,
        /// Its C type.
        type_name: String,
        /// Why the text does not fit.
        reason: String,
    },
}

/// Why a CO-RE relocation could not be applied, with where it sits.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("CO-RE relocation #{index} of program `{program}` at instruction {insn} ({kind} `{access}` on [{type_id}] {type_name}): {reason}")]
pub struct CoreFailure {
    /// The program.
    pub program: String,
    /// The relocation's index among the records of its section (libbpf's `relo #N`).
    pub index: usize,
    /// The instruction index in the program.
    pub insn: usize,
    /// libbpf's name of the relocation kind.
    pub kind: String,
    /// The access string.
    pub access: String,
    /// The local type id.
    pub type_id: u32,
    /// The local type's name.
    pub type_name: String,
    /// What went wrong.
    pub reason: String,
}
