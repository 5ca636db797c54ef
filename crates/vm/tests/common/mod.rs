//! Test tooling shared by the conformance tests: finding the bpf_conformance suite and parsing its
//! `.data` files (`-- asm`, `-- raw`, `-- mem`, `-- result`, `-- error` sections).

#![allow(dead_code)]

use std::path::PathBuf;

use bpfmaps_abi::insn::{self, RawInsn};
use bpfmaps_vm::asm::{self, AsmError};

/// The suite's directory: `$BPFMAPS_CONFORMANCE_DIR`, or `shared/` beside the project root.
pub fn suite_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("BPFMAPS_CONFORMANCE_DIR") {
        return PathBuf::from(dir);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/bpf_conformance")
}

/// Every `.data` file of `tests/` or `negative/`, sorted by name.
pub fn data_files(subdir: &str) -> Vec<PathBuf> {
    let dir = suite_dir().join(subdir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance suite not found at {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "data"))
        .collect();
    files.sort();
    files
}

/// What a test expects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// r0 at exit.
    Result(u64),
    /// An error (message as written, often empty).
    Error(String),
    /// Nothing stated.
    Nothing,
}

/// One parsed `.data` file.
#[derive(Clone, Debug, Default)]
pub struct DataFile {
    /// The `-- asm` section, if any.
    pub asm: Option<String>,
    /// The `-- raw` section decoded into slots, if any.
    pub raw: Option<Vec<RawInsn>>,
    /// Input memory.
    pub mem: Vec<u8>,
    /// Expected outcome.
    pub expect: Option<Expect>,
}

/// Why a `.data` file does not parse.
#[derive(Debug, PartialEq, Eq)]
pub enum DataError {
    /// A `-- name` section this tooling does not know.
    UnknownSection(String),
    /// A malformed hex value.
    BadHex(String),
}

/// Parses a `.data` file's text.
pub fn parse_data(text: &str) -> Result<DataFile, DataError> {
    let mut file = DataFile::default();
    let mut section: Option<String> = None;
    let mut body: Vec<&str> = Vec::new();
    let finish = |section: &Option<String>, body: &mut Vec<&str>, file: &mut DataFile| {
        let lines = std::mem::take(body);
        match section.as_deref() {
            None | Some("c") | Some("no register offset") => Ok(()),
            Some("asm") => {
                file.asm = Some(lines.join("\n"));
                Ok(())
            }
            Some("mem") => {
                for token in lines.iter().flat_map(|line| line.split_whitespace()) {
                    let byte = u8::from_str_radix(token, 16)
                        .map_err(|_| DataError::BadHex(token.to_string()))?;
                    file.mem.push(byte);
                }
                Ok(())
            }
            Some("raw") => {
                let mut bytes = Vec::new();
                for line in lines
                    .iter()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                {
                    if line.is_empty() {
                        continue;
                    }
                    if let Some(hex) = line.strip_prefix("0x") {
                        let word = u64::from_str_radix(hex, 16)
                            .map_err(|_| DataError::BadHex(line.to_string()))?;
                        bytes.extend_from_slice(&word.to_le_bytes());
                    } else {
                        for token in line.split_whitespace() {
                            bytes.push(
                                u8::from_str_radix(token, 16)
                                    .map_err(|_| DataError::BadHex(token.to_string()))?,
                            );
                        }
                    }
                }
                file.raw = Some(
                    insn::slots_from_bytes(&bytes)
                        .map_err(|_| DataError::BadHex(format!("{} bytes", bytes.len())))?,
                );
                Ok(())
            }
            Some("result") => {
                let text: String = lines
                    .iter()
                    .map(|l| l.split('#').next().unwrap_or("").trim())
                    .collect::<Vec<_>>()
                    .join("");
                let hex = text.trim_start_matches("0x");
                let value =
                    u64::from_str_radix(hex, 16).map_err(|_| DataError::BadHex(text.clone()))?;
                file.expect = Some(Expect::Result(value));
                Ok(())
            }
            Some("error") => {
                file.expect = Some(Expect::Error(lines.join("\n").trim().to_string()));
                Ok(())
            }
            Some(other) => Err(DataError::UnknownSection(other.to_string())),
        }
    };
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("-- ") {
            finish(&section, &mut body, &mut file)?;
            section = Some(name.trim().to_string());
        } else if section.is_some() {
            body.push(line);
        }
    }
    finish(&section, &mut body, &mut file)?;
    Ok(file)
}

/// The program of a data file: the assembled `-- asm` section, checked against `-- raw` when
/// both are present, or `-- raw` alone.
pub fn program(file: &DataFile) -> Result<Vec<RawInsn>, ProgramError> {
    match (&file.asm, &file.raw) {
        (Some(source), raw) => {
            let slots = asm::assemble(source).map_err(ProgramError::Asm)?;
            if let Some(raw) = raw {
                if raw != &slots {
                    return Err(ProgramError::RawMismatch);
                }
            }
            Ok(slots)
        }
        (None, Some(raw)) => Ok(raw.clone()),
        (None, None) => Err(ProgramError::NoProgram),
    }
}

/// Why a data file has no usable program.
#[derive(Debug)]
pub enum ProgramError {
    /// The assembly does not assemble.
    Asm(AsmError),
    /// `-- raw` disagrees with the assembled `-- asm`.
    RawMismatch,
    /// Neither section is present.
    NoProgram,
}
