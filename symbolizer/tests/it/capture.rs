//! Test helper: takes the same snapshot of a running process that emberprof's BPF program takes (user
//! registers and the top of the user stack), with ptrace, so unwinding can be tested without BPF.
//! Shared with the unwinding benchmark (`benches/unwind.rs`).

#![allow(dead_code)]

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use emberprof_symbolizer::{ProcessKey, StackCopy, UserRegisters};

/// Registers and stack bytes of one moment of a thread.
#[derive(Clone, Debug)]
pub struct StackSnapshot {
    pub pid: u32,
    pub registers: UserRegisters,
    pub stack: Vec<u8>,
}

impl StackSnapshot {
    pub fn key(&self) -> ProcessKey {
        ProcessKey {
            pid: self.pid,
            instance: 1,
        }
    }

    /// The stack bytes, copied from sp up.
    pub fn stack_copy(&self) -> StackCopy<'_> {
        StackCopy {
            start: self.registers.sp,
            bytes: &self.stack,
        }
    }
}

/// An example workload, killed when dropped.
pub struct Workload(pub Child);

impl Workload {
    pub fn start(name: &str) -> Workload {
        let child = Command::new(emberprof_examples::path(name))
            .arg("60")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start example {name}: {e}"));
        std::thread::sleep(Duration::from_millis(200));
        Workload(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// The process as the symbolizer knows it (one instance: these workloads never exec).
    pub fn key(&self) -> ProcessKey {
        ProcessKey {
            pid: self.pid(),
            instance: 1,
        }
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops `pid` (a child of this process), copies its registers and up to `max_bytes` of stack from
/// its stack pointer, page by page until a page cannot be read (as the BPF copy does), and resumes it.
pub fn snapshot(pid: u32, max_bytes: usize) -> StackSnapshot {
    let pid_t = pid as libc::pid_t;
    // SAFETY: ptrace requests on our own child with valid arguments; every call is checked.
    unsafe {
        assert_eq!(
            libc::ptrace(libc::PTRACE_SEIZE, pid_t, 0, 0),
            0,
            "PTRACE_SEIZE: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(
            libc::ptrace(libc::PTRACE_INTERRUPT, pid_t, 0, 0),
            0,
            "PTRACE_INTERRUPT"
        );
        let mut status = 0;
        assert_eq!(
            libc::waitpid(pid_t, &mut status, libc::__WALL),
            pid_t,
            "waitpid"
        );
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        assert_eq!(
            libc::ptrace(libc::PTRACE_GETREGS, pid_t, 0, &mut regs),
            0,
            "PTRACE_GETREGS"
        );
        let registers = UserRegisters {
            ip: regs.rip,
            sp: regs.rsp,
            bp: regs.rbp,
            general: Some([
                regs.rax, regs.rdx, regs.rcx, regs.rbx, regs.rsi, regs.rdi, regs.rbp, regs.rsp,
                regs.r8, regs.r9, regs.r10, regs.r11, regs.r12, regs.r13, regs.r14, regs.r15,
            ]),
        };
        let stack = read_stack(pid, registers.sp, max_bytes);
        assert_eq!(
            libc::ptrace(libc::PTRACE_DETACH, pid_t, 0, 0),
            0,
            "PTRACE_DETACH"
        );
        StackSnapshot {
            pid,
            registers,
            stack,
        }
    }
}

fn read_stack(pid: u32, sp: u64, max_bytes: usize) -> Vec<u8> {
    let mem = File::open(format!("/proc/{pid}/mem")).expect("open /proc/PID/mem");
    let mut stack = Vec::with_capacity(max_bytes);
    let mut address = sp;
    while stack.len() < max_bytes {
        let page_end = (address | 4095) + 1;
        let chunk = ((page_end - address) as usize).min(max_bytes - stack.len());
        let mut buf = vec![0u8; chunk];
        if mem.read_exact_at(&mut buf, address).is_err() {
            break;
        }
        stack.extend_from_slice(&buf);
        address += chunk as u64;
    }
    stack
}

/// `count` snapshots of `pid`, spaced out so they land in different places of its loop.
pub fn snapshots(pid: u32, count: usize, max_bytes: usize) -> Vec<StackSnapshot> {
    (0..count)
        .map(|_| {
            std::thread::sleep(Duration::from_millis(3));
            snapshot(pid, max_bytes)
        })
        .collect()
}
