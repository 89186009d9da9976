//! Decoding the records the kernel writes into a perf_event ring buffer, for the one attribute
//! layout emberprof opens (see `events.rs`): samples with `IP | TID | TIME | CALLCHAIN` and, when
//! stacks are copied, `REGS_USER | STACK_USER`, and, when a `context-switches` event shares the
//! rings (exact off-CPU stacks), `IDENTIFIER | PERIOD` to tell its samples apart; side-band MMAP2
//! (or MMAP), COMM, FORK, EXIT and LOST records with `sample_id_all` (a trailing `{pid, tid,
//! time}`, then the identifier when there is one).
//!
//! Everything here is read from a byte slice the kernel filled, so every length is checked: a
//! record that does not decode is `None`, counted by the caller, never a panic.

use emberprof_symbolizer::FileIdentity;
use perf_event_open_sys::bindings;

/// User registers asked for in `sample_regs_user`: every general-purpose register and IP (x86-64
/// `perf_regs.h` numbering: AX BX CX DX SI DI BP SP IP = 0..=8, R8..R15 = 16..=23), since CFI in
/// hand-written assembly computes CFAs from any of them. The kernel writes them in ascending bit
/// order.
pub const USER_REGS_MASK: u64 = 0x1ff | (0xff << 16);
const USER_REGS_COUNT: usize = 17;

/// Size of `struct perf_event_header`.
pub const HEADER_BYTES: usize = 8;

/// Which optional sample fields the events were opened with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SampleLayout {
    /// `PERF_SAMPLE_REGS_USER | PERF_SAMPLE_STACK_USER`.
    pub user_stack_copy: bool,
    /// `PERF_SAMPLE_IDENTIFIER | PERF_SAMPLE_PERIOD`: two sampling events share the rings (see
    /// `events::SwitchSampling`), and their samples say which event took them and what it counted.
    pub identified: bool,
}

impl SampleLayout {
    /// Bytes after the time in a trailing `sample_id`: the identifier, when there is one.
    fn sample_id_tail(self) -> usize {
        if self.identified {
            8
        } else {
            0
        }
    }
}

/// One decoded record.
#[derive(Debug, PartialEq, Eq)]
pub enum PerfRecord<'a> {
    Sample(Sample<'a>),
    /// A thread's name changed (`exec` is true when an exec caused it).
    Comm {
        pid: u32,
        tid: u32,
        name: String,
        exec: bool,
    },
    Fork {
        pid: u32,
        ppid: u32,
        tid: u32,
        ptid: u32,
    },
    Exit {
        pid: u32,
        tid: u32,
    },
    /// Code mapped into a process (exec'd binary, a library, JIT code): MMAP2 records carry how
    /// to tell the file (build-id, or device and inode), MMAP records do not.
    Mmap {
        pid: u32,
        address: u64,
        length: u64,
        /// File offset of `address`, in bytes.
        pgoff: u64,
        /// As the kernel printed it (`//anon`, `[vdso]`, or a path): the process's bytes.
        filename: &'a [u8],
        identity: Option<FileIdentity>,
    },
    /// `--off-cpu`: a sampled thread was switched out (`out`) or in at `time`.
    Switch {
        pid: u32,
        tid: u32,
        time: u64,
        out: bool,
    },
    /// Records the kernel dropped because the ring buffer was full.
    Lost {
        count: u64,
    },
    /// A record type emberprof does not use (throttling, ...).
    Other,
}

