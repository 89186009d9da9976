//! What the perf backend knows about the sampled tasks, built from the side-band records: thread
//! names (perf samples carry none), and which program instance each process runs — the
//! [`ProcessKey`] the symbolizer's snapshots are keyed by. An exec or the exit of a process ends
//! its instance; the next sample of that PID starts a new one.

use std::collections::HashMap;

use emberprof_symbolizer::ProcessKey;

#[derive(Debug, Default)]
pub struct Tasks {
    thread_names: HashMap<u32, TimedName>,
    /// Current instance of each process seen.
    instances: HashMap<u32, u32>,
    next_instance: u32,
}

/// A thread's name and the time of the record it came from, so that an older record never replaces
/// a newer name. Records reach the task table in time order (see `order`) as far as its margin for
/// records still being written reaches; should a thread's FORK come later than that, after the
/// rename and samples the thread made on another CPU, it still does not take the newer name back.
#[derive(Debug)]
struct TimedName {
    name: String,
    since: u64,
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

    pub fn comm(
        &mut self,
        pid: u32,
        tid: u32,
        name: String,
        exec: bool,
        time: u64,
    ) -> Option<InstanceChange> {
        self.name_thread(tid, name, time);
        if exec {
            self.end(pid)
        } else {
            None
        }
    }

    pub fn fork(
        &mut self,
        pid: u32,
        ppid: u32,
        tid: u32,
        ptid: u32,
        time: u64,
    ) -> Option<InstanceChange> {
        if let Some(parent) = self.thread_names.get(&ptid) {
            let name = parent.name.clone();
            self.name_thread(tid, name, time);
        }
        if pid != ppid {
            // A new process: a PID known from before belonged to one whose exit was not seen.
            self.end(pid)
        } else {
            None
        }
    }

    pub fn exit(&mut self, pid: u32, tid: u32, time: u64) -> Option<InstanceChange> {
        // Not the name of a newer thread that got the same TID.
        if self
            .thread_names
            .get(&tid)
            .is_some_and(|named| named.since <= time)
        {
            self.thread_names.remove(&tid);
        }
        if pid == tid {
            self.end(pid)
        } else {
            None
        }
    }

    /// The name of a thread at `time`: from its COMM record or its parent's, else read from /proc
    /// (threads that existed before sampling started), as of `time` since a later rename can
    /// still replace it.
    pub fn thread_name(&mut self, pid: u32, tid: u32, time: u64) -> String {
        self.thread_names
            .entry(tid)
            .or_insert_with(|| TimedName {
                name: read_comm(pid, tid),
                since: time,
            })
            .name
            .clone()
    }

    /// Names `tid` unless a record newer than `time` already has.
    fn name_thread(&mut self, tid: u32, name: String, since: u64) {
        let newer = self
            .thread_names
            .get(&tid)
            .is_some_and(|named| named.since > since);
        if !newer {
            self.thread_names.insert(tid, TimedName { name, since });
        }
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
        assert_eq!(tasks.exit(10, 11, 1), None);
        assert_eq!(
            tasks.comm(10, 10, "new".into(), true, 2),
            Some(InstanceChange::Ended(key(10, 1)))
        );
        assert_eq!(tasks.instance(10).0, key(10, 2));
        assert_eq!(
            tasks.exit(10, 10, 3),
            Some(InstanceChange::Ended(key(10, 2)))
        );
        assert_eq!(tasks.instance(10).0, key(10, 3));
        // A fork creating process 10 again means the old one is gone.
        assert_eq!(
            tasks.fork(10, 1, 10, 1, 4),
            Some(InstanceChange::Ended(key(10, 3)))
        );
    }

    const PID: u32 = u32::MAX - 1;
    const TID: u32 = u32::MAX - 2;

    /// Names come from COMM records, children inherit their parent's, renames replace them.
    #[test]
    fn thread_names() {
        let mut tasks = Tasks::default();
        tasks.comm(PID, PID, "burn".into(), true, 10);
        tasks.fork(PID, PID, TID, PID, 20);
        assert_eq!(tasks.thread_name(PID, TID, 25), "burn");
        tasks.comm(PID, TID, "worker".into(), false, 30);
        assert_eq!(tasks.thread_name(PID, TID, 35), "worker");
        // Unknown and gone: a placeholder rather than an error.
        assert_eq!(
            tasks.thread_name(u32::MAX, u32::MAX, 40),
            format!("[{}]", u32::MAX)
        );
    }

    /// A thread's FORK read after its rename (they were written to different CPUs' rings) and an
    /// exit of an older thread with the same TID read late leave the newest name in place.
    #[test]
    fn an_older_record_read_late_keeps_the_newer_name() {
        let mut tasks = Tasks::default();
        tasks.comm(PID, PID, "waits".into(), true, 10);
        tasks.comm(PID, TID, "holder".into(), false, 30);
        assert_eq!(tasks.thread_name(PID, TID, 40), "holder");
        tasks.fork(PID, PID, TID, PID, 20);
        assert_eq!(tasks.thread_name(PID, TID, 50), "holder");
        tasks.exit(PID, TID, 15);
        assert_eq!(tasks.thread_name(PID, TID, 60), "holder");
        // Its own exit does end the name.
        tasks.exit(PID, TID, 70);
        assert_eq!(tasks.thread_name(PID, TID, 80), format!("[{TID}]"));
    }
}
