//! The stacks of a profile, each stored once as a path in a tree of calls (a trie): a stack is its
//! innermost location and the stack of its callers.
//!
//! Why a tree: the stacks of one program share their outer frames (`main`, the event loop, the
//! syscall entry), so a new stack usually adds one or two nodes of 8 bytes, where a list of its
//! locations (a long recording's stacks are tens of frames deep) cost some hundred bytes. On a
//! fork-heavy `--all` run, 23,000 distinct stacks of 490,000 frames in all were 52,000 nodes.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

use super::LocationId;

/// A stack in [`Stacks`]: the index of its innermost node.
pub type StackId = u32;

/// The stack of no frames, in every [`Stacks`].
pub const EMPTY_STACK: StackId = 0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Node {
    /// The stack of the callers.
    caller: StackId,
    /// The innermost location.
    location: LocationId,
}

/// Bounded by the distinct stacks it is given (at most one node per frame of each, usually one or
/// two new nodes per stack).
#[derive(Clone, Debug)]
pub struct Stacks {
    /// Node 0 is the empty stack; a node's caller comes before it.
    nodes: Vec<Node>,
    /// Indices into `nodes` but the first, hashed by the node: no stack stored twice.
    index: HashTable<StackId>,
    hasher: RandomState,
}

impl Default for Stacks {
    fn default() -> Self {
        Stacks {
            nodes: vec![Node {
                caller: EMPTY_STACK,
                location: LocationId::MAX,
            }],
            index: HashTable::new(),
            hasher: RandomState::new(),
        }
    }
}

/// Equal when they hold the same stacks under the same ids.
impl PartialEq for Stacks {
    fn eq(&self, other: &Self) -> bool {
        self.nodes == other.nodes
    }
}

impl Stacks {
    /// The id of `locations` (outermost first), added if new.
    pub fn insert(&mut self, locations: &[LocationId]) -> StackId {
        locations
            .iter()
            .fold(EMPTY_STACK, |stack, &location| self.call(stack, location))
    }

    /// The id of `stack` with `location` called from its innermost frame, added if new.
    pub fn call(&mut self, stack: StackId, location: LocationId) -> StackId {
        let node = Node {
            caller: stack,
            location,
        };
        let hasher = &self.hasher;
        let nodes = &mut self.nodes;
        let hash = hasher.hash_one(node);
        if let Some(&id) = self.index.find(hash, |&id| nodes[id as usize] == node) {
            return id;
        }
        let id = StackId::try_from(nodes.len()).expect("fewer than 2^32 stack nodes");
        if nodes.len() == nodes.capacity() {
            // By an eighth, not the doubling `push` would do: on a long recording this is one of
            // the largest vectors, and a doubling left it up to half unused for the rest of the run.
            nodes.reserve_exact((nodes.len() / 8).max(1024));
        }
        nodes.push(node);
        self.index
            .insert_unique(hash, id, |&id| hasher.hash_one(nodes[id as usize]));
        id
    }

