//! Bounded work on hostile inputs (issue 10, section 3): floods of memo entries and nodes,
//! and shared objects reached through many names, end with a clear error or succeed within
//! about 32 bytes of memory per input byte, and quickly.
//!
//! Memory is measured as the growth of this process's peak resident set (`VmHWM`, reset
//! through `/proc/self/clear_refs` before each case). The cases run one after another in a
//! single test so that no other test's allocations are counted.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod pytorch_support;

use std::time::Instant;

use pytorch_support::{f32_bytes, temp_file, torch_archive, P};
use tantra_formats::pickle::{Limits, ParseOptions, PersistentIds, Pickle, PickleError};
use tantra_formats::pytorch::{PytorchError, PytorchFile};
use tantra_formats::ErrorKind;

/// (current RSS, peak RSS) in bytes, from /proc/self/status.
fn rss() -> Option<(u64, u64)> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |key: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(key))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Runs `f` and returns the growth of the peak RSS over the RSS before (`None` where the
/// peak cannot be reset or read: not Linux).
fn peak_growth(f: impl FnOnce()) -> Option<u64> {
    std::fs::write("/proc/self/clear_refs", "5").ok()?;
    let (before, _) = rss()?;
    f();
    let (_, peak) = rss()?;
    Some(peak.saturating_sub(before))
}

/// Asserts that `f` grows the peak RSS by at most `per_byte` bytes per input byte (plus 4 MiB
/// for the allocator's own granularity), and reports the measurement.
fn within(label: &str, input: usize, per_byte: u64, f: impl FnOnce()) {
    let start = Instant::now();
    let growth = peak_growth(f);
    let secs = start.elapsed().as_secs_f64();
    eprintln!("{label}: input {input} bytes, peak RSS growth {growth:?} bytes, {secs:.2} s");
    if let Some(g) = growth {
        assert!(
            g <= per_byte * input as u64 + (4 << 20),
            "{label}: {g} bytes of peak RSS for {input} input bytes"
        );
    }
}

fn parse(b: &[u8]) -> Result<Pickle, PickleError> {
    Pickle::parse(b, &ParseOptions::new(PersistentIds::Zip))
}

#[test]
fn hostile_inputs_stay_within_their_budgets() {
    // 1. Four million MEMOIZE opcodes (4 MB): one memo slot each, no hash map.
    let mut b = vec![0x80, 4, b'N'];
    b.extend(std::iter::repeat_n(0x94u8, 4 << 20));
    b.push(b'.');
    within("memoize flood, parse", b.len(), 16, || {
        assert!(parse(&b).is_ok());
    });
    within("memoize flood, scan", b.len(), 32, || {
        let r = tantra_formats::pickle::scan(&b);
        assert_eq!(r.opcodes.get("MEMOIZE"), Some(&(4 << 20)));
    });

    // 2. Empty dicts, a million per list (4 MB): refused at one node per two bytes.
    let mut b = vec![0x80, 2];
    for _ in 0..4 {
        b.push(b'(');
        b.extend(std::iter::repeat_n(b'}', 1 << 20));
        b.extend_from_slice(b"l0");
    }
    b.extend_from_slice(b"N.");
    within("empty dict flood", b.len(), 32, || {
        assert!(matches!(
            parse(&b),
            Err(PickleError::NodeBudget { limit, .. }) if limit < b.len() / 2 + 5000
        ));
    });

    // 3. One 1 MiB string reached through 20,000 names as a value.
    let big = "s".repeat(1 << 20);
    let mut p = P::new(2);
    p.str(&big).put(0).op(b'0').empty_dict();
    for chunk in 0..20 {
        p.mark();
        for i in 0..1000 {
            p.str(&format!("k{chunk}_{i}")).get(0);
        }
        p.setitems();
    }
    let b = p.done();
    within("shared string as values", b.len(), 32, || {
        let pk = parse(&b).unwrap();
        assert!(matches!(
            pk.flatten(&Limits::default()),
            Err(PickleError::ValueBudget { .. })
        ));
    });

    // 4. The same string as the key of a dict that 20,000 list items share: each name
    // repeats it.
    let mut p = P::new(2);
    p.empty_dict().str(&big).none().setitem().put(0).op(b'0');
    p.empty_list();
    for _ in 0..20 {
        p.mark();
        for _ in 0..1000 {
            p.get(0);
        }
        p.appends();
    }
    let b = p.done();
    within("shared string as keys", b.len(), 32, || {
        let pk = parse(&b).unwrap();
        assert!(matches!(
            pk.flatten(&Limits::default()),
            Err(PickleError::NameBudget { .. })
        ));
    });

    // 5. One 1 MiB tensor read through 50,000 names: refused when the bytes read through
    // names pass 4 times the file plus 1 GiB, in well under a second.
    let mut p = P::new(2);
    p.empty_dict().str("t0");
    p.tensor_v2("FloatStorage", "0", 1 << 18, 0, &[1 << 18], &[1], false);
    p.put(0).setitem();
    for chunk in 0..50 {
        p.mark();
        for i in 0..1000 {
            p.str(&format!("t{chunk}_{i}")).get(0);
        }
        p.setitems();
    }
    let storage = f32_bytes(&vec![0.5f32; 1 << 18]);
    let bytes = torch_archive(p.done(), &[storage]);
    let (_d, path) = temp_file("shared.pt", &bytes);
    let start = Instant::now();
    within("one tensor through 50,000 names", bytes.len(), 32, || {
        let e = PytorchFile::open(&path).err().unwrap();
        assert!(matches!(
            e.kind,
            ErrorKind::Pytorch(PytorchError::ViewBudget { .. })
        ));
    });
    assert!(start.elapsed().as_secs() < 10);

    // 6. Stride-0 views just under 256 MiB each: refused once they add up to 256 MiB.
    let mut p = P::new(2);
    p.empty_dict().mark();
    for i in 0..400 {
        p.str(&format!("v{i}")).tensor_v2(
            "FloatStorage",
            "0",
            1,
            0,
            &[(255 << 20) / 4],
            &[0],
            false,
        );
    }
    p.setitems();
    let bytes = torch_archive(p.done(), &[f32_bytes(&[1.0])]);
    let (_d, path) = temp_file("stride0.pt", &bytes);
    within("400 stride-0 views", bytes.len(), 32, || {
        let e = PytorchFile::open(&path).err().unwrap();
        assert!(matches!(
            e.kind,
            ErrorKind::Pytorch(PytorchError::AmplifyingView { .. })
        ));
    });
}

#[test]
fn tied_tensors_are_hashed_once() {
    // Two names, one view: the same digest, and the source says so.
    let mut p = P::new(2);
    p.empty_dict().mark().str("a");
    p.tensor_v2("FloatStorage", "0", 2, 0, &[2], &[1], false);
    p.put(0).str("b").get(0).str("c");
    p.tensor_v2("FloatStorage", "0", 2, 1, &[1], &[1], false);
    p.setitems();
    let bytes = torch_archive(p.done(), &[f32_bytes(&[1., 2.])]);
    let (_d, path) = temp_file("tied.pt", &bytes);
    let f = PytorchFile::open(&path).unwrap();
    use tantra_formats::TensorSource;
    let names: Vec<&str> = f.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(f.same_bytes_as(0), None);
    assert_eq!(f.same_bytes_as(1), Some(0));
    assert_eq!(f.same_bytes_as(2), None);
    let d = tantra_formats::all_digests(&f).unwrap();
    assert_eq!(d[0].1, d[1].1);
    assert_eq!(d[0].1, tantra_formats::tensor_digest(&f, 1).unwrap());
    assert_ne!(d[0].1, d[2].1);
}
