//! Folded stacks (`root;frame;...;leaf COUNT`, FlameGraph's format, as written by emberprof, perf
//! script | stackcollapse, inferno-collapse-*) into the model. The root is kept as an ordinary frame
//! (the profile has no process labels), and the frame suffixes emberprof writes are read back as
//! kinds: `_[k]` kernel, `_[i]` inlined, `_[j]` JIT, and runtime markers (`_[p]` Python) as
//! interpreter frames, so folding the result gives the same lines.

use std::collections::hash_map::Entry;
use std::collections::HashMap;

use anyhow::{bail, Result};

use super::MAX_FRAMES;
use crate::profile::{
    location_id, Frame, FrameKind, Location, LocationId, Mapping, Profile, Runtime, Sample,
    StackId, Values,
};

pub fn read_folded(text: &str, name: &str) -> Result<Profile> {
    let mut profile = Profile::default();
    let mut locations: HashMap<&str, LocationId> = HashMap::new();
    let mut samples: HashMap<StackId, usize> = HashMap::new();
    let mut total: u64 = 0;
    for (index, line) in text.lines().enumerate() {
        let at = || format!("{name}:{}", index + 1);
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
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
        total = sum;
        if stack.is_empty() {
            bail!("{}: empty stack before the count", at());
        }
        let frames = stack.split(';');
        let mut ids = Vec::new();
        for frame in frames {
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
                // Cannot overflow: `total` holds it.
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

/// At most 80 characters of `text` for an error message.
fn excerpt(text: &str) -> String {
    let mut excerpt: String = text.chars().take(80).collect();
    if excerpt.len() < text.len() {
        excerpt.push('…');
    }
    crate::text::printable(&excerpt).into_owned()
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
    let (name, kind) = [
        ("_[k]", FrameKind::Kernel),
        ("_[i]", FrameKind::Inlined),
        ("_[j]", FrameKind::Jit),
    ]
    .into_iter()
    .find_map(|(suffix, kind)| frame.strip_suffix(suffix).map(|name| (name, kind)))
    .unwrap_or((frame, FrameKind::User));
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
