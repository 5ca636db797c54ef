//! bpftool's word grammar for map commands: `MAP := id N | pinned PATH | name NAME`, byte strings
//! (`1 0 0 0`, `0x01 0x00 0x00 0x00`, `hex 01 00 00 00`), and the keyword arguments of each
//! `map` subcommand. Parsing only: nothing here opens a map.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use bpfmaps::MapSelector;

/// A cursor over the words of one subcommand.
pub struct Words<'a> {
    words: &'a [String],
    pos: usize,
}

impl<'a> Words<'a> {
    /// Starts at the first word.
    pub fn new(words: &'a [String]) -> Self {
        Words { words, pos: 0 }
    }

    /// The next word, if any, without consuming it.
    pub fn peek(&self) -> Option<&'a str> {
        self.words.get(self.pos).map(String::as_str)
    }

    /// Consumes and returns the next word.
    pub fn next_word(&mut self, what: &str) -> Result<&'a str> {
        let w = self.peek().with_context(|| format!("expected {what}"))?;
        self.pos += 1;
        Ok(w)
    }

    /// Consumes the keyword `kw` if it is next.
    pub fn eat(&mut self, kw: &str) -> bool {
        if self.peek() == Some(kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Consumes the keyword `kw` or fails naming it.
    pub fn expect(&mut self, kw: &str) -> Result<()> {
        match self.peek() {
            Some(w) if w == kw => {
                self.pos += 1;
                Ok(())
            }
            Some(w) => bail!("expected `{kw}`, got `{w}`"),
            None => bail!("expected `{kw}`"),
        }
    }

    /// Fails if words remain.
    pub fn finish(&self) -> Result<()> {
        match self.peek() {
            Some(w) => bail!("unexpected argument `{w}`"),
            None => Ok(()),
        }
    }

    /// Fails when `kw` was already given: bpftool's keyword arguments take each keyword once
    /// (`type hash … type array` is an error, not the last one winning).
    pub fn once<T>(slot: &Option<T>, kw: &str) -> Result<()> {
        if slot.is_some() {
            bail!("`{kw}` given twice");
        }
        Ok(())
    }

    /// Parses `id N | pinned PATH | name NAME`.
    pub fn map_selector(&mut self) -> Result<MapSelector> {
        let kind = self.next_word("a map: `id N`, `pinned PATH` or `name NAME`")?;
        let arg = self.next_word(&format!("a value after `{kind}`"))?;
        match kind {
            "id" => Ok(MapSelector::Id(
                parse_number(arg).with_context(|| format!("bad map id `{arg}`"))? as u32,
            )),
            "pinned" => Ok(MapSelector::Pinned(PathBuf::from(arg))),
            "name" => Ok(MapSelector::Name(arg.to_owned())),
            other => bail!("expected `id`, `pinned` or `name`, got `{other}`"),
        }
    }

    /// Parses a byte string: every following word that is a byte (`12`, `0x0c`), or after the
    /// `hex` keyword every following word of hex digits (`0c`, `0c0d`). Stops at the first
    /// keyword in `stop`, at the end, or, once it has a byte, at a word that starts with a letter
    /// other than a hex digit (a keyword the caller then reports: `… value 1 0 0 0 bogus` is an
    /// unknown flag, not a bad byte).
    pub fn bytes(&mut self, stop: &[&str]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let hex = self.eat("hex");
        while let Some(w) = self.peek() {
            if stop.contains(&w) {
                break;
            }
            let keyword_like = w
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() && !(hex && c.is_ascii_hexdigit()));
            if keyword_like && !out.is_empty() {
                break;
            }
            if hex {
                let digits = w.strip_prefix("0x").unwrap_or(w);
                if digits.is_empty() {
                    bail!("bad hex byte string `{w}`: no hex digits");
                }
                out.extend(decode_hex(
                    digits.as_bytes(),
                    &format!("hex byte string `{w}`"),
                )?);
            } else {
                out.push(parse_byte(w)?);
            }
            self.pos += 1;
        }
        if out.is_empty() {
            bail!("expected at least one byte");
        }
        Ok(out)
    }
}

