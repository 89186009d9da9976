//! The command line. Clap types stay in this module: `into_options` validates them and converts them
//! into the plain [`RecordOptions`] the rest of the program uses.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// Bytes of user stack copied per sample unless --stack-size says otherwise: most programs' stacks
/// fit, at ~7 µs a copy (see docs/performance.md).
const DEFAULT_STACK_COPY_BYTES: u32 = 16384;

use anyhow::{bail, Result};
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use crate::capture::backend::BackendChoice;
use crate::capture::bpf::{
    online_cpu_count, ring_buffer_bytes as default_ring_buffer_bytes, MapSizes,
};
use crate::capture::{RunAs, SampledEvent, Target, UnwindMode};
pub use crate::cli_views::{DiffArgs, FormatArg, RenderArgs, ReportArgs};
use crate::record::RecordOptions;
use emberprof_symbolizer::{NameStyle, SymbolizerOptions};

const RECORD_EXAMPLES: &str = "\
EXAMPLES:
  emberprof record -o flame.svg -- cargo bench
      No sudo: a command you launch (and its children), or -p with your own processes, runs on
      the perf_event backend when BPF is not allowed.
  sudo emberprof record --pid 1234 --duration 10 -o flame.svg
      All threads of process 1234 for 10 seconds, as a flame graph.
  sudo emberprof record --all -d 5 -o system.folded
      Every process on every CPU for 5 seconds, as folded stacks.
  sudo emberprof record -o out.svg -- ./my-program arg1 arg2
      Launch a command and profile it (and its children) until it exits; under sudo it runs as
      the user who ran sudo (--run-as-root keeps root).
  sudo emberprof record -p 1234,5678 -F 999 -o - | grep main
      Folded stacks of two processes to stdout, at 999 samples per second.
  sudo emberprof record -a -d 10 -o sys.svg -o sys.pb.gz
      One capture, two outputs: a flame graph and a pprof profile (see `emberprof report`).
  sudo emberprof record --off-cpu -p 1234 -d 10 -o wall.svg
      Wall-clock profile: time on a CPU and time waiting (locks, I/O, sleeps) in one graph,
      waiting under `[off-cpu]` frames; counts are microseconds.

Folded output is one line per distinct stack, `process;outermost;...;leaf COUNT`, kernel frames
suffixed `_[k]`, `[truncated]` under the process when the user stack does not reach its entry: it
feeds flamegraph.pl, inferno-flamegraph and speedscope. COUNT is samples, or microseconds with
--off-cpu (off-CPU stacks end in `[off-cpu]`).";

const TOP_EXAMPLES: &str = "\
EXAMPLES:
  emberprof record -o flame.svg -- ./my-program arg1     profile a command you launch (no sudo)
  sudo emberprof record -p 1234 -d 10 -o flame.svg       a running process for 10 seconds
  sudo emberprof record -a -d 5 -o system.svg            the whole machine for 5 seconds
  emberprof report app.pb.gz -o app.svg                  a saved profile, rendered again
  emberprof diff before.pb.gz after.pb.gz -o diff.svg    what grew (red) and shrank (blue)

`emberprof help record` (or `record --help`) lists every option with its default.
`emberprof generate man` prints the manual page; `generate bash` (zsh, fish...) completions.";

const GENERATE_EXAMPLES: &str = "\
EXAMPLES:
  emberprof generate man | man -l -
      Read the manual page without installing it.
  emberprof generate man > /usr/local/share/man/man1/emberprof.1
      Install it, so that `man emberprof` finds it.
  emberprof generate bash > /etc/bash_completion.d/emberprof
      Install bash completions (for one user: ~/.local/share/bash-completion/completions/emberprof).
  emberprof generate zsh > ~/.zfunc/_emberprof
      zsh completions, into a directory on $fpath.
  emberprof generate fish > ~/.config/fish/completions/emberprof.fish
      fish completions.";

/// A sampling profiler for Linux on eBPF: full stacks, real function names, flame graphs.
///
/// emberprof samples the stacks of a command it launches, of running processes, or of the whole
/// machine, names every frame it can (DWARF, symbol tables, debug packages, JIT perf maps, the
/// kernel), and writes a flame graph, folded stacks or a pprof profile in one step. Without root it
/// profiles your own processes and the commands it launches through perf_event; with root (or
/// CAP_BPF and CAP_PERFMON) it counts stacks in the kernel with BPF.
#[derive(Debug, Parser)]
#[command(name = "emberprof", version, propagate_version = true, after_help = TOP_EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub verbosity: Verbosity,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Verbosity {
    /// More log output on stderr (-v: info, -vv: debug).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    /// Only errors on stderr: no status line, no summary.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

