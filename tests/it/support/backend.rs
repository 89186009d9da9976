//! The two capture backends, `record` command lines built for one of them, and [`both_backends!`],
//! which defines a test once and runs it on each.

use std::path::Path;

/// A capture backend, as `--backend` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Bpf,
    Perf,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Bpf => "bpf",
            Backend::Perf => "perf",
        }
    }

    /// An `emberprof record --backend NAME` command line to build on.
    pub fn record(self) -> RecordArgs {
        RecordArgs::new().args(&["--backend", self.name()])
    }
}

/// Defines an end-to-end test once and runs it on both capture backends, as ripgrep's `rgtest!`
/// runs each test once per regex engine: `NAME::bpf` and `NAME::perf`, each a `#[test]` that calls
/// the body with its [`Backend`]. Where a behaviour truly differs between the backends, the body
/// says so and branches on it.
///
/// ```ignore
/// both_backends! {
///     /// What the test checks.
///     fn some_check(backend) {
///         let args = backend.record().pid(pid).duration("2");
///         ...
///     }
/// }
/// ```
macro_rules! both_backends {
    ($(#[$meta:meta])* fn $name:ident($backend:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            fn check($backend: $crate::support::Backend) $body

            #[test]
            fn bpf() {
                check($crate::support::Backend::Bpf)
            }

            #[test]
            fn perf() {
                check($crate::support::Backend::Perf)
            }
        }
    };
}
pub(crate) use both_backends;

/// An `emberprof record` command line, built up option by option.
#[derive(Clone, Debug)]
pub struct RecordArgs {
    args: Vec<String>,
}

impl RecordArgs {
    /// `record`, with the backend emberprof picks by itself.
    pub fn new() -> RecordArgs {
        RecordArgs {
            args: vec!["record".to_owned()],
        }
    }

    /// Any other options, as they are.
    pub fn args(mut self, args: &[&str]) -> RecordArgs {
        self.args.extend(args.iter().map(|a| (*a).to_owned()));
        self
    }

    /// `-p PID`.
    pub fn pid(self, pid: u32) -> RecordArgs {
        self.args(&["-p", &pid.to_string()])
    }

    /// `-d SECONDS`.
    pub fn duration(self, seconds: &str) -> RecordArgs {
        self.args(&["-d", seconds])
    }

    /// `-F HZ`.
    pub fn frequency(self, hz: u64) -> RecordArgs {
        self.args(&["-F", &hz.to_string()])
    }

    /// `--unwind MODE`.
    pub fn unwind(self, mode: &str) -> RecordArgs {
        self.args(&["--unwind", mode])
    }

    /// `-o PATH`.
    pub fn output(self, path: &Path) -> RecordArgs {
        self.args(&["-o", super::path_arg(path)])
    }

    /// `-o -`: folded stacks on the standard output.
    pub fn output_stdout(self) -> RecordArgs {
        self.args(&["-o", "-"])
    }

    /// `-- COMMAND...`: launch mode.
    pub fn command(self, command: &[&str]) -> RecordArgs {
        self.args(&["--"]).args(command)
    }

    /// The arguments, for [`emberprof`](super::emberprof)`().args(..)` and the runners.
    pub fn strs(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
}