/// A sample, borrowing its stack copy from the record.
#[derive(Debug, PartialEq, Eq)]
pub struct Sample<'a> {
    pub pid: u32,
    pub tid: u32,
    pub time: u64,
    /// The event that took it (its `PERF_EVENT_IOC_ID`, an inherited event's parent's), with
    /// [`SampleLayout::identified`]; else 0.
    pub id: u64,
    /// The events it stands for (1 without [`SampleLayout::identified`]).
    pub period: u64,
    /// Kernel frames, innermost first (empty when kernel callchains are excluded).
    pub kernel_ips: Vec<u64>,
    /// User frames walked through frame pointers, innermost first (the first is the sampled
    /// instruction when the sample hit user mode).
    pub user_ips: Vec<u64>,
    /// User registers, when the task had user registers (not a kernel thread).
    pub registers: Option<UserRegs>,
    /// The copied top of the user stack, from the stack pointer up.
    pub stack: &'a [u8],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UserRegs {
    pub ip: u64,
    pub sp: u64,
    pub bp: u64,
    /// The general-purpose registers by DWARF number (rax, rdx, rcx, rbx, rsi, rdi, rbp, rsp,
    /// r8..r15), as the BPF backend sends them.
    pub general: [u64; 16],
}

/// The time of a record, for ordering records of several ring buffers: the sample's own for
/// samples, the trailing `sample_id` for the others (`sample_id_all`). `None` if it is too short.
pub fn record_time(record: &[u8], layout: SampleLayout) -> Option<u64> {
    let kind = u32::from_le_bytes(record.get(0..4)?.try_into().ok()?);
    let tail = layout.sample_id_tail();
    if kind == bindings::PERF_RECORD_SAMPLE {
        // [identifier], ip, then pid/tid, then time.
        read_u64(record, HEADER_BYTES + tail + 16)
    } else {
        read_u64(record, record.len().checked_sub(8 + tail)?)
    }
}

/// Decodes one whole record (header included).
pub fn parse(record: &[u8], layout: SampleLayout) -> Option<PerfRecord<'_>> {
    let kind = read_u32(record, 0)?;
    let misc = u16::from_le_bytes(record.get(4..6)?.try_into().ok()?);
    let size = usize::from(u16::from_le_bytes(record.get(6..8)?.try_into().ok()?));
    let record = record.get(..size)?;
    let body = record.get(HEADER_BYTES..)?;
    match kind {
        bindings::PERF_RECORD_SAMPLE => parse_sample(body, layout).map(PerfRecord::Sample),
        bindings::PERF_RECORD_COMM => Some(PerfRecord::Comm {
            pid: read_u32(body, 0)?,
            tid: read_u32(body, 4)?,
            name: c_string(body.get(8..)?),
            exec: u32::from(misc) & bindings::PERF_RECORD_MISC_COMM_EXEC != 0,
        }),
        bindings::PERF_RECORD_FORK => Some(PerfRecord::Fork {
            pid: read_u32(body, 0)?,
            ppid: read_u32(body, 4)?,
            tid: read_u32(body, 8)?,
            ptid: read_u32(body, 12)?,
        }),
        bindings::PERF_RECORD_EXIT => Some(PerfRecord::Exit {
            pid: read_u32(body, 0)?,
            tid: read_u32(body, 8)?,
        }),
        bindings::PERF_RECORD_MMAP => Some(PerfRecord::Mmap {
            pid: read_u32(body, 0)?,
            address: read_u64(body, 8)?,
            length: read_u64(body, 16)?,
            pgoff: read_u64(body, 24)?,
            filename: c_bytes(body.get(32..)?)?,
            identity: None,
        }),
        bindings::PERF_RECORD_MMAP2 => Some(PerfRecord::Mmap {
            pid: read_u32(body, 0)?,
            address: read_u64(body, 8)?,
            length: read_u64(body, 16)?,
            pgoff: read_u64(body, 24)?,
            filename: c_bytes(body.get(64..)?)?,
            identity: mmap2_identity(body, u32::from(misc))?,
        }),
        bindings::PERF_RECORD_LOST => Some(PerfRecord::Lost {
            count: read_u64(body, 8)?,
        }),
        // The thread is the one in the trailing sample_id (pid, tid, time: `sample_id_all` with
        // TID and TIME, then the identifier if any): for a CPU-wide switch too, whose body first
        // names the other thread.
        bindings::PERF_RECORD_SWITCH | bindings::PERF_RECORD_SWITCH_CPU_WIDE => {
            let end = record.len().checked_sub(layout.sample_id_tail())?;
            if end < HEADER_BYTES + 16 {
                return None;
            }
            Some(PerfRecord::Switch {
                pid: read_u32(record, end.checked_sub(16)?)?,
                tid: read_u32(record, end.checked_sub(12)?)?,
                time: read_u64(record, end.checked_sub(8)?)?,
                out: u32::from(misc) & bindings::PERF_RECORD_MISC_SWITCH_OUT != 0,
            })
        }
        bindings::PERF_RECORD_LOST_SAMPLES => Some(PerfRecord::Lost {
            count: read_u64(body, 0)?,
        }),
        _ => Some(PerfRecord::Other),
    }
}