/// Decodes pairs of hex digits; an odd count or anything but `[0-9a-fA-F]` is an error naming
/// `what`. Works on bytes, so any input (not only ASCII) gets an error, never a panic.
pub fn decode_hex(digits: &[u8], what: &str) -> Result<Vec<u8>> {
    if !digits.len().is_multiple_of(2) {
        bail!("{what}: an odd number of hex digits ({})", digits.len());
    }
    digits
        .chunks(2)
        .map(|pair| {
            let nibble = |b: u8| char::from(b).to_digit(16);
            match (nibble(pair[0]), nibble(pair[1])) {
                (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
                _ => bail!(
                    "{what}: `{}` is not a hex byte",
                    String::from_utf8_lossy(pair)
                ),
            }
        })
        .collect()
}

/// Parses `--set NAME=VALUE` (clap value parser) into the name and the value's text; the value
/// is parsed later by the variable's BTF type (`ObjectSpec::global_bytes_from_text`).
pub fn parse_global(text: &str) -> std::result::Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected NAME=VALUE"))?;
    if name.is_empty() {
        return Err(format!("`{text}`: empty variable name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// Parses `MAP=N` of `--max-entries` and `--value-size` (clap value parser): a map name and a
/// u32 (decimal, `0x` hex or `0` octal, as [`parse_number`]).
pub fn parse_map_size(text: &str) -> std::result::Result<(String, u32), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected MAP=N"))?;
    if name.is_empty() {
        return Err(format!("`{text}`: empty map name"));
    }
    let number = parse_number(value).map_err(|e| format!("`{text}`: {e:#}"))?;
    let number =
        u32::try_from(number).map_err(|_| format!("`{text}`: {value} does not fit a u32"))?;
    Ok((name.to_owned(), number))
}

/// Parses `--uprobe PROG=PATH:SYMBOL[+OFF]` (clap value parser).
pub fn parse_uprobe(
    text: &str,
) -> std::result::Result<(String, bpfmaps::kernel::attach::UprobeTarget), String> {
    let (program, target) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: expected PROG=PATH:SYMBOL[+OFFSET]"))?;
    if program.is_empty() {
        return Err(format!("`{text}`: empty program name"));
    }
    Ok((
        program.to_owned(),
        bpfmaps::kernel::attach::UprobeTarget::parse(target)?,
    ))
}

/// The `--engine` values of the commands that take one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum EngineArg {
    /// The kernel engine.
    Kernel,
    /// The user engine.
    User,
}

impl From<EngineArg> for bpfmaps::Engine {
    fn from(arg: EngineArg) -> bpfmaps::Engine {
        match arg {
            EngineArg::Kernel => bpfmaps::Engine::Kernel,
            EngineArg::User => bpfmaps::Engine::User,
        }
    }
}

/// The most seconds `--for` and `--interval` accept: about 31 years, so every deadline computed
/// from them fits an `Instant`.
pub const MAX_SECONDS: f64 = 1e9;

/// Parses a number of seconds for `--for` (clap value parser): finite, from 0 to
/// [`MAX_SECONDS`].
pub fn parse_seconds(text: &str) -> std::result::Result<std::time::Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.0..=MAX_SECONDS).contains(&seconds) {
        return Err(format!(
            "`{text}`: expected a number of seconds from 0 to {MAX_SECONDS}"
        ));
    }
    std::time::Duration::try_from_secs_f64(seconds).map_err(|e| format!("`{text}`: {e}"))
}

/// Parses an interval in seconds (clap value parser): as [`parse_seconds`], and above 0.
pub fn parse_interval(text: &str) -> std::result::Result<std::time::Duration, String> {
    let interval = parse_seconds(text)?;
    if interval.is_zero() {
        return Err(format!("`{text}`: an interval must be above 0 seconds"));
    }
    Ok(interval)
}

/// Parses one byte as bpftool does: decimal (`255`), hex with `0x` (`0xff`), octal with `0`.
pub fn parse_byte(w: &str) -> Result<u8> {
    let v = parse_number(w).with_context(|| format!("bad byte `{w}`"))?;
    u8::try_from(v).with_context(|| format!("byte `{w}` is out of range (0-255)"))
}

