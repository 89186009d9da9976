//! Folded stacks (`root;frame;...;leaf COUNT`, FlameGraph's format, as written by emberprof, perf
//! script | stackcollapse, inferno-collapse-*) into the model. The root is kept as an ordinary frame
//! (the profile has no process labels), and the frame suffixes emberprof writes are read back as
//! kinds: `_[k]` kernel, `_[i]` inlined, `_[j]` JIT, and runtime markers (`_[p]` Python) as
//! interpreter frames, so folding the result gives the same lines.

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io::BufRead;

use anyhow::{bail, Context, Result};

use super::MAX_FRAMES;
use crate::output::{no_threads, sanitize, FoldOptions, Folded, FoldedBuilder};
use crate::profile::filter::Filter;
use crate::profile::values::Shown;
use crate::profile::{
    location_id, Frame, FrameKind, Location, LocationId, Mapping, Profile, Runtime, Sample,
    StackId, ValueTypes, Values,
};

pub fn read_folded(text: &str, name: &str) -> Result<Profile> {
    let mut profile = Profile::default();
    let mut locations: HashMap<&str, LocationId> = HashMap::new();
    let mut samples: HashMap<StackId, usize> = HashMap::new();
    let mut ids = Vec::new();
    let mut total = 0;
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{name}:{}", index + 1);
        let Some((stack, count)) = parse_line(line, &mut total, &at)? else {
            continue;
        };
        ids.clear();
        for frame in stack.split(';') {
            if ids.len() == MAX_FRAMES {
                bail!("{}: a stack of more than {MAX_FRAMES} frames", at());
            }
            let id = *locations.entry(frame).or_insert_with(|| {
                let location = location(frame, &mut profile.mappings);
                profile.locations.push(location);
                location_id(profile.locations.len() - 1)
            });
            ids.push(id);
        }
        let stack = profile.stacks.insert(&ids);
        // One sample per distinct stack: repeated lines (concatenated files) cost no memory.
        match samples.entry(stack) {
            Entry::Occupied(sample) => {
                // Cannot overflow: the total of all counts holds it.
                profile.samples[*sample.get()]
                    .values
                    .add(&Values::count(count));
            }
            Entry::Vacant(entry) => {
                entry.insert(profile.samples.len());
                profile.samples.push(Sample {
                    stack,
                    values: Values::count(count),
                    ..Sample::default()
                });
            }
        }
    }
    // Folding comes next and holds as much again: no room left unused by the doublings of `push`.
    profile.locations.shrink_to_fit();
    profile.samples.shrink_to_fit();
    Ok(profile)
}