fn parse_sample(body: &[u8], layout: SampleLayout) -> Option<Sample<'_>> {
    let mut at = 0usize;
    let mut next_u64 = |body: &[u8]| -> Option<u64> {
        let value = read_u64(body, at)?;
        at = at.checked_add(8)?;
        Some(value)
    };
    let id = match layout.identified {
        true => next_u64(body)?,
        false => 0,
    };
    let _ip = next_u64(body)?;
    let pid_tid = next_u64(body)?;
    let time = next_u64(body)?;
    let period = match layout.identified {
        true => next_u64(body)?,
        false => 1,
    };
    let depth = usize::try_from(next_u64(body)?).ok()?;
    let mut kernel_ips = Vec::new();
    let mut user_ips = Vec::new();
    let mut in_kernel = false;
    for _ in 0..depth {
        let ip = next_u64(body)?;
        // Context markers are the top 4095 values of u64 (PERF_CONTEXT_MAX = -4095).
        if ip >= bindings::PERF_CONTEXT_MAX {
            in_kernel = ip == bindings::PERF_CONTEXT_KERNEL;
            continue;
        }
        if in_kernel {
            kernel_ips.push(ip);
        } else {
            user_ips.push(ip);
        }
    }
    let mut registers = None;
    let mut stack: &[u8] = &[];
    if layout.user_stack_copy {
        let abi = next_u64(body)?;
        if abi != u64::from(bindings::PERF_SAMPLE_REGS_ABI_NONE) {
            let mut values = [0u64; USER_REGS_COUNT];
            for value in &mut values {
                *value = next_u64(body)?;
            }
            let [ax, bx, cx, dx, si, di, bp, sp, ip, r8, r9, r10, r11, r12, r13, r14, r15] = values;
            registers = Some(UserRegs {
                ip,
                sp,
                bp,
                general: [
                    ax, dx, cx, bx, si, di, bp, sp, r8, r9, r10, r11, r12, r13, r14, r15,
                ],
            });
        }
        let size = usize::try_from(next_u64(body)?).ok()?;
        if size > 0 {
            let data_start = at;
            let data_end = data_start.checked_add(size)?;
            // The stack copy is followed by the size actually dumped (`dyn_size`), at most `size`.
            let dumped = usize::try_from(read_u64(body, data_end)?).ok()?;
            stack = body.get(data_start..data_start.checked_add(dumped.min(size))?)?;
        }
    }
    Some(Sample {
        pid: pid_tid as u32,
        tid: (pid_tid >> 32) as u32,
        time,
        id,
        period,
        kernel_ips,
        user_ips,
        registers,
        stack,
    })
}

