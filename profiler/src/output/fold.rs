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
use std::collections::HashMap;
use std::fmt::Write as _;
use std::hash::{BuildHasher, RandomState};
use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use hashbrown::HashTable;

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
    /// The distinct texts of roots and frames (sanitized: never empty, never a `;`), by id. A
    /// frame's name that is its text is the profile's own copy, shared.
    texts: Vec<Arc<str>>,
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
                let stack: Vec<&str> = texts.map(|&id| &*self.texts[id as usize]).collect();
                (stack.join(";"), self.counts[line as usize])
            })
            .collect()
    }

    fn texts_of(&self, line: u32) -> &[u32] {
        let line = line as usize;
        let start = if line == 0 {
            0
        } else {
            self.line_ends[line - 1]
        };
        &self.line_texts[start as usize..self.line_ends[line] as usize]
    }

    fn push_stack(&self, text: &mut String, line: u32) {
        for (position, &id) in self.texts_of(line).iter().enumerate() {
            if position > 0 {
                text.push(';');
            }
            text.push_str(&self.texts[id as usize]);
        }
    }

    fn push_line(&self, text: &mut String, line: u32) {
        self.push_stack(text, line);
        let _ = write!(text, " {}", self.counts[line as usize]);
    }
}

/// Folds every sample of `profile`. Fails only when `--per-thread` is asked of a profile without
/// thread labels, when the value asked for is not in the profile, or when counts overflow.
pub fn fold(profile: &Profile, options: &FoldOptions) -> Result<Folded> {
    let shown = Shown::resolve(&profile.value_types, options.value)?;
    let mut texts = Texts::default();
    // Each location's text ids, made once: a long recording has many samples through few locations.
    let mut location_texts: Vec<u32> = Vec::new();
    let mut location_ends: Vec<u32> = Vec::with_capacity(profile.locations.len());
    for location in &profile.locations {
        push_location_texts(
            &mut location_texts,
            &mut texts,
            profile,
            location,
            options.lines,
        );
        location_ends.push(text_index(location_texts.len()));
    }
    let of_location = |id: usize| {
        let start = if id == 0 { 0 } else { location_ends[id - 1] };
        &location_texts[start as usize..location_ends[id] as usize]
    };
    let truncated = texts.id(TRUNCATED_FRAME);
    let empty = texts.id(EMPTY_STACK);

    let mut folded = Folded::default();
    let hasher = RandomState::new();
    // Indices of the lines, hashed by their text ids.
    let mut line_ids: HashTable<u32> = HashTable::new();
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
                    .or_insert_with(|| texts.id(&root.text())),
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
        let hash = hasher.hash_one(&line);
        let found = line_ids.find(hash, |&id| folded.texts_of(id) == line.as_slice());
        let Some(&id) = found else {
            let id = text_index(folded.counts.len());
            folded.line_texts.extend_from_slice(&line);
            folded.line_ends.push(text_index(folded.line_texts.len()));
            folded.counts.push(value);
            line_ids.insert_unique(hash, id, |&id| hasher.hash_one(folded.texts_of(id)));
            continue;
        };
        let Some(sum) = folded.counts[id as usize].checked_add(value) else {
            let mut stack = String::new();
            folded.push_stack(&mut stack, id);
            bail!("the values of stack `{stack}` add up to more than 2^64 - 1");
        };
        folded.counts[id as usize] = sum;
    }
    folded.texts = texts.into_vec();
    for count in &mut folded.counts {
        *count = shown.scale(*count);
    }
    folded.order = sorted_lines(&folded);
    folded
        .order
        .retain(|&line| folded.counts[line as usize] > 0);
    folded.unit = shown.unit;
    Ok(folded)
}

