//! The pickle memo, sized by the input rather than by the indices it names.
//!
//! `MEMOIZE`, `BINPUT` and `LONG_BINPUT` store the top of the stack under an index. Real
//! pickles number their entries 0, 1, 2, ..., so a vector indexed by position costs one slot
//! per entry; a hash map cost about 57 bytes per entry (30 million `MEMOIZE` opcodes, a 30 MB
//! file, took 1.7 GB). Indices below the input length go to the vector (it can never grow
//! past one slot per input byte); larger ones, which only hand-made pickles use, go to a map
//! that gains at most one entry per opcode.

use std::collections::HashMap;

/// A memo of `T` (a node id in the reader, a literal string in the scanner).
pub(crate) struct Memo<T> {
    dense: Vec<Option<T>>,
    sparse: HashMap<u64, T>,
    /// Distinct indices stored: what `len(memo)` is to Python, and the index `MEMOIZE` uses.
    count: usize,
    /// Indices below this go to `dense`.
    dense_limit: u64,
}

impl<T: Clone> Memo<T> {
    /// A memo for a pickle of `input_len` bytes.
    pub(crate) fn new(input_len: usize) -> Self {
        Memo {
            dense: Vec::new(),
            sparse: HashMap::new(),
            count: 0,
            dense_limit: input_len as u64,
        }
    }

    /// The number of distinct indices stored.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    pub(crate) fn insert(&mut self, index: u64, value: T) {
        let fresh = if index < self.dense_limit {
            let i = index as usize; // below the input length, so it fits usize
            if i >= self.dense.len() {
                // Grow by a quarter at a time (not the doubling of `resize`), so the slots
                // allocated stay within 1.25 times the index.
                let want = (i + 1).max(self.dense.len() + self.dense.len() / 4);
                self.dense.reserve_exact(want - self.dense.len());
                self.dense.resize(want, None);
            }
            self.dense[i].replace(value).is_none()
        } else {
            self.sparse.insert(index, value).is_none()
        };
        if fresh {
            self.count += 1;
        }
    }

    pub(crate) fn get(&self, index: u64) -> Option<&T> {
        if index < self.dense_limit {
            self.dense.get(index as usize).and_then(Option::as_ref)
        } else {
            self.sparse.get(&index)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_indices_count_once() {
        let mut m = Memo::new(10);
        m.insert(0, 'a');
        m.insert(3, 'b');
        m.insert(3, 'c');
        m.insert(1 << 40, 'd');
        assert_eq!(m.len(), 3);
        assert_eq!(m.get(3), Some(&'c'));
        assert_eq!(m.get(1), None);
        assert_eq!(m.get(1 << 40), Some(&'d'));
        assert_eq!(m.get(9), None);
    }
}
