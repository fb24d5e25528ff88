//! [`Joiner`]: whole units out of a stream that arrives in pieces of any length.
//!
//! Loading cuts the same way twice: the bytes of a tensor come from a file in chunks that need
//! not end on an element (or a quantized block), and the converted values reach a matrix
//! builder in runs that need not end on a row. Both want whole units (elements, blocks, rows)
//! without copying the stream; the unit split across two pieces is the one thing to hold.

/// Joins pieces of a stream into whole units of `unit` items (see the module docs).
#[derive(Debug)]
pub(crate) struct Joiner<T> {
    /// The start of a unit that the last piece ended inside (always shorter than a unit).
    partial: Vec<T>,
    unit: usize,
}

impl<T: Copy> Joiner<T> {
    /// A joiner of units of `unit` items (at least 1).
    pub(crate) fn new(unit: usize) -> Self {
        let unit = unit.max(1);
        Joiner {
            partial: Vec::with_capacity(unit),
            unit,
        }
    }

    /// Hands `emit` the whole units that `piece` completes or holds, in order, as runs of
    /// whole units: the unit split from the previous piece on its own (joined), then the
    /// piece's whole units straight from the piece. What is left of a unit is kept for the next
    /// piece.
    pub(crate) fn push(&mut self, piece: &[T], emit: &mut impl FnMut(&[T])) {
        let mut piece = piece;
        if !self.partial.is_empty() {
            let take = (self.unit - self.partial.len()).min(piece.len());
            self.partial.extend_from_slice(&piece[..take]);
            piece = &piece[take..];
            if self.partial.len() < self.unit {
                return;
            }
            emit(&self.partial);
            self.partial.clear();
        }
        let whole = piece.len() / self.unit * self.unit;
        if whole > 0 {
            emit(&piece[..whole]);
        }
        self.partial.extend_from_slice(&piece[whole..]);
    }

    /// True when no unit is left unfinished: the stream so far ended on a unit boundary.
    pub(crate) fn is_empty(&self) -> bool {
        self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_out_whole_whatever_the_pieces() {
        let stream: Vec<u32> = (0..100).collect();
        for unit in [1, 3, 7, 34, 100, 101] {
            for piece in [1, 2, 5, 33, 34, 35, 1000] {
                let mut j = Joiner::new(unit);
                let mut out = Vec::new();
                let mut runs = 0;
                for p in stream.chunks(piece) {
                    j.push(p, &mut |run: &[u32]| {
                        assert_eq!(run.len() % unit, 0, "unit {unit} piece {piece}");
                        out.extend_from_slice(run);
                        runs += 1;
                    });
                }
                let whole = 100 / unit * unit;
                assert_eq!(out, stream[..whole], "unit {unit} piece {piece}");
                assert_eq!(j.is_empty(), whole == 100, "unit {unit} piece {piece}");
                // Pieces of whole units pass straight through, one run each.
                if piece % unit == 0 && 100 % piece == 0 {
                    assert_eq!(runs, 100 / piece, "unit {unit} piece {piece}");
                }
            }
        }
        let mut j = Joiner::<u8>::new(4);
        j.push(&[], &mut |_| panic!("nothing to emit"));
        assert!(j.is_empty());
    }
}
