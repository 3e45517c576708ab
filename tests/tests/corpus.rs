//! Replays every fuzz input we keep (`fuzz/seeds/<target>/`, committed; `fuzz/corpus/<target>/` and
//! `fuzz/artifacts/<target>/` where a local fuzzing run left them) through the same check functions the
//! fuzz targets call, so every `cargo test` runs them on stable without libFuzzer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use arbitrary::{Arbitrary, Unstructured};
use vmpriv_protocol::wire::{self, FdIndex, IfConfig, LocalRequest, MAX_FRAME, Request};

struct Counting;
static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged, only counting the bytes asked for.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let mut all = Vec::new();
    for kind in ["seeds", "corpus", "artifacts"] {
        let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
            continue;
        };
        for e in dir {
            let p = e.unwrap().path();
            if p.is_file() {
                all.push(std::fs::read(&p).unwrap());
            }
        }
    }
    all
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    let all = inputs(target);
    assert!(all.len() >= 5, "{target}: the committed seeds are missing");
    for data in &all {
        check(data);
    }
    println!("MEASURED replayed {} {target} inputs", all.len());
}

#[test]
fn replay_request_corpus() {
    // Allocation is counted process-wide: this is the only test in the binary that allocates while
    // measuring, and the runner starts tests on separate threads, so measure in a loop alone.
    let outcomes = std::sync::Mutex::new(std::collections::BTreeMap::new());
    replay("request", |data| {
        let checked = vmpriv_checks::check_request(data);
        *outcomes
            .lock()
            .unwrap()
            .entry(format!("{checked:?}"))
            .or_insert(0) += 1;
        let before = ALLOCATED.load(Ordering::Relaxed);
        let decoded = wire::decode::<Request>(data);
        let used = ALLOCATED.load(Ordering::Relaxed) - before;
        drop(decoded);
        assert!(
            used <= data.len().min(MAX_FRAME) + 4096,
            "decoding {} bytes allocated {used}",
            data.len()
        );
    });
    // The seeds hold requests the validator accepts and ones it refuses: a replay where every input
    // is skipped would check nothing.
    let outcomes = outcomes.into_inner().unwrap();
    println!("MEASURED request inputs by outcome: {outcomes:?}");
    assert!(
        outcomes.get("Accepted") > Some(&0) && outcomes.get("Refused") > Some(&0),
        "{outcomes:?}"
    );
}

#[test]
fn replay_policy_corpus() {
    replay("policy", vmpriv_checks::check_policy);
}

#[test]
fn replay_netlink_corpus() {
    replay("netlink", vmpriv_checks::check_netlink);
}

#[test]
fn replay_qemu_args_corpus() {
    replay("qemu_args", vmpriv_checks::check_args);
}

#[test]
fn replay_roundtrip_corpus() {
    // The fuzz target reads its input with `arbitrary`, as here. A local corpus may keep inputs that
    // do not decode (libFuzzer skips them); every committed seed must decode, and together they
    // start the fuzzer from every kind of request.
    let mut kinds = std::collections::BTreeSet::new();
    for data in seeds("roundtrip") {
        let req = Request::arbitrary_take_rest(Unstructured::new(&data))
            .unwrap_or_else(|e| panic!("a roundtrip seed does not decode with arbitrary: {e}"));
        kinds.insert(roundtrip_kind(&req));
    }
    let want: std::collections::BTreeSet<_> = every_roundtrip_kind().into_iter().collect();
    assert_eq!(kinds, want, "the roundtrip seeds cover every kind of request");
    replay("roundtrip", |data| {
        if let Ok(req) = Request::arbitrary_take_rest(Unstructured::new(data)) {
            vmpriv_checks::check_roundtrip(&req);
        }
    });
}

/// The committed seeds of `target` only.
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = fuzz_dir().join("seeds").join(target);
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect()
}

/// A request's kind for the roundtrip seeds: its operation, and for the two that carry a config
/// whether it asks for a switch and for local addresses.
fn roundtrip_kind(req: &Request) -> String {
    match req {
        Request::CreateTap { config, .. } | Request::Configure { config, .. } => format!(
            "{} switch={} local={}",
            req.op(),
            config.switch.is_some(),
            config.local.is_some()
        ),
        _ => req.op().to_owned(),
    }
}

fn every_roundtrip_kind() -> Vec<String> {
    let mut all = Vec::new();
    for op in ["create-tap", "configure"] {
        for switch in [false, true] {
            for local in [false, true] {
                all.push(format!("{op} switch={switch} local={local}"));
            }
        }
    }
    for op in [
        "hello",
        "status",
        "switch-exists",
        "reset",
        "remove-leftovers",
        "destroy-taps",
    ] {
        all.push(op.to_owned());
    }
    all
}

