//! Puts the records of every CPU's ring in time order, across reads as well as within one.
//!
//! The reader thread empties the rings one after another. A record written to the first ring
//! just after it was emptied arrives with the next read, after records of the second ring that
//! are newer: a thread's FORK on its parent's CPU after the rename and samples the new thread made
//! on another CPU, or a process's exec after its new program's first samples. Decoded as they
//! came, the thread took its parent's name back and the samples went to the old program. So, as
//! `perf report` does with its rounds, records are held until no earlier one can still come: each
//! read says when its last pass over the rings began, and whatever was stamped before that (less a
//! margin for a record being written while its ring was read: `reader::IN_FLIGHT_MARGIN_NS`) is
//! complete.

/// Records (with their time stamps) held until every earlier record is in hand.
#[derive(Debug, Default)]
pub struct TimeOrder {
    held: Vec<(u64, Vec<u8>)>,
}

impl TimeOrder {
    /// Adds the records of one read.
    pub fn add(&mut self, records: impl IntoIterator<Item = (u64, Vec<u8>)>) {
        self.held.extend(records);
    }

    /// The records stamped before `complete_before`, oldest first; later ones stay held for the
    /// next read, which may still bring an older record of another ring. `u64::MAX` once the
    /// events are disabled and the rings read for the last time.
    pub fn ready(&mut self, complete_before: u64) -> Vec<(u64, Vec<u8>)> {
        // Stable: records of one ring with the same stamp keep the order they were written in.
        self.held.sort_by_key(|(time, _)| *time);
        let ready = self
            .held
            .partition_point(|(time, _)| *time < complete_before);
        self.held.drain(..ready).collect()
    }

    /// Records held for a later read.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str) -> Vec<u8> {
        name.as_bytes().to_vec()
    }

    fn names(records: Vec<(u64, Vec<u8>)>) -> Vec<String> {
        records
            .into_iter()
            .map(|(_, bytes)| String::from_utf8(bytes).expect("test record"))
            .collect()
    }

    /// The order of the thread-name race. A pass over the rings begins at 250: the first ring is
    /// emptied, then the parent forks on that CPU (252), the new thread renames itself (253) and
    /// is sampled (254) on the other CPU, whose ring is emptied next. The rename and the sample
    /// wait for the fork, which only the next pass (at 750) reads.
    #[test]
    fn records_wait_for_an_older_one_of_the_next_read() {
        let mut order = TimeOrder::default();
        order.add([(253, record("comm holder")), (254, record("sample"))]);
        assert!(order.ready(250).is_empty());
        assert_eq!(order.held(), 2);
        order.add([(252, record("fork")), (800, record("next sample"))]);
        assert_eq!(names(order.ready(750)), ["fork", "comm holder", "sample"]);
        assert_eq!(order.held(), 1);
    }

    /// Records with the same stamp keep their order; the last read hands on everything.
    #[test]
    fn equal_stamps_keep_their_order_and_the_end_takes_all() {
        let mut order = TimeOrder::default();
        order.add([
            (10, record("a")),
            (10, record("b")),
            (5, record("c")),
            (99, record("d")),
        ]);
        assert_eq!(names(order.ready(11)), ["c", "a", "b"]);
        assert_eq!(names(order.ready(u64::MAX)), ["d"]);
    }
}
