//! Folding: a profile to `process;outermost;...;leaf COUNT` lines, the FlameGraph format.
//! Interpreter frames are marked by their runtime: `_[p]` for Python (`Runtime::marker`). COUNT is
//! the value chosen (`FoldOptions::value`): samples of a CPU profile, microseconds of wall-clock
//! time (on-CPU plus off-CPU) of one with off-CPU time. User frames
//! come first (outermost first), then kernel frames suffixed `_[k]`; inlined functions are suffixed
//! `_[i]`, JIT frames `_[j]`. A truncated user stack gets a `[truncated]` frame right under the root.
//! Lines are sorted as strings sort, so output is deterministic. A pure function of the profile: no
//! symbolization.
//!
//! The text of a long recording's lines is large (tens of thousands of lines of hundreds of bytes), so
//! it is not built to fold: each distinct root and frame text is stored once, a line is the list of
//! its texts' ids, and the text is made only as it is written.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;

use anyhow::{bail, Context, Result};
use hashbrown::HashTable;

use super::texts::{index_u32, Texts};
use crate::profile::values::Shown;
use crate::profile::{Frame, FrameKind, Location, Profile, Sample, ValueChoice, TRUNCATED_FRAME};

/// What a stack with no root and no frame shows.
const EMPTY_STACK: &str = "[unknown]";

#[derive(Clone, Copy, Debug, Default)]
pub struct FoldOptions {
    /// Root stacks at `threadname-PID/TID` instead of the process name.
    pub per_thread: bool,
    /// Append `(file:LINE)` to frames that have a source line.
    pub lines: bool,
    /// Which value the counts are (see [`ValueChoice`]): samples of a CPU profile, microseconds
    /// of wall-clock time of one with off-CPU time.
    pub value: ValueChoice,
}

/// Folded stacks: every distinct line once with its count, in order.
#[derive(Debug, Default)]
pub struct Folded {
    /// The distinct texts of roots and frames (sanitized: never empty, never a `;`), by id.
    texts: Texts,
    /// The text ids of every line, outermost first, one line after the other.
    line_texts: Vec<u32>,
    /// Where each line's text ids end in `line_texts`.
    line_ends: Vec<u32>,
    counts: Vec<u64>,
    /// The lines in the order they are written (as their texts sort); lines whose time rounds to
    /// 0 µs are left out.
    order: Vec<u32>,
    /// What one count is, as the SVG says it: `samples`, `µs`.
    unit: &'static str,
}

impl Folded {
    /// How many distinct lines.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// What one count is: `samples`, or `µs` of time.
    pub fn unit(&self) -> &'static str {
        self.unit
    }

    /// The lines as `stack COUNT`, in order, for tests.
    #[cfg(test)]
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.order.iter().map(|&line| {
            let mut text = String::new();
            self.push_line(&mut text, line);
            text
        })
    }

    /// Every line, each ended by a line break.
    pub fn text(&self) -> String {
        let mut text = String::new();
        for &line in &self.order {
            self.push_line(&mut text, line);
            text.push('\n');
        }
        text
    }

    /// Writes every line, each ended by a line break.
    pub fn write(&self, writer: &mut dyn Write) -> Result<()> {
        let mut text = String::new();
        for &line in &self.order {
            text.clear();
            self.push_line(&mut text, line);
            text.push('\n');
            writer
                .write_all(text.as_bytes())
                .context("cannot write folded stacks")?;
        }
        Ok(())
    }

    /// Each line's stack and count, for tests.
    #[cfg(test)]
    pub fn counts(&self) -> std::collections::BTreeMap<String, u64> {
        self.order
            .iter()
            .map(|&line| {
                let texts = self.texts_of(line).iter();
                let stack: Vec<&str> = texts.map(|&id| self.texts.get(id)).collect();
                (stack.join(";"), self.counts[line as usize])
            })
            .collect()
    }

    /// The lines, in order.
    pub(super) fn ordered(&self) -> impl Iterator<Item = u32> + '_ {
        self.order.iter().copied()
    }

    pub(super) fn count(&self, line: u32) -> u64 {
        self.counts[line as usize]
    }

    /// Appends the line of texts `ids` and `count`, ended by a line break.
    pub(super) fn push_line_of(&self, text: &mut String, ids: &[u32], count: u64) {
        self.push_texts(text, ids);
        let _ = writeln!(text, " {count}");
    }

    pub(super) fn texts_of(&self, line: u32) -> &[u32] {
        let line = line as usize;
        let start = if line == 0 {
            0
        } else {
            self.line_ends[line - 1]
        };
        &self.line_texts[start as usize..self.line_ends[line] as usize]
    }

    fn push_texts(&self, text: &mut String, ids: &[u32]) {
        for (position, &id) in ids.iter().enumerate() {
            if position > 0 {
                text.push(';');
            }
            text.push_str(self.texts.get(id));
        }
    }

    fn push_line(&self, text: &mut String, line: u32) {
        self.push_texts(text, self.texts_of(line));
        let _ = write!(text, " {}", self.counts[line as usize]);
    }
}

