//! Greedy CTC decoding: the most likely class per frame, repeats merged, blanks dropped.
//!
//! Greedy decoding is exact for the most likely *frame path*, not the most likely label
//! sequence; for a line recognizer that is the usual trade: no beam, no language model, and
//! the result depends only on per-frame argmaxes.

use super::config::BLANK;

/// Decodes per-frame class ids: merges runs of the same class, then drops blanks (class 0).
/// A blank between two equal classes keeps both (`a _ a` -> `aa`).
pub fn greedy_decode(frame_classes: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    let mut prev = None;
    for &c in frame_classes {
        if Some(c) != prev && c != BLANK {
            out.push(c);
        }
        prev = Some(c);
    }
    out
}

/// Argmax of each frame of row-major `logits` (`frames x num_classes`), then
/// [`greedy_decode`]. Ties go to the lowest class; NaN never wins. A trailing partial row is
/// ignored; `num_classes == 0` decodes to nothing.
pub fn greedy_decode_logits(logits: &[f32], num_classes: usize) -> Vec<u32> {
    if num_classes == 0 {
        return Vec::new();
    }
    let classes: Vec<u32> = logits
        .chunks_exact(num_classes)
        .map(|row| {
            let mut best = 0usize;
            for (i, &v) in row.iter().enumerate() {
                // `!(v <= best)` would let NaN win; compare the other way round.
                if v > row[best] || (row[best].is_nan() && !v.is_nan()) {
                    best = i;
                }
            }
            best as u32
        })
        .collect();
    greedy_decode(&classes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_drops_blanks() {
        assert_eq!(greedy_decode(&[0, 3, 3, 0, 3, 5, 5, 0]), vec![3, 3, 5]);
        assert_eq!(greedy_decode(&[]), Vec::<u32>::new());
        assert_eq!(greedy_decode(&[0, 0]), Vec::<u32>::new());
    }

    #[test]
    fn from_logits() {
        let l = [
            0.1,
            0.9,
            0.0, // 1
            0.1,
            0.9,
            0.0, // 1
            0.9,
            0.0,
            0.0, // blank
            0.0,
            0.2,
            0.5, // 2
            f32::NAN,
            0.0,
            0.0, // NaN loses: 1 (first of the ties)
        ];
        assert_eq!(greedy_decode_logits(&l, 3), vec![1, 2, 1]);
        assert_eq!(greedy_decode_logits(&l, 0), Vec::<u32>::new());
    }
}
