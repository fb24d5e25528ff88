//! Does a file read as a tar archive to Python's `tarfile`?
//!
//! `torch.load` tries the pre-1.0 tar format before the legacy pickle format: a file whose
//! first 512 bytes pass `tarfile`'s header check is read as a tar archive of `storages`,
//! `tensors` and `pickle` members, whatever pickles follow. A legacy file crafted to be both
//! is read one way by torch and another way by a reader that skips the tar check, so tantra
//! refuses any legacy file that `tarfile` would take for a tar archive.
//!
//! `tarfile` needs no `ustar` magic: a block that is not all zeros and whose checksum field
//! (bytes 148..156, octal text or base-256) equals the sum of the block's bytes, unsigned or
//! signed, with the field counted as eight spaces, is a header.

/// Bytes in a tar header block.
const BLOCK: usize = 512;
/// Where the checksum field is, and its length.
const CHKSUM_AT: usize = 148;
const CHKSUM_LEN: usize = 8;

/// True when `data` starts with a block that Python's `tarfile` accepts as a tar header.
pub(crate) fn is_tar_header(data: &[u8]) -> bool {
    let Some(block) = data.get(..BLOCK) else {
        return false;
    };
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let Some(field) = block.get(CHKSUM_AT..CHKSUM_AT + CHKSUM_LEN) else {
        return false;
    };
    let Some(declared) = number_field(field) else {
        return false;
    };
    let spaces = i64::from(b' ') * CHKSUM_LEN as i64;
    let outside = || {
        block[..CHKSUM_AT]
            .iter()
            .chain(&block[CHKSUM_AT + CHKSUM_LEN..])
    };
    let unsigned: i64 = spaces + outside().map(|&b| i64::from(b)).sum::<i64>();
    let signed: i64 = spaces + outside().map(|&b| i64::from(b as i8)).sum::<i64>();
    declared == unsigned || declared == signed
}

/// `tarfile.nti`: a base-256 number (first byte 0x80 or 0xff) or octal text up to the first
/// NUL, stripped of whitespace, as Python's `int(text, 8)` reads it. `None` where `tarfile`
/// raises (the file is then not a tar archive).
fn number_field(field: &[u8]) -> Option<i64> {
    match field.first() {
        Some(&(0x80 | 0xff)) => {
            let mut n: i64 = 0;
            for &b in &field[1..] {
                n = (n << 8) | i64::from(b);
            }
            if field[0] == 0xff {
                n -= 1i64 << (8 * (field.len() - 1));
            }
            Some(n)
        }
        _ => {
            let text = field.split(|&b| b == 0).next().unwrap_or(&[]);
            if !text.is_ascii() {
                return None;
            }
            python_octal(text)
        }
    }
}

/// Python's `int(text.strip() or "0", 8)` for ASCII `text`: surrounding whitespace, an
/// optional sign, an optional `0o` prefix, octal digits with single underscores between them.
fn python_octal(text: &[u8]) -> Option<i64> {
    let ws = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c | 0x1c..=0x1f);
    let start = text.iter().position(|b| !ws(b)).unwrap_or(text.len());
    let end = text.iter().rposition(|b| !ws(b)).map_or(start, |e| e + 1);
    let mut t = &text[start..end];
    if t.is_empty() {
        return Some(0);
    }
    let negative = t[0] == b'-';
    if matches!(t[0], b'+' | b'-') {
        t = &t[1..];
    }
    if t.len() >= 2 && t[0] == b'0' && matches!(t[1], b'o' | b'O') {
        t = &t[2..];
        // `0o_7` is legal in Python: an underscore may follow the prefix.
        if t.first() == Some(&b'_') {
            t = &t[1..];
        }
    }
    if t.is_empty() || t[0] == b'_' || t[t.len() - 1] == b'_' {
        return None;
    }
    let mut n: i64 = 0;
    let mut prev_underscore = false;
    for &b in t {
        match b {
            b'_' if !prev_underscore => prev_underscore = true,
            b'0'..=b'7' => {
                prev_underscore = false;
                n = n.checked_mul(8)?.checked_add(i64::from(b - b'0'))?;
            }
            _ => return None,
        }
    }
    Some(if negative { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block with `name` at 0 and a correct checksum written as `fmt` makes it.
    fn header(name: &[u8], fmt: impl Fn(i64) -> Vec<u8>) -> Vec<u8> {
        let mut b = vec![0u8; BLOCK];
        b[..name.len()].copy_from_slice(name);
        b[156] = b'0';
        let sum: i64 = 8 * 32 + b.iter().map(|&x| i64::from(x)).sum::<i64>();
        let f = fmt(sum);
        b[CHKSUM_AT..CHKSUM_AT + f.len()].copy_from_slice(&f);
        b
    }

    #[test]
    fn tarfile_headers_are_recognised() {
        // GNU tar writes "%06o\0 ".
        let b = header(b"storages", |s| format!("{s:06o}\0 ").into_bytes());
        assert!(is_tar_header(&b));
        // Python's int() also takes spaces, a 0o prefix and underscores.
        let b = header(b"x", |s| format!(" 0o{s:o} ").into_bytes());
        assert!(is_tar_header(&b));
        // A legacy pickle's first bytes as the member name.
        let b = header(b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", |s| {
            format!("{s:07o}\0").into_bytes()
        });
        assert!(is_tar_header(&b));
    }

    #[test]
    fn other_blocks_are_not_tar() {
        let mut b = header(b"storages", |s| format!("{s:06o}\0 ").into_bytes());
        b[0] ^= 1;
        assert!(!is_tar_header(&b));
        assert!(!is_tar_header(&[0u8; 512]));
        assert!(!is_tar_header(&[b'a'; 100]));
        assert!(!is_tar_header(&[b'9'; 512]));
    }

    #[test]
    fn octal_text_reads_like_python() {
        assert_eq!(python_octal(b""), Some(0));
        assert_eq!(python_octal(b"  17 "), Some(15));
        assert_eq!(python_octal(b"1_7"), Some(15));
        assert_eq!(python_octal(b"1__7"), None);
        assert_eq!(python_octal(b"_17"), None);
        assert_eq!(python_octal(b"8"), None);
        assert_eq!(python_octal(b"-0o17"), Some(-15));
        assert_eq!(number_field(&[0x80, 0, 0, 0, 0, 0, 1, 2]), Some(258));
    }
}