/// Folded lines added one at a time: each distinct line stored once, the values of a line seen
/// again added to it. Both folding a profile and reading folded input build through it.
#[derive(Default)]
pub struct FoldedBuilder {
    folded: Folded,
    /// Indices of the lines, hashed by their text ids.
    line_ids: HashTable<u32>,
    hasher: RandomState,
}

impl FoldedBuilder {
    /// A builder whose line index has room for `lines` distinct lines: it is not rehashed as it
    /// grows (a long recording's 10^5 lines of deep stacks took a tenth of the folding to rehash).
    /// The vectors of lines still grow as they fill: a copy of them costs little, and room
    /// reserved in them would stay held with the lines.
    pub fn with_capacity(lines: usize) -> Self {
        let mut builder = FoldedBuilder::default();
        let FoldedBuilder {
            folded,
            line_ids,
            hasher,
        } = &mut builder;
        line_ids.reserve(lines, |&id| hasher.hash_one(folded.texts_of(id)));
        builder
    }

    /// The id of a root or frame text (already sanitized), added if new.
    pub fn text_id(&mut self, text: &str) -> u32 {
        self.folded.texts.id(text)
    }

    /// Adds `value` to the line of `line`'s texts (outermost first), added if new.
    pub fn add(&mut self, line: &[u32], value: u64) -> Result<()> {
        let folded = &mut self.folded;
        let hash = self.hasher.hash_one(line);
        let found = self.line_ids.find(hash, |&id| folded.texts_of(id) == line);
        let Some(&id) = found else {
            let id = index_u32(folded.counts.len());
            folded.line_texts.extend_from_slice(line);
            folded.line_ends.push(index_u32(folded.line_texts.len()));
            folded.counts.push(value);
            let hasher = &self.hasher;
            self.line_ids
                .insert_unique(hash, id, |&id| hasher.hash_one(folded.texts_of(id)));
            return Ok(());
        };
        let Some(sum) = folded.counts[id as usize].checked_add(value) else {
            let mut stack = String::new();
            folded.push_texts(&mut stack, folded.texts_of(id));
            bail!("the values of stack `{stack}` add up to more than 2^64 - 1");
        };
        folded.counts[id as usize] = sum;
        Ok(())
    }

    /// The lines, their values scaled as `shown` says, in order.
    pub fn finish(self, shown: &Shown) -> Folded {
        let mut folded = self.folded;
        drop(self.line_ids);
        folded.texts.freeze();
        folded.line_texts.shrink_to_fit();
        for count in &mut folded.counts {
            *count = shown.scale(*count);
        }
        let mut order: Vec<u32> = (0..index_u32(folded.counts.len()))
            .filter(|&line| folded.counts[line as usize] > 0)
            .collect();
        order.sort_unstable_by(|&a, &b| compare_lines(&folded, a, b));
        folded.order = order;
        folded.unit = shown.unit;
        folded
    }
}

/// Folds every sample of `profile`. Fails only when `--per-thread` is asked of a profile without
/// thread labels, when the value asked for is not in the profile, or when counts overflow.
pub fn fold(profile: &Profile, options: &FoldOptions) -> Result<Folded> {
    let shown = Shown::resolve(&profile.value_types, options.value)?;
    // A line per sample at most: many samples share a line, but reserving that much costs 6-12
    // bytes a sample (the index), far less than the samples themselves, and only while folding.
    let mut builder = FoldedBuilder::with_capacity(profile.samples.len());
    // Each location's text ids, made once: a long recording has many samples through few locations.
    let mut location_texts: Vec<u32> = Vec::new();
    let mut location_ends: Vec<u32> = Vec::with_capacity(profile.locations.len());
    for location in &profile.locations {
        push_location_texts(
            &mut location_texts,
            &mut builder,
            profile,
            location,
            options.lines,
        );
        location_ends.push(index_u32(location_texts.len()));
    }
    let of_location = |id: usize| {
        let start = if id == 0 { 0 } else { location_ends[id - 1] };
        &location_texts[start as usize..location_ends[id] as usize]
    };
    let truncated = builder.text_id(TRUNCATED_FRAME);
    let empty = builder.text_id(EMPTY_STACK);

    // Root text ids by what they are made of: many samples share a few roots.
    let mut root_ids: HashMap<Root<'_>, u32> = HashMap::new();
    let mut line = Vec::new();
    let mut stack = Vec::new();
    for sample in &profile.samples {
        // Nanoseconds are summed per line, then rounded: short intervals add up.
        let value = shown.raw(&sample.values);
        if value == 0 {
            continue;
        }
        line.clear();
        if let Some(root) = Root::of(sample, options, profile.metadata.unlabelled_processes)? {
            line.push(
                *root_ids
                    .entry(root)
                    .or_insert_with(|| builder.text_id(&root.text())),
            );
        }
        if sample.truncated {
            line.push(truncated);
        }
        profile
            .stacks
            .outermost_first_into(sample.stack, &mut stack);
        for &location_id in &stack {
            line.extend_from_slice(of_location(location_id as usize));
        }
        if line.is_empty() {
            line.push(empty);
        }
        builder.add(&line, value)?;
    }
    Ok(builder.finish(&shown))
}

