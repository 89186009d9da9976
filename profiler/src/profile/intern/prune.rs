//! Making room past the limit: the profile keeps its heaviest samples and folds the others into
//! `[over budget]` stacks under what it keeps. Without it, the first stacks seen would hold the
//! limit for the rest of the run, and a program started later would show as its name alone.

use std::cmp::Reverse;

use super::{Interner, NODE_BYTES, SAMPLE_BYTES};
use crate::profile::{Values, EMPTY_STACK};

impl Interner {
    /// Keeps the heaviest samples whose stack nodes, locations and own bytes fit in `target`
    /// bytes (with the mappings, all kept); every other sample joins the `[over budget]` stack of
    /// its deepest caller that a kept stack passes through, without pid, tid and thread name
    /// (unless threads are kept), so totals and the kept stacks' widths stay right.
    pub(super) fn prune(&mut self, target: u64) {
        let locations = std::mem::take(&mut self.profile.locations);
        let mut samples = std::mem::take(&mut self.profile.samples);
        let old_over_budget = self.over_budget.take();
        let stacks = &self.profile.stacks;

        let mut order: Vec<usize> = (0..samples.len()).collect();
        order.sort_unstable_by_key(|&i| Reverse(weight(&samples[i].values)));
        let mut kept_node = vec![false; stacks.len()];
        kept_node[EMPTY_STACK as usize] = true;
        let mut kept_location = vec![false; locations.len()];
        let mut kept_sample = vec![false; samples.len()];
        let mut used = self.mapping_bytes + NODE_BYTES;
        let mut path = Vec::new();
        for &index in &order {
            path.clear();
            let mut cost = SAMPLE_BYTES;
            let mut at = samples[index].stack;
            while !kept_node[at as usize] {
                path.push(at);
                let location = stacks.location(at) as usize;
                cost += NODE_BYTES;
                if !kept_location[location] {
                    // A location twice on the path is counted twice: on the safe side.
                    cost += super::location_bytes(&locations[location]);
                }
                at = stacks.caller(at);
            }
            if used + cost > target {
                // Heaviest first: what is left is lighter.
                break;
            }
            used += cost;
            kept_sample[index] = true;
            for &node in &path {
                kept_node[node as usize] = true;
                kept_location[stacks.location(node) as usize] = true;
            }
        }
        drop(order);
        // Samples cut at an earlier prune, whose `[over budget]` frame is not counted again.
        let already_cut: Vec<bool> = samples
            .iter()
            .zip(&kept_sample)
            .map(|(sample, &kept)| {
                !kept
                    && sample.stack != EMPTY_STACK
                    && Some(stacks.location(sample.stack)) == old_over_budget
            })
            .collect();

        // What is rebuilt reuses what it replaces: a prune runs when the profile is at its
        // largest, and a second copy of it (the samples, then the stack nodes) was the run's peak.
        self.location_ids.clear();
        self.code_point_ids.clear();
        self.location_bytes = 0;
        let location_map: Vec<Option<_>> = locations
            .into_iter()
            .zip(&kept_location)
            .map(|(location, &kept)| kept.then(|| self.location(location)))
            .collect();
        let node_map = self.profile.stacks.retain(&kept_node, |location| {
            location_map[location as usize].expect("a kept node's location is kept")
        });
        drop((kept_node, kept_location, location_map));
        let over_budget = self.over_budget_location();
        for ((sample, &kept), &already_cut) in
            samples.iter_mut().zip(&kept_sample).zip(&already_cut)
        {
            sample.stack = node_map[sample.stack as usize];
            if kept {
                continue;
            }
            let at = sample.stack;
            if at == EMPTY_STACK || self.profile.stacks.location(at) != over_budget {
                sample.stack = self.profile.stacks.call(at, over_budget);
            }
            if !self.keep_threads {
                sample.pid = None;
                sample.tid = None;
                sample.thread_name = None;
            }
            if !already_cut {
                self.profile.metadata.over_budget_samples += sample.values.get(0);
            }
        }
        drop(node_map);
        self.profile.samples = samples;
        self.merge_equal_samples();
        // The thread names of the samples folded away.
        self.names.forget_unused();
        self.pruned_at = self.held_bytes();
        self.cut_at_prune = self.profile.metadata.over_budget_samples;
    }
}

/// How much of the profile a sample is: its count first (samples, for CPU profiles), then the
/// other values (off-CPU time of a wall-clock profile).
fn weight(values: &Values) -> (u64, u64) {
    let rest = (1..super::super::values::MAX_VALUES)
        .map(|i| values.get(i))
        .fold(0u64, u64::saturating_add);
    (values.get(0), rest)
}
