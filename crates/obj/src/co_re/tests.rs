//! Relocation rules on hand-built BTF: one local and one target blob per case, each relocation
//! kind and compatibility rule checked against the value libbpf computes for it.

use bpfmaps_abi::insn::RawInsn;

use super::relocate::{patch, resolve, CandidateCache, Resolution};
use super::types::Types;
use super::{CoreKind, TargetBtf, POISON_HELPER_ID};

/// Builds raw BTF: types appended in id order (the first gets id 1).
#[derive(Default)]
struct Btf {
    types: Vec<u8>,
    strings: Vec<u8>,
    count: u32,
    /// For split BTF: the base's string length (this blob's offsets start there).
    str_base: u32,
}

/// A struct member: name, type, bit offset, bitfield size (0 = not a bitfield).
type M<'a> = (&'a str, u32, u32, u32);

impl Btf {
    fn new() -> Btf {
        Btf {
            strings: vec![0],
            ..Btf::default()
        }
    }
    /// Split BTF on top of `base`: ids continue the base's, string offsets too.
    fn split(base: &Btf) -> Btf {
        Btf {
            count: base.count,
            str_base: base.strings.len() as u32,
            ..Btf::default()
        }
    }
    fn s(&mut self, name: &str) -> u32 {
        if name.is_empty() {
            return 0;
        }
        let off = self.str_base + self.strings.len() as u32;
        self.strings.extend_from_slice(name.as_bytes());
        self.strings.push(0);
        off
    }
    fn head(&mut self, name: &str, kind: u32, kflag: bool, vlen: u32, size_or_type: u32) -> u32 {
        let n = self.s(name);
        let info = (kind << 24) | (u32::from(kflag) << 31) | vlen;
        for w in [n, info, size_or_type] {
            self.types.extend_from_slice(&w.to_le_bytes());
        }
        self.count += 1;
        self.count
    }
    fn w(&mut self, v: u32) {
        self.types.extend_from_slice(&v.to_le_bytes());
    }
    fn int(&mut self, name: &str, size: u32, signed: bool) -> u32 {
        let id = self.head(name, 1, false, 0, size);
        self.w((u32::from(signed) << 24) | (size * 8));
        id
    }
    fn ptr(&mut self, to: u32) -> u32 {
        self.head("", 2, false, 0, to)
    }
    fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.head("", 3, false, 0, 0);
        self.w(elem);
        self.w(index);
        self.w(n);
        id
    }
    fn composite(&mut self, kind: u32, name: &str, size: u32, members: &[M<'_>]) -> u32 {
        let kflag = members.iter().any(|m| m.3 != 0);
        let id = self.head(name, kind, kflag, members.len() as u32, size);
        for &(n, t, off, bits) in members {
            let n = self.s(n);
            self.w(n);
            self.w(t);
            self.w(if kflag { (bits << 24) | off } else { off });
        }
        id
    }
    fn strukt(&mut self, name: &str, size: u32, members: &[M<'_>]) -> u32 {
        self.composite(4, name, size, members)
    }
    fn union(&mut self, name: &str, size: u32, members: &[M<'_>]) -> u32 {
        self.composite(5, name, size, members)
    }
    fn enum32(&mut self, name: &str, size: u32, signed: bool, values: &[(&str, i32)]) -> u32 {
        let id = self.head(name, 6, signed, values.len() as u32, size);
        for &(n, v) in values {
            let n = self.s(n);
            self.w(n);
            self.w(v as u32);
        }
        id
    }
    fn enum64(&mut self, name: &str, values: &[(&str, u64)]) -> u32 {
        let id = self.head(name, 19, false, values.len() as u32, 8);
        for &(n, v) in values {
            let n = self.s(n);
            self.w(n);
            self.w(v as u32);
            self.w((v >> 32) as u32);
        }
        id
    }
    fn typedef(&mut self, name: &str, to: u32) -> u32 {
        self.head(name, 8, false, 0, to)
    }
    fn konst(&mut self, to: u32) -> u32 {
        self.head("", 10, false, 0, to)
    }
    fn fwd(&mut self, name: &str, union: bool) -> u32 {
        self.head(name, 7, union, 0, 0)
    }
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xeb9fu16.to_le_bytes());
        out.push(1);
        out.push(0);
        for w in [
            24u32,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&self.types);
        out.extend_from_slice(&self.strings);
        out
    }
}

