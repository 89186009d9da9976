//! What the perf backend knows about the sampled tasks, built from the side-band records: thread
//! names (perf samples carry none), and which program instance each process runs — the
//! [`ProcessKey`] the symbolizer's snapshots are keyed by. An exec or the exit of a process ends
//! its instance; the next sample of that PID starts a new one.

use std::collections::HashMap;

use emberprof_symbolizer::ProcessKey;

#[derive(Debug, Default)]
pub struct Tasks {
    thread_names: HashMap<u32, String>,
    /// Current instance of each process seen.
    instances: HashMap<u32, u32>,
    next_instance: u32,
}

/// What changed for the symbolizer.
#[derive(Debug, PartialEq, Eq)]
pub enum InstanceChange {
    /// First sample of a process instance: snapshot it now, while it is alive.
    Started(ProcessKey),
    /// The instance exec'd or exited: its snapshot is final.
    Ended(ProcessKey),
}

impl Tasks {
    /// The instance of `pid`, started at its first sample.
    pub fn instance(&mut self, pid: u32) -> (ProcessKey, Option<InstanceChange>) {
        if let Some(&instance) = self.instances.get(&pid) {
            return (ProcessKey { pid, instance }, None);
        }
        self.next_instance += 1;
        let key = ProcessKey {
            pid,
            instance: self.next_instance,
        };
        self.instances.insert(pid, key.instance);
        (key, Some(InstanceChange::Started(key)))
    }

    /// The process's current instance ends (exec, exit, or a PID that turned up again as a new
    /// process).
    fn end(&mut self, pid: u32) -> Option<InstanceChange> {
        let instance = self.instances.remove(&pid)?;
        Some(InstanceChange::Ended(ProcessKey { pid, instance }))
    }

    pub fn comm(&mut self, pid: u32, tid: u32, name: String, exec: bool) -> Option<InstanceChange> {
        self.thread_names.insert(tid, name);
        if exec {
            self.end(pid)
        } else {
            None
        }
    }

    pub fn fork(&mut self, pid: u32, ppid: u32, tid: u32, ptid: u32) -> Option<InstanceChange> {
        if let Some(name) = self.thread_names.get(&ptid).cloned() {
            self.thread_names.insert(tid, name);
        }
        if pid != ppid {
            // A new process: a PID known from before belonged to one whose exit was not seen.
            self.end(pid)
        } else {
            None
        }
    }

    pub fn exit(&mut self, pid: u32, tid: u32) -> Option<InstanceChange> {
        self.thread_names.remove(&tid);
        if pid == tid {
            self.end(pid)
        } else {
            None
        }
    }

    /// The name of a thread: from its COMM record or its parent's, else read from /proc (threads
    /// that existed before sampling started).
    pub fn thread_name(&mut self, pid: u32, tid: u32) -> String {
        self.thread_names
            .entry(tid)
            .or_insert_with(|| read_comm(pid, tid))
            .clone()
    }
}

fn read_comm(pid: u32, tid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
        .map(|name| name.trim_end_matches('\n').to_owned())
        // Exited before its first sample was read.
        .unwrap_or_else(|_| format!("[{tid}]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: u32, instance: u32) -> ProcessKey {
        ProcessKey { pid, instance }
    }

    /// An instance starts at the first sample, ends at exec or at the leader's exit, and the next
    /// sample starts another; a thread's exit ends nothing.
    #[test]
    fn instances_follow_exec_and_exit() {
        let mut tasks = Tasks::default();
        assert_eq!(
            tasks.instance(10),
            (key(10, 1), Some(InstanceChange::Started(key(10, 1))))
        );
        assert_eq!(tasks.instance(10), (key(10, 1), None));
        assert_eq!(tasks.exit(10, 11), None);
        assert_eq!(
            tasks.comm(10, 10, "new".into(), true),
            Some(InstanceChange::Ended(key(10, 1)))
        );
        assert_eq!(tasks.instance(10).0, key(10, 2));
        assert_eq!(tasks.exit(10, 10), Some(InstanceChange::Ended(key(10, 2))));
        assert_eq!(tasks.instance(10).0, key(10, 3));
        // A fork creating process 10 again means the old one is gone.
        assert_eq!(
            tasks.fork(10, 1, 10, 1),
            Some(InstanceChange::Ended(key(10, 3)))
        );
    }

    /// Names come from COMM records, children inherit their parent's, renames replace them.
    #[test]
    fn thread_names() {
        let mut tasks = Tasks::default();
        tasks.comm(u32::MAX - 1, u32::MAX - 1, "burn".into(), true);
        tasks.fork(u32::MAX - 1, u32::MAX - 1, u32::MAX - 2, u32::MAX - 1);
        assert_eq!(tasks.thread_name(u32::MAX - 1, u32::MAX - 2), "burn");
        tasks.comm(u32::MAX - 1, u32::MAX - 2, "worker".into(), false);
        assert_eq!(tasks.thread_name(u32::MAX - 1, u32::MAX - 2), "worker");
        // Unknown and gone: a placeholder rather than an error.
        assert_eq!(
            tasks.thread_name(u32::MAX, u32::MAX),
            format!("[{}]", u32::MAX)
        );
    }
}
