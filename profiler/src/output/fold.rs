//! Folding: a profile to `process;outermost;...;leaf COUNT` lines, the FlameGraph format. User frames
//! come first (outermost first), then kernel frames suffixed `_[k]`; inlined functions are suffixed
//! `_[i]`, JIT frames `_[j]`. A truncated user stack gets a `[truncated]` frame right under the root.
//! Lines are kept sorted so output is deterministic. A pure function of the profile: no symbolization.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::profile::{Frame, FrameKind, Location, Profile, Sample, TRUNCATED_FRAME};

#[derive(Clone, Copy, Debug, Default)]
pub struct FoldOptions {
    /// Root stacks at `threadname-PID/TID` instead of the process name.
    pub per_thread: bool,
    /// Append `(file:LINE)` to frames that have a source line.
    pub lines: bool,
}

/// Folded stacks.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// Folded line (without count) to sample count, sorted.
    pub stacks: BTreeMap<String, u64>,
}

impl Folded {
    /// The folded text, one `stack COUNT` line per distinct stack.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.stacks
            .iter()
            .map(|(stack, count)| format!("{stack} {count}"))
    }
}

/// Folds every sample of `profile`. Fails only when `--per-thread` is asked of a profile without
/// thread labels, or when counts overflow.
pub fn fold(profile: &Profile, options: &FoldOptions) -> Result<Folded> {
    // Each location's text, made once: a long recording has many samples through few locations.
    let location_texts: Vec<String> = profile
        .locations
        .iter()
        .map(|location| location_text(profile, location, options.lines))
        .collect();
    // Hashed while counting, sorted once at the end.
    let mut stacks: HashMap<String, u64> = HashMap::new();
    let mut line = String::new();
    for sample in &profile.samples {
        line.clear();
        push_root(
            &mut line,
            sample,
            options,
            profile.metadata.unlabelled_processes,
        )?;
        if sample.truncated {
            push_frame(&mut line, TRUNCATED_FRAME);
        }
        for &location_id in sample.stack.iter() {
            push_frame(&mut line, &location_texts[location_id]);
        }
        if line.is_empty() {
            line.push_str("[unknown]");
        }
        let count = match stacks.get_mut(line.as_str()) {
            Some(count) => count,
            None => stacks.entry(line.clone()).or_default(),
        };
        let Some(sum) = count.checked_add(sample.count) else {
            bail!("the sample counts of stack `{line}` add up to more than 2^64 - 1");
        };
        *count = sum;
    }
    Ok(Folded {
        stacks: stacks.into_iter().collect(),
    })
}

/// A location's frames, outermost first, `;`-separated as folded lines show them.
fn location_text(profile: &Profile, location: &Location, lines: bool) -> String {
    if location.frames.is_empty() {
        let suffix = if location.in_kernel { "_[k]" } else { "" };
        return format!("{}{suffix}", sanitize(&profile.unnamed(location)));
    }
    let mut text = String::new();
    for frame in &location.frames {
        push_frame(&mut text, &frame_text(frame, lines));
    }
    text
}

fn push_root(
    line: &mut String,
    sample: &Sample,
    options: &FoldOptions,
    profile_unlabelled: u64,
) -> Result<()> {
    if options.per_thread {
        let (Some(thread), Some(pid), Some(tid)) = (&sample.thread_name, sample.pid, sample.tid)
        else {
            bail!(
                "--per-thread needs the thread of each sample (pprof labels pid, tid and thread_name); \
                 this profile does not have them{}",
                if profile_unlabelled > 0 {
                    format!(
                        " for {profile_unlabelled} processes that ended while recording \
                         (record with --per-thread to keep them all)"
                    )
                } else {
                    String::new()
                }
            );
        };
        let _ = write!(line, "{}-{pid}/{tid}", sanitize(thread));
    } else if let Some(process) = &sample.process_name {
        line.push_str(&sanitize(process));
    }
    Ok(())
}

fn push_frame(line: &mut String, frame: &str) {
    if !line.is_empty() {
        line.push(';');
    }
    line.push_str(frame);
}

/// A frame as folded output shows it: its name, `(file:LINE)` with `lines`, and its kind's suffix.
pub fn frame_text(frame: &Frame, lines: bool) -> String {
    let suffix = match frame.kind {
        FrameKind::Kernel => "_[k]",
        FrameKind::Inlined => "_[i]",
        FrameKind::Jit => "_[j]",
        FrameKind::User => "",
    };
    let name = match (&frame.file, frame.line) {
        (Some(file), Some(line)) if lines => format!("{} ({file}:{line})", frame.name),
        _ => frame.name.to_string(),
    };
    format!("{}{suffix}", sanitize(&name))
}