fn run(
    local: &Btf,
    target: &Btf,
    type_id: u32,
    access: &str,
    kind: CoreKind,
) -> Result<Resolution, String> {
    let local = Types::parse(local.bytes(), "local").unwrap();
    let target = TargetBtf::parse(&target.bytes()).unwrap();
    let mut cache = CandidateCache::new(&target);
    resolve(&local, type_id, access, kind, &mut cache).map(|(_, r)| r)
}

fn new_val(local: &Btf, target: &Btf, id: u32, access: &str, kind: CoreKind) -> (u64, bool) {
    let r = run(local, target, id, access, kind).unwrap_or_else(|e| panic!("{access}: {e}"));
    (r.new_val, r.poison)
}

/// `struct task { int pid; long state; char comm[16]; }` locally; the target reorders, grows
/// and nests some fields in an anonymous union.
fn task_pair() -> (Btf, u32, Btf) {
    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let long = l.int("long", 8, true);
    let ch = l.int("char", 1, true);
    let comm = l.array(ch, int, 16);
    let task = l.strukt(
        "task",
        32,
        &[
            ("pid", int, 0, 0),
            ("state", long, 64, 0),
            ("comm", comm, 128, 0),
        ],
    );
    let mut t = Btf::new();
    let int = t.int("int", 4, true);
    let long = t.int("long", 8, true);
    let ch = t.int("char", 1, true);
    let comm = t.array(ch, int, 32);
    let anon = t.union("", 8, &[("state", long, 0, 0), ("other", long, 0, 0)]);
    t.strukt(
        "task",
        96,
        &[
            ("pad", long, 0, 0),
            ("", anon, 64, 0),
            ("comm", comm, 128, 0),
            ("pid", int, 512, 0),
        ],
    );
    (l, task, t)
}

#[test]
fn field_offsets_follow_names_through_anonymous_members() {
    let (l, task, t) = task_pair();
    assert_eq!(
        new_val(&l, &t, task, "0:0", CoreKind::FieldByteOffset),
        (64, false)
    );
    assert_eq!(
        new_val(&l, &t, task, "0:1", CoreKind::FieldByteOffset),
        (8, false)
    );
    // comm[3]: array index kept, element size from the target.
    assert_eq!(
        new_val(&l, &t, task, "0:2:3", CoreKind::FieldByteOffset),
        (19, false)
    );
    assert_eq!(
        new_val(&l, &t, task, "0:2", CoreKind::FieldByteSize),
        (32, false)
    );
    assert_eq!(
        new_val(&l, &t, task, "0:0", CoreKind::FieldByteSize),
        (4, false)
    );
    assert_eq!(
        new_val(&l, &t, task, "0:0", CoreKind::FieldSigned),
        (1, false)
    );
    assert_eq!(
        new_val(&l, &t, task, "0:1", CoreKind::FieldExists),
        (1, false)
    );
    // task[1].pid: the root index scales by the target's struct size.
    assert_eq!(
        new_val(&l, &t, task, "1:0", CoreKind::FieldByteOffset),
        (96 + 64, false)
    );
}

#[test]
fn an_index_past_a_smaller_target_array_does_not_match() {
    let (l, task, t) = task_pair();
    // local comm has 16 elements, target 32: index 20 cannot even be parsed locally.
    assert!(run(&l, &t, task, "0:2:20", CoreKind::FieldByteOffset).is_err());
    let mut small = Btf::new();
    let int = small.int("int", 4, true);
    let ch = small.int("char", 1, true);
    let comm = small.array(ch, int, 8);
    small.strukt("task", 8, &[("comm", comm, 0, 0)]);
    // Index 10 exists locally (16) but not in the target (8): no candidate, poisoned.
    assert!(new_val(&l, &small, task, "0:2:10", CoreKind::FieldByteOffset).1);
    assert_eq!(
        new_val(&l, &small, task, "0:2:3", CoreKind::FieldByteOffset),
        (3, false)
    );
}

