//! `emberprof generate`: the man page renders with the system's `man` and documents `record`'s
//! options; bash completion, loaded into a real bash, offers them; and the binary works as
//! `cargo install` leaves it, alone in a directory of its own, run from anywhere (it must find
//! nothing by relative path: the BPF object is embedded).

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::emberprof;

/// `record`'s options that the man page and the completions must know (a sample across groups:
/// targets, sampling, output, unwinding, the "Advanced" heading).
const RECORD_FLAGS: &[&str] = &[
    "--pid",
    "--all",
    "--duration",
    "--frequency",
    "--output",
    "--unwind",
    "--stack-size",
    "--backend",
    "--per-thread",
    "--mmap-pages",
];

/// Runs `emberprof generate KIND` and returns what it printed.
fn generate(kind: &str) -> String {
    let output = emberprof()
        .args(["generate", kind])
        .output()
        .expect("run emberprof");
    assert_success(&format!("emberprof generate {kind}"), &output);
    String::from_utf8(output.stdout).expect("generate prints UTF-8")
}

fn assert_success(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A tool the test needs, or a failure saying how to install it (never a silent pass).
fn require(tool: &str, package: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "this test needs `{tool}`: apt-get install {package} (`bash .ci/run` installs it)"
    );
}

/// The man page renders with `man -l` without a single groff warning, and its text names every
/// subcommand and `record`'s options with their defaults.
#[test]
fn man_page_renders_with_man() {
    require("man", "man-db");
    require("groff", "groff-base");
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("emberprof.1");
    std::fs::write(&page, generate("man")).expect("write the page");
    let output = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&page)
        // A fixed width and no pager: the text is what a reader sees, not paged or re-wrapped.
        .env("MANWIDTH", "100")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat")
        .output()
        .expect("run man");
    assert_success("man -l emberprof.1", &output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty(), "man/groff warnings:\n{stderr}");
    // groff may print a hyphen as U+2010 and wraps long words at one: compare ASCII text.
    let text = String::from_utf8_lossy(&output.stdout).replace(['\u{2010}', '\u{2212}'], "-");
    for heading in [
        "EMBERPROF RECORD",
        "EMBERPROF REPORT",
        "EMBERPROF DIFF",
        "EMBERPROF GENERATE",
        "EXIT STATUS",
    ] {
        assert!(text.contains(heading), "no {heading} in the page:\n{text}");
    }
    let record = &text[text.find("EMBERPROF RECORD").expect("record section")..];
    for flag in RECORD_FLAGS {
        assert!(
            record.contains(&format!("\n       {flag}")) || record.contains(&format!(", {flag}")),
            "{flag} is not an option entry of the record section:\n{record}"
        );
    }
    // --stack-size states its default in its help text (it grows per process unless given).
    assert!(
        record.contains("[default: 99]") && record.contains("Default: 16384"),
        "defaults missing:\n{record}"
    );
    assert!(
        record.contains("sudo emberprof record --pid 1234 --duration 10 -o flame.svg"),
        "the examples are not laid out one command a line:\n{record}"
    );
}