/// A `;` would split a frame in two and a line break would end the line: replace both, and every
/// other control character (see [`crate::text::printable`]): names come from the profiled process.
/// Empty names (an unnamed thread) would make an empty frame.
fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
    if name.is_empty() {
        return "[unnamed]".into();
    }
    match crate::text::printable(name) {
        std::borrow::Cow::Borrowed(name) if !name.contains(';') => name.into(),
        printable => printable.replace(';', ":").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{build, Metadata};
    use crate::sample::StackSample;
    use emberprof_symbolizer::Symbolizer;

    /// Separators inside names cannot break the format.
    #[test]
    fn sanitizes_names() {
        assert_eq!(sanitize("a;b\nc"), "a:b c");
        assert_eq!(sanitize(""), "[unnamed]");
        assert_eq!(sanitize("std::vec::Vec<T>::push"), "std::vec::Vec<T>::push");
        assert_eq!(sanitize("a\r\tb;\u{1b}[31m"), "a  b:\u{FFFD}[31m");
        // Every C0 control: never a line break, a tab or the raw control in a folded frame.
        for code in 0u8..0x20 {
            let name = format!("x{}y", char::from(code));
            let clean = sanitize(&name);
            assert!(!clean.chars().any(char::is_control), "{code:#x}: {clean:?}");
            assert!(clean.starts_with('x') && clean.ends_with('y'), "{clean:?}");
        }
    }

    /// `--per-thread` on a profile without thread labels (folded input) is an error, not a guess.
    #[test]
    fn per_thread_needs_labels() {
        let mut profile = crate::profile::testdata::small();
        profile.samples[0].tid = None;
        let error = fold(
            &profile,
            &FoldOptions {
                per_thread: true,
                ..FoldOptions::default()
            },
        )
        .unwrap_err();
        assert!(error.to_string().contains("--per-thread"), "{error}");
    }

    /// Folding a real process's own addresses: the root is the process name (or thread-PID/TID),
    /// frames come outermost first, counts of identical stacks add up, lines come out sorted.
    #[test]
    fn folds_real_addresses_of_this_process() {
        let pid = std::process::id();
        let mut symbolizer = Symbolizer::new(Default::default()).expect("symbolizer");
        symbolizer
            .process_seen(emberprof_symbolizer::ProcessKey { pid, instance: 1 })
            .expect("snapshot of this test process");
        let leaf = folds_real_addresses_of_this_process as *const () as usize as u64;
        let caller = Symbolizer::new as *const () as usize as u64;
        let sample = |tid, count| StackSample {
            pid,
            tid,
            instance: 1,
            process_name: "tester".into(),
            thread_name: "worker;1".into(),
            kernel_ips: vec![],
            // A return address points after a call: it is looked up one byte earlier.
            user_ips: vec![leaf, caller + 1],
            // Not judged for truncation (see `truncation`'s tests).
            user_stack: crate::sample::UserStackSource::None,
            count,
        };
        let samples = [sample(7, 2), sample(7, 3), sample(8, 1)];
        let profile = build(&samples, &mut symbolizer, Metadata::default());
        assert_eq!(profile.locations.len(), 2, "one location per address");
        let module = &profile.mappings[profile.locations[0].mapping.expect("in a module")];
        assert!(
            module.build_id.is_some(),
            "test binary has a build-id: {module:?}"
        );

        let folded = fold(&profile, &FoldOptions::default()).unwrap();
        assert_eq!(folded.stacks.len(), 1, "{:?}", folded.stacks);
        let (line, count) = folded.stacks.iter().next().unwrap();
        assert_eq!(*count, 6);
        assert!(line.starts_with("tester;"), "{line}");
        let caller_at = line
            .find("Symbolizer::new")
            .unwrap_or_else(|| panic!("caller named: {line}"));
        let leaf_at = line
            .find("folds_real_addresses_of_this_process")
            .unwrap_or_else(|| panic!("leaf named: {line}"));
        assert!(caller_at < leaf_at, "outermost first: {line}");

        let per_thread = FoldOptions {
            per_thread: true,
            ..FoldOptions::default()
        };
        let folded = fold(&profile, &per_thread).unwrap();
        let roots: Vec<&str> = folded
            .stacks
            .keys()
            .map(|l| l.split(';').next().unwrap())
            .collect();
        assert_eq!(
            roots,
            [format!("worker:1-{pid}/7"), format!("worker:1-{pid}/8")]
        );
        assert_eq!(folded.lines().last().unwrap().rsplit(' ').next(), Some("1"));
    }
}