#[test]
fn a_missing_field_poisons_offsets_and_reads_as_absent() {
    let (l, task, mut t) = (task_pair().0, task_pair().1, Btf::new());
    let int = t.int("int", 4, true);
    t.strukt("task", 4, &[("pid", int, 0, 0)]);
    assert!(new_val(&l, &t, task, "0:1", CoreKind::FieldByteOffset).1);
    assert!(new_val(&l, &t, task, "0:1", CoreKind::FieldByteSize).1);
    assert_eq!(
        new_val(&l, &t, task, "0:1", CoreKind::FieldExists),
        (0, false)
    );
    // No candidate at all (the struct is absent): the same.
    let empty = Btf::new();
    assert_eq!(
        new_val(&l, &empty, task, "0:1", CoreKind::FieldExists),
        (0, false)
    );
    assert!(new_val(&l, &empty, task, "0:0", CoreKind::FieldSigned).1);
}

#[test]
fn flavors_are_stripped_from_local_and_target_names() {
    let mut l = Btf::new();
    let uint = l.int("unsigned int", 4, false);
    let x = l.strukt("task_struct___x", 4, &[("__state", uint, 0, 0)]);
    let mut t = Btf::new();
    let long = t.int("long", 8, true);
    let uint = t.int("unsigned int", 4, false);
    t.strukt(
        "task_struct___2",
        32,
        &[("stack", long, 0, 0), ("__state", uint, 192, 0)],
    );
    assert_eq!(
        new_val(&l, &t, x, "0:0", CoreKind::FieldByteOffset),
        (24, false)
    );
    // A name ending in `___` or with four underscores is not a flavor separator.
    assert_eq!(super::types::essential_name("a___b___c"), "a___b");
    assert_eq!(super::types::essential_name("a____b"), "a____b");
    assert_eq!(super::types::essential_name("a___"), "a___");
    assert_eq!(super::types::essential_name("___b"), "___b");
}

#[test]
fn incompatible_field_types_do_not_match() {
    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let s = l.strukt("s", 4, &[("f", int, 0, 0)]);
    let mut t = Btf::new();
    let int = t.int("int", 4, true);
    let p = t.ptr(int);
    t.strukt("s", 8, &[("f", p, 0, 0)]);
    assert_eq!(new_val(&l, &t, s, "0:0", CoreKind::FieldExists), (0, false));
    // int vs. an int of another size and signedness: compatible.
    let mut t2 = Btf::new();
    let u64_ = t2.int("unsigned long", 8, false);
    t2.strukt("s", 8, &[("f", u64_, 0, 0)]);
    assert_eq!(
        new_val(&l, &t2, s, "0:0", CoreKind::FieldExists),
        (1, false)
    );
    // enums by (essential) name, or either anonymous.
    let mut le = Btf::new();
    let e = le.enum32("color___a", 4, false, &[("RED", 0)]);
    let s = le.strukt("s", 4, &[("f", e, 0, 0)]);
    let mut te = Btf::new();
    let e = te.enum32("color", 4, false, &[("RED", 0)]);
    te.strukt("s", 4, &[("f", e, 0, 0)]);
    assert_eq!(
        new_val(&le, &te, s, "0:0", CoreKind::FieldExists),
        (1, false)
    );
    let mut te2 = Btf::new();
    let e = te2.enum32("shade", 4, false, &[("RED", 0)]);
    te2.strukt("s", 4, &[("f", e, 0, 0)]);
    assert_eq!(
        new_val(&le, &te2, s, "0:0", CoreKind::FieldExists),
        (0, false)
    );
}

