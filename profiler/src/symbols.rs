//! Symbolizing the addresses of a set of stacks in two batches (user, kernel), so each distinct
//! address is looked up once. Used by the recording loop, to symbolize new stacks while sampling goes
//! on, and by building the profile at the end, which then mostly hits the symbolizer's caches.

use std::collections::{HashMap, HashSet};

use emberprof_symbolizer::{FrameAddress, ProcessKey, Symbol, Symbolizer};

use crate::sample::StackSample;

/// The symbol of every address of some stacks.
#[derive(Debug, Default)]
pub struct StackSymbols {
    user: HashMap<(ProcessKey, FrameAddress), Symbol>,
    kernel: HashMap<FrameAddress, Symbol>,
}

impl StackSymbols {
    /// Symbols of a sample's user stack, outermost first.
    pub fn user_outermost_first<'a>(
        &'a self,
        sample: &'a StackSample,
    ) -> impl Iterator<Item = &'a Symbol> + 'a {
        sample
            .user_ips
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &ip)| &self.user[&(sample.process(), FrameAddress::from_stack_index(i, ip))])
    }

    /// The symbol of one user address of `process`; every address of the stacks given to
    /// [`symbolize_stacks`] has one.
    pub fn user(&self, process: ProcessKey, address: FrameAddress) -> Option<&Symbol> {
        self.user.get(&(process, address))
    }

    /// The symbol of one kernel address (see [`StackSymbols::user`]).
    pub fn kernel(&self, address: FrameAddress) -> Option<&Symbol> {
        self.kernel.get(&address)
    }

    /// Symbols of a sample's kernel stack, outermost first.
    pub fn kernel_outermost_first<'a>(
        &'a self,
        sample: &'a StackSample,
    ) -> impl Iterator<Item = &'a Symbol> + 'a {
        sample
            .kernel_ips
            .iter()
            .enumerate()
            .rev()
            .map(|(i, &ip)| &self.kernel[&FrameAddress::from_stack_index(i, ip)])
    }
}

pub fn symbolize_stacks(samples: &[StackSample], symbolizer: &mut Symbolizer) -> StackSymbols {
    let user_addresses: Vec<(ProcessKey, FrameAddress)> = unique(samples.iter().flat_map(|s| {
        s.user_ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| (s.process(), FrameAddress::from_stack_index(i, ip)))
    }));
    let kernel_addresses: Vec<FrameAddress> = unique(samples.iter().flat_map(|s| {
        s.kernel_ips
            .iter()
            .enumerate()
            .map(|(i, &ip)| FrameAddress::from_stack_index(i, ip))
    }));
    let user = user_addresses
        .iter()
        .copied()
        .zip(symbolizer.symbolize_user(&user_addresses))
        .collect();
    let kernel = kernel_addresses
        .iter()
        .copied()
        .zip(symbolizer.symbolize_kernel(&kernel_addresses))
        .collect();
    StackSymbols { user, kernel }
}

fn unique<T: std::hash::Hash + Eq + Copy>(items: impl Iterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    items.filter(|item| seen.insert(*item)).collect()
}
