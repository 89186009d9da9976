//! One shared copy of each string: the function names and source paths the symbolizer hands out,
//! and the process and thread names of a profile's samples.
//!
//! blazesym returns fresh strings for every address looked up, so without this each cached
//! address held its own copy of names (and, with `--lines` or inlined frames, of source paths tens
//! of bytes long) that hundreds of other addresses of the same function repeat. On a long `--all`
//! run those copies grew with every new address sampled.

use std::collections::HashSet;
use std::sync::Arc;

/// Bounded by the distinct strings in use: in the symbolizer, the names and source paths of the code
/// its caches and the profile's locations hold (they share these copies). A long `--all` run names
/// far more code than its bounded profile keeps (beside a build: 41,000 strings for 11,600
/// locations after ten minutes, and growing), so the owner calls [`SharedStrings::forget_unused`]
/// now and then.
#[derive(Debug, Default)]
pub struct SharedStrings {
    strings: HashSet<Arc<str>>,
}

impl SharedStrings {
    /// The shared copy of `text`, made on first use.
    pub fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(shared) = self.strings.get(text) {
            return shared.clone();
        }
        let shared: Arc<str> = Arc::from(text);
        self.strings.insert(shared.clone());
        shared
    }

    /// Forgets the strings no one else holds a copy of: the next [`SharedStrings::get`] of one
    /// makes it again. Returns how many were forgotten.
    pub fn forget_unused(&mut self) -> usize {
        let before = self.strings.len();
        self.strings.retain(|text| Arc::strong_count(text) > 1);
        // A table sized for its largest moment would keep that size for the rest of the run.
        if self.strings.capacity() > 4 * self.strings.len().max(64) {
            self.strings.shrink_to_fit();
        }
        before - self.strings.len()
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_share_one_copy() {
        let mut strings = SharedStrings::default();
        let first = strings.get("std::vector<int>::push_back");
        let again = strings.get(&String::from("std::vector<int>::push_back"));
        let other = strings.get("main");
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(&*other, "main");
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(strings.len(), 2);
    }

    #[test]
    fn only_strings_held_elsewhere_are_kept() {
        let mut strings = SharedStrings::default();
        let held = strings.get("held");
        drop(strings.get("dropped"));
        assert_eq!(strings.forget_unused(), 1);
        assert_eq!(strings.len(), 1);
        assert!(Arc::ptr_eq(&held, &strings.get("held")));
        drop(held);
        assert_eq!(strings.forget_unused(), 1);
        assert!(strings.is_empty());
    }
}
