//! Process and thread names as the BPF programs copy them (`comm`, 16 bytes), made printable once
//! per distinct name rather than once per sample: every streamed sample and stack copy carries two.

use std::collections::HashMap;
use std::sync::Arc;

use emberprof_bpf::{SampleKey, COMM_LEN};
use emberprof_symbolizer::ProcessKey;

use crate::capture::source::Thread;

/// Distinct names kept before the cache starts over: a machine's running names fit many times over,
/// and a process that renames itself in a loop cannot grow it.
const MAX_NAMES: usize = 4096;

#[derive(Debug, Default)]
pub struct CommTexts {
    texts: HashMap<[u8; COMM_LEN], Arc<str>>,
}

impl CommTexts {
    /// The thread of a sample key, with its names.
    pub fn thread(&mut self, key: &SampleKey) -> Thread {
        Thread {
            process: ProcessKey {
                pid: key.tgid,
                instance: key.instance,
            },
            tid: key.tid,
            process_name: self.text(&key.process_comm),
            thread_name: self.text(&key.thread_comm),
        }
    }

    fn text(&mut self, comm: &[u8; COMM_LEN]) -> Arc<str> {
        if let Some(text) = self.texts.get(comm) {
            return text.clone();
        }
        if self.texts.len() >= MAX_NAMES {
            self.texts.clear();
        }
        let text = comm_text(comm);
        self.texts.insert(*comm, text.clone());
        text
    }
}

/// Names the process chose (prctl PR_SET_NAME): any bytes but NUL, made printable (see `crate::text`).
fn comm_text(comm: &[u8]) -> Arc<str> {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    crate::text::printable_bytes(&comm[..len]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comm(name: &[u8]) -> [u8; COMM_LEN] {
        let mut comm = [0; COMM_LEN];
        comm[..name.len()].copy_from_slice(name);
        comm
    }

    #[test]
    fn names_are_made_printable_and_shared() {
        let mut texts = CommTexts::default();
        let first = texts.text(&comm(b"worker\x01"));
        let again = texts.text(&comm(b"worker\x01"));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(
            &*first,
            &*Arc::<str>::from(crate::text::printable_bytes(b"worker\x01"))
        );
        assert!(!first.contains('\x01'));
    }

    #[test]
    fn renaming_in_a_loop_does_not_grow_the_cache() {
        let mut texts = CommTexts::default();
        for i in 0..3 * MAX_NAMES as u32 {
            texts.text(&comm(format!("n{i}").as_bytes()));
        }
        assert!(texts.texts.len() <= MAX_NAMES);
    }
}