#[test]
fn bitfields_give_load_size_and_shifts() {
    // struct b { u32 a:3; u32 flag:1; u32 rest:28; u8 c; } locally; in the target, `flag`
    // moves to bit 37 of a u64 container.
    let mut l = Btf::new();
    let u32_ = l.int("unsigned int", 4, false);
    let b = l.strukt(
        "b",
        4,
        &[
            ("a", u32_, 0, 3),
            ("flag", u32_, 3, 1),
            ("rest", u32_, 4, 28),
        ],
    );
    let mut t = Btf::new();
    let u64_ = t.int("unsigned long", 8, false);
    let i32_ = t.int("int", 4, true);
    t.strukt(
        "b",
        8,
        &[
            ("a", u64_, 0, 3),
            ("flag", i32_, 37, 1),
            ("rest", u64_, 40, 20),
        ],
    );
    let v = |k| new_val(&l, &t, b, "0:1", k).0;
    assert_eq!(v(CoreKind::FieldByteOffset), 4);
    assert_eq!(v(CoreKind::FieldByteSize), 4);
    assert_eq!(v(CoreKind::FieldLshiftU64), 64 - (37 + 1 - 32));
    assert_eq!(v(CoreKind::FieldRshiftU64), 63);
    assert_eq!(v(CoreKind::FieldSigned), 1);
    // A 20-bit field straddling a 4-byte boundary needs an 8-byte load.
    let v = |k| new_val(&l, &t, b, "0:2", k).0;
    assert_eq!(
        (v(CoreKind::FieldByteOffset), v(CoreKind::FieldByteSize)),
        (0, 8)
    );
    assert_eq!(v(CoreKind::FieldLshiftU64), 64 - 60);
    assert_eq!(v(CoreKind::FieldRshiftU64), 44);
    // Locally: a:3 at bit 0 of a u32.
    let r = run(&l, &t, b, "0:0", CoreKind::FieldLshiftU64).unwrap();
    assert_eq!(r.orig_val, 61);
    assert!(!r.validate, "bitfield offsets are not validated, as libbpf");
}

#[test]
fn type_relocations() {
    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let s = l.strukt("thing", 4, &[("x", int, 0, 0)]);
    let td = l.typedef("thing_t", s);
    let missing = l.strukt("nothing", 4, &[("x", int, 0, 0)]);
    let u = l.union("thing", 4, &[("x", int, 0, 0)]);
    let mut t = Btf::new();
    let tint = t.int("int", 4, true);
    let ts = t.strukt("thing", 16, &[("y", tint, 0, 0), ("x", tint, 64, 0)]);
    let ttd = t.typedef("thing_t", ts);
    assert_eq!(new_val(&l, &t, s, "0", CoreKind::TypeExists), (1, false));
    assert_eq!(new_val(&l, &t, s, "0", CoreKind::TypeSize), (16, false));
    assert_eq!(
        new_val(&l, &t, s, "0", CoreKind::TypeIdTarget),
        (u64::from(ts), false)
    );
    assert_eq!(
        new_val(&l, &t, td, "0", CoreKind::TypeIdTarget),
        (u64::from(ttd), false)
    );
    assert_eq!(new_val(&l, &t, td, "0", CoreKind::TypeSize), (16, false));
    assert_eq!(
        new_val(&l, &t, s, "0", CoreKind::TypeIdLocal),
        (u64::from(s), false)
    );
    assert_eq!(
        new_val(&l, &t, missing, "0", CoreKind::TypeExists),
        (0, false)
    );
    assert_eq!(
        new_val(&l, &t, missing, "0", CoreKind::TypeSize),
        (0, false)
    );
    assert_eq!(
        new_val(&l, &t, missing, "0", CoreKind::TypeIdTarget),
        (0, false)
    );
    // A union is not a candidate for a struct of the same name.
    assert_eq!(new_val(&l, &t, u, "0", CoreKind::TypeExists), (0, false));
    // type matches: the target has every local member by name with a matching type.
    assert_eq!(new_val(&l, &t, s, "0", CoreKind::TypeMatches), (1, false));
    let mut t2 = Btf::new();
    let u8_ = t2.int("char", 1, false);
    t2.strukt("thing", 1, &[("x", u8_, 0, 0)]);
    assert_eq!(new_val(&l, &t2, s, "0", CoreKind::TypeMatches), (0, false));
    assert_eq!(new_val(&l, &t2, s, "0", CoreKind::TypeExists), (1, false));
    // A type relocation's access string must be "0".
    assert!(run(&l, &t, s, "1", CoreKind::TypeExists).is_err());
}

