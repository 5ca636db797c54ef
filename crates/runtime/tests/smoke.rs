//! Smoke test: array_counter on the user engine.
use bpfmaps_abi::MapOps;
use bpfmaps_obj::ObjectSpec;
use bpfmaps_runtime::{LoadOptions, UserObject};

#[test]
fn array_counter_counts() {
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = ObjectSpec::from_file(format!("{root}/../../bpf/obj/array_counter.bpf.o").as_ref()).unwrap();
    let obj = UserObject::load(spec, &LoadOptions::default()).unwrap();
    let mut ctx = [0u8; 64];
    ctx[16] = 3;
    let prog = obj.program("count_getpgid").unwrap();
    assert_eq!(prog.run(&mut ctx).unwrap(), 0);
    assert_eq!(prog.run(&mut ctx).unwrap(), 0);
    let slots = obj.map("slots").unwrap();
    let mut v = [0u8; 8];
    slots.map.lookup(&3u32.to_le_bytes(), &mut v, 0).unwrap();
    assert_eq!(u64::from_le_bytes(v), 2);
}