/// Writes the seed inputs (run by hand: `cargo test -p vmpriv-tests --test corpus -- --ignored`).
#[test]
#[ignore = "writes fuzz/seeds; run by hand when the protocol changes"]
fn write_seeds() {
    let t = FdIndex(0);
    let cfg = IfConfig {
        description: Some("vm1-if0".into()),
        switch: Some("br0".into()),
        rdomain: Some(1),
        group: Some("vms".into()),
        up: Some(true),
        local: Some(LocalRequest {
            vm: 1,
            nic: 0,
            inet: true,
            inet6: true,
        }),
    };
    // The single-field requests of protocol 1 (vmd's IFADD, IFDESCR, ...) are one Configure each now.
    let one = |config: IfConfig| Request::Configure { tap: t, config };
    let local = |vm, nic, inet, inet6| IfConfig {
        local: Some(LocalRequest { vm, nic, inet, inet6 }),
        ..IfConfig::default()
    };
    let requests = vec![
        Request::Hello,
        Request::Status,
        Request::CreateTap {
            queues: 1,
            vnet_hdr: true,
            config: IfConfig {
                switch: Some("br0".into()),
                ..IfConfig::default()
            },
        },
        Request::CreateTap {
            queues: 4,
            vnet_hdr: false,
            config: cfg.clone(),
        },
        Request::Configure { tap: t, config: cfg },
        Request::SwitchExists {
            switch: "secretbridge123X".into(),
        },
        one(IfConfig {
            switch: Some("br1".into()),
            ..IfConfig::default()
        }),
        one(IfConfig {
            description: Some("d".repeat(63)),
            ..IfConfig::default()
        }),
        one(IfConfig {
            rdomain: Some(1),
            ..IfConfig::default()
        }),
        one(IfConfig {
            up: Some(false),
            ..IfConfig::default()
        }),
        one(IfConfig {
            group: Some("vms".into()),
            ..IfConfig::default()
        }),
        one(local(16385, 0, true, false)),
        one(local(2, 1, false, true)),
        Request::Reset { tap: t },
    ];
    let write = |target: &str, name: String, data: &[u8]| {
        let dir = fuzz_dir().join("seeds").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(name), data).unwrap();
    };
    for (i, r) in requests.iter().enumerate() {
        let frame = wire::encode(r).unwrap();
        for who in 0..3u8 {
            let mut data = vec![who, u8::from(r.tap().is_some())];
            data.extend_from_slice(&frame);
            write("request", format!("{i:02}-{}-caller{who}", r.op()), &data);
        }
        let mut with_policy = vec![0, 1, b'P'];
        with_policy.extend_from_slice(
            b"allow user * switch *\ndeny user alice switch br1\nifgroup vms 4\nallow user * ifgroup vms\n",
        );
        with_policy.push(0xFF);
        with_policy.extend_from_slice(&frame);
        write("request", format!("{i:02}-{}-policy", r.op()), &with_policy);
    }
    // The roundtrip target reads `arbitrary` input, not postcard frames: the first of a fixed stream
    // of pseudo-random byte strings that decodes as each kind of request.
    let old = fuzz_dir().join("seeds").join("roundtrip");
    let _ = std::fs::remove_dir_all(&old);
    let mut want = every_roundtrip_kind();
    let mut x: u32 = 1;
    for _ in 0..1_000_000 {
        let len = 8 + (x >> 8) as usize % 56;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (x >> 16).to_le_bytes()[0]
            })
            .collect();
        let Ok(req) = Request::arbitrary_take_rest(Unstructured::new(&data)) else {
            continue;
        };
        let kind = roundtrip_kind(&req);
        if let Some(i) = want.iter().position(|k| *k == kind) {
            want.remove(i);
            write("roundtrip", kind.replace([' ', '='], "-"), &data);
        }
        if want.is_empty() {
            break;
        }
    }
    assert!(want.is_empty(), "no seed found for {want:?}");
    let policies = [
        vmpriv_checks::CHECK_POLICY,
        "allow user * switch *\ndeny user mallory switch secretbridge123\n",
        "local prefix 10.0.0.0/16\nlocal inet6 prefix fd12:3456:789a:1::/64\nquota group kvm 8\nquota user * 2\n",
        "include /etc/vmpriv/users.conf\n",
        "allow user alice switch secretbridge123X\n",
        "rdomain 1 vrf-blue\nallow group kvm rdomain 1\nifgroup dmz 7\ndeny user * ifgroup dmz\n",
    ];
    for (i, p) in policies.iter().enumerate() {
        write("policy", format!("{i:02}"), p.as_bytes());
    }
    let argvs: [&[&str]; 7] = [
        &["--use-vnet", "--fd=20", "--br=br0"],
        &["--use-vnet", "--br=br0", "--fd=25"],
        &["--br=secretbridge123X", "--fd=3"],
        &["--session", "--fd=3", "--policy", "/etc/vmpriv/policy.conf"],
        &["--br=br0", "--br=br1", "--fd=3"],
        &["--help"],
        &["--fd=+3", "--session"],
    ];
    for (i, a) in argvs.iter().enumerate() {
        write("qemu_args", format!("{i:02}"), a.join("\0").as_bytes());
    }
    // A tap link message, a bridge, an ACK, an error, a DONE, and the same with a bad attribute length.
    for (i, msg) in vmpriv_checks::netlink_samples().iter().enumerate() {
        write("netlink", format!("{i:02}"), msg);
    }
}
