//! DWARF unwinding of snapshots of frameless programs, checked against their known call chains.

use emberprof_symbolizer::{FrameAddress, ProcessKey, Symbol, Symbolizer, UnwindEnd};

use crate::capture::{snapshots, StackSnapshot, Workload};

/// Unwinds and symbolizes a snapshot: function names, outermost first.
fn unwind_names(symbolizer: &mut Symbolizer, snapshot: &StackSnapshot) -> (Vec<String>, UnwindEnd) {
    let unwound = symbolizer.unwind(snapshot.key(), snapshot.registers, snapshot.stack_copy());
    let addresses: Vec<(ProcessKey, FrameAddress)> = unwound
        .frames
        .iter()
        .enumerate()
        .map(|(i, &address)| (snapshot.key(), FrameAddress::from_stack_index(i, address)))
        .collect();
    let names = symbolizer
        .symbolize_user(&addresses)
        .into_iter()
        .rev()
        .flat_map(|symbol| match symbol {
            Symbol::Named(frames) => frames
                .into_iter()
                .map(|f| f.name.to_string())
                .collect::<Vec<_>>(),
            Symbol::Unknown { .. } => vec!["?".to_owned()],
        })
        .collect();
    (names, unwound.end)
}

/// 60 frameless levels between run and spin come back whole, in order, ending at _start.
#[test]
fn unwinds_deep_frameless_chain() {
    let workload = Workload::start("deep-nofp");
    let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
    symbolizer.process_seen(workload.key()).expect("snapshot");
    let chain: Vec<String> = ["_start", "__libc_start_call_main", "main", "run"]
        .iter()
        .map(|s| s.to_string())
        .chain((1..=60).map(|i| format!("level_{i:02}")))
        .collect();
    let mut whole = 0;
    let snapshots = snapshots(workload.pid(), 20, 16384);
    for snapshot in &snapshots {
        let (names, end) = unwind_names(&mut symbolizer, snapshot);
        // Interrupted in spin or in the loop bookkeeping: whichever level it is in, the chain above it
        // must be exact.
        let depth = names.iter().filter(|n| n.starts_with("level_")).count();
        if depth == 60 && names.iter().any(|n| n == "spin") {
            let got: Vec<&String> = names.iter().filter(|n| chain.contains(n)).collect();
            assert_eq!(
                got,
                chain.iter().collect::<Vec<_>>(),
                "chain out of order: {names:?}"
            );
            assert_eq!(end, UnwindEnd::Complete, "{names:?}");
            whole += 1;
        }
    }
    assert!(
        whole * 10 >= snapshots.len() * 8,
        "only {whole}/{} snapshots unwound whole",
        snapshots.len()
    );
}

/// The frameless burn build unwinds to main -> run -> burn_a/burn_b -> spin.
#[test]
fn unwinds_frameless_burn() {
    let workload = Workload::start("burn-nofp");
    let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
    symbolizer.process_seen(workload.key()).expect("snapshot");
    let snapshots = snapshots(workload.pid(), 20, 16384);
    let mut in_burn = 0;
    for snapshot in &snapshots {
        let (names, end) = unwind_names(&mut symbolizer, snapshot);
        let burn = names.iter().position(|n| n == "burn_a" || n == "burn_b");
        if let Some(burn) = burn {
            in_burn += 1;
            assert_eq!(&names[burn - 2..burn], ["main", "run"], "{names:?}");
            assert_eq!(
                names.first().map(String::as_str),
                Some("_start"),
                "{names:?}"
            );
            assert_eq!(end, UnwindEnd::Complete, "{names:?}");
        }
    }
    assert!(
        in_burn >= 10,
        "only {in_burn} snapshots landed in burn_a/burn_b"
    );
}

/// A Rust binary (linked by lld, whose text segment does not start on a page boundary) unwinds
/// through its own code to main and _start.
#[test]
fn unwinds_rust_binary_linked_by_lld() {
    let workload = Workload::start("rust-inline");
    let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
    symbolizer.process_seen(workload.key()).expect("snapshot");
    let snapshots = snapshots(workload.pid(), 10, 16384);
    let mut whole = 0;
    for snapshot in &snapshots {
        let (names, end) = unwind_names(&mut symbolizer, snapshot);
        if names.iter().any(|n| n == "rust_inline::hot_loop") {
            assert!(
                names.starts_with(&["_start".to_owned()])
                    && names.iter().any(|n| n == "rust_inline::main"),
                "{names:?}"
            );
            assert_eq!(end, UnwindEnd::Complete, "{names:?}");
            whole += 1;
        }
    }
    assert!(whole >= 5, "only {whole} snapshots in hot_loop");
}

/// A copy cut short ends the unwind with StackCopyExhausted, keeping the frames it could recover.
#[test]
fn short_copy_ends_at_copy_size() {
    let workload = Workload::start("deep-nofp");
    let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
    symbolizer.process_seen(workload.key()).expect("snapshot");
    let mut snapshot = snapshots(workload.pid(), 1, 16384).remove(0);
    snapshot.stack.truncate(128);
    let unwound = symbolizer.unwind(snapshot.key(), snapshot.registers, snapshot.stack_copy());
    assert_eq!(unwound.end, UnwindEnd::StackCopyExhausted);
    assert!(
        unwound.frames.len() >= 2 && unwound.frames.len() < 40,
        "{} frames",
        unwound.frames.len()
    );
}

/// The frame-pointer analysis behind --unwind auto: the frameless build is frameless everywhere,
/// the frame-pointer build only in libc.
#[test]
fn classifies_frameless_code() {
    use emberprof_symbolizer::FramelessCode;
    let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
    let frameless = Workload::start("burn-nofp");
    symbolizer.process_seen(frameless.key()).expect("snapshot");
    assert_eq!(
        symbolizer.frameless_code(frameless.key()),
        Some(FramelessCode::Everywhere)
    );
    let with_fp = Workload::start("burn");
    symbolizer.process_seen(with_fp.key()).expect("snapshot");
    match symbolizer.frameless_code(with_fp.key()) {
        Some(FramelessCode::Mappings(mappings)) => assert!(!mappings.is_empty()),
        other => panic!("frame-pointer build classified as {other:?}"),
    }
    // gcc -O2 -fno-omit-frame-pointer: a frame-pointer executable whose leaf functions (spin) are
    // frameless, listed as exceptions inside the executable's own mapping.
    let gcc = Workload::start("burn-gcc");
    symbolizer.process_seen(gcc.key()).expect("snapshot");
    let snapshot = symbolizer
        .processes()
        .get(gcc.key())
        .expect("snapshot")
        .clone();
    let executable: Vec<_> = snapshot
        .mappings()
        .iter()
        .filter(|m| Some(m.module) == snapshot.executable())
        .map(|m| m.start..m.end)
        .collect();
    match symbolizer.frameless_code(gcc.key()) {
        Some(FramelessCode::Mappings(mappings)) => {
            let in_executable: Vec<_> = mappings
                .iter()
                .filter(|m| executable.contains(&m.range))
                .collect();
            assert!(
                !in_executable.is_empty()
                    && in_executable
                        .iter()
                        .all(|m| m.functions.as_ref().is_some_and(|(_, f)| !f.is_empty())),
                "burn-gcc: {mappings:x?} (executable at {executable:x?})"
            );
        }
        other => panic!("gcc frame-pointer build classified as {other:?}"),
    }
}
