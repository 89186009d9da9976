//! A process's CPython interpreter, kept with its other runtimes (see `runtimes`): found at each
//! snapshot until found (a program may load libpython late), then kept, with the reader that names
//! its code objects for as long as the instance is not released. The reader holds `/proc/PID/mem`
//! open from the moment the runtime is found, so frames of a process that exited are still named
//! from what it cached (and read while the process lived).

use std::time::{Duration, Instant};

use crate::frame::{Frame, FrameKind};
use crate::modules::ModuleTable;
use crate::process::{Mapping, ProcessKey};
use crate::python::{self, CodeReader, CodeReaderStats, NotPython, PythonRuntime};
use crate::python_stack::{PythonStack, PythonStackFrame, RawPythonStack};

/// Whether a process runs CPython, as far as its snapshots tell.
#[derive(Default)]
pub(crate) enum ProcessPython {
    /// No CPython mapped (yet).
    #[default]
    NotFound,
    /// Boxed: hundreds of bytes, while most processes are not Python.
    Found(Box<Found>),
    /// CPython is mapped but cannot be read (an unsupported version, ...).
    Unsupported(NotPython),
    /// ... for a reason that may pass: a process caught while its interpreter starts up (its
    /// structures not written yet) is tried again, a few times.
    NotYet {
        reason: NotPython,
        attempts: u32,
        last: Instant,
    },
}

/// Tries of a process whose runtime could not be read for a reason that may pass, and the least
/// time between two.
const MAX_ATTEMPTS: u32 = 10;
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

pub(crate) struct Found {
    runtime: PythonRuntime,
    /// `None`: its memory could not be opened; frames stay `[python?]`.
    reader: Option<CodeReader>,
}

/// What a process's Python is, for the summary and the capture side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PythonStatus {
    NotPython,
    Found {
        version: (u8, u8),
    },
    /// Why its Python frames cannot be shown.
    Unsupported(String),
}

impl ProcessPython {
    /// The process was just snapshotted with these mappings: looks for its runtime if not found
    /// yet (or found unreadable for a reason that may pass, and due for another try). Returns
    /// whether it was found now.
    pub fn snapshotted(
        &mut self,
        key: ProcessKey,
        mappings: &[Mapping],
        modules: &ModuleTable,
    ) -> bool {
        let attempts = match self {
            ProcessPython::NotFound => 0,
            ProcessPython::NotYet { attempts, last, .. }
                if *attempts < MAX_ATTEMPTS && last.elapsed() >= RETRY_INTERVAL =>
            {
                *attempts
            }
            _ => return false,
        };
        match python::find_runtime(key.pid, mappings, modules) {
            Ok(None) => false,
            Ok(Some(runtime)) => {
                let reader = match CodeReader::new(key.pid, &runtime) {
                    Ok(reader) => Some(reader),
                    Err(error) => {
                        log::debug!(
                            "process {}: cannot read its Python code objects: {error}",
                            key.pid
                        );
                        None
                    }
                };
                log::debug!(
                    "process {} instance {}: CPython {}.{}, _PyRuntime at {:#x}",
                    key.pid,
                    key.instance,
                    runtime.version.0,
                    runtime.version.1,
                    runtime.runtime_address
                );
                *self = ProcessPython::Found(Box::new(Found { runtime, reader }));
                true
            }
            Err(reason) => {
                log::debug!(
                    "process {}: no Python frames (try {}): {reason}",
                    key.pid,
                    attempts + 1
                );
                *self = match reason {
                    NotPython::Unreadable { .. } | NotPython::LayoutMismatch { .. } => {
                        ProcessPython::NotYet {
                            reason,
                            attempts: attempts + 1,
                            last: Instant::now(),
                        }
                    }
                    _ => ProcessPython::Unsupported(reason),
                };
                false
            }
        }
    }

    /// Whether [`ProcessPython::snapshotted`] would look again now.
    pub fn retry_due(&self) -> bool {
        matches!(self, ProcessPython::NotYet { attempts, last, .. }
            if *attempts < MAX_ATTEMPTS && last.elapsed() >= RETRY_INTERVAL)
    }

    pub fn runtime(&self) -> Option<&PythonRuntime> {
        match self {
            ProcessPython::Found(found) => Some(&found.runtime),
            _ => None,
        }
    }

    pub fn status(&self) -> PythonStatus {
        match self {
            ProcessPython::NotFound => PythonStatus::NotPython,
            ProcessPython::Found(found) => PythonStatus::Found {
                version: found.runtime.version,
            },
            ProcessPython::Unsupported(reason) | ProcessPython::NotYet { reason, .. } => {
                PythonStatus::Unsupported(reason.to_string())
            }
        }
    }

    /// Names the frames of `raw` (innermost first, as walked).
    pub fn name(&mut self, raw: &RawPythonStack) -> PythonStack {
        let reader = match self {
            ProcessPython::Found(found) => found.reader.as_mut(),
            _ => None,
        };
        let mut frames = Vec::with_capacity(raw.frames.len());
        let mut reader = reader;
        for frame in &raw.frames {
            let named = match reader.as_deref_mut() {
                Some(reader) => reader.frame(frame.code, frame.instruction, frame.check),
                None => python::PythonFrame::unknown(),
            };
            frames.push(PythonStackFrame {
                frame: to_frame(named),
                entry: frame.entry,
            });
        }
        PythonStack {
            frames,
            truncated: raw.truncated,
        }
    }

    /// What its reader did (nothing if it has none).
    pub fn stats(&self) -> CodeReaderStats {
        match self {
            ProcessPython::Found(found) => found
                .reader
                .as_ref()
                .map_or_else(CodeReaderStats::default, CodeReader::stats),
            _ => CodeReaderStats::default(),
        }
    }

    /// Code objects cached, for the debug log.
    pub fn cached(&self) -> usize {
        match self {
            ProcessPython::Found(found) => found.reader.as_ref().map_or(0, |r| r.cache_size().0),
            _ => 0,
        }
    }
}

fn to_frame(frame: python::PythonFrame) -> Frame {
    let python::PythonFrame {
        qualname,
        filename,
        line,
    } = frame;
    Frame {
        name: qualname,
        kind: FrameKind::User,
        system_name: None,
        file: (!filename.is_empty()).then_some(filename),
        line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn not_yet(attempts: u32, ago: Duration) -> ProcessPython {
        ProcessPython::NotYet {
            reason: NotPython::Unreadable {
                module: "libpython3.8.so.1.0".into(),
                what: "the interpreter",
            },
            attempts,
            last: Instant::now() - ago,
        }
    }

    /// A runtime unreadable for a reason that may pass is tried again, not at once, and not
    /// forever; one refused for good (an unsupported version) is not; both tell the summary why.
    #[test]
    fn unreadable_runtimes_are_retried_a_few_times() {
        assert!(not_yet(1, RETRY_INTERVAL).retry_due());
        assert!(!not_yet(1, Duration::ZERO).retry_due());
        assert!(!not_yet(MAX_ATTEMPTS, RETRY_INTERVAL).retry_due());
        let refused = ProcessPython::Unsupported(NotPython::UnsupportedVersion { version: (3, 7) });
        assert!(!refused.retry_due());
        assert!(!ProcessPython::NotFound.retry_due());
        assert_eq!(
            refused.status(),
            PythonStatus::Unsupported("CPython 3.7 is not supported (3.8 to 3.13 are)".into())
        );
        assert!(matches!(
            not_yet(1, Duration::ZERO).status(),
            PythonStatus::Unsupported(reason) if reason.contains("cannot read the interpreter")
        ));
    }
}
