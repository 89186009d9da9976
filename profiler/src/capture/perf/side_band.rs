//! The side-band records both backends read from perf ring buffers: executable mappings as they
//! are made (MMAP2, with the file's build-id where the kernel can read it), program names and
//! execs (COMM), forks and exits (FORK, EXIT). The perf backend asks for them on its sampling
//! events; the BPF backend on a dummy event per CPU beside its programs (see
//! `capture::bpf::mapping_events`). Either way they feed the history of address spaces (see
//! `capture::address_spaces`) that names processes gone before their maps could be read.

use std::os::fd::{FromRawFd, OwnedFd};

use perf_event_open_sys::{bindings, perf_event_open};

use super::records::PerfRecord;
use crate::capture::address_spaces::{recorded_mapping, AddressSpaces};
use crate::capture::source::EventSink;

/// Asks for the side-band records on an event being set up, stamped (with `sample_id_all`) with
/// the task and a CLOCK_MONOTONIC time: the clock of `bpf_ktime_get_ns`, so the BPF backend's
/// first-sample notices and these records can be put in order.
pub fn ask_for_side_band(attr: &mut bindings::perf_event_attr) {
    attr.sample_type |= u64::from(bindings::PERF_SAMPLE_TID | bindings::PERF_SAMPLE_TIME);
    attr.set_mmap(1);
    attr.set_mmap2(1);
    attr.set_build_id(1);
    attr.set_comm(1);
    attr.set_comm_exec(1);
    attr.set_task(1);
    attr.set_sample_id_all(1);
    attr.set_use_clockid(1);
    attr.clockid = libc::CLOCK_MONOTONIC;
}

/// `perf_event_open`, retried without build-ids in MMAP2 records on kernels that predate them
/// (5.12), which refuse the bit with EINVAL: device and inode identify files there.
pub fn open(attr: &mut bindings::perf_event_attr, pid: i32, cpu: i32) -> std::io::Result<OwnedFd> {
    let open = |attr: &mut bindings::perf_event_attr| {
        // SAFETY: a fully initialised attr; the returned fd, if any, is new and ours.
        let fd = unsafe {
            perf_event_open(
                attr,
                pid,
                cpu,
                -1,
                libc::c_ulong::from(bindings::PERF_FLAG_FD_CLOEXEC),
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: see above.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    match open(attr) {
        Err(error) if error.raw_os_error() == Some(libc::EINVAL) && attr.build_id() != 0 => {
            attr.set_build_id(0);
            open(attr)
        }
        result => result,
    }
}

/// Feeds a side-band record taken at `time` to the address-space history; mappings of an
/// instance already seen go to `sink`. Other records change nothing there.
pub fn follow(
    spaces: &mut AddressSpaces,
    record: &PerfRecord<'_>,
    time: u64,
    sink: &mut dyn EventSink,
) {
    match *record {
        PerfRecord::Comm {
            pid, exec: true, ..
        } => spaces.exec(pid, time),
        PerfRecord::Fork { pid, ppid, .. } => spaces.fork(ppid, pid, time),
        PerfRecord::Exit { pid, tid } if pid == tid => spaces.exit(pid, time),
        PerfRecord::Mmap {
            pid,
            address,
            length,
            pgoff,
            filename,
            ref identity,
        } => {
            let mapping = recorded_mapping(address, length, pgoff, filename, identity.clone());
            spaces.mapped(pid, time, mapping, sink);
        }
        _ => {}
    }
}
