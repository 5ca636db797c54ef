//! [`TargetBtf`]: the BTF a CO-RE relocation is resolved against (the running kernel's, or a
//! file), indexed by essential name so candidate lookup is a binary search, not a scan.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::types::{essential_name, kinds_core_compatible, Ty, Types};
use crate::ObjError;

/// Where the running kernel publishes its BTF.
const KERNEL_BTF_DIR: &str = "/sys/kernel/btf";

/// One blob of a target with its name index.
#[derive(Debug)]
pub(crate) struct IndexedTypes {
    /// What it is (`vmlinux`, a module name, or a file path).
    pub name: String,
    pub types: Arc<Types>,
    /// (hash of essential name, type id), sorted, for the named types of this blob.
    index: Vec<(u64, u32)>,
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: fast, and collisions are resolved by comparing names.
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl IndexedTypes {
    fn new(name: String, types: Arc<Types>) -> IndexedTypes {
        let mut index: Vec<(u64, u32)> = types
            .own_ids()
            .filter_map(|id| {
                let t = types.ty(id)?;
                let n = types.name(t.name_off);
                (!n.is_empty()).then(|| (name_hash(essential_name(n)), id))
            })
            .collect();
        index.sort_unstable();
        IndexedTypes { name, types, index }
    }

    /// The ids of this blob whose essential name is `essential` and whose kind is compatible
    /// with `local` (libbpf's candidate rule), in id order.
    pub(crate) fn candidates(&self, essential: &str, local: &Ty<'_>) -> Vec<u32> {
        let h = name_hash(essential);
        let start = self.index.partition_point(|&(x, _)| x < h);
        let mut ids: Vec<u32> = self.index[start..]
            .iter()
            .take_while(|&&(x, _)| x == h)
            .map(|&(_, id)| id)
            .filter(|&id| {
                self.types.ty(id).is_some_and(|t| {
                    kinds_core_compatible(&t, local)
                        && essential_name(self.types.name(t.name_off)) == essential
                })
            })
            .collect();
        ids.sort_unstable();
        ids
    }
}

/// A parsed target BTF: the kernel's `vmlinux` (with its modules' split BTF looked at only when
/// a type is not in vmlinux, as libbpf does) or a BTF file standing in for it
/// (`btf_custom_path`: no modules then).
#[derive(Debug)]
pub struct TargetBtf {
    main: IndexedTypes,
    /// Directory of module BTF files, for a kernel target.
    modules_dir: Option<PathBuf>,
    modules: OnceLock<Vec<IndexedTypes>>,
}

fn read(path: &Path) -> Result<Vec<u8>, ObjError> {
    std::fs::read(path).map_err(|e| ObjError::Io {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The `.BTF` section of any ELF file (not only BPF objects: a `vmlinux` image too).
fn elf_btf_section(bytes: &[u8]) -> Result<Vec<u8>, String> {
    use object::{Object as _, ObjectSection as _};
    let file = object::File::parse(bytes).map_err(|e| format!("not a readable ELF file: {e}"))?;
    let section = file
        .section_by_name(".BTF")
        .ok_or_else(|| "ELF file without a .BTF section".to_owned())?;
    section
        .data()
        .map(<[u8]>::to_vec)
        .map_err(|e| format!("cannot read its .BTF section: {e}"))
}

impl TargetBtf {
    /// Parses a raw BTF blob (what `/sys/kernel/btf/vmlinux` holds).
    pub fn parse(bytes: &[u8]) -> Result<TargetBtf, ObjError> {
        TargetBtf::from_blob(bytes.to_vec(), "target BTF".to_owned())
    }

    fn from_blob(bytes: Vec<u8>, name: String) -> Result<TargetBtf, ObjError> {
        let types = Arc::new(Types::parse(bytes, &name)?);
        Ok(TargetBtf {
            main: IndexedTypes::new(name, types),
            modules_dir: None,
            modules: OnceLock::new(),
        })
    }

    /// The running kernel's BTF: `/sys/kernel/btf/vmlinux`; module BTF from
    /// `/sys/kernel/btf/<module>` is read (as split BTF) the first time a type is not found in
    /// vmlinux.
    pub fn from_kernel() -> Result<TargetBtf, ObjError> {
        TargetBtf::from_kernel_dir(Path::new(KERNEL_BTF_DIR))
    }

    /// As [`TargetBtf::from_kernel`], with the BTF directory at `dir` (its `vmlinux` and modules).
    pub fn from_kernel_dir(dir: &Path) -> Result<TargetBtf, ObjError> {
        let vmlinux = dir.join("vmlinux");
        let mut target = TargetBtf::from_blob(read(&vmlinux)?, "vmlinux".to_owned())?;
        target.modules_dir = Some(dir.to_owned());
        Ok(target)
    }

    /// A BTF file given by the user, as libbpf's `btf_custom_path`: either a raw BTF blob or an
    /// ELF file with a `.BTF` section (a vmlinux image, or an object).
    pub fn from_file(path: &Path) -> Result<TargetBtf, ObjError> {
        let bytes = read(path)?;
        let name = path.display().to_string();
        if bytes.starts_with(b"\x7fELF") {
            let btf = elf_btf_section(&bytes).map_err(|reason| ObjError::BadTargetBtf {
                what: name.clone(),
                offset: 0,
                reason,
            })?;
            return TargetBtf::from_blob(btf, name);
        }
        TargetBtf::from_blob(bytes, name)
    }

    /// The number of types of the main blob (vmlinux or the file), plus one for `void`.
    pub fn type_count(&self) -> u32 {
        self.main.types.type_count()
    }

    /// The ids of types named `name` (exactly) in the main blob, for tests and diagnostics.
    pub fn type_ids_by_name(&self, name: &str) -> Vec<u32> {
        let t = &self.main.types;
        self.main
            .candidates_any_kind(essential_name(name))
            .into_iter()
            .filter(|&id| t.type_name(id) == name)
            .collect()
    }

    /// The main blob.
    pub(crate) fn main(&self) -> &IndexedTypes {
        &self.main
    }

    /// Module blobs, read on first use (empty for a file target or when none can be read).
    pub(crate) fn modules(&self) -> &[IndexedTypes] {
        self.modules.get_or_init(|| {
            let Some(dir) = &self.modules_dir else {
                return Vec::new();
            };
            let Ok(entries) = std::fs::read_dir(dir) else {
                return Vec::new();
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "vmlinux")
                .collect();
            names.sort();
            names
                .into_iter()
                .filter_map(|n| {
                    let bytes = std::fs::read(dir.join(&n)).ok()?;
                    let types =
                        Types::parse_with_base(bytes, &n, Some(self.main.types.clone())).ok()?;
                    Some(IndexedTypes::new(n, Arc::new(types)))
                })
                .collect()
        })
    }
}

impl IndexedTypes {
    fn candidates_any_kind(&self, essential: &str) -> Vec<u32> {
        let h = name_hash(essential);
        let start = self.index.partition_point(|&(x, _)| x < h);
        self.index[start..]
            .iter()
            .take_while(|&&(x, _)| x == h)
            .map(|&(_, id)| id)
            .collect()
    }
}