/// The file identity of an MMAP2 body: the build-id when the kernel read one (5.12+, with
/// `attr.build_id`), else device, inode and inode generation; `None` for anonymous memory.
fn mmap2_identity(body: &[u8], misc: u32) -> Option<Option<FileIdentity>> {
    if misc & bindings::PERF_RECORD_MISC_MMAP_BUILD_ID != 0 {
        let size = usize::from(*body.get(32)?).min(20);
        let id = body.get(36..36 + size)?;
        return Some((size > 0).then(|| FileIdentity::BuildId(id.to_vec())));
    }
    let (major, minor, inode) = (
        read_u32(body, 32)?,
        read_u32(body, 36)?,
        read_u64(body, 40)?,
    );
    let generation = read_u64(body, 48)?;
    if inode == 0 {
        return Some(None);
    }
    Some(Some(FileIdentity::Inode {
        dev: libc::makedev(major, minor),
        inode,
        generation,
    }))
}

/// A NUL-terminated file name (padded to 8 bytes by the kernel), as raw bytes; `None` without a
/// NUL or past `PATH_MAX`: the kernel always writes one within that.
fn c_bytes(bytes: &[u8]) -> Option<&[u8]> {
    let end = bytes.iter().take(4096).position(|&b| b == 0)?;
    Some(&bytes[..end])
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// A NUL-terminated name (padded to 8 bytes by the kernel); lossy, since a process chooses it.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a record the way the kernel lays it out.
    pub fn record(kind: u32, misc: u16, body: &[u8]) -> Vec<u8> {
        let size = (HEADER_BYTES + body.len()) as u16;
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&kind.to_le_bytes());
        bytes.extend_from_slice(&misc.to_le_bytes());
        bytes.extend_from_slice(&size.to_le_bytes());
        bytes.extend_from_slice(body);
        bytes
    }

    fn words(values: &[u64]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A sample with a kernel and a user callchain, registers and a stack copy whose dumped size is
    /// smaller than the requested one.
    pub fn sample_body(pid: u32, tid: u32, time: u64, stack: &[u8]) -> Vec<u8> {
        let pid_tid = u64::from(pid) | (u64::from(tid) << 32);
        let mut body = words(&[
            0x1000,
            pid_tid,
            time,
            5,
            bindings::PERF_CONTEXT_KERNEL,
            0xffff_ffff_8100_0000,
            bindings::PERF_CONTEXT_USER,
            0x1000,
            0x2000,
            2, // PERF_SAMPLE_REGS_ABI_64
            0xa0,
            0xb0,
            0xc0,
            0xd0,
            0x51,
            0xd1,
            0x7ff0_0000_0100, // bp
            0x7ff0_0000_0000, // sp
            0x1000,           // ip
            0x108,
            0x109,
            0x110,
            0x111,
            0x112,
            0x113,
            0x114,
            0x115,
            32, // requested stack bytes
        ]);
        let mut copy = stack.to_vec();
        copy.resize(32, 0xee);
        body.extend_from_slice(&copy);
        body.extend_from_slice(&(stack.len() as u64).to_le_bytes());
        body
    }

    #[test]
    /// Callchain split at its context markers, registers in mask order, the stack cut at dyn_size.
    fn decodes_sample() {
        let bytes = record(
            bindings::PERF_RECORD_SAMPLE,
            0,
            &sample_body(10, 11, 99, &[1, 2, 3, 4, 5, 6, 7, 8]),
        );
        let layout = SampleLayout {
            user_stack_copy: true,
            identified: false,
        };
        assert_eq!(record_time(&bytes, layout), Some(99));
        let Some(PerfRecord::Sample(sample)) = parse(&bytes, layout) else {
            panic!("not a sample");
        };
        assert_eq!((sample.pid, sample.tid, sample.time), (10, 11, 99));
        assert_eq!(sample.kernel_ips, [0xffff_ffff_8100_0000]);
        assert_eq!(sample.user_ips, [0x1000, 0x2000]);
        assert_eq!(
            sample.registers,
            Some(UserRegs {
                ip: 0x1000,
                sp: 0x7ff0_0000_0000,
                bp: 0x7ff0_0000_0100,
                general: [
                    0xa0,
                    0xd0,
                    0xc0,
                    0xb0,
                    0x51,
                    0xd1,
                    0x7ff0_0000_0100,
                    0x7ff0_0000_0000,
                    0x108,
                    0x109,
                    0x110,
                    0x111,
                    0x112,
                    0x113,
                    0x114,
                    0x115
                ],
            })
        );
        assert_eq!(sample.stack, [1, 2, 3, 4, 5, 6, 7, 8]);
    }

    #[test]
    /// Every truncation of a valid sample fails to decode instead of panicking.
    fn truncated_records_do_not_decode() {
        let body = sample_body(1, 1, 1, &[0; 16]);
        let layout = SampleLayout {
            user_stack_copy: true,
            identified: false,
        };
        for cut in 0..body.len() {
            let bytes = record(bindings::PERF_RECORD_SAMPLE, 0, &body[..cut]);
            assert_eq!(parse(&bytes, layout), None, "cut at {cut}");
        }
        // A header claiming more than there is.
        let mut bytes = record(bindings::PERF_RECORD_SAMPLE, 0, &body);
        bytes[6..8].copy_from_slice(&u16::MAX.to_le_bytes());
        assert_eq!(parse(&bytes, layout), None);
    }

    #[test]
    /// MMAP2 records: the build-id or the device and inode, the offset and the name as bytes; a
    /// name without its NUL does not decode.
    fn decodes_mmap2() {
        let layout = SampleLayout {
            user_stack_copy: false,
            identified: false,
        };
        let mut body = [7u32, 8]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>();
        body.extend_from_slice(&words(&[0x5000, 0x2000, 0x1000]));
        body.extend_from_slice(&[3, 0, 0, 0, 0xaa, 0xbb, 0xcc]);
        body.resize(56, 0);
        body.extend_from_slice(&[5, 0, 0, 0, 2, 0, 0, 0]);
        body.extend_from_slice(b"/bin/\xff\0\0");
        body.extend_from_slice(&words(&[0x0000_0008_0000_0007, 99]));
        let misc = bindings::PERF_RECORD_MISC_MMAP_BUILD_ID as u16;
        let bytes = record(bindings::PERF_RECORD_MMAP2, misc, &body);
        assert_eq!(record_time(&bytes, layout), Some(99));
        assert_eq!(
            parse(&bytes, layout),
            Some(PerfRecord::Mmap {
                pid: 7,
                address: 0x5000,
                length: 0x2000,
                pgoff: 0x1000,
                filename: b"/bin/\xff",
                identity: Some(FileIdentity::BuildId(vec![0xaa, 0xbb, 0xcc])),
            })
        );
        body[32..56].copy_from_slice(&[
            8, 0, 0, 0, 1, 0, 0, 0, 42, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let Some(PerfRecord::Mmap { identity, .. }) =
            parse(&record(bindings::PERF_RECORD_MMAP2, 0, &body), layout)
        else {
            panic!("not an mmap");
        };
        assert_eq!(
            identity,
            Some(FileIdentity::Inode {
                dev: libc::makedev(8, 1),
                inode: 42,
                generation: 9
            })
        );
        let unterminated: Vec<u8> = body[..64].iter().copied().chain([b'x'; 16]).collect();
        assert_eq!(
            parse(
                &record(bindings::PERF_RECORD_MMAP2, 0, &unterminated),
                layout
            ),
            None
        );
    }

    #[test]
    /// Side-band records: names, exec flag, fork/exit ids, lost counts, trailing sample_id time.
    fn decodes_side_band() {
        let layout = SampleLayout {
            user_stack_copy: false,
            identified: false,
        };
        let mut comm = vec![5, 0, 0, 0, 6, 0, 0, 0];
        comm.extend_from_slice(b"burn\0\0\0\0");
        comm.extend_from_slice(&words(&[0x0000_0006_0000_0005, 1234]));
        let bytes = record(
            bindings::PERF_RECORD_COMM,
            bindings::PERF_RECORD_MISC_COMM_EXEC as u16,
            &comm,
        );
        assert_eq!(record_time(&bytes, layout), Some(1234));
        assert_eq!(
            parse(&bytes, layout),
            Some(PerfRecord::Comm {
                pid: 5,
                tid: 6,
                name: "burn".into(),
                exec: true
            })
        );
        let fork = [7u32, 5, 8, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .chain(42u64.to_le_bytes())
            .collect::<Vec<u8>>();
        assert_eq!(
            parse(&record(bindings::PERF_RECORD_FORK, 0, &fork), layout),
            Some(PerfRecord::Fork {
                pid: 7,
                ppid: 5,
                tid: 8,
                ptid: 6
            })
        );
        assert_eq!(
            parse(&record(bindings::PERF_RECORD_EXIT, 0, &fork), layout),
            Some(PerfRecord::Exit { pid: 7, tid: 8 })
        );
        assert_eq!(
            parse(
                &record(bindings::PERF_RECORD_LOST, 0, &words(&[1, 17])),
                layout
            ),
            Some(PerfRecord::Lost { count: 17 })
        );
    }

    /// With two events sharing the rings (`identified`): a sample starts with the event's id and
    /// has its period after the time; other records end in the id, after the time.
    #[test]
    fn decodes_identified_records() {
        let layout = SampleLayout {
            user_stack_copy: false,
            identified: true,
        };
        let pid_tid = 10 | (11 << 32);
        let body = words(&[
            0xfeed,
            0x1000,
            pid_tid,
            99,
            3,
            2,
            bindings::PERF_CONTEXT_KERNEL,
            0xffff_ffff_8100_0000,
        ]);
        let bytes = record(bindings::PERF_RECORD_SAMPLE, 0, &body);
        assert_eq!(record_time(&bytes, layout), Some(99));
        let Some(PerfRecord::Sample(sample)) = parse(&bytes, layout) else {
            panic!("not a sample");
        };
        assert_eq!((sample.id, sample.period, sample.tid), (0xfeed, 3, 11));
        assert_eq!(sample.kernel_ips, [0xffff_ffff_8100_0000]);
        let out = bindings::PERF_RECORD_MISC_SWITCH_OUT as u16;
        let switch = record(
            bindings::PERF_RECORD_SWITCH,
            out,
            &words(&[7 | (8 << 32), 1234, 0xfeed]),
        );
        assert_eq!(record_time(&switch, layout), Some(1234));
        assert_eq!(
            parse(&switch, layout),
            Some(PerfRecord::Switch {
                pid: 7,
                tid: 8,
                time: 1234,
                out: true
            })
        );
    }

    /// Switch records name their thread in the trailing sample_id (after the other thread of a
    /// CPU-wide one), out or in by the misc bit; a record too short for a sample_id is refused.
    #[test]
    fn decodes_switches() {
        let layout = SampleLayout {
            user_stack_copy: false,
            identified: false,
        };
        let sample_id = words(&[7 | (8 << 32), 1234]);
        let out = bindings::PERF_RECORD_MISC_SWITCH_OUT as u16;
        assert_eq!(
            parse(
                &record(bindings::PERF_RECORD_SWITCH, out, &sample_id),
                layout
            ),
            Some(PerfRecord::Switch {
                pid: 7,
                tid: 8,
                time: 1234,
                out: true
            })
        );
        let mut wide = words(&[5 | (6 << 32)]);
        wide.extend_from_slice(&sample_id);
        assert_eq!(
            parse(
                &record(bindings::PERF_RECORD_SWITCH_CPU_WIDE, 0, &wide),
                layout
            ),
            Some(PerfRecord::Switch {
                pid: 7,
                tid: 8,
                time: 1234,
                out: false
            })
        );
        assert_eq!(
            parse(
                &record(bindings::PERF_RECORD_SWITCH, 0, &words(&[1])),
                layout
            ),
            None
        );
    }
}