/// Folded text read straight into folded stacks, `filter` and `options` applied as they would be to
/// the profile [`read_folded`] makes, giving the same lines: what `report` does when no output needs
/// a profile (pprof). Memory follows the distinct text: each distinct frame's text once, 4 bytes per
/// frame of each distinct line, where a profile holds a location, a frame and a name per distinct
/// frame (some 200 bytes: 26 times a 64 MiB input of short distinct frames).
pub fn read_folded_stacks(
    mut text: impl BufRead,
    name: &str,
    filter: &Filter,
    options: &FoldOptions,
) -> Result<Folded> {
    if options.per_thread {
        return Err(no_threads(0));
    }
    let shown =
        Shown::resolve(&ValueTypes::default(), options.value).with_context(|| name.to_owned())?;
    let mut builder = FoldedBuilder::default();
    // By text id: whether the filter keeps the frame, and whether its name matches `--grep` (none
    // for a text that is no frame's, `[unknown]`, until a frame has it).
    let mut verdicts: Vec<Option<(bool, bool)>> = Vec::new();
    let mut line = Vec::new();
    // Line by line into one buffer: the text is never held whole, only what it holds distinct.
    let mut total = 0;
    let mut bytes = Vec::new();
    for index in 0.. {
        bytes.clear();
        let read = text
            .read_until(b'\n', &mut bytes)
            .with_context(|| format!("cannot read {name}"))?;
        if read == 0 {
            break;
        }
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        let at = || format!("{name}:{}", index + 1);
        let Ok(text_line) = std::str::from_utf8(&bytes) else {
            bail!("{}: not UTF-8 text", at());
        };
        let Some((stack, count)) = parse_line(text_line, &mut total, &at)? else {
            continue;
        };
        line.clear();
        let mut matched = filter.grep.is_none();
        for (position, frame) in stack.split(';').enumerate() {
            if position == MAX_FRAMES {
                bail!("{}: a stack of more than {MAX_FRAMES} frames", at());
            }
            let (bare, suffix, kind) = split_kind(frame);
            let sanitized = sanitize(bare);
            // Most frames show as they were read: no text is made for them.
            let unchanged = matches!(&sanitized, Cow::Borrowed(shown) if shown.len() == bare.len());
            let id = if unchanged {
                builder.text_id(frame)
            } else {
                builder.text_id(&format!("{sanitized}{suffix}"))
            };
            if verdicts.len() <= id as usize {
                verdicts.resize(id as usize + 1, None);
            }
            let (kept, grep) = *verdicts[id as usize].get_or_insert_with(|| {
                let dropped = (filter.no_kernel && kind == FrameKind::Kernel)
                    || (filter.no_inline && kind == FrameKind::Inlined);
                let grep = filter.grep.as_ref().is_some_and(|grep| grep.is_match(bare));
                (!dropped, grep)
            });
            if kept {
                line.push(id);
                matched |= grep;
            }
        }
        if count == 0 || !matched {
            continue;
        }
        if line.is_empty() {
            line.push(builder.text_id(EMPTY_STACK_TEXT));
        }
        builder.add(&line, count)?;
    }
    Ok(builder.finish(&shown))
}

/// What a stack that filtering left without frames shows, as in folding.
const EMPTY_STACK_TEXT: &str = "[unknown]";

/// The stack and count of folded line `line`, or `None` for a blank line, once checked: a count, a
/// stack, and counts whose sum so far (`total`) fits in 64 bits. `at` names the line in errors.
fn parse_line<'a>(
    line: &'a str,
    total: &mut u64,
    at: &dyn Fn() -> String,
) -> Result<Option<(&'a str, u64)>> {
    let line = line.trim_end_matches('\r');
    if line.trim().is_empty() {
        return Ok(None);
    }
    let Some((stack, count)) = line.rsplit_once(' ') else {
        bail!(
            "{}: not a folded stack: expected `frame;frame;... COUNT`, found {:?}",
            at(),
            excerpt(line)
        );
    };
    let count: u64 = match count.parse() {
        Ok(count) => count,
        Err(_) if !count.is_empty() && count.bytes().all(|b| b.is_ascii_digit()) => {
            bail!(
                "{}: sample count {} is larger than 2^64 - 1",
                at(),
                excerpt(count)
            )
        }
        Err(_) => bail!(
            "{}: not a folded stack: the line must end in a sample count, found {:?}",
            at(),
            excerpt(count)
        ),
    };
    let Some(sum) = total.checked_add(count) else {
        bail!("{}: the sample counts add up to more than 2^64 - 1", at());
    };
    *total = sum;
    if stack.is_empty() {
        bail!("{}: empty stack before the count", at());
    }
    Ok(Some((stack, count)))
}

/// At most 80 characters of `text` for an error message.
fn excerpt(text: &str) -> String {
    let mut excerpt: String = text.chars().take(80).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    crate::text::printable(&excerpt).into_owned()
}

/// A folded frame's name, the suffix it was marked with (`_[k]`, `_[i]`, `_[j]`, a runtime's
/// marker, or none) and the kind that suffix stands for (an interpreter's frame is a user frame).
fn split_kind(frame: &str) -> (&str, &'static str, FrameKind) {
    let markers = Runtime::ALL.map(|runtime| (runtime.marker(), FrameKind::User));
    markers
        .into_iter()
        .chain([
            ("_[k]", FrameKind::Kernel),
            ("_[i]", FrameKind::Inlined),
            ("_[j]", FrameKind::Jit),
        ])
        .find_map(|(suffix, kind)| frame.strip_suffix(suffix).map(|bare| (bare, suffix, kind)))
        .unwrap_or((frame, "", FrameKind::User))
}