#[test]
fn type_matches_rules_for_pointers_forwards_and_enums() {
    let mut l = Btf::new();
    let inner = l.strukt("inner", 4, &[]);
    let p = l.ptr(inner);
    let outer = l.strukt("outer", 8, &[("p", p, 0, 0)]);
    let e = l.enum32("mode", 4, false, &[("A", 1), ("B", 2)]);
    // Behind a pointer, a struct matches a forward declaration of a struct.
    let mut t = Btf::new();
    let fwd = t.fwd("inner", false);
    let tp = t.ptr(fwd);
    t.strukt("outer", 8, &[("p", tp, 0, 0), ("q", tp, 64, 0)]);
    t.enum64("mode", &[("B", 7), ("A", 9), ("C", 1)]);
    assert_eq!(
        new_val(&l, &t, outer, "0", CoreKind::TypeMatches),
        (1, false)
    );
    // enum vs enum64 of another size: no match (sizes differ); names only, not values.
    assert_eq!(new_val(&l, &t, e, "0", CoreKind::TypeMatches), (0, false));
    let mut t2 = Btf::new();
    t2.enum32("mode", 4, false, &[("B", 7), ("A", 9), ("C", 1)]);
    assert_eq!(new_val(&l, &t2, e, "0", CoreKind::TypeMatches), (1, false));
    let mut t3 = Btf::new();
    let ufwd = t3.fwd("inner", true);
    let up = t3.ptr(ufwd);
    t3.strukt("outer", 8, &[("p", up, 0, 0)]);
    assert_eq!(
        new_val(&l, &t3, outer, "0", CoreKind::TypeMatches),
        (0, false)
    );
}

#[test]
fn enum_values_enum_and_enum64() {
    let mut l = Btf::new();
    let e = l.enum32(
        "state___local",
        4,
        false,
        &[("RUNNING___local", 99), ("GONE", 98)],
    );
    let e64 = l.enum64("big", &[("HUGE", 1)]);
    let signed = l.enum32("sgn", 4, true, &[("NEG", 5)]);
    let mut t = Btf::new();
    t.enum32("state", 4, false, &[("IDLE", 0), ("RUNNING", 3)]);
    t.enum64("big", &[("HUGE", 0x1_0000_0002)]);
    t.enum32("sgn", 4, true, &[("NEG", -2)]);
    assert_eq!(new_val(&l, &t, e, "0", CoreKind::EnumvalValue), (3, false));
    assert_eq!(new_val(&l, &t, e, "0", CoreKind::EnumvalExists), (1, false));
    assert_eq!(new_val(&l, &t, e, "1", CoreKind::EnumvalExists), (0, false));
    assert!(new_val(&l, &t, e, "1", CoreKind::EnumvalValue).1);
    assert_eq!(
        new_val(&l, &t, e64, "0", CoreKind::EnumvalValue),
        (0x1_0000_0002, false)
    );
    assert_eq!(
        new_val(&l, &t, signed, "0", CoreKind::EnumvalValue),
        ((-2i64) as u64, false)
    );
    // An enumerator index past the local enum is a malformed relocation.
    assert!(run(&l, &t, e, "5", CoreKind::EnumvalValue).is_err());
}

#[test]
fn ambiguous_candidates_are_an_error_and_agreeing_ones_are_not() {
    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let s = l.strukt("dup", 8, &[("x", int, 0, 0)]);
    let mut t = Btf::new();
    let int = t.int("int", 4, true);
    t.strukt("dup", 8, &[("x", int, 32, 0)]);
    t.strukt("dup___2", 8, &[("x", int, 0, 0)]);
    let err = run(&l, &t, s, "0:0", CoreKind::FieldByteOffset).unwrap_err();
    assert!(err.contains("ambiguity"), "{err}");
    let mut same = Btf::new();
    let int = same.int("int", 4, true);
    same.strukt("dup", 8, &[("x", int, 32, 0)]);
    same.strukt("dup___2", 8, &[("pad", int, 0, 0), ("x", int, 32, 0)]);
    assert_eq!(
        new_val(&l, &same, s, "0:0", CoreKind::FieldByteOffset),
        (4, false)
    );
    // A candidate without the field does not take part.
    let mut partial = Btf::new();
    let int = partial.int("int", 4, true);
    partial.strukt("dup", 8, &[("y", int, 0, 0)]);
    partial.strukt("dup___2", 8, &[("x", int, 32, 0)]);
    assert_eq!(
        new_val(&l, &partial, s, "0:0", CoreKind::FieldByteOffset),
        (4, false)
    );
}

