//! Which sampled processes run CPython and how many of their samples got Python frames, for the
//! summary: a user who sees only `_PyEval_EvalFrameDefault` must learn why (an unsupported version,
//! the perf backend, threads that were not running Python code).

use std::collections::BTreeMap;
use std::sync::Arc;

use emberprof_symbolizer::{CodeReaderStats, ProcessKey, PythonStatus};

use super::backend::Backend;

/// Most Python processes listed one by one; past it they are only counted (a fork-heavy run of
/// short Python scripts must not grow the summary without bound).
const MAX_LISTED: usize = 1000;
/// Processes named in the summary line without `-v`.
const SHOWN: usize = 4;

/// One Python process as the capture saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PythonProcessReport {
    /// The process's name at its first sample.
    pub name: Option<Arc<str>>,
    pub status: PythonStatus,
    pub samples: u64,
    /// Samples that had Python frames.
    pub with_frames: u64,
}

#[derive(Clone, Debug, Default)]
pub struct PythonReport {
    pub processes: BTreeMap<ProcessKey, PythonProcessReport>,
    /// Python processes past [`MAX_LISTED`].
    pub unlisted: u64,
    /// What the readers of code objects did, every process together (set when the capture ends).
    pub code: CodeReaderStats,
}

impl PythonReport {
    /// The status of `process` is known (found, or refused with a reason).
    pub fn status(&mut self, process: ProcessKey, status: PythonStatus) {
        if status == PythonStatus::NotPython {
            return;
        }
        if let Some(report) = self.processes.get_mut(&process) {
            report.status = status;
            return;
        }
        if self.processes.len() >= MAX_LISTED {
            self.unlisted += 1;
            return;
        }
        self.processes.insert(
            process,
            PythonProcessReport {
                name: None,
                status,
                samples: 0,
                with_frames: 0,
            },
        );
    }

    /// Whether `process` has a status other than "not Python" already.
    pub fn knows(&self, process: ProcessKey) -> bool {
        self.processes.contains_key(&process)
    }

    /// `count` samples of `process`, with Python frames or not.
    pub fn samples(&mut self, process: ProcessKey, name: &Arc<str>, count: u64, with_frames: bool) {
        if let Some(report) = self.processes.get_mut(&process) {
            report.name.get_or_insert_with(|| name.clone());
            report.samples += count;
            if with_frames {
                report.with_frames += count;
            }
        }
    }

    /// The summary's lines: one on stderr whenever a Python process was sampled, the rest for `-v`.
    pub fn lines(&self, backend: Backend) -> (Option<String>, Vec<String>) {
        if self.processes.is_empty() && self.unlisted == 0 {
            return (None, Vec::new());
        }
        let describe = |key: &ProcessKey, report: &PythonProcessReport| {
            let what = match &report.status {
                PythonStatus::Found { version } if !matches!(backend, Backend::Bpf) => format!(
                    "CPython {}.{}, no Python frames: they need the BPF backend (run as root)",
                    version.0, version.1
                ),
                PythonStatus::Found { version } => format!(
                    "CPython {}.{}, {} of {} samples with Python frames",
                    version.0, version.1, report.with_frames, report.samples
                ),
                PythonStatus::Unsupported(reason) => format!("no Python frames: {reason}"),
                PythonStatus::NotPython => String::new(),
            };
            let name = report.name.as_deref().unwrap_or("?");
            format!("{name} (pid {}): {what}", key.pid)
        };
        // An instance that was never sampled (its PID sampled under another instance) says nothing.
        let all: Vec<String> = self
            .processes
            .iter()
            .filter(|(_, report)| report.samples > 0)
            .map(|(key, report)| describe(key, report))
            .collect();
        if all.is_empty() && self.unlisted == 0 {
            return (None, Vec::new());
        }
        let mut line = format!(
            "emberprof: Python processes: {}",
            all.iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        );
        let more = all.len().saturating_sub(SHOWN) as u64 + self.unlisted;
        if more > 0 {
            line.push_str(&format!("; and {more} more (-v lists them)"));
        }
        let mut verbose: Vec<String> = all.into_iter().skip(SHOWN).collect();
        if self.unlisted > 0 {
            verbose.push(format!(
                "{} more Python processes not listed",
                self.unlisted
            ));
        }
        verbose.extend(code_reader_line(&self.code));
        (Some(line), verbose)
    }
}

