//! The distinct texts of folded stacks (roots and frames), each stored once, end to end in one
//! string. Folded input of distinct frames (`report` on a large `.folded` file) holds millions of
//! short texts: a heap string each cost ~50 bytes besides its own, more than the text itself, so
//! here a text costs its bytes, a 4-byte end and a slot of the index.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// Distinct texts by id, ids given in the order the texts were first added.
#[derive(Debug, Default)]
pub struct Texts {
    bytes: String,
    /// Where each text ends in `bytes`.
    ends: Vec<u32>,
    /// Ids, hashed by their text; dropped by [`Texts::freeze`] once nothing more is added.
    index: HashTable<u32>,
    hasher: RandomState,
}

impl Texts {
    /// The id of `text`, added if new.
    pub fn id(&mut self, text: &str) -> u32 {
        let hash = self.hasher.hash_one(text);
        let (bytes, ends) = (&self.bytes, &self.ends);
        if let Some(&id) = self
            .index
            .find(hash, |&id| get(bytes, ends, id as usize) == text)
        {
            return id;
        }
        let id = index_u32(self.ends.len());
        self.bytes.push_str(text);
        self.ends.push(index_u32(self.bytes.len()));
        let (bytes, ends, hasher) = (&self.bytes, &self.ends, &self.hasher);
        self.index.insert_unique(hash, id, |&id| {
            hasher.hash_one(get(bytes, ends, id as usize))
        });
        id
    }

    pub fn get(&self, id: u32) -> &str {
        get(&self.bytes, &self.ends, id as usize)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Drops the index and the room left by the doublings of the vectors: what folding holds from
    /// here on is the texts alone.
    pub fn freeze(&mut self) {
        self.index = HashTable::new();
        self.bytes.shrink_to_fit();
        self.ends.shrink_to_fit();
    }
}

fn get<'a>(bytes: &'a str, ends: &[u32], id: usize) -> &'a str {
    let start = if id == 0 { 0 } else { ends[id - 1] as usize };
    &bytes[start..ends[id] as usize]
}

/// `index` as a text offset or id: texts come from a profile of bounded size or from an input of at
/// most `input::MAX_INPUT_BYTES` (1 GiB), far below 2^32 bytes.
pub fn index_u32(index: usize) -> u32 {
    u32::try_from(index).expect("fewer than 2^32 bytes of folded texts")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A text added twice has one id and is stored once; ids follow first appearance; empty texts
    /// and texts that are prefixes of others keep their own ids.
    #[test]
    fn texts_are_stored_once() {
        let mut texts = Texts::default();
        let ids: Vec<u32> = ["main", "ma", "", "main", "in", ""]
            .iter()
            .map(|t| texts.id(t))
            .collect();
        assert_eq!(ids, [0, 1, 2, 0, 3, 2]);
        texts.freeze();
        assert_eq!(texts.len(), 4);
        assert_eq!(
            (0..4).map(|id| texts.get(id)).collect::<Vec<_>>(),
            ["main", "ma", "", "in"]
        );
        assert_eq!(texts.bytes.len(), "mainmain".len());
    }
}