#[test]
fn candidates_pruned_by_one_relocation_stay_pruned_for_the_next() {
    // libbpf keeps only the candidates that matched the first relocation of a type: a second
    // relocation on the same type that the pruned candidate would have satisfied finds none.
    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let s = l.strukt("pr", 8, &[("x", int, 0, 0), ("y", int, 32, 0)]);
    let mut t = Btf::new();
    let int = t.int("int", 4, true);
    t.strukt("pr", 4, &[("x", int, 0, 0)]);
    t.strukt("pr___b", 4, &[("y", int, 0, 0)]);
    let local = Types::parse(l.bytes(), "local").unwrap();
    let target = TargetBtf::parse(&t.bytes()).unwrap();
    let mut cache = CandidateCache::new(&target);
    let x = resolve(&local, s, "0:0", CoreKind::FieldByteOffset, &mut cache)
        .unwrap()
        .1;
    assert_eq!((x.new_val, x.poison), (0, false));
    let y = resolve(&local, s, "0:1", CoreKind::FieldByteOffset, &mut cache)
        .unwrap()
        .1;
    assert!(y.poison, "pr___b was pruned by the first relocation");
    // With a fresh cache, y resolves through pr___b.
    let mut fresh = CandidateCache::new(&target);
    let y = resolve(&local, s, "0:1", CoreKind::FieldByteOffset, &mut fresh)
        .unwrap()
        .1;
    assert_eq!((y.new_val, y.poison), (0, false));
}

#[test]
fn modifiers_typedefs_and_flexible_arrays() {
    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let c = l.konst(int);
    let flex = l.array(int, int, 0);
    let s = l.strukt("fl", 4, &[("n", c, 0, 0), ("data", flex, 32, 0)]);
    let td = l.typedef("fl_t", s);
    let mut t = Btf::new();
    let int = t.int("int", 4, true);
    let flex = t.array(int, int, 0);
    let ts = t.strukt(
        "fl",
        8,
        &[("pad", int, 0, 0), ("n", int, 32, 0), ("data", flex, 64, 0)],
    );
    t.typedef("fl_t", ts);
    // data[5] of a flexible array: any index is allowed.
    assert_eq!(
        new_val(&l, &t, s, "0:1:5", CoreKind::FieldByteOffset),
        (8 + 20, false)
    );
    assert_eq!(
        new_val(&l, &t, td, "0:0", CoreKind::FieldByteOffset),
        (4, false)
    );
}

fn alu(imm: i32) -> RawInsn {
    RawInsn::new(0xb7, 1, 0, 0, imm)
}

#[test]
fn patching_checks_the_compiled_value_and_adjusts_sizes() {
    let res = Resolution {
        orig_val: 4,
        new_val: 24,
        validate: true,
        ..Resolution::default()
    };
    let mut insns = vec![alu(4)];
    assert_eq!(patch(&mut insns, 0, &res).unwrap(), (false, 4));
    assert_eq!(insns[0].imm, 24);
    // The compiled value is not the local one: libbpf refuses.
    let mut insns = vec![alu(8)];
    assert!(patch(&mut insns, 0, &res).unwrap_err().contains("got 8"));
    // A u32 load of a field that became u64 (unsigned ints): the load is widened.
    let mut insns = vec![RawInsn::new(0x61, 0, 1, 4, 0)];
    let res = Resolution {
        orig_val: 4,
        new_val: 16,
        validate: true,
        orig_sz: 4,
        new_sz: 8,
        ..Resolution::default()
    };
    patch(&mut insns, 0, &res).unwrap();
    assert_eq!((insns[0].code, insns[0].off), (0x79, 16));
    // An offset that does not fit the instruction's 16 bits.
    let mut insns = vec![RawInsn::new(0x61, 0, 1, 4, 0)];
    let big = Resolution {
        orig_val: 4,
        new_val: 40000,
        validate: true,
        ..Resolution::default()
    };
    assert!(patch(&mut insns, 0, &big).unwrap_err().contains("ERANGE"));
    // An unsafe size change poisons the load.
    let unsafe_ = Resolution {
        fail_memsz_adjust: true,
        ..res.clone()
    };
    let mut insns = vec![RawInsn::new(0x61, 0, 1, 4, 0)];
    assert!(patch(&mut insns, 0, &unsafe_).unwrap().0);
    assert_eq!(insns[0].imm, POISON_HELPER_ID);
    // A poisoned lddw poisons both slots.
    let mut insns = vec![RawInsn::new(0x18, 1, 0, 0, 99), RawInsn::new(0, 0, 0, 0, 0)];
    let poison = Resolution {
        poison: true,
        ..Resolution::default()
    };
    patch(&mut insns, 0, &poison).unwrap();
    assert!(insns.iter().all(|i| i.code == 0x85 && i.imm == 0x0bad_2310));
    // An lddw carries a 64-bit value.
    let mut insns = vec![RawInsn::new(0x18, 1, 0, 0, 1), RawInsn::new(0, 0, 0, 0, 0)];
    let wide = Resolution {
        orig_val: 1,
        new_val: 0x1_0000_0002,
        validate: true,
        ..Resolution::default()
    };
    patch(&mut insns, 0, &wide).unwrap();
    assert_eq!((insns[0].imm, insns[1].imm), (2, 1));
    // A jump cannot carry a relocation.
    let mut insns = vec![RawInsn::new(0x05, 0, 0, 1, 0)];
    assert!(patch(&mut insns, 0, &wide).is_err());
}

