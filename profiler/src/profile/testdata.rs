//! Small hand-built profiles for the golden tests of every output: each kind of frame and mapping
//! (user with inlined callees and source lines, unnamed in a module, unnamed outside any, kernel,
//! unnamed kernel, JIT), a truncated stack, two threads, names with separators and controls.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use super::*;

fn frame(name: &str, kind: FrameKind, file: Option<&str>, line: Option<u32>) -> Frame {
    Frame {
        system_name: (name == "main").then(|| Arc::from("_Z4mainv")),
        file: file.map(Arc::from),
        line,
        ..Frame::new(name, kind)
    }
}

pub fn small() -> Profile {
    let mappings = vec![
        Mapping {
            path: Arc::from("/usr/bin/burn"),
            display_name: Arc::from("burn"),
            build_id: Some("0123456789abcdef".to_owned()),
            kind: MappingKind::User,
        },
        Mapping {
            path: Arc::from("/usr/lib/x86_64-linux-gnu/libc.so.6"),
            display_name: Arc::from("libc.so.6"),
            build_id: None,
            kind: MappingKind::User,
        },
        Mapping {
            path: Arc::from(KERNEL_MAPPING),
            display_name: Arc::from(KERNEL_MAPPING),
            build_id: None,
            kind: MappingKind::Kernel,
        },
        Mapping {
            path: Arc::from(JIT_MAPPING),
            display_name: Arc::from(JIT_MAPPING),
            build_id: None,
            kind: MappingKind::Jit,
        },
    ];
    let user = |mapping, address, frames| Location {
        mapping: Some(mapping),
        address,
        frames,
        in_kernel: false,
    };
    let locations = vec![
        // 0: the process entry
        user(
            0,
            0x1040,
            vec![frame("_start", FrameKind::User, None, None)],
        ),
        // 1: main with run and burn_a inlined into it
        user(
            0,
            0x1150,
            vec![
                frame("main", FrameKind::User, Some("burn.c"), Some(40)),
                frame("run", FrameKind::Inlined, Some("burn.c"), Some(31)),
                frame("burn_a", FrameKind::Inlined, Some("burn.c"), Some(12)),
            ],
        ),
        // 2: a libc address without a symbol
        user(1, 0x29d8f, vec![]),
        // 3: kernel
        Location {
            mapping: Some(2),
            address: 0xffffffff81000100,
            frames: vec![frame("do_syscall_64", FrameKind::Kernel, None, None)],
            in_kernel: true,
        },
        // 4: unnamed kernel
        Location {
            mapping: Some(2),
            address: 0xffffffffc0001234,
            frames: vec![],
            in_kernel: true,
        },
        // 5: JIT
        user(
            3,
            0x7f0000001000,
            vec![frame("js:parse;json\u{1}", FrameKind::Jit, None, None)],
        ),
        // 6: anonymous memory
        Location {
            mapping: None,
            address: 0x7f0000009999,
            frames: vec![],
            in_kernel: false,
        },
    ];
    let mut stacks = Stacks::default();
    // As a capture at 99 Hz gives them (see `values::add_cpu_time`).
    let (value_types, _) =
        ValueTypes::new(ValueType::of(values::SAMPLES), [ValueType::of(values::CPU)]);
    let period = 1_000_000_000 / 99;
    let mut sample = |stack: &[LocationId], count: u64, tid, thread: &str, truncated| Sample {
        stack: stacks.insert(stack),
        values: {
            let mut values = Values::count(count);
            values.set(1, count * period);
            values
        },
        pid: Some(100),
        tid: Some(tid),
        process_name: Some("burn".into()),
        thread_name: Some(thread.into()),
        truncated,
    };
    let samples = vec![
        sample(&[0, 1], 30, 100, "burn", false),
        sample(&[0, 1, 3, 4], 5, 100, "burn", false),
        sample(&[2, 1], 4, 101, "worker;1", true),
        sample(&[0, 5, 6], 2, 101, "worker;1", false),
        sample(&[], 1, 102, "", false),
    ];
    Profile {
        metadata: Metadata {
            start_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
            duration: Some(Duration::from_millis(2500)),
            frequency_hz: Some(99),
            lost_samples: 2,
            unwinding: Some("auto".to_owned()),
            command_line: Some("emberprof record -o x.pb.gz -- burn".to_owned()),
            has_lines: true,
            ..Metadata::default()
        },
        value_types,
        mappings,
        locations,
        samples,
        stacks,
    }
}