// Parsed once per run and matched at once: the size of the record variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Sample stacks of processes, a command or the whole system, and write a flame graph.
    #[command(after_help = RECORD_EXAMPLES)]
    Record(RecordArgs),
    /// Render a saved profile (pprof or folded stacks) again, in any format; needs no root.
    #[command(after_help = crate::cli_views::REPORT_EXAMPLES)]
    Report(ReportArgs),
    /// Compare two profiles: a differential flame graph (red grew, blue shrank) or diff-folded text.
    #[command(after_help = crate::cli_views::DIFF_EXAMPLES)]
    Diff(DiffArgs),
    /// Print the man page or shell completions, made from these very options, to stdout.
    #[command(after_help = GENERATE_EXAMPLES)]
    Generate(GenerateArgs),
}

#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to print.
    #[arg(value_enum)]
    pub kind: GenerateKind,
}

/// What `generate` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GenerateKind {
    /// The man page, emberprof(1), in roff: `emberprof generate man | man -l -`.
    Man,
    /// Completions for bash.
    Bash,
    /// Completions for zsh.
    Zsh,
    /// Completions for fish.
    Fish,
    /// Completions for elvish.
    Elvish,
    /// Completions for PowerShell.
    Powershell,
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).multiple(false).args(["pid", "all", "command"])))]
pub struct RecordArgs {
    /// Profile these processes (every thread of each, and the processes they fork), e.g. -p 1234,5678.
    /// A thread ID is refused with the ID of its process, which is what to pass instead.
    #[arg(short, long, value_name = "PID[,PID..]", value_delimiter = ',', num_args = 1..)]
    pub pid: Vec<u32>,

    /// Profile every process on every CPU, kernel threads included.
    #[arg(short, long)]
    pub all: bool,

    /// Launch COMMAND and profile it, and the processes it forks, from its first instruction until it
    /// exits. emberprof then exits with the command's exit status.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,

    /// Run COMMAND as this user: their user ID, primary and supplementary groups, and HOME, USER,
    /// LOGNAME and SHELL from the passwd database. Without it, under sudo, COMMAND runs as the user
    /// who ran sudo (SUDO_UID); run as root without sudo, it runs as root.
    #[arg(long, value_name = "NAME", conflicts_with = "run_as_root")]
    pub user: Option<String>,

    /// Under sudo, run COMMAND as root (with root's environment) instead of as the user who ran sudo.
    #[arg(long)]
    pub run_as_root: bool,

    /// Stop after this many seconds (fractions allowed, e.g. 0.5). Without it, run until Ctrl-C or until the
    /// target processes or the command have exited. A launched command still running at the end
    /// is sent SIGTERM, as timeout(1) does.
    // Negative numbers are accepted as values so that `-d -1` gets the same clear error as `-d 0`.
    #[arg(short, long, value_name = "SECS", allow_negative_numbers = true)]
    pub duration: Option<f64>,

    /// Samples per second on each CPU, on the software cpu-clock event. An odd rate such as 99
    /// avoids sampling in lockstep with periodic work.
    #[arg(short = 'F', long, value_name = "HZ", default_value_t = 99)]
    pub frequency: u64,

    /// Where to write the result (default flamegraph.svg); give it several times for several
    /// outputs of one capture. `-` writes folded stacks to stdout. The format follows the extension
    /// (.svg: flame graph; .folded or .txt: folded stacks; .pb.gz or .pprof: pprof) unless --format
    /// says otherwise. A file is replaced only when complete; an existing device or FIFO
    /// (-o /dev/null) is written through; an existing symbolic link is refused.
    #[arg(short, long, value_name = "FILE")]
    pub output: Vec<PathBuf>,