#[test]
fn malformed_access_strings_and_target_blobs_are_errors() {
    let (l, task, t) = task_pair();
    // libbpf's parser (`sscanf("%d")` after one `:`): blanks and `+` are accepted...
    assert_eq!(
        new_val(&l, &t, task, "0: +1", CoreKind::FieldByteOffset),
        (8, false)
    );
    // ...a trailing or doubled `:`, a `-` sign, anything else not.
    for bad in ["", ":0", "0:x", "0:9", "0::1", "0:1:", "-1", "0:-1"] {
        assert!(
            run(&l, &t, task, bad, CoreKind::FieldByteOffset).is_err(),
            "`{bad}` must be refused"
        );
    }
    assert!(TargetBtf::parse(b"not btf").is_err());
    let mut blob = t.bytes();
    blob.truncate(blob.len() - 9);
    assert!(TargetBtf::parse(&blob).is_err());
}

#[test]
fn module_btf_is_searched_only_when_vmlinux_has_no_candidate() {
    let mut vmlinux = Btf::new();
    let int = vmlinux.int("int", 4, true);
    vmlinux.strukt("shared", 8, &[("pad", int, 0, 0), ("x", int, 32, 0)]);
    let mut module = Btf::split(&vmlinux);
    module.strukt("mod_only", 12, &[("a", int, 0, 0), ("x", int, 64, 0)]);
    // A module's own `shared` must not be looked at: vmlinux has a candidate.
    module.strukt("shared", 4, &[("x", int, 0, 0)]);
    let dir = std::env::temp_dir().join(format!("bpfmaps-split-btf-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("vmlinux"), vmlinux.bytes()).unwrap();
    std::fs::write(dir.join("mymod"), module.bytes()).unwrap();
    // Module BTF is read on the first miss, so the directory stays until the end.
    let target = TargetBtf::from_kernel_dir(&dir).unwrap();

    let mut l = Btf::new();
    let int = l.int("int", 4, true);
    let m = l.strukt("mod_only", 4, &[("x", int, 0, 0)]);
    let sh = l.strukt("shared", 4, &[("x", int, 0, 0)]);
    let local = Types::parse(l.bytes(), "local").unwrap();
    let mut cache = CandidateCache::new(&target);
    let r = resolve(&local, m, "0:0", CoreKind::FieldByteOffset, &mut cache)
        .unwrap()
        .1;
    assert_eq!(
        (r.new_val, r.poison),
        (8, false),
        "found in the module's split BTF"
    );
    let id = resolve(&local, m, "0", CoreKind::TypeIdTarget, &mut cache)
        .unwrap()
        .1;
    assert_eq!(
        id.new_val,
        u64::from(vmlinux.count + 1),
        "module ids continue vmlinux's"
    );
    let r = resolve(&local, sh, "0:0", CoreKind::FieldByteOffset, &mut cache)
        .unwrap()
        .1;
    assert_eq!(
        (r.new_val, r.poison),
        (4, false),
        "vmlinux's `shared`, no ambiguity"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    // A file target has no modules.
    let file = TargetBtf::parse(&vmlinux.bytes()).unwrap();
    let mut cache = CandidateCache::new(&file);
    let r = resolve(&local, m, "0:0", CoreKind::FieldByteOffset, &mut cache)
        .unwrap()
        .1;
    assert!(r.poison);
}