/// The lines of `folded` in the order of their texts, without making the texts. Texts hold no `;`,
/// so the first text two lines differ in decides, compared as it is followed in its line: by a
/// `;` or, for the last, by nothing (shorter first). Each text gets a rank in both cases, once.
fn sorted_lines(folded: &Folded) -> Vec<u32> {
    let texts = &folded.texts;
    let followed = |id: u32, last: bool| {
        let separator: &[u8] = if last { b"" } else { b";" };
        texts[id as usize].bytes().chain(separator.iter().copied())
    };
    let mut keys: Vec<(u32, bool)> = (0..text_index(texts.len()))
        .flat_map(|id| [(id, false), (id, true)])
        .collect();
    keys.sort_unstable_by(|&(a, a_last), &(b, b_last)| {
        followed(a, a_last).cmp(followed(b, b_last))
    });
    // rank[2 * id + last]
    let mut rank = vec![0u32; keys.len()];
    for (position, &(id, last)) in keys.iter().enumerate() {
        rank[2 * id as usize + usize::from(last)] = text_index(position);
    }
    let rank = &rank;
    let ranks = |line: u32| {
        let ids = folded.texts_of(line);
        let last = ids.len() - 1;
        ids.iter()
            .enumerate()
            .map(move |(position, &id)| rank[2 * id as usize + usize::from(position == last)])
    };
    let mut order: Vec<u32> = (0..text_index(folded.counts.len())).collect();
    order.sort_unstable_by(|&a, &b| ranks(a).cmp(ranks(b)));
    order
}

/// `index` as a text or line id: both are bounded by the profile's locations and samples.
fn text_index(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 folded texts")
}

/// Distinct texts, by id.
#[derive(Default)]
struct Texts {
    ids: HashMap<Arc<str>, u32>,
}

impl Texts {
    fn id(&mut self, text: &str) -> u32 {
        match self.ids.get(text) {
            Some(&id) => id,
            None => self.add(Arc::from(text)),
        }
    }

    /// The id of `text`, holding the profile's copy of it (no new one): a profile of many distinct
    /// frames (large folded input) would otherwise be held twice.
    fn id_shared(&mut self, text: &Arc<str>) -> u32 {
        match self.ids.get(&**text) {
            Some(&id) => id,
            None => self.add(text.clone()),
        }
    }

    fn add(&mut self, text: Arc<str>) -> u32 {
        let id = text_index(self.ids.len());
        self.ids.insert(text, id);
        id
    }

    fn into_vec(self) -> Vec<Arc<str>> {
        let mut texts: Vec<Arc<str>> = vec![Arc::from(""); self.ids.len()];
        for (text, id) in self.ids {
            texts[id as usize] = text;
        }
        texts
    }
}

/// A location's frames, outermost first, as folded lines show them. An interpreter's frame gets
/// its runtime's marker (`_[p]`) in place of its kind's suffix.
fn push_location_texts(
    ids: &mut Vec<u32>,
    texts: &mut Texts,
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
        ids.push(texts.id(&format!("{}{suffix}", sanitize(&profile.unnamed(location)))));
        return;
    }
    for frame in &location.frames {
        // Most frames show as their name alone: the name is shared, not copied.
        let plain = frame.kind == FrameKind::User
            && !(lines && frame.file.is_some() && frame.line.is_some());
        if runtime.is_none() && plain && matches!(sanitize(&frame.name), Cow::Borrowed(_)) {
            ids.push(texts.id_shared(&frame.name));
            continue;
        }
        let text = match runtime {
            Some(runtime) => format!(
                "{}{}",
                sanitize(&frame_name(frame, lines)),
                runtime.marker()
            ),
            None => frame_text(frame, lines),
        };
        ids.push(texts.id(&text));
    }
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

    /// A plain frame's folded text is the profile's own copy of its name, not a second one (a
    /// profile of many distinct frames was held twice while folding); suffixed ones are made.
    #[test]
    fn plain_frame_texts_share_the_profile_names() {
        let text = "main;work;read_k_[k] 3\nmain;other 1\n";
        let profile = crate::input::parse_profile(text.as_bytes(), "t.folded").expect("read");
        let folded = fold(&profile, &FoldOptions::default()).unwrap();
        let shared = |name: &str| {
            let frame = profile
                .locations
                .iter()
                .flat_map(|l| &l.frames)
                .find(|f| &*f.name == name)
                .expect("frame");
            folded.texts.iter().any(|t| Arc::ptr_eq(t, &frame.name))
        };
        assert!(shared("main") && shared("work") && shared("other"));
        assert!(!shared("read_k"), "a kernel frame's text has its suffix");
        assert_eq!(folded.text(), "main;other 1\nmain;work;read_k_[k] 3\n");
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