/// A wall-clock profile (issue 20's shape): thread 1 burns 3 samples (30.3 ms at 99 Hz) and waits
/// 60 ms; thread 2 waits twice, 1,499 ns and 400 ns, in the same stack. Off-CPU samples count no
/// samples and no CPU time.
pub fn wall() -> Profile {
    let (value_types, _) = ValueTypes::new(
        ValueType::of(values::SAMPLES),
        [ValueType::of(values::CPU), ValueType::of(values::OFF_CPU)],
    );
    let mappings = vec![
        Mapping {
            path: Arc::from("/usr/bin/app"),
            display_name: Arc::from("app"),
            build_id: None,
            kind: MappingKind::User,
        },
        Mapping {
            path: Arc::from(KERNEL_MAPPING),
            display_name: Arc::from(KERNEL_MAPPING),
            build_id: None,
            kind: MappingKind::Kernel,
        },
    ];
    let located = |mapping, address, name: &str, kind| Location {
        mapping: Some(mapping),
        address,
        frames: vec![frame(name, kind, None, None)],
        in_kernel: kind == FrameKind::Kernel,
    };
    let locations = vec![
        located(0, 0x1000, "main", FrameKind::User),
        located(0, 0x1100, "burn", FrameKind::User),
        located(0, 0x1200, "wait", FrameKind::User),
        located(1, 0xffffffff81000200, "schedule", FrameKind::Kernel),
    ];
    let mut stacks = Stacks::default();
    let mut sample = |stack: &[LocationId], tid, [samples, cpu, off_cpu]: [u64; 3]| {
        let mut values = Values::count(samples);
        values.set(1, cpu);
        values.set(2, off_cpu);
        Sample {
            stack: stacks.insert(stack),
            values,
            pid: Some(1),
            tid: Some(tid),
            process_name: Some("app".into()),
            thread_name: Some("app".into()),
            truncated: false,
        }
    };
    let samples = vec![
        sample(&[0, 1], 1, [3, 3 * 10_101_010, 0]),
        sample(&[0, 2, 3], 1, [0, 0, 60_000_400]),
        sample(&[0, 2, 3], 2, [0, 0, 1_499]),
        sample(&[0, 2, 3], 2, [0, 0, 400]),
    ];
    Profile {
        metadata: Metadata {
            frequency_hz: Some(99),
            ..Metadata::default()
        },
        value_types,
        mappings,
        locations,
        samples,
        stacks,
    }
}

/// Python frames interleaved with native ones (issue 21's shape): the interpreter's native entry,
/// then `<module>` → `outer` → `Sorter.run`, which calls the builtin `sorted` (native) calling back
/// into the Python `key`; a native `run` as well, which must not take the Python colour or marker.
pub fn python() -> Profile {
    let mappings = vec![
        Mapping {
            path: Arc::from("/usr/bin/python3.11"),
            display_name: Arc::from("python3.11"),
            build_id: None,
            kind: MappingKind::User,
        },
        Runtime::Python.mapping(),
    ];
    let native = |address, name: &str| Location {
        mapping: Some(0),
        address,
        frames: vec![frame(name, FrameKind::User, None, None)],
        in_kernel: false,
    };
    let python = |name: &str, line| {
        Location::interpreted(1, frame(name, FrameKind::User, Some("app.py"), Some(line)))
    };
    let locations = vec![
        native(0x1000, "_start"),
        native(0x2000, "Py_RunMain"),
        python("<module>", 40),
        python("outer", 12),
        python("Sorter.run", 20),
        native(0x3000, "builtin_sorted"),
        python("key", 5),
        native(0x4000, "run"),
        // The same function at another line: its own location, one folded frame.
        python("outer", 13),
    ];
    let mut stacks = Stacks::default();
    let mut sample = |stack: &[LocationId], count| Sample {
        stack: stacks.insert(stack),
        values: Values::count(count),
        pid: Some(7),
        tid: Some(7),
        process_name: Some("python3".into()),
        thread_name: Some("python3".into()),
        truncated: false,
    };
    let samples = vec![
        sample(&[0, 1, 2, 3, 4], 6),
        sample(&[0, 1, 2, 3, 4, 5, 6], 2),
        sample(&[0, 1, 2, 8, 7], 1),
    ];
    Profile {
        metadata: Metadata {
            has_lines: true,
            ..Metadata::default()
        },
        value_types: ValueTypes::default(),
        mappings,
        locations,
        samples,
        stacks,
    }
}