/// The location of one folded frame; an interpreter's frame goes into its runtime's mapping,
/// added to `mappings` the first time.
fn location(frame: &str, mappings: &mut Vec<Mapping>) -> Location {
    for runtime in Runtime::ALL {
        if let Some(name) = frame.strip_suffix(runtime.marker()) {
            let mapping = runtime.mapping();
            let id = match mappings.iter().position(|m| *m == mapping) {
                Some(id) => id,
                None => {
                    mappings.push(mapping);
                    mappings.len() - 1
                }
            };
            return Location::interpreted(id, Frame::new(name, FrameKind::User));
        }
    }
    let (name, _, kind) = split_kind(frame);
    Location {
        mapping: None,
        address: 0,
        frames: vec![Frame::new(name, kind)],
        in_kernel: kind == FrameKind::Kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::filter;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Read straight into folded stacks, any folded text gives the lines its profile gives once
        /// filtered and folded, with every filter: frames of every kind, empty and unprintable names,
        /// lines repeated, zero counts.
        #[test]
        fn stacks_read_directly_are_the_profile_folded(
            lines in proptest::collection::vec(
                (proptest::collection::vec(0usize..FRAMES.len(), 1..6), 0u64..4),
                1..30,
            ),
            no_kernel in any::<bool>(),
            no_inline in any::<bool>(),
            grep in proptest::option::of(prop::sample::select(vec!["^b", "k", "x\\tb"])),
        ) {
            let text: String = lines
                .iter()
                .map(|(frames, count)| {
                    let frames: Vec<&str> = frames.iter().map(|&f| FRAMES[f]).collect();
                    format!("{} {count}\n", frames.join(";"))
                })
                .collect();
            let filter = filter::Filter {
                no_kernel,
                no_inline,
                grep: grep.map(|g| regex::Regex::new(g).expect("regex")),
            };
            let options = FoldOptions::default();
            let direct = read_folded_stacks(text.as_bytes(), "t", &filter, &options);
            match read_folded(&text, "t") {
                Ok(profile) => {
                    let profile = filter::apply(profile, &filter);
                    let folded = crate::output::fold(&profile, &options).expect("fold");
                    prop_assert_eq!(direct.expect("read").text(), folded.text());
                }
                // A stack of one empty frame: the same error.
                Err(error) => {
                    prop_assert_eq!(direct.expect_err("an error").to_string(), error.to_string())
                }
            }
        }
    }

    const FRAMES: [&str; 10] = [
        "main", "b", "ba_[k]", "k_[k]", "in_[i]", "_[i]", "jit_[j]", "py_[p]", "", "x\tb",
    ];

    /// What cannot be folded without threads or values is an error naming the file.
    #[test]
    fn stacks_without_threads_or_values_are_errors() {
        let per_thread = FoldOptions {
            per_thread: true,
            ..FoldOptions::default()
        };
        let error = read_folded_stacks(&b"a 1\n"[..], "t", &filter::Filter::default(), &per_thread)
            .expect_err("no threads");
        assert!(error.to_string().contains("--per-thread needs"), "{error}");
        let off_cpu = FoldOptions {
            value: crate::profile::ValueChoice::OffCpu,
            ..FoldOptions::default()
        };
        let error = read_folded_stacks(
            &b"a 1\n"[..],
            "t.folded",
            &filter::Filter::default(),
            &off_cpu,
        )
        .expect_err("no off-CPU time");
        assert!(error.to_string().starts_with("t.folded"), "{error}");
    }

    /// Repeated lines (folded files concatenated) are one sample per distinct stack, their counts
    /// added: memory follows the distinct stacks, not the line count.
    #[test]
    fn repeated_stacks_are_one_sample() {
        let text = "a;b 2\na;c 1\na;b 3\n".repeat(1000);
        let profile = read_folded(&text, "x").expect("read");
        assert_eq!(profile.samples.len(), 2);
        assert_eq!(profile.samples[0].values.get(0), 5000);
        assert_eq!(profile.total_samples(), 6000);
    }
}
