//! One shared copy of each string: the function names and source paths the symbolizer hands out,
//! and the process and thread names of a profile's samples.
//!
//! blazesym returns fresh strings for every address looked up, so without this each cached
//! address held its own copy of names (and, with `--lines` or inlined frames, of source paths tens
//! of bytes long) that hundreds of other addresses of the same function repeat. On a long `--all`
//! run those copies grew with every new address sampled.

use std::collections::HashSet;
use std::sync::Arc;

/// Bounded by the distinct strings given. In the symbolizer: the names and source paths of the code
/// sampled, the same strings the profile's locations hold (they share these copies), so this adds
/// no entry the output does not already pay for.
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
}