    /// The locations of `stack`, innermost first.
    pub fn innermost_first(&self, stack: StackId) -> impl Iterator<Item = LocationId> + '_ {
        let mut at = stack;
        std::iter::from_fn(move || {
            if at == EMPTY_STACK {
                return None;
            }
            let node = self.nodes[at as usize];
            at = node.caller;
            Some(node.location)
        })
    }

    /// The locations of `stack`, outermost first, into `locations` (emptied first).
    pub fn outermost_first_into(&self, stack: StackId, locations: &mut Vec<LocationId>) {
        locations.clear();
        locations.extend(self.innermost_first(stack));
        locations.reverse();
    }

    /// The locations of `stack`, outermost first.
    #[cfg(test)]
    pub fn outermost_first(&self, stack: StackId) -> Vec<LocationId> {
        let mut locations = Vec::new();
        self.outermost_first_into(stack, &mut locations);
        locations
    }

    /// Whether any location of `stack` satisfies `test`.
    pub fn any(&self, stack: StackId, test: impl FnMut(LocationId) -> bool) -> bool {
        self.innermost_first(stack).any(test)
    }

    /// Every stack of `self` as `map` makes it, location by location, in a new table (`map` may
    /// send several locations to one: stacks that become equal get one id). Indexed by the ids of
    /// `self`.
    pub fn map_into(
        &self,
        into: &mut Stacks,
        mut map: impl FnMut(LocationId) -> Option<LocationId>,
    ) -> Vec<StackId> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        ids.push(EMPTY_STACK);
        // A node's caller comes before it, so its id in `into` is known by then.
        for node in &self.nodes[1..] {
            let caller = ids[node.caller as usize];
            ids.push(match map(node.location) {
                Some(location) => into.call(caller, location),
                // Left out: the stack is its caller's.
                None => caller,
            });
        }
        ids
    }

    /// [`Stacks::map_into`] within `max_nodes` nodes of `into`: a node `map` has no location for,
    /// or one that would be past `max_nodes`, is cut: its stack is its caller's with `cut` called
    /// from it (one such node per caller, past `max_nodes` too: at most as many as the nodes
    /// within), and the stacks under it end there as well.
    pub fn map_into_within(
        &self,
        into: &mut Stacks,
        mut map: impl FnMut(LocationId) -> Option<LocationId>,
        max_nodes: usize,
        cut: LocationId,
    ) -> Vec<StackId> {
        let mut ids = Vec::with_capacity(self.nodes.len());
        ids.push(EMPTY_STACK);
        for node in &self.nodes[1..] {
            let caller = ids[node.caller as usize];
            let id = if into.nodes[caller as usize].location == cut {
                caller
            } else {
                match map(node.location) {
                    Some(location) => match into.get(caller, location) {
                        Some(id) => id,
                        None if into.nodes.len() < max_nodes => into.call(caller, location),
                        None => into.call(caller, cut),
                    },
                    None => into.call(caller, cut),
                }
            };
            ids.push(id);
        }
        ids
    }

    /// Keeps the nodes `kept` marks (each kept node's callers must be kept too), their locations
    /// changed by `relocate`, in place: beside the samples this is the largest table of a full
    /// profile, and a second one built beside it made the peak of a prune. Nodes that `relocate`
    /// makes equal become one. Returns each old node's new id: its own if kept, else that of its
    /// deepest kept caller.
    pub fn retain(
        &mut self,
        kept: &[bool],
        mut relocate: impl FnMut(LocationId) -> LocationId,
    ) -> Vec<StackId> {
        let mut map = vec![EMPTY_STACK; self.nodes.len()];
        self.index.clear();
        let hasher = &self.hasher;
        let nodes = &mut self.nodes;
        let mut next = 1;
        for old in 1..nodes.len() {
            // A caller comes before its callees, so it is mapped already, and `next <= old`: the
            // nodes not read yet are never overwritten.
            let caller = map[nodes[old].caller as usize];
            if !kept[old] {
                map[old] = caller;
                continue;
            }
            let node = Node {
                caller,
                location: relocate(nodes[old].location),
            };
            let hash = hasher.hash_one(node);
            if let Some(&id) = self.index.find(hash, |&id| nodes[id as usize] == node) {
                map[old] = id;
                continue;
            }
            let id = StackId::try_from(next).expect("fewer than 2^32 stack nodes");
            nodes[next] = node;
            self.index
                .insert_unique(hash, id, |&id| hasher.hash_one(nodes[id as usize]));
            map[old] = id;
            next += 1;
        }
        nodes.truncate(next);
        map
    }

    /// The innermost location of `stack` (not the empty stack).
    pub fn location(&self, stack: StackId) -> LocationId {
        self.nodes[stack as usize].location
    }

    /// The stack of the callers of `stack`'s innermost frame (the empty stack's is itself).
    pub fn caller(&self, stack: StackId) -> StackId {
        self.nodes[stack as usize].caller
    }

    /// The id of `stack` with `location` called from its innermost frame, if held.
    pub fn get(&self, stack: StackId, location: LocationId) -> Option<StackId> {
        let node = Node {
            caller: stack,
            location,
        };
        let hash = self.hasher.hash_one(node);
        self.index
            .find(hash, |&id| self.nodes[id as usize] == node)
            .copied()
    }

    /// Nodes held (the empty stack included), for the debug log of long runs.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stacks_share_their_callers_and_read_back_in_order() {
        let mut stacks = Stacks::default();
        let a = stacks.insert(&[1, 2, 3]);
        let b = stacks.insert(&[1, 2, 4]);
        let again = stacks.insert(&[1, 2, 3]);
        let empty = stacks.insert(&[]);
        assert_eq!(a, again);
        assert_ne!(a, b);
        assert_eq!(empty, EMPTY_STACK);
        // The empty stack, then 1, 1;2, 1;2;3 and 1;2;4.
        assert_eq!(stacks.len(), 5);
        assert_eq!(stacks.outermost_first(a), [1, 2, 3]);
        assert_eq!(stacks.innermost_first(b).collect::<Vec<_>>(), [4, 2, 1]);
        assert!(stacks.outermost_first(empty).is_empty());
        // A stack that is a prefix of another is its node.
        let prefix = stacks.insert(&[1, 2]);
        assert_eq!(stacks.len(), 5);
        assert_eq!(stacks.outermost_first(prefix), [1, 2]);
        // Recursion: one location twice in a stack.
        let recursive = stacks.insert(&[7, 7, 7]);
        assert_eq!(stacks.outermost_first(recursive), [7, 7, 7]);
    }

    #[test]
    fn mapped_stacks_merge_and_drop_locations() {
        let mut stacks = Stacks::default();
        let ids = [
            stacks.insert(&[1, 2, 3]),
            stacks.insert(&[1, 5, 3]),
            stacks.insert(&[9, 1]),
            stacks.insert(&[1, 9, 3]),
        ];
        let mut into = Stacks::default();
        let eight = into.insert(&[8]);
        // 5 becomes 2 (the first two stacks become one), 9 is left out.
        let map = stacks.map_into(&mut into, |location| match location {
            9 => None,
            5 => Some(2),
            other => Some(other),
        });
        let mapped: Vec<Vec<LocationId>> = ids
            .iter()
            .map(|&id| into.outermost_first(map[id as usize]))
            .collect();
        assert_eq!(mapped, [vec![1, 2, 3], vec![1, 2, 3], vec![1], vec![1, 3]]);
        assert_eq!(map[ids[0] as usize], map[ids[1] as usize]);
        assert_eq!(into.outermost_first(eight), [8]);
        // The empty stack, 8, 1, 1;2, 1;2;3 and 1;3.
        assert_eq!(into.len(), 6);
    }

    #[test]
    fn retained_stacks_keep_their_paths_and_merge_what_becomes_equal() {
        let mut stacks = Stacks::default();
        let ids = [
            stacks.insert(&[1, 2, 3]),
            stacks.insert(&[1, 5, 3]),
            stacks.insert(&[1, 9, 4]),
            stacks.insert(&[6]),
        ];
        // Nodes: 1, 1;2, 1;2;3, 1;5, 1;5;3, 1;9, 1;9;4, 6. Drop 1;9;4 and 6; 5 becomes 2.
        let mut kept = vec![true; stacks.len()];
        kept[ids[2] as usize] = false;
        kept[ids[3] as usize] = false;
        let map = stacks.retain(&kept, |location| if location == 5 { 2 } else { location });
        let paths: Vec<Vec<LocationId>> = ids
            .iter()
            .map(|&id| stacks.outermost_first(map[id as usize]))
            .collect();
        assert_eq!(paths, [vec![1, 2, 3], vec![1, 2, 3], vec![1, 9], vec![]]);
        assert_eq!(map[ids[0] as usize], map[ids[1] as usize]);
        // The empty stack, 1, 1;2, 1;2;3 and 1;9.
        assert_eq!(stacks.len(), 5);
        // The index holds the new nodes: finding one adds nothing, a new one is added.
        assert_eq!(stacks.insert(&[1, 2, 3]), map[ids[0] as usize]);
        assert_eq!(stacks.len(), 5);
        let added = stacks.insert(&[1, 9, 4]);
        assert_eq!(stacks.outermost_first(added), [1, 9, 4]);
        assert_eq!(stacks.len(), 6);
    }
}