/// What the code-object readers did, for `-v`: above all why frames stayed `[python?]`. Counted
/// per frame named, and a stack is named once however many samples it has.
fn code_reader_line(stats: &CodeReaderStats) -> Option<String> {
    let unknown = stats.unknown_frames();
    if stats.reads == 0 && stats.hits == 0 && unknown == 0 {
        return None;
    }
    let mut line = format!(
        "Python code objects: {} read, {} frames named from the cache",
        stats.reads, stats.hits
    );
    if unknown > 0 {
        let reasons = [
            (
                stats.replaced,
                "whose code object was freed and its address taken by another before it was read",
            ),
            (
                stats.unreadable,
                "unreadable (the process had exited, or the address was not mapped)",
            ),
            (stats.not_code, "not pointing at a code object"),
            (stats.bad_string, "with a name that is not a string"),
        ];
        let reasons: Vec<String> = reasons
            .iter()
            .filter(|(count, _)| *count > 0)
            .map(|(count, why)| format!("{count} {why}"))
            .collect();
        line.push_str(&format!(
            "; {unknown} frames left [python?]: {}",
            reasons.join(", ")
        ));
    }
    if stats.no_line_table > 0 {
        line.push_str(&format!(
            "; {} without line numbers (line table too long or unreadable)",
            stats.no_line_table
        ));
    }
    if stats.uncached > 0 || stats.resets > 0 {
        line.push_str(&format!(
            "; {} named but not cached (every reader's cache together full), caches emptied {} \
             times",
            stats.uncached, stats.resets
        ));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found processes report their share of samples with Python frames, refused ones why; the
    /// perf backend says Python frames need BPF.
    #[test]
    fn lines_say_which_processes_have_python_frames_and_why_not() {
        let mut report = PythonReport::default();
        let key = |pid| ProcessKey { pid, instance: 1 };
        let name: Arc<str> = Arc::from("python3");
        report.status(key(7), PythonStatus::Found { version: (3, 11) });
        report.status(
            key(8),
            PythonStatus::Unsupported("CPython 3.7 is not supported".into()),
        );
        report.status(key(9), PythonStatus::NotPython);
        report.samples(key(7), &name, 90, true);
        report.samples(key(7), &name, 10, false);
        report.samples(key(8), &name, 5, false);
        report.samples(key(9), &name, 5, false);
        let (line, verbose) = report.lines(Backend::Bpf);
        assert_eq!(
            line.as_deref(),
            Some(
                "emberprof: Python processes: python3 (pid 7): CPython 3.11, 90 of 100 samples \
                 with Python frames; python3 (pid 8): no Python frames: CPython 3.7 is not supported"
            )
        );
        assert!(verbose.is_empty());
        let (line, _) = report.lines(Backend::Perf { kernel: false });
        assert!(line.unwrap().contains("they need the BPF backend"));
        report.code = CodeReaderStats {
            reads: 40,
            hits: 300,
            replaced: 7,
            unreadable: 2,
            ..CodeReaderStats::default()
        };
        let (_, verbose) = report.lines(Backend::Bpf);
        assert_eq!(
            verbose,
            [
                "Python code objects: 40 read, 300 frames named from the cache; 9 frames left \
              [python?]: 7 whose code object was freed and its address taken by another before it \
              was read, 2 unreadable (the process had exited, or the address was not mapped)"
            ]
        );
        assert_eq!(
            PythonReport::default().lines(Backend::Bpf),
            (None, Vec::new())
        );
    }
}
