//! Plain aligned tables for human output (JSON is the machine format).

/// Formats rows as columns separated by two spaces. A column whose cells all look like numbers
/// (or sizes such as `2.62 MB`) is right-aligned, header included; others are left-aligned.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = Vec::new();
    // Writing to a Vec<u8> cannot fail.
    let _ = write_rows(&mut out, header, rows.len(), |i, cells| {
        for (cell, text) in cells.iter_mut().zip(&rows[i]) {
            cell.push_str(text);
        }
    });
    String::from_utf8(out).unwrap_or_default()
}

/// [`render`] for `count` rows made one at a time by `row` (twice: once to measure, once to
/// write), so that a table of a million tensors is never held in memory. `row` fills one
/// empty cell per header column; the cells and the line are buffers kept from row to row (a
/// million rows made with a `String` per cell spent most of `inspect`'s time in the allocator).
///
/// # Errors
/// The writer's.
pub fn write_rows(
    out: &mut dyn std::io::Write,
    header: &[&str],
    count: usize,
    row: impl Fn(usize, &mut [String]),
) -> std::io::Result<()> {
    let numeric_cell = |c: &str| {
        let c = [" KB", " MB", " GB", " TB", " B", " s"]
            .iter()
            .find_map(|u| c.strip_suffix(u))
            .unwrap_or(c);
        !c.is_empty()
            && c.chars()
                .all(|ch| ch.is_ascii_digit() || ".,-+e%".contains(ch))
    };
    let mut cells = vec![String::new(); header.len()];
    let fill = |r: usize, cells: &mut [String]| {
        for c in cells.iter_mut() {
            c.clear();
        }
        row(r, cells);
    };
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![count > 0; header.len()];
    for r in 0..count {
        fill(r, &mut cells);
        for (i, cell) in cells.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
            if let Some(n) = numeric.get_mut(i) {
                *n &= numeric_cell(cell);
            }
        }
    }
    let mut buf = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| -> std::io::Result<()> {
        buf.clear();
        for (i, c) in cells.enumerate() {
            if i > 0 {
                buf.push_str("  ");
            }
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(c.chars().count());
            if numeric.get(i).copied().unwrap_or(false) {
                buf.extend(std::iter::repeat_n(' ', pad));
                buf.push_str(c);
            } else {
                buf.push_str(c);
                buf.extend(std::iter::repeat_n(' ', pad));
            }
        }
        writeln!(out, "{}", buf.trim_end())
    };
    line(&mut header.iter().copied())?;
    for r in 0..count {
        fill(r, &mut cells);
        line(&mut cells.iter().map(String::as_str))?;
    }
    Ok(())
}

/// `1234567` -> `1.23 MB` (decimal units, as people compare file sizes).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}

/// `1234567` -> `1,234,567`.
pub fn group_digits(n: u64) -> String {
    let mut out = String::new();
    push_grouped(&mut out, n);
    out
}

/// [`group_digits`], appended to `out`.
pub fn push_grouped(out: &mut String, n: u64) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    let mut m = n;
    loop {
        digits[len] = b'0' + (m % 10) as u8;
        len += 1;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    for i in (0..len).rev() {
        out.push(char::from(digits[i]));
        if i > 0 && i % 3 == 0 {
            out.push(',');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(group_digits(12), "12");
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(1000), "1,000");
        assert_eq!(group_digits(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(2_600_000), "2.60 MB");
    }

    #[test]
    fn aligns_columns() {
        let t = render(&["name", "n"], &[vec!["a".into(), "10".into()]]);
        assert_eq!(t, "name   n\na     10\n");
        let t = render(
            &["k", "size"],
            &[
                vec!["x".into(), "2.62 MB".into()],
                vec!["yy".into(), "1 B".into()],
            ],
        );
        assert_eq!(t, "k      size\nx   2.62 MB\nyy      1 B\n");
    }
}