/// How lines `a` and `b` of `folded` sort as their texts: texts hold no `;`, so the first text the
/// lines differ in decides, compared as it is followed in its line: by a `;` or, for the last, by
/// nothing (shorter first). No text is made: the shared outer frames compare as ids, and the
/// texts that differ as byte slices (one `memcmp`; a long recording sorts ~10^5 lines of deep
/// stacks, millions of comparisons at the end of the recording), then by what follows the shorter
/// when it is a prefix of the other.
fn compare_lines(folded: &Folded, a: u32, b: u32) -> Ordering {
    let (a, b) = (folded.texts_of(a), folded.texts_of(b));
    let Some(position) = a.iter().zip(b).position(|(x, y)| x != y) else {
        return a.len().cmp(&b.len());
    };
    let followed = |ids: &[u32]| {
        let separator: &'static [u8] = if position + 1 == ids.len() { b"" } else { b";" };
        (folded.texts.get(ids[position]).as_bytes(), separator)
    };
    let ((a_text, a_separator), (b_text, b_separator)) = (followed(a), followed(b));
    let common = a_text.len().min(b_text.len());
    a_text[..common].cmp(&b_text[..common]).then_with(|| {
        let a_rest = a_text[common..].iter().chain(a_separator);
        a_rest.cmp(b_text[common..].iter().chain(b_separator))
    })
}

/// A location's frames, outermost first, as folded lines show them. An interpreter's frame gets
/// its runtime's marker (`_[p]`) in place of its kind's suffix.
fn push_location_texts(
    ids: &mut Vec<u32>,
    texts: &mut FoldedBuilder,
    profile: &Profile,
    location: &Location,
    lines: bool,
) {
    let runtime = profile.runtime(location);
    if location.frames.is_empty() {
        let suffix = match runtime {
            Some(runtime) => runtime.marker(),
            None if location.in_kernel => "_[k]",
            None => "",
        };
        ids.push(texts.text_id(&format!("{}{suffix}", sanitize(&profile.unnamed(location)))));
        return;
    }
    for frame in &location.frames {
        // Most frames show as their name alone: no text is made for them.
        let plain = frame.kind == FrameKind::User
            && !(lines && frame.file.is_some() && frame.line.is_some());
        if runtime.is_none() && plain {
            if let Cow::Borrowed(name) = sanitize(&frame.name) {
                ids.push(texts.text_id(name));
                continue;
            }
        }
        let text = match runtime {
            Some(runtime) => format!(
                "{}{}",
                sanitize(&frame_name(frame, lines)),
                runtime.marker()
            ),
            None => frame_text(frame, lines),
        };
        ids.push(texts.text_id(&text));
    }
}

/// Why `--per-thread` cannot fold a profile without thread labels (`unlabelled` processes lost
/// them while recording).
pub fn no_threads(unlabelled: u64) -> anyhow::Error {
    anyhow::anyhow!(
        "--per-thread needs the thread of each sample (pprof labels pid, tid and thread_name); \
         this profile does not have them{}",
        if unlabelled > 0 {
            format!(
                " for {unlabelled} processes that ended while recording \
                 (record with --per-thread to keep them all)"
            )
        } else {
            String::new()
        }
    )
}

/// The root of a sample's line: its process, or its thread with `--per-thread`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Root<'a> {
    Process(&'a str),
    Thread { name: &'a str, pid: u32, tid: u32 },
}

impl<'a> Root<'a> {
    fn of(
        sample: &'a Sample,
        options: &FoldOptions,
        profile_unlabelled: u64,
    ) -> Result<Option<Root<'a>>> {
        if !options.per_thread {
            return Ok(sample.process_name.as_deref().map(Root::Process));
        }
        let (Some(name), Some(pid), Some(tid)) =
            (sample.thread_name.as_deref(), sample.pid, sample.tid)
        else {
            return Err(no_threads(profile_unlabelled));
        };
        Ok(Some(Root::Thread { name, pid, tid }))
    }

    fn text(self) -> String {
        match self {
            Root::Process(name) => sanitize(name).into_owned(),
            Root::Thread { name, pid, tid } => format!("{}-{pid}/{tid}", sanitize(name)),
        }
    }
}

