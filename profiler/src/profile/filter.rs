//! Narrowing a profile before it is rendered: `--no-kernel`, `--no-inline` and `--grep`. Profile in,
//! profile out, so every output format (pprof included) sees the same selection.

use regex::Regex;

use super::{FrameKind, Profile, Stacks};

#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Leave kernel frames out.
    pub no_kernel: bool,
    /// Fold inlined functions back into the function they were inlined into.
    pub no_inline: bool,
    /// Keep only samples with a frame whose name matches.
    pub grep: Option<Regex>,
}

impl Filter {
    pub fn is_empty(&self) -> bool {
        !self.no_kernel && !self.no_inline && self.grep.is_none()
    }
}

/// `profile` narrowed by `filter`. Locations stay where they are (ids are unchanged); only frames of
/// locations and the samples' stacks change.
pub fn apply(mut profile: Profile, filter: &Filter) -> Profile {
    if filter.is_empty() {
        return profile;
    }
    // A location left without any frame by --no-inline (a lone inlined frame read from folded
    // input) leaves the stacks; one that never had a name stays, shown as module+offset.
    let mut dropped = vec![false; profile.locations.len()];
    for (location, dropped) in profile.locations.iter_mut().zip(&mut dropped) {
        if filter.no_kernel && location.in_kernel {
            *dropped = true;
        }
        if filter.no_inline && !location.frames.is_empty() {
            location.frames.truncate(1);
            location.frames.retain(|f| f.kind != FrameKind::Inlined);
            *dropped |= location.frames.is_empty();
        }
    }
    let matching: Option<Vec<bool>> = filter.grep.as_ref().map(|grep| {
        profile
            .locations
            .iter()
            .map(|location| {
                if location.frames.is_empty() {
                    grep.is_match(&profile.unnamed(location))
                } else {
                    location.frames.iter().any(|f| grep.is_match(&f.name))
                }
            })
            .collect()
    });
    let mut stacks = Stacks::default();
    let stack_map = profile.stacks.map_into(&mut stacks, |id| {
        let keep = !dropped[id as usize];
        keep.then_some(id)
    });
    profile.stacks = stacks;
    profile.samples.retain_mut(|sample| {
        sample.stack = stack_map[sample.stack as usize];
        match &matching {
            Some(matching) => profile.stacks.any(sample.stack, |id| matching[id as usize]),
            None => true,
        }
    });
    profile
}
