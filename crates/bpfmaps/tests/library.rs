//! The public library on real maps: the openat counter counting a child's opens exactly, the
//! typed layer on both engines, and selectors finding maps on the right engine. Kernel tests need
//! root and BPF; set BPFMAPS_SKIP_KERNEL=1 to skip them on purpose.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use bpfmaps::top::{OpenatCounter, TopConfig};
use bpfmaps::typed::{sum_percpu, TypedMap};
use bpfmaps::{Engine, EngineChoice, Map, MapDef, MapSelector, MapType};

fn kernel() -> bool {
    if std::env::var_os("BPFMAPS_SKIP_KERNEL").is_some_and(|v| v == "1") {
        eprintln!("BPFMAPS_SKIP_KERNEL=1: skipping a kernel test");
        return false;
    }
    assert!(
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0")),
        "kernel tests need root and BPF (set BPFMAPS_SKIP_KERNEL=1 to skip them)"
    );
    true
}

#[test]
fn openat_counter_counts_exactly_the_opens_of_a_child() {
    if !kernel() {
        return;
    }
    // The shell opens /dev/null with a builtin redirection 7 times after reading a line, without
    // forking: exactly 7 openat calls by that process once it is released.
    let mut child = Command::new("sh")
        .args(["-c", "read go; i=0; while [ $i -lt 7 ]; do : < /dev/null; i=$((i+1)); done; echo done; read end"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut counter = OpenatCounter::start(TopConfig {
        target_tgid: Some(pid),
    })
    .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "go").unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "done\n");
    let rows = counter.sample().unwrap();
    assert_eq!(rows.len(), 1, "only the target is counted: {rows:?}");
    assert_eq!(rows[0].pid, pid);
    assert_eq!(rows[0].opens, 7);
    assert_eq!(rows[0].delta, 7);
    assert_eq!(rows[0].comm, "sh");
    assert!(!rows[0].exited);
    // Released, the child exits: the next sample reports its final row, then forgets it.
    writeln!(stdin, "end").unwrap();
    child.wait().unwrap();
    let rows = counter.sample().unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].exited);
    assert_eq!((rows[0].opens, rows[0].delta), (7, 0));
    assert!(counter.sample().unwrap().is_empty());
}

fn typed_round_trip(map: &Map) {
    let t: TypedMap<u32, u64> = TypedMap::new(map.ops()).unwrap();
    assert_eq!(t.get(&1).unwrap(), None);
    t.insert(&1, &10, 0).unwrap();
    t.insert(&2, &20, 0).unwrap();
    assert_eq!(
        t.get_percpu(&1).unwrap().map(|v| sum_percpu(&v)),
        Some(10 * map.info().possible_cpus as u64)
    );
    assert!(t.remove(&2).unwrap());
    assert!(!t.remove(&2).unwrap());
    assert_eq!(t.keys().unwrap(), vec![1]);
    assert!(TypedMap::<u64, u64>::new(map.ops()).is_err());
}

#[test]
fn typed_layer_works_on_both_engines() {
    let def = MapDef {
        map_type: MapType::PercpuHash,
        key_size: 4,
        value_size: 8,
        max_entries: 8,
        map_flags: 0,
        name: "typed".into(),
    };
    let root = std::env::temp_dir().join(format!("bpfmaps-lib-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let upath = root.join("typed");
    let user = bpfmaps::create_pinned_map(&upath, &def, EngineChoice::Only(Engine::User)).unwrap();
    assert_eq!(user.engine(), Engine::User);
    typed_round_trip(&user);
    let again = Map::open(&MapSelector::Pinned(upath.clone()), EngineChoice::Any).unwrap();
    assert_eq!(again.engine(), Engine::User);
    assert_eq!(again.info().id, user.info().id);
    std::fs::remove_dir_all(&root).unwrap();
    if !kernel() {
        return;
    }
    let kernel = Map::kernel(bpfmaps::kernel::map::KernelMap::create(&def).unwrap());
    typed_round_trip(&kernel);
    let by_id = Map::open(
        &MapSelector::Id(kernel.info().id),
        EngineChoice::Only(Engine::Kernel),
    )
    .unwrap();
    assert_eq!(by_id.info(), kernel.info());
}

#[test]
fn event_streams_read_user_engine_rings() {
    use bpfmaps::events::{Event, EventStream};
    use bpfmaps::user::perf_event_array::PerfEventArray;
    use bpfmaps::user::ringbuf::RingBuf;
    use std::time::Duration;

    let root = std::env::temp_dir().join(format!("bpfmaps-lib-ev-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    let def = |map_type, key_size, value_size, max_entries| MapDef {
        map_type,
        key_size,
        value_size,
        max_entries,
        map_flags: 0,
        name: "ev".into(),
    };
    let user = EngineChoice::Only(Engine::User);
    let rb = bpfmaps::create_pinned_map(&root.join("rb"), &def(MapType::Ringbuf, 0, 0, 4096), user)
        .unwrap();
    let mut stream = EventStream::open(&rb).unwrap();
    let producer = rb
        .as_user()
        .unwrap()
        .backend()
        .as_any()
        .downcast_ref::<RingBuf>()
        .unwrap();
    producer.output(&[1, 2, 3], 0).unwrap();
    producer.output(&[4; 9], 0).unwrap();
    let next = |s: &mut EventStream| s.next_event(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(
        next(&mut stream),
        Some(Event::Record {
            cpu: None,
            data: vec![1, 2, 3]
        })
    );
    assert_eq!(
        next(&mut stream),
        Some(Event::Record {
            cpu: None,
            data: vec![4; 9]
        })
    );
    assert_eq!(
        stream.next_event(Some(Duration::from_millis(50))).unwrap(),
        None
    );

    let cpus = bpfmaps::user::possible_cpus();
    let pa = bpfmaps::create_pinned_map(
        &root.join("pa"),
        &def(MapType::PerfEventArray, 4, 4, cpus),
        user,
    )
    .unwrap();
    let mut stream = EventStream::open(&pa).unwrap();
    let array = pa
        .as_user()
        .unwrap()
        .backend()
        .as_any()
        .downcast_ref::<PerfEventArray>()
        .unwrap();
    // BPF_F_CURRENT_CPU from CPU 0: the sample lands in CPU 0's ring, reported with raw_size
    // 12; the 4 pad bytes hold what the ring held before, zeros in a new ring.
    array.output(0xffff_ffff, 0, &[7; 8]).unwrap();
    let padded = [vec![7; 8], vec![0; 4]].concat();
    assert_eq!(
        next(&mut stream),
        Some(Event::Record {
            cpu: Some(0),
            data: padded
        })
    );
    std::fs::remove_dir_all(&root).unwrap();
}