/// Parses an unsigned number in decimal, `0x` hex or leading-`0` octal.
pub fn parse_number(w: &str) -> Result<u64> {
    let r = if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16)
    } else if w.len() > 1 && w.starts_with('0') {
        u64::from_str_radix(&w[1..], 8)
    } else {
        w.parse::<u64>()
    };
    r.with_context(|| format!("`{w}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn hex_of_any_text_decodes_or_says_why() {
        assert_eq!(decode_hex(b"00ffA1", "x").unwrap(), vec![0, 0xff, 0xa1]);
        let err = |bytes: &[u8]| decode_hex(bytes, "x").unwrap_err().to_string();
        assert_eq!(err(b"abc"), "x: an odd number of hex digits (3)");
        assert_eq!(err(b"+f"), "x: `+f` is not a hex byte");
        // Non-ASCII: two bytes of one character, an error rather than a slicing panic.
        assert_eq!(
            err("0\u{e9}0".as_bytes()),
            "x: `0\u{fffd}` is not a hex byte"
        );
        let list = words("hex 0\u{e9}0");
        assert!(Words::new(&list).bytes(&[]).is_err());
    }

    #[test]
    fn globals_and_map_sizes() {
        assert_eq!(
            parse_global("target_tgid=0x10"),
            Ok(("target_tgid".into(), "0x10".into()))
        );
        assert_eq!(parse_global("s=a=b"), Ok(("s".into(), "a=b".into())));
        assert!(parse_global("x").unwrap_err().contains("NAME=VALUE"));
        assert!(parse_global("=1").is_err());
        assert_eq!(parse_map_size("counts=0x10"), Ok(("counts".into(), 16)));
        assert!(parse_map_size("counts=4294967296")
            .unwrap_err()
            .contains("does not fit a u32"));
        assert!(parse_map_size("counts").is_err());
        assert!(parse_map_size("=4").is_err());
        let (prog, target) = parse_uprobe("count_entry=/bin/true:main+4").unwrap();
        assert_eq!(prog, "count_entry");
        assert_eq!((target.symbol.as_deref(), target.offset), (Some("main"), 4));
        assert!(parse_uprobe("count_entry").is_err());
        assert!(parse_uprobe("count_entry=/bin/true").is_err());
    }

    #[test]
    fn seconds_are_finite_in_range_and_intervals_above_zero() {
        assert_eq!(
            parse_seconds("0.5"),
            Ok(std::time::Duration::from_millis(500))
        );
        assert_eq!(parse_seconds("0"), Ok(std::time::Duration::ZERO));
        for bad in ["inf", "NaN", "-1", "1e300", "soon"] {
            assert!(parse_seconds(bad).is_err(), "{bad}");
        }
        assert!(parse_interval("0").is_err());
        assert_eq!(parse_interval("2"), Ok(std::time::Duration::from_secs(2)));
    }

    #[test]
    fn bytes_in_every_bpftool_form() {
        let w = words("1 0 0 0 value 0x10 0x00 hex 0a0b 0c");
        let mut c = Words::new(&w);
        assert_eq!(c.bytes(&["value"]).unwrap(), vec![1, 0, 0, 0]);
        c.expect("value").unwrap();
        assert_eq!(c.bytes(&["hex"]).unwrap(), vec![0x10, 0]);
        assert_eq!(c.bytes(&[]).unwrap(), vec![0x0a, 0x0b, 0x0c]);
        c.finish().unwrap();
    }

    #[test]
    fn a_keyword_after_bytes_ends_them() {
        let w = words("1 0 0 0 bogus");
        let mut c = Words::new(&w);
        assert_eq!(c.bytes(&[]).unwrap(), vec![1, 0, 0, 0]);
        assert_eq!(c.peek(), Some("bogus"));
        // In hex mode a word starting with a-f is hex digits; another letter ends the bytes.
        let w = words("hex 0a ff zap");
        let mut c = Words::new(&w);
        assert_eq!(c.bytes(&[]).unwrap(), vec![0x0a, 0xff]);
        assert_eq!(c.peek(), Some("zap"));
        // First word: still an error about the byte.
        let w = words("bogus");
        assert!(format!("{:#}", Words::new(&w).bytes(&[]).unwrap_err()).contains("bad byte"));
        assert!(Words::once(&Some(1), "type")
            .unwrap_err()
            .to_string()
            .contains("twice"));
    }

    #[test]
    fn bad_bytes_say_why() {
        let w = words("256");
        let err = Words::new(&w).bytes(&[]).unwrap_err();
        assert!(format!("{err:#}").contains("out of range"), "{err:#}");
        let w = words("hex abc");
        let err = Words::new(&w).bytes(&[]).unwrap_err();
        assert!(format!("{err:#}").contains("odd number"), "{err:#}");
    }

    #[test]
    fn selectors() {
        let w = words("id 0x10 pinned /sys/fs/bpf/x name counts");
        let mut c = Words::new(&w);
        assert_eq!(c.map_selector().unwrap(), MapSelector::Id(16));
        assert_eq!(
            c.map_selector().unwrap(),
            MapSelector::Pinned("/sys/fs/bpf/x".into())
        );
        assert_eq!(
            c.map_selector().unwrap(),
            MapSelector::Name("counts".into())
        );
        let w = words("fd 3");
        assert!(Words::new(&w).map_selector().is_err());
    }
}
