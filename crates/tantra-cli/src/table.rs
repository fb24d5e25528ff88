//! Plain aligned tables for human output (JSON is the machine format).

/// Formats rows as columns separated by two spaces. A column whose cells all look like numbers
/// (or sizes such as `2.62 MB`) is right-aligned, header included; others are left-aligned.
pub fn render(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = Vec::new();
    // Writing to a Vec<u8> cannot fail.
    let _ = write_rows(&mut out, header, rows.len(), |i| rows[i].clone());
    String::from_utf8(out).unwrap_or_default()
}

/// [`render`] for `count` rows made one at a time by `row` (twice: once to measure, once to
/// write), so that a table of a million tensors is never held in memory.
///
/// # Errors
/// The writer's.
pub fn write_rows(
    out: &mut dyn std::io::Write,
    header: &[&str],
    count: usize,
    row: impl Fn(usize) -> Vec<String>,
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
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    let mut numeric = vec![count > 0; header.len()];
    for r in 0..count {
        for (i, cell) in row(r).iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(cell.chars().count());
            }
            if let Some(n) = numeric.get_mut(i) {
                *n &= numeric_cell(cell);
            }
        }
    }
    let mut line = |cells: Vec<&str>| -> std::io::Result<()> {
        let parts: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let w = widths.get(i).copied().unwrap_or(0);
                if numeric.get(i).copied().unwrap_or(false) {
                    format!("{c:>w$}")
                } else {
                    format!("{c:<w$}")
                }
            })
            .collect();
        writeln!(out, "{}", parts.join("  ").trim_end())
    };
    line(header.to_vec())?;
    for r in 0..count {
        let cells = row(r);
        line(cells.iter().map(String::as_str).collect())?;
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
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(group_digits(12), "12");
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
