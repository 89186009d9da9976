//! Folded stacks as emberprof writes them (`root;frame;frame COUNT`): parsing, the questions the
//! tests ask of them, and the short description a failing test prints.

use std::path::Path;
use std::process::Output;

/// How many stacks a failure message shows: the heaviest ones, which are what a reader needs to
/// see why a share or a chain is off (a full profile is thousands of lines of noise).
const STACKS_SHOWN: usize = 15;

/// One folded line: frames root first, and its count.
#[derive(Clone, Debug)]
pub struct FoldedStack {
    pub frames: Vec<String>,
    pub count: u64,
}

impl FoldedStack {
    /// Whether any frame is exactly `name`.
    pub fn has_frame(&self, name: &str) -> bool {
        self.frames.iter().any(|f| f == name)
    }

    /// Whether any frame is a kernel frame (`_[k]`).
    pub fn has_kernel_frame(&self) -> bool {
        self.frames.iter().any(|f| f.ends_with("_[k]"))
    }

    /// The outermost user frame (right under the process or thread frame), if it is one.
    pub fn outermost_user(&self) -> Option<&str> {
        self.frames
            .get(1)
            .map(String::as_str)
            .filter(|f| !f.ends_with("_[k]"))
    }

    /// The innermost user frame: the leaf, below any kernel frames (not the process frame).
    pub fn user_leaf(&self) -> Option<&str> {
        self.frames
            .iter()
            .skip(1)
            .rev()
            .map(String::as_str)
            .find(|f| !f.ends_with("_[k]"))
    }
}

pub fn parse_folded(text: &str) -> Vec<FoldedStack> {
    text.lines()
        .map(|line| {
            let (stack, count) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("no count in folded line {line:?}"));
            FoldedStack {
                frames: stack.split(';').map(str::to_owned).collect(),
                count: count
                    .parse()
                    .unwrap_or_else(|_| panic!("bad count in folded line {line:?}")),
            }
        })
        .collect()
}

pub fn read_folded(path: &Path) -> Vec<FoldedStack> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    parse_folded(&text)
}

/// The folded stacks a run wrote to its standard output (`-o -`).
pub fn folded_stdout(output: &Output) -> Vec<FoldedStack> {
    parse_folded(&String::from_utf8_lossy(&output.stdout))
}

/// The stacks whose root (process or thread frame) satisfies `root`.
pub fn rooted(stacks: &[FoldedStack], root: impl Fn(&str) -> bool) -> Vec<FoldedStack> {
    stacks
        .iter()
        .filter(|s| root(&s.frames[0]))
        .cloned()
        .collect()
}

/// The heaviest [`STACKS_SHOWN`] stacks, one per line, and the totals: for failure messages.
pub fn describe(stacks: &[FoldedStack]) -> String {
    let mut heaviest: Vec<&FoldedStack> = stacks.iter().collect();
    heaviest.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.frames.cmp(&b.frames)));
    let mut text: Vec<String> = heaviest
        .iter()
        .take(STACKS_SHOWN)
        .map(|s| format!("  {} {}", s.frames.join(";"), s.count))
        .collect();
    let shown: u64 = heaviest.iter().take(STACKS_SHOWN).map(|s| s.count).sum();
    text.push(format!(
        "  ({} samples in {} distinct stacks; {} in the {} shown)",
        all_samples(stacks),
        stacks.len(),
        shown,
        heaviest.len().min(STACKS_SHOWN)
    ));
    text.join("\n")
}

/// Samples in the stacks that satisfy `filter`.
pub fn total(stacks: &[FoldedStack], filter: impl Fn(&FoldedStack) -> bool) -> u64 {
    stacks.iter().filter(|s| filter(s)).map(|s| s.count).sum()
}

/// Samples in all the stacks.
pub fn all_samples(stacks: &[FoldedStack]) -> u64 {
    total(stacks, |_| true)
}

/// Samples in stacks whose root (process or thread name) satisfies `root`.
pub fn samples_of(stacks: &[FoldedStack], root: impl Fn(&str) -> bool) -> u64 {
    total(stacks, |s| root(&s.frames[0]))
}

/// Whether `chain` occurs in `frames` as consecutive frames: `main;run;burn_a` must not match a
/// stack where another frame sits between two of them.
pub fn has_consecutive(frames: &[String], chain: &[&str]) -> bool {
    !chain.is_empty()
        && frames
            .windows(chain.len())
            .any(|window| window.iter().zip(chain).all(|(frame, want)| frame == want))
}

/// Whether `runs` occur in `frames` in order, each as consecutive frames, with anything between
/// them: for chains that cross code whose frames vary (libc's qsort between `run` and `cmp`).
pub fn has_consecutive_runs(frames: &[String], runs: &[&[&str]]) -> bool {
    let mut from = 0;
    for run in runs {
        let found = (from..(frames.len() + 1).saturating_sub(run.len()))
            .find(|&i| run.iter().zip(&frames[i..]).all(|(w, f)| f == w));
        match found {
            Some(i) => from = i + run.len(),
            None => return false,
        }
    }
    true
}

/// Whether `wanted` occurs in `frames` in order, not necessarily adjacent: for checks that a chain is
/// absent, or that crosses frames that vary; a chain that must be present whole is checked with
/// [`has_consecutive`].
pub fn has_in_order(frames: &[String], wanted: &[&str]) -> bool {
    let mut wanted = wanted.iter().peekable();
    for frame in frames {
        if wanted.peek().is_some_and(|w| frame == *w) {
            wanted.next();
        }
    }
    wanted.peek().is_none()
}

/// Whether a user stack's outermost frame is where a process or thread starts: the stack is
/// complete, not cut short by an unwinder that lost its way.
pub fn is_entry(frame: &str) -> bool {
    ["_start", "clone", "clone3", "start_thread"].contains(&frame)
}

/// Of the samples with user frames, the share whose user stack is complete (reaches an entry, see
/// [`is_entry`]). Samples with kernel frames only have no user stack to judge and are left out.
pub fn complete_user_share(stacks: &[FoldedStack]) -> f64 {
    let user = total(stacks, |s| s.outermost_user().is_some());
    assert!(user > 0, "no user stacks:\n{}", describe(stacks));
    total(stacks, |s| s.outermost_user().is_some_and(is_entry)) as f64 / user as f64
}