/// Asks bash's completion function, as the shell would after `emberprof WORDS.. CURRENT<TAB>`,
/// and returns the candidates.
fn bash_complete(script: &Path, words: &[&str]) -> Vec<String> {
    let words_array = words
        .iter()
        .map(|word| format!("'{word}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let cword = words.len() - 1;
    // The function is the one the script registers with `complete -F`, whatever it is named; it
    // is called with the arguments bash passes: the command, the current word, the previous word.
    let program = format!(
        r#"source "$1" || exit 2
function_name=$(complete -p emberprof | sed -n 's/.* -F \([^ ]*\) .*/\1/p')
[ -n "$function_name" ] || {{ echo "no completion registered for emberprof" >&2; exit 3; }}
COMP_WORDS=({words_array})
COMP_CWORD={cword}
COMP_LINE="${{COMP_WORDS[*]}}"
COMP_POINT=${{#COMP_LINE}}
"$function_name" emberprof "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#
    );
    let output = Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &program, "bash"])
        .arg(script)
        .output()
        .expect("run bash");
    assert_success(&format!("bash completion of {words:?}"), &output);
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// bash completion offers the subcommands, `record`'s options after `record --`, and the values
/// of `--unwind`.
#[test]
fn bash_completion_offers_record_flags() {
    require("bash", "bash");
    let dir = tempfile::tempdir().expect("temp dir");
    let script = dir.path().join("emberprof.bash");
    std::fs::write(&script, generate("bash")).expect("write the script");

    let subcommands = bash_complete(&script, &["emberprof", ""]);
    for subcommand in ["record", "report", "diff", "generate"] {
        assert!(
            subcommands.iter().any(|word| word == subcommand),
            "{subcommand} not offered: {subcommands:?}"
        );
    }
    let flags = bash_complete(&script, &["emberprof", "record", "--"]);
    for flag in RECORD_FLAGS {
        assert!(
            flags.iter().any(|word| word == flag),
            "{flag} not offered after `record --`: {flags:?}"
        );
    }
    let unwind = bash_complete(&script, &["emberprof", "record", "--unwind", ""]);
    assert_eq!(unwind, ["fp", "dwarf", "auto"], "values of --unwind");
}

/// Every other shell gets a script that declares `record`'s options, each in its own syntax (an
/// option named only in a description would not count); a kind that does not exist is a usage
/// error listing the kinds.
#[test]
fn every_shell_gets_completions() {
    // Whether `script` declares `flag`, in each shell's own syntax.
    type Declares = fn(&str, &str) -> bool;
    let declarations: [(&str, Declares); 4] = [
        // `'--all[help]'`, `'*--pid=[help]'`, `'(-a --all)--no-inherit[help]'`: the spec before
        // the help text ends with the option's name.
        ("zsh", |script, flag| {
            script.lines().any(|line| {
                line.starts_with('\'')
                    && line.split('[').next().is_some_and(|spec| {
                        spec.ends_with(flag) || spec.ends_with(&format!("{flag}="))
                    })
            })
        }),
        ("fish", |script, flag| {
            script.contains(&format!("-l {} ", &flag[2..]))
        }),
        ("elvish", |script, flag| {
            script.contains(&format!("cand {flag} "))
        }),
        ("powershell", |script, flag| {
            script.contains(&format!("::new('{flag}', "))
        }),
    ];
    for (shell, declares) in declarations {
        let script = generate(shell);
        assert!(
            script.contains("record"),
            "{shell}: no record in:\n{script}"
        );
        for flag in RECORD_FLAGS {
            assert!(
                declares(&script, flag),
                "{shell}: {flag} is not declared as an option in:\n{script}"
            );
        }
    }
    let output = emberprof()
        .args(["generate", "tcsh"])
        .output()
        .expect("run emberprof");
    assert!(!output.status.success(), "generate tcsh succeeded");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("possible values: man, bash"), "{stderr}");
}

/// The binary alone, as `cargo install` leaves it (copied into an empty directory), run from
/// another directory with nothing of the build in its environment and the source and build trees
/// hidden under an empty tmpfs (a private mount namespace), records a real program: it reads
/// nothing from them, by relative or absolute path. (`cargo install` itself is a release build of
/// minutes: `bash benches/install-check.sh` runs it, see docs/testing.md.)
#[test]
fn installed_binary_runs_from_anywhere() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "this test records with BPF and mounts a tmpfs, so it must run as root: \
             `sudo -E env PATH=$PATH cargo test -p emberprof --test it generate` \
             (CI runs `bash .ci/run` as root)"
        );
    }
    require("unshare", "util-linux");
    let root = tempfile::tempdir().expect("temp dir");
    let bin = root.path().join("bin");
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir(&bin).expect("bin dir");
    std::fs::create_dir(&elsewhere).expect("working dir");
    let installed = bin.join("emberprof");
    std::fs::copy(env!("CARGO_BIN_EXE_emberprof"), &installed).expect("copy the binary");
    // The workload is copied too: it is built inside the tree about to be hidden.
    let burn = bin.join("burn");
    std::fs::copy(emberprof_examples::path("burn"), &burn).expect("copy burn");
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace holds profiler/");
    let build_dir = Path::new(env!("CARGO_BIN_EXE_emberprof"))
        .parent()
        .expect("the binary's directory");
    // The build directory first: it may lie inside the workspace, which the second mount hides.
    let script = r#"mount -t tmpfs emberprof-hidden "$1" && mount -t tmpfs emberprof-hidden "$2" \
        && cd "$3" && shift 3 && exec "$@""#;
    let output = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .args([build_dir, workspace, &elsewhere])
        .arg(&installed)
        .args(["record", "-F", "499", "-o", "burn.folded", "--"])
        .arg(&burn)
        .arg("1")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .output()
        .expect("run unshare");
    assert_success("the installed emberprof record, build tree hidden", &output);
    let folded = std::fs::read_to_string(elsewhere.join("burn.folded"))
        .expect("the output is written relative to the working directory");
    assert!(
        folded
            .lines()
            .any(|line| line.contains(";main;") && line.contains(";burn_a")),
        "no main..burn_a stack in:\n{folded}"
    );
}