/// A frame as folded output shows it: its name, `(file:LINE)` with `lines`, and its kind's suffix.
pub fn frame_text(frame: &Frame, lines: bool) -> String {
    let suffix = match frame.kind {
        FrameKind::Kernel => "_[k]",
        FrameKind::Inlined => "_[i]",
        FrameKind::Jit => "_[j]",
        FrameKind::User => "",
    };
    format!("{}{suffix}", sanitize(&frame_name(frame, lines)))
}

/// A frame's name, with `(file:LINE)` if `lines` and it has one.
fn frame_name(frame: &Frame, lines: bool) -> String {
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) if lines => format!("{} ({file}:{line})", frame.name),
        _ => frame.name.to_string(),
    }
}

/// A `;` would split a frame in two and a line break would end the line: replace both, and every
/// other control character (see [`crate::text::printable`]): names come from the profiled process.
/// Empty names (an unnamed thread) would make an empty frame.
pub fn sanitize(name: &str) -> std::borrow::Cow<'_, str> {
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

    /// Lines come out in the order their texts sort, also where one frame's name starts another's
    /// and the next character sorts before `;` (`a+1`, `a.cold`, `a b`) or after it (`ab`), and
    /// equal lines add up.
    #[test]
    fn lines_sort_as_their_text() {
        const FRAMES: [&str; 8] = ["a", "a.cold", "a+1", "a b", "ab", "b", "a!", "a_[k]"];
        // xorshift: varied stacks, the same every run.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut below = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut expected = std::collections::BTreeMap::<String, u64>::new();
        let mut input = String::new();
        for _ in 0..2000 {
            let depth = 1 + below(4);
            let stack: Vec<&str> = (0..depth).map(|_| FRAMES[below(FRAMES.len())]).collect();
            let stack = stack.join(";");
            let count = 1 + below(9) as u64;
            *expected.entry(stack.clone()).or_default() += count;
            input += &format!("{stack} {count}\n");
        }
        let profile = crate::input::parse_profile(input.as_bytes(), "t.folded").expect("read");
        let folded = fold(&profile, &FoldOptions::default()).unwrap();
        let want: Vec<String> = expected.iter().map(|(s, c)| format!("{s} {c}")).collect();
        assert!(want.len() < 2000, "some lines repeat");
        assert_eq!(folded.lines().collect::<Vec<_>>(), want);
        assert_eq!(folded.text(), want.join("\n") + "\n");
        let mut written = Vec::new();
        folded.write(&mut written).unwrap();
        assert_eq!(String::from_utf8(written).unwrap(), folded.text());
    }

    /// Each distinct text is stored once, whatever number of lines and locations show it.
    #[test]
    fn texts_are_stored_once() {
        let text = "main;work;read_k_[k] 3\nmain;other 1\nmain;work 2\n";
        let profile = crate::input::parse_profile(text.as_bytes(), "t.folded").expect("read");
        let folded = fold(&profile, &FoldOptions::default()).unwrap();
        let mut texts: Vec<&str> = (0..folded.texts.len() as u32)
            .map(|id| folded.texts.get(id))
            .collect();
        texts.sort_unstable();
        assert_eq!(
            texts,
            [
                "[truncated]",
                "[unknown]",
                "main",
                "other",
                "read_k_[k]",
                "work"
            ]
        );
        assert_eq!(
            folded.text(),
            "main;other 1\nmain;work 2\nmain;work;read_k_[k] 3\n"
        );
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
            python: None,
            count,
            off_cpu: false,
        };
        let samples = [sample(7, 2), sample(7, 3), sample(8, 1)];
        let profile = build(&samples, &mut symbolizer, Metadata::default());
        assert_eq!(profile.locations.len(), 2, "one location per address");
        let module = &profile.mappings[profile.locations[0].mapping.expect("in a module")];
        assert!(
            module.build_id.is_some(),
            "test binary has a build-id: {module:?}"
        );

        let folded = fold(&profile, &FoldOptions::default()).unwrap().counts();
        assert_eq!(folded.len(), 1, "{folded:?}");
        let (line, count) = folded.iter().next().unwrap();
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
        let counts = folded.counts();
        let roots: Vec<&str> = counts
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