    /// Wall-clock profile: also count the time threads spend switched out (waiting on a lock, a
    /// pipe, a disk, a sleep), each interval drawn on the stack it blocked in with an `[off-cpu]`
    /// leaf. Counts are then microseconds, on-CPU samples weighted by their period, so each thread
    /// is as wide as its wall-clock time (folded output too); pprof gets `cpu` and `off_cpu`
    /// sample types. The BPF backend takes the stack at each switch-out; so does the perf backend
    /// with kernel access (root, CAP_PERFMON, or kernel.perf_event_paranoid <= 1: a
    /// context-switches event), which otherwise charges each interval to the thread's last on-CPU
    /// sample (the summary says which).
    #[arg(long)]
    pub off_cpu: bool,

    /// With --off-cpu: shorter intervals switched out are not counted (a number of microseconds,
    /// or with a unit: 500ns, 20us, 1ms).
    #[arg(
        long,
        value_name = "DURATION",
        default_value = "5us",
        requires = "off_cpu"
    )]
    pub off_cpu_min: String,

    /// With --off-cpu on the BPF backend: follow one switch-out in N, chosen at random, and count
    /// its time N times (1: every switch-out). Default: adaptive, N is set a few times a second
    /// from the switch-out rate, so that at most about 500 switch-outs a second per CPU are
    /// followed (N stays 1 below that): programs that switch hundreds of thousands of times a
    /// second are slowed by a few percent, not several times (see the README). The summary says
    /// when it sampled; rare long waits may then be missed or over-counted. On the perf backend
    /// with kernel access: take the stacks of one switch-out in N, each interval between going to
    /// the last stacks taken (default: the kernel's adaptive period, 1 below ~50,000 switch-outs a
    /// second per thread).
    #[arg(long, value_name = "N", requires = "off_cpu")]
    pub off_cpu_sample: Option<u32>,

    /// Output format, overriding the one implied by the --output extension (one output only).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// How user stacks are unwound. `fp`: the kernel walks frame pointers (cheapest, but code
    /// built without them, such as Debian's libc and most -O2 C/C++, loses callers). `dwarf`: the
    /// top of every user stack (--stack-size bytes) is copied and unwound with the modules'
    /// .eh_frame/.debug_frame CFI. `auto`: copied only where code is frameless, judged per module
    /// from its CFI: every sample of a process whose main executable is frameless, and samples
    /// whose instruction is in a frameless library; the rest takes the frame-pointer path.
    #[arg(long, value_enum, default_value_t = UnwindArg::Auto)]
    pub unwind: UnwindArg,

    /// Bytes of user stack copied per sample for DWARF unwinding (64 to 65536). Deeper stacks are
    /// cut at that point; the summary counts them. Default: 16384, doubled (up to 65536) for a
    /// process whose stacks end at the edge of its copy (frames bigger than the copy); a size
    /// given here is used as is.
    #[arg(long, value_name = "BYTES")]
    pub stack_size: Option<u32>,

    /// Leave user-space frames out (kernel stacks only).
    #[arg(long, conflicts_with = "no_kernel")]
    pub no_user: bool,

    /// Keep C++ names whole: return type, parameter list and `[clone ..]` suffixes. By default a
    /// frame is the qualified name with template arguments (`ns::Class<int>::method<true>`), so
    /// overloads and compiler clones of one function share a frame.
    #[arg(long)]
    pub full_names: bool,

    /// Do not follow processes forked by the targets (with --pid or a COMMAND).
    #[arg(long, conflicts_with = "all")]
    pub no_inherit: bool,

    #[command(flatten)]
    pub render: RenderArgs,

    /// Most bytes read from one process's JIT perf map (`/tmp/perf-PID.map`, written by the profiled
    /// process). Past it the map is not read (its later functions are unnamed), with a warning.
    #[arg(long, value_name = "BYTES", default_value_t = SymbolizerOptions::default().max_perf_map_bytes, help_heading = "Advanced")]
    pub max_perf_map_size: u64,

    /// Most bytes read from all JIT perf maps together (at most 2 Mi functions kept in all). Past
    /// it the least recently used map is dropped, with a warning: its functions are unnamed.
    #[arg(long, value_name = "BYTES", default_value_t = SymbolizerOptions::default().max_perf_maps_total_bytes, help_heading = "Advanced")]
    pub max_perf_maps_size: u64,

    /// Most file descriptors held for the profiled processes' modules (each executable or library
    /// and its debug file, twice: emberprof's handle and the symbol reader's). Past it the least
    /// recently used module is closed and opened again when a sample lands in it (unnamed, and
    /// said so, if no live process maps it any more). Default: half the open-file limit, which
    /// record raises to its hard limit.
    #[arg(long, value_name = "N", help_heading = "Advanced")]
    pub max_module_fds: Option<usize>,

    /// Most bytes of symbols and debug info kept parsed at once, each module counted as the size of
    /// its executable or library and debug file, or the heap its parse keeps when that is more (the
    /// parsed state of real programs is a sixth of their files or less). Past it the least recently
    /// used module's is dropped and parsed again when a sample lands in it: costs CPU, never names.
    /// A module whose parse alone takes more is named from its symbol tables from then on; one
    /// whose parse grew well past its first round's is parsed anew (keeping what recent samples
    /// need, not every unit ever named).
    #[arg(long, value_name = "BYTES", default_value_t = SymbolizerOptions::default().max_parsed_bytes, help_heading = "Advanced")]
    pub max_parsed_size: u64,

    /// Most bytes (estimated) the profile holds while recording: its distinct stacks, samples,
    /// locations and names. Past it, new stacks are cut where they leave what the profile holds
    /// (ending in an `[over budget]` frame) and new samples merge with held ones, their time kept:
    /// widths stay right, detail below the cut is lost, and the summary says how many samples.
    #[arg(long, value_name = "BYTES", default_value_t = crate::profile::policy::MAX_PROFILE_BYTES, help_heading = "Advanced")]
    pub max_profile_size: u64,

    /// Entries of the kernel's stack map (distinct kernel and user stacks). When it is full, further
    /// new stacks are streamed to emberprof one sample at a time instead: nothing is lost, but each
    /// such sample costs more.
    #[arg(long, value_name = "N", default_value_t = MapSizes::default().stacks, help_heading = "Advanced")]
    pub stack_map_entries: u32,

    /// Entries of the kernel's count map (distinct thread + stack pairs); beyond it, samples are
    /// streamed as with --stack-map-entries.
    #[arg(long, value_name = "N", default_value_t = MapSizes::default().counts, help_heading = "Advanced")]
    pub count_map_entries: u32,

    /// Bytes of the ring buffer that carries streamed samples, stack copies and notices (a power of
    /// two, at least a page). For tests of what happens when it overflows.
    #[arg(long, value_name = "BYTES", hide = true)]
    pub ring_buffer_bytes: Option<u32>,

    /// Capture backend. `bpf`: BPF programs count stacks in the kernel (needs root, or CAP_BPF and
    /// CAP_PERFMON). `perf`: perf_event ring buffers read by emberprof, which needs no privileges
    /// for your own processes and the commands emberprof launches (kernel.perf_event_paranoid 2 or
    /// lower; kernel frames need 1 or lower, or root). `auto`: BPF when the privileges are there,
    /// perf otherwise.
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    pub backend: BackendArg,

    /// Event that triggers a sample. `cpu-clock` and `task-clock` are timers that work everywhere;
    /// the others count hardware events and need a PMU (most virtual machines have none).
    #[arg(short, long, value_enum, default_value_t = EventArg::CpuClock)]
    pub event: EventArg,

    /// Size of each CPU's ring buffer with the perf backend, in pages (a power of two). Samples
    /// carry stack copies (--stack-size each): a buffer that fills faster than emberprof empties
    /// it loses samples, which the summary counts. Default: 512 as root; otherwise what
    /// kernel.perf_event_mlock_kb lets a user lock per CPU (128 with the kernel's default).
    #[arg(long, value_name = "PAGES", help_heading = "Advanced")]
    pub mmap_pages: Option<usize>,

    /// BTF of the running kernel, for kernels built without /sys/kernel/btf/vmlinux (e.g. a file
    /// from BTFHub).
    #[arg(long, value_name = "FILE", help_heading = "Advanced")]
    pub btf: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UnwindArg {
    /// Frame pointers, walked by the kernel.
    Fp,
    /// DWARF CFI on a copy of every user stack.
    Dwarf,
    /// DWARF where the code is frameless, frame pointers elsewhere.
    Auto,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendArg {
    /// BPF with the privileges for it, perf_event otherwise.
    Auto,
    /// BPF programs (root, or CAP_BPF and CAP_PERFMON).
    Bpf,
    /// perf_event ring buffers (no privileges for your own processes).
    Perf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EventArg {
    /// CPU time, by a timer on each CPU.
    CpuClock,
    /// CPU time of the task, by the scheduler's clock.
    TaskClock,
    /// CPU cycles (hardware PMU).
    Cycles,
    /// Retired instructions (hardware PMU).
    Instructions,
    /// Cache misses (hardware PMU).
    CacheMisses,
    /// Mispredicted branches (hardware PMU).
    BranchMisses,
}

impl RecordArgs {
    /// Validates the arguments and turns them into plain options.
    pub fn into_options(self, verbosity: &Verbosity) -> Result<RecordOptions> {
        let RecordArgs {
            pid,
            all,
            command,
            user,
            run_as_root,
            duration,
            frequency,
            output,
            format,
            unwind,
            stack_size,
            no_user,
            full_names,
            no_inherit,
            max_perf_map_size,
            max_perf_maps_size,
            max_module_fds,
            max_parsed_size,
            max_profile_size,
            render,
            stack_map_entries,
            count_map_entries,
            ring_buffer_bytes,
            backend,
            event,
            mmap_pages,
            btf,
            off_cpu,
            off_cpu_min,
            off_cpu_sample,
        } = self;
        if off_cpu_sample == Some(0) {
            bail!("--off-cpu-sample must be at least 1 (every switch-out)");
        }
        let off_cpu = off_cpu
            .then(|| parse_short_duration(&off_cpu_min))
            .transpose()?;
        if let Some(pages) = mmap_pages.filter(|pages| !pages.is_power_of_two()) {
            bail!("--mmap-pages must be a power of two, not {pages}");
        }
        let backend = match backend {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Bpf => BackendChoice::Bpf,
            BackendArg::Perf => BackendChoice::Perf,
        };
        let event = match event {
            EventArg::CpuClock => SampledEvent::CpuClock,
            EventArg::TaskClock => SampledEvent::TaskClock,
            EventArg::Cycles => SampledEvent::Cycles,
            EventArg::Instructions => SampledEvent::Instructions,
            EventArg::CacheMisses => SampledEvent::CacheMisses,
            EventArg::BranchMisses => SampledEvent::BranchMisses,
        };
        // Only the default grows: a size the user chose is what they measure or budget for.
        let grow_stack_copy = stack_size.is_none();
        let stack_size = stack_size.unwrap_or(DEFAULT_STACK_COPY_BYTES);
        if !(64..=emberprof_bpf::MAX_STACK_COPY as u32).contains(&stack_size) {
            bail!(
                "--stack-size must be between 64 and {} bytes, not {stack_size}",
                emberprof_bpf::MAX_STACK_COPY
            );
        }
        let unwind = match unwind {
            UnwindArg::Fp => UnwindMode::FramePointers,
            UnwindArg::Dwarf => UnwindMode::Dwarf,
            UnwindArg::Auto => UnwindMode::Auto,
        };
        if let Some(bytes) = ring_buffer_bytes {
            if !bytes.is_power_of_two() || bytes < 4096 {
                bail!("--ring-buffer-bytes must be a power of two of at least 4096, not {bytes}");
            }
        }
        if stack_map_entries == 0 || count_map_entries == 0 {
            bail!("--stack-map-entries and --count-map-entries must be at least 1");
        }
        let target = match (pid.is_empty(), all, command.is_empty()) {
            (false, false, true) => Target::Pids(pid),
            (true, true, true) => Target::AllProcesses,
            (true, false, false) => Target::Command(command),
            // clap's "target" group already rejects these; kept so a change there cannot slip through.
            _ => bail!("give exactly one target: --pid PID[,PID..], --all, or -- COMMAND [ARGS..]"),
        };
        let run_as = match (user, run_as_root) {
            (Some(name), _) => RunAs::User(name),
            (None, true) => RunAs::Root,
            (None, false) => RunAs::Invoker,
        };
        if run_as != RunAs::Invoker && !matches!(target, Target::Command(_)) {
            bail!("--user and --run-as-root apply to a launched command (-- COMMAND [ARGS..])");
        }
        let duration = duration.map(parse_duration).transpose()?;
        if frequency == 0 {
            bail!("--frequency must be at least 1 sample per second");
        }
        let output = if output.is_empty() {
            vec![PathBuf::from("flamegraph.svg")]
        } else {
            output
        };
        let outputs = crate::cli_views::outputs(output, format)?;
        let (no_kernel, no_inline, lines) = (render.no_kernel, render.no_inline, render.lines);
        let render = render.into_options()?;
        Ok(RecordOptions {
            target,
            run_as,
            duration,
            frequency_hz: frequency,
            outputs,
            render,
            symbols: SymbolizerOptions {
                inlined_functions: !no_inline,
                source_lines: lines,
                name_style: if full_names {
                    NameStyle::Full
                } else {
                    NameStyle::Short
                },
                max_perf_map_bytes: max_perf_map_size,
                max_perf_maps_total_bytes: max_perf_maps_size,
                max_module_descriptors: max_module_fds,
                max_parsed_bytes: max_parsed_size,
            },
            max_profile_bytes: max_profile_size,
            capture_kernel: !no_kernel,
            capture_user: !no_user,
            follow_children: !no_inherit,
            btf_path: btf,
            unwind,
            stack_copy_bytes: stack_size,
            grow_stack_copy,
            map_sizes: MapSizes {
                stacks: stack_map_entries,
                counts: count_map_entries,
                ring_buffer_bytes: ring_buffer_bytes
                    .unwrap_or_else(|| default_ring_buffer_bytes(unwind, online_cpu_count())),
                ..MapSizes::default()
            },
            quiet: verbosity.quiet,
            backend,
            event,
            ring_pages: mmap_pages,
            off_cpu,
            // 0: adaptive.
            off_cpu_sample: off_cpu_sample.unwrap_or(0),
        })
    }
}

/// `--off-cpu-min`: a number of microseconds, or a number with `ns`, `us` (`µs`), `ms` or `s`; at
/// most a minute (longer would count nothing a capture sees whole).
fn parse_short_duration(text: &str) -> Result<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let nanos_per_unit = match unit.trim() {
        "ns" => 1.0,
        "" | "us" | "µs" => 1e3,
        "ms" => 1e6,
        "s" => 1e9,
        other => bail!("--off-cpu-min: unknown unit `{other}` (ns, us, ms or s)"),
    };
    let value: f64 = match number.parse() {
        Ok(value) => value,
        Err(_) => bail!("--off-cpu-min must be a duration such as 5us or 1ms, not `{text}`"),
    };
    let nanos = value * nanos_per_unit;
    if !(0.0..=60e9).contains(&nanos) {
        bail!("--off-cpu-min must be at most 60 s, not `{text}`");
    }
    Ok(Duration::from_nanos(nanos as u64))
}

/// `--duration` in seconds: positive, finite, and small enough for a `Duration` (`1e20` would
/// overflow it).
fn parse_duration(secs: f64) -> Result<Duration> {
    if !(secs.is_finite() && secs > 0.0) {
        bail!("--duration must be a positive number of seconds, not {secs}");
    }
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) => Ok(duration),
        Err(_) => bail!(
            "--duration {secs:e} is too long: the limit is {:e} seconds",
            u64::MAX as f64
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// clap's own consistency checks on every argument.
    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<RecordOptions> {
        let cli = Cli::try_parse_from(args)?;
        let Command::Record(record) = cli.command else {
            panic!("not a record command");
        };
        record.into_options(&cli.verbosity)
    }

    /// Each target kind parses; a PID list splits on commas.
    #[test]
    fn parses_targets() {
        let options = parse(&["emberprof", "record", "-p", "1,2", "-d", "1"]).expect("pids");
        assert_eq!(options.target, Target::Pids(vec![1, 2]));
        assert_eq!(options.duration, Some(Duration::from_secs(1)));
        let options = parse(&["emberprof", "record", "--all"]).expect("all");
        assert_eq!(options.target, Target::AllProcesses);
        let options = parse(&["emberprof", "record", "--", "ls", "-l"]).expect("command");
        assert_eq!(
            options.target,
            Target::Command(vec!["ls".into(), "-l".into()])
        );
        assert_eq!(options.frequency_hz, 99);
        assert_eq!(
            options.outputs,
            [crate::output::Output {
                target: crate::output::OutputTarget::File("flamegraph.svg".into()),
                format: crate::output::OutputFormat::Svg
            }]
        );
        assert_eq!(options.unwind, UnwindMode::Auto);
        assert_eq!(options.stack_copy_bytes, 16384);
    }

    /// No target, or two kinds at once, is a usage error naming the choices.
    #[test]
    fn rejects_zero_or_two_targets() {
        let none = Cli::try_parse_from(["emberprof", "record"]).expect_err("no target");
        assert!(none.to_string().contains("--pid"), "{none}");
        let two = Cli::try_parse_from(["emberprof", "record", "--all", "-p", "1"])
            .expect_err("two targets");
        assert!(two.to_string().contains("cannot be used with"), "{two}");
    }

    /// Bad numbers are refused with the option's name.
    #[test]
    fn rejects_bad_numbers() {
        let error = parse(&["emberprof", "record", "--all", "-d", "0"]).expect_err("zero duration");
        assert!(error.to_string().contains("--duration"));
        let error =
            parse(&["emberprof", "record", "--all", "-F", "0"]).expect_err("zero frequency");
        assert!(error.to_string().contains("--frequency"));
        let error = parse(&["emberprof", "record", "--all", "--stack-size", "100000"])
            .expect_err("huge copy");
        assert!(error.to_string().contains("--stack-size"));
    }

    /// Durations: fractions work; zero, negative, NaN, infinite and too-large values are refused
    /// with the option's name, never a panic or a parser message about an unknown argument.
    /// `--off-cpu-min` takes microseconds by default and the usual units; nonsense is refused.
    #[test]
    fn parses_off_cpu_thresholds() {
        assert_eq!(parse_short_duration("5").unwrap(), Duration::from_micros(5));
        assert_eq!(
            parse_short_duration("500ns").unwrap(),
            Duration::from_nanos(500)
        );
        assert_eq!(
            parse_short_duration("20us").unwrap(),
            Duration::from_micros(20)
        );
        assert_eq!(
            parse_short_duration("1.5ms").unwrap(),
            Duration::from_micros(1500)
        );
        assert_eq!(parse_short_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "ms", "5 parsecs", "-1", "2m", "61s"] {
            assert!(parse_short_duration(bad).is_err(), "{bad}");
        }
        let options = parse(&["emberprof", "record", "--all", "--off-cpu"]).expect("parse");
        assert_eq!(options.off_cpu, Some(Duration::from_micros(5)));
        let options = parse(&["emberprof", "record", "--all"]).expect("parse");
        assert_eq!(options.off_cpu, None);
        assert!(parse(&["emberprof", "record", "--all", "--off-cpu-min", "1ms"]).is_err());
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration(0.5).unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration(3.0).unwrap(), Duration::from_secs(3));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, -0.0] {
            let error = parse_duration(bad).unwrap_err().to_string();
            assert!(error.contains("positive number"), "{bad}: {error}");
        }
        for huge in [1e20, 1e300, f64::MAX] {
            let error = parse_duration(huge).unwrap_err().to_string();
            assert!(error.contains("too long"), "{huge}: {error}");
        }
        let error = parse(&["emberprof", "record", "--all", "-d", "-1"]).expect_err("negative");
        assert!(
            error.to_string().contains("--duration must be a positive"),
            "{error}"
        );
        let error = parse(&["emberprof", "record", "--all", "-d", "1e20"]).expect_err("huge");
        assert!(error.to_string().contains("too long"), "{error}");
    }

    /// Who a launched command runs as: the sudo user by default, or as asked; both options only
    /// with a command, and not together.
    #[test]
    fn parses_run_as() {
        let options = parse(&["emberprof", "record", "--", "id"]).unwrap();
        assert_eq!(options.run_as, RunAs::Invoker);
        let options = parse(&["emberprof", "record", "--run-as-root", "--", "id"]).unwrap();
        assert_eq!(options.run_as, RunAs::Root);
        let options = parse(&["emberprof", "record", "--user", "nobody", "--", "id"]).unwrap();
        assert_eq!(options.run_as, RunAs::User("nobody".into()));
        let error = parse(&["emberprof", "record", "--all", "--run-as-root"]).unwrap_err();
        assert!(error.to_string().contains("launched command"), "{error}");
        assert!(parse(&[
            "emberprof",
            "record",
            "--user",
            "a",
            "--run-as-root",
            "--",
            "id"
        ])
        .is_err());
    }
}
