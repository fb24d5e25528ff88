//! Tests of the PyTorch zip writer against its own rules, read back with a zip parser and a
//! pickle interpreter that live here (independent of the crate's readers), and against torch's
//! real output (the fixture `all_dtypes.pt`, which the writer must reproduce byte for byte apart
//! from the serialization id).

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Write};
use std::sync::Mutex;

use tantra_formats::dtype::ALL_DTYPES;
use tantra_formats::pytorch::{write_pytorch, WriteError};
use tantra_formats::{
    DType, ErrorKind, Format, FormatError, MemorySource, NoProgress, Progress, TensorInfo,
    TensorSource, Value,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures");

// ---------------------------------------------------------------------------------------------
// Bytes with holes: lets a >4 GiB archive be written and parsed without holding it.

trait Blob {
    fn len(&self) -> u64;
    fn at(&self, off: u64, n: usize) -> Vec<u8>;
    fn crc(&self, off: u64, n: u64) -> u32;
}

impl Blob for Vec<u8> {
    fn len(&self) -> u64 {
        self.as_slice().len() as u64
    }
    fn at(&self, off: u64, n: usize) -> Vec<u8> {
        let s = usize::try_from(off).unwrap();
        self.get(s..s + n).expect("read past the end").to_vec()
    }
    fn crc(&self, off: u64, n: u64) -> u32 {
        let s = usize::try_from(off).unwrap();
        crc32fast::hash(&self[s..s + usize::try_from(n).unwrap()])
    }
}

/// A writer that keeps small writes and only counts big ones (which must be zeros).
#[derive(Default)]
struct Holey {
    segments: Vec<(u64, Segment)>,
    len: u64,
}

enum Segment {
    Data(Vec<u8>),
    Zeros(u64),
}

impl Write for Holey {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() >= 1 << 20 {
            self.segments
                .push((self.len, Segment::Zeros(buf.len() as u64)));
        } else {
            match self.segments.last_mut() {
                Some((_, Segment::Data(d))) => d.extend_from_slice(buf),
                _ => self.segments.push((self.len, Segment::Data(buf.to_vec()))),
            }
        }
        self.len += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Holey {
    /// Calls `f` with the pieces of `[off, off + n)`, zeros in bounded chunks.
    fn each(&self, off: u64, n: u64, f: &mut dyn FnMut(&[u8])) {
        let zeros = vec![0u8; 1 << 20];
        let end = off + n;
        assert!(end <= self.len, "read past the end");
        for (start, seg) in &self.segments {
            let seg_len = match seg {
                Segment::Data(d) => d.len() as u64,
                Segment::Zeros(z) => *z,
            };
            let (a, b) = (off.max(*start), end.min(start + seg_len));
            if a >= b {
                continue;
            }
            match seg {
                Segment::Data(d) => f(&d[(a - start) as usize..(b - start) as usize]),
                Segment::Zeros(_) => {
                    let mut left = b - a;
                    while left > 0 {
                        let k = left.min(zeros.len() as u64);
                        f(&zeros[..k as usize]);
                        left -= k;
                    }
                }
            }
        }
    }
}

impl Blob for Holey {
    fn len(&self) -> u64 {
        self.len
    }
    fn at(&self, off: u64, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n);
        self.each(off, n as u64, &mut |c| v.extend_from_slice(c));
        v
    }
    fn crc(&self, off: u64, n: u64) -> u32 {
        let mut h = crc32fast::Hasher::new();
        self.each(off, n, &mut |c| h.update(c));
        h.finalize()
    }
}

// ---------------------------------------------------------------------------------------------
// A strict zip parser: every rule the writer promises is an assertion here.

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    offset: u64,
    data_start: u64,
    size: u64,
    crc: u32,
    local_zip64: bool,
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}
fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes(b[i..i + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], i: usize) -> u64 {
    u64::from_le_bytes(b[i..i + 8].try_into().unwrap())
}

fn parse_zip(blob: &dyn Blob) -> Vec<Entry> {
    let len = blob.len();
    let eocd = blob.at(len - 22, 22);
    assert_eq!(u32_at(&eocd, 0), 0x0605_4b50, "end of central directory");
    assert_eq!(u16_at(&eocd, 20), 0, "no comment");
    let locator = blob.at(len - 42, 20);
    assert_eq!(u32_at(&locator, 0), 0x0706_4b50, "ZIP64 locator");
    assert_eq!(u32_at(&locator, 16), 1, "one disk");
    let z64_ofs = u64_at(&locator, 8);
    assert_eq!(
        z64_ofs,
        len - 42 - 56,
        "ZIP64 end record right before the locator"
    );
    let z64 = blob.at(z64_ofs, 56);
    assert_eq!(u32_at(&z64, 0), 0x0606_4b50);
    assert_eq!(u64_at(&z64, 4), 44);
    assert_eq!(u16_at(&z64, 12), 0x031e);
    assert_eq!(u16_at(&z64, 14), 0x002d);
    let count = u64_at(&z64, 24);
    assert_eq!(u64_at(&z64, 32), count);
    let cd_size = u64_at(&z64, 40);
    let cd_ofs = u64_at(&z64, 48);
    assert_eq!(
        cd_ofs + cd_size,
        z64_ofs,
        "central directory ends at the ZIP64 record"
    );
    assert_eq!(u64::from(u16_at(&eocd, 8)), count.min(0xffff));
    assert_eq!(u64::from(u16_at(&eocd, 10)), count.min(0xffff));
    assert_eq!(u64::from(u32_at(&eocd, 12)), cd_size.min(0xffff_ffff));
    assert_eq!(u64::from(u32_at(&eocd, 16)), cd_ofs.min(0xffff_ffff));

    let cd = blob.at(cd_ofs, cd_size as usize);
    let mut p = 0usize;
    let mut entries = Vec::new();
    let mut flags_of = Vec::new();
    for _ in 0..count {
        let h = &cd[p..p + 46];
        assert_eq!(u32_at(h, 0), 0x0201_4b50, "central header");
        assert_eq!(
            (u16_at(h, 4), u16_at(h, 6)),
            (0, 0),
            "versions as miniz writes"
        );
        let flags = u16_at(h, 8);
        assert_eq!(u16_at(h, 10), 0, "stored");
        assert_eq!((u16_at(h, 12), u16_at(h, 14)), (0, 0), "DOS time and date");
        let crc = u32_at(h, 16);
        let (csize, usize_) = (u32_at(h, 20), u32_at(h, 24));
        assert_eq!(csize, usize_);
        let (nlen, elen, clen) = (
            u16_at(h, 28) as usize,
            u16_at(h, 30) as usize,
            u16_at(h, 32),
        );
        assert_eq!(clen, 0);
        assert_eq!((u16_at(h, 34), u16_at(h, 36), u32_at(h, 38)), (0, 0, 0));
        let ofs32 = u32_at(h, 42);
        let name = String::from_utf8(cd[p + 46..p + 46 + nlen].to_vec()).unwrap();
        let extra = &cd[p + 46 + nlen..p + 46 + nlen + elen];
        let mut size = u64::from(usize_);
        let mut offset = u64::from(ofs32);
        if elen > 0 {
            assert_eq!(
                u16_at(extra, 0),
                1,
                "only a ZIP64 field in the central directory"
            );
            assert_eq!(u16_at(extra, 2) as usize + 4, elen);
            let mut q = 4;
            if usize_ == u32::MAX {
                size = u64_at(extra, q);
                assert_eq!(u64_at(extra, q + 8), size);
                q += 16;
            }
            if ofs32 == u32::MAX {
                offset = u64_at(extra, q);
                q += 8;
            }
            assert_eq!(q, elen, "ZIP64 field holds exactly the clamped fields");
        } else {
            assert!(usize_ != u32::MAX && ofs32 != u32::MAX);
        }
        entries.push(Entry {
            name,
            offset,
            data_start: 0,
            size,
            crc,
            local_zip64: false,
        });
        flags_of.push(flags);
        p += 46 + nlen + elen;
    }
    assert_eq!(p as u64, cd_size, "central directory size");

    let mut next = 0u64;
    for (e, flags) in entries.iter_mut().zip(flags_of) {
        assert_eq!(e.offset, next, "{}: records are back to back", e.name);
        let h = blob.at(e.offset, 30);
        assert_eq!(u32_at(&h, 0), 0x0403_4b50, "{}: local header", e.name);
        assert_eq!(u16_at(&h, 4), 0);
        assert_eq!(
            u16_at(&h, 6),
            flags,
            "{}: same flags as the central record",
            e.name
        );
        let want_flags = if e.size > 0 { 0x0808 } else { 0x0800 };
        assert_eq!(flags, want_flags, "{}: flags", e.name);
        assert_eq!(u16_at(&h, 8), 0);
        assert_eq!((u16_at(&h, 10), u16_at(&h, 12)), (0, 0));
        assert_eq!(&h[14..26], &[0; 12], "{}: CRC and sizes deferred", e.name);
        let (nlen, elen) = (u16_at(&h, 26) as u64, u16_at(&h, 28) as u64);
        let name = blob.at(e.offset + 30, nlen as usize);
        assert_eq!(name, e.name.as_bytes());
        let extra = blob.at(e.offset + 30 + nlen, elen as usize);
        let mut q = 0usize;
        if u16_at(&extra, 0) == 1 {
            e.local_zip64 = true;
            let n = u16_at(&extra, 2) as usize;
            let mut r = 4;
            if e.size >= u64::from(u32::MAX) {
                assert_eq!(u64_at(&extra, r), e.size);
                assert_eq!(u64_at(&extra, r + 8), e.size);
                r += 16;
            }
            if e.offset >= u64::from(u32::MAX) {
                assert_eq!(u64_at(&extra, r), e.offset);
                r += 8;
            }
            assert_eq!(r, n + 4, "{}: local ZIP64 field", e.name);
            q = r;
        } else {
            assert!(e.size < u64::from(u32::MAX) && e.offset < u64::from(u32::MAX));
        }
        assert_eq!(&extra[q..q + 2], b"FB", "{}: padding field", e.name);
        let pad = u16_at(&extra, q + 2) as usize;
        assert!(pad < 64);
        assert_eq!(q + 4 + pad, extra.len(), "{}: FB is the last field", e.name);
        assert!(extra[q + 4..].iter().all(|&c| c == b'Z'));
        e.data_start = e.offset + 30 + nlen + elen;
        assert_eq!(e.data_start % 64, 0, "{}: data aligned to 64", e.name);
        assert_eq!(blob.crc(e.data_start, e.size), e.crc, "{}: CRC", e.name);
        next = e.data_start + e.size;
        if e.size > 0 {
            let dlen = if e.local_zip64 { 24 } else { 16 };
            let d = blob.at(next, dlen);
            assert_eq!(u32_at(&d, 0), 0x0807_4b50, "{}: data descriptor", e.name);
            assert_eq!(u32_at(&d, 4), e.crc);
            if e.local_zip64 {
                assert_eq!((u64_at(&d, 8), u64_at(&d, 16)), (e.size, e.size));
            } else {
                assert_eq!(u64::from(u32_at(&d, 8)), e.size);
                assert_eq!(u64::from(u32_at(&d, 12)), e.size);
            }
            next += dlen as u64;
        } else {
            assert_eq!(e.crc, 0);
        }
    }
    assert_eq!(
        next, cd_ofs,
        "central directory right after the last record"
    );
    entries
}

fn entry_data(blob: &dyn Blob, e: &Entry) -> Vec<u8> {
    blob.at(e.data_start, e.size as usize)
}

/// The entries as `name -> data` (small archives only), checking the names and their order.
fn entries_by_name(bytes: &Vec<u8>, archive: &str, tensors: usize) -> BTreeMap<String, Vec<u8>> {
    let entries = parse_zip(bytes);
    let mut want: Vec<String> = [
        "data.pkl",
        ".format_version",
        ".storage_alignment",
        "byteorder",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    want.extend((0..tensors).map(|i| format!("data/{i}")));
    want.extend(["version".to_string(), ".data/serialization_id".to_string()]);
    let got: Vec<String> = entries
        .iter()
        .map(|e| {
            e.name
                .strip_prefix(&format!("{archive}/"))
                .expect("under the archive folder")
                .to_string()
        })
        .collect();
    assert_eq!(got, want);
    let map: BTreeMap<String, Vec<u8>> = got
        .into_iter()
        .zip(&entries)
        .map(|(n, e)| (n, entry_data(bytes, e)))
        .collect();
    assert_eq!(map[".format_version"], b"1");
    assert_eq!(map[".storage_alignment"], b"64");
    assert_eq!(map["byteorder"], b"little");
    assert_eq!(map["version"], b"3\n");
    let id = &map[".data/serialization_id"];
    assert_eq!(id.len(), 40);
    assert!(id.iter().all(u8::is_ascii_digit));
    map
}

// ---------------------------------------------------------------------------------------------
// A pickle interpreter for exactly the opcodes torch's weights-only loader accepts.

#[derive(Debug, Clone, PartialEq)]
enum Py {
    None,
    Bool(bool),
    Int(i128),
    /// A LONG1 too long for i128: its little-endian two's complement bytes.
    Long(Vec<u8>),
    Float(f64),
    Str(String),
    Tuple(Vec<Py>),
    Global(String),
    PersId(Box<Py>),
    Dict(Vec<(Py, Py)>),
    Call(Box<Py>, Vec<Py>),
    Mark,
}

#[derive(Debug, Default)]
struct PickleStats {
    /// Items per SETITEMS/SETITEM, in order.
    batches: Vec<usize>,
    long_memo: bool,
}

fn unpickle(data: &[u8]) -> (Py, PickleStats) {
    let mut stack: Vec<Py> = Vec::new();
    let mut memo: HashMap<u32, Py> = HashMap::new();
    let mut stats = PickleStats::default();
    let mut i = 0usize;
    let take = |i: &mut usize, n: usize| -> &[u8] {
        let s = &data[*i..*i + n];
        *i += n;
        s
    };
    fn pop_mark(stack: &mut Vec<Py>) -> Vec<Py> {
        let m = stack.iter().rposition(|x| *x == Py::Mark).expect("mark");
        let items = stack.split_off(m + 1);
        stack.pop();
        items
    }
    fn put(memo: &mut HashMap<u32, Py>, stack: &[Py], idx: u32) {
        assert_eq!(idx as usize, memo.len(), "memo indices are sequential");
        memo.insert(idx, stack.last().expect("value to memoize").clone());
    }
    assert_eq!(take(&mut i, 2), &[0x80, 2], "protocol 2");
    loop {
        let op = take(&mut i, 1)[0];
        match op {
            b'c' => {
                let rest = &data[i..];
                let a = rest.iter().position(|&c| c == b'\n').unwrap();
                let b = rest[a + 1..].iter().position(|&c| c == b'\n').unwrap();
                let module = std::str::from_utf8(&rest[..a]).unwrap();
                let name = std::str::from_utf8(&rest[a + 1..a + 1 + b]).unwrap();
                stack.push(Py::Global(format!("{module}.{name}")));
                i += a + b + 2;
            }
            b'q' => {
                let idx = u32::from(take(&mut i, 1)[0]);
                put(&mut memo, &stack, idx);
            }
            b'r' => {
                let idx = u32_at(take(&mut i, 4), 0);
                assert!(idx >= 256, "LONG_BINPUT only where BINPUT cannot");
                stats.long_memo = true;
                put(&mut memo, &stack, idx);
            }
            b'h' => {
                let idx = u32::from(take(&mut i, 1)[0]);
                stack.push(memo[&idx].clone());
            }
            b'j' => {
                let idx = u32_at(take(&mut i, 4), 0);
                assert!(idx >= 256);
                stack.push(memo[&idx].clone());
            }
            b'(' => stack.push(Py::Mark),
            b')' => stack.push(Py::Tuple(vec![])),
            b't' => {
                let items = pop_mark(&mut stack);
                assert!(items.len() > 3, "TUPLE1-3 for short tuples");
                stack.push(Py::Tuple(items));
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = stack.split_off(stack.len() - n);
                stack.push(Py::Tuple(items));
            }
            b'K' => stack.push(Py::Int(i128::from(take(&mut i, 1)[0]))),
            b'M' => {
                let v = u16_at(take(&mut i, 2), 0);
                assert!(v > 0xff, "shortest form");
                stack.push(Py::Int(i128::from(v)));
            }
            b'J' => {
                let v = i32::from_le_bytes(take(&mut i, 4).try_into().unwrap());
                assert!(!(0..=0xffff).contains(&v), "shortest form");
                stack.push(Py::Int(i128::from(v)));
            }
            0x8a => {
                let n = usize::from(take(&mut i, 1)[0]);
                let b = take(&mut i, n).to_vec();
                if n <= 16 {
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut full = [fill; 16];
                    full[..n].copy_from_slice(&b);
                    let v = i128::from_le_bytes(full);
                    assert!(i32::try_from(v).is_err(), "LONG1 only beyond BININT");
                    stack.push(Py::Int(v));
                } else {
                    stack.push(Py::Long(b));
                }
            }
            b'G' => stack.push(Py::Float(f64::from_be_bytes(
                take(&mut i, 8).try_into().unwrap(),
            ))),
            b'X' => {
                let n = u32_at(take(&mut i, 4), 0) as usize;
                let s = String::from_utf8(take(&mut i, n).to_vec()).unwrap();
                stack.push(Py::Str(s));
            }
            b'N' => stack.push(Py::None),
            0x88 => stack.push(Py::Bool(true)),
            0x89 => stack.push(Py::Bool(false)),
            b'Q' => {
                let pid = stack.pop().unwrap();
                stack.push(Py::PersId(Box::new(pid)));
            }
            b'R' => {
                let args = stack.pop().unwrap();
                let func = stack.pop().unwrap();
                let Py::Tuple(args) = args else {
                    panic!("REDUCE needs a tuple")
                };
                if func == Py::Global("collections.OrderedDict".into()) && args.is_empty() {
                    stack.push(Py::Dict(vec![]));
                } else {
                    stack.push(Py::Call(Box::new(func), args));
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack);
                assert!(
                    items.len() >= 4 && items.len().is_multiple_of(2),
                    "SETITEMS of >1 items"
                );
                stats.batches.push(items.len() / 2);
                let Some(Py::Dict(d)) = stack.last_mut() else {
                    panic!("SETITEMS on a dict")
                };
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    d.push((k, v));
                }
            }
            b's' => {
                let v = stack.pop().unwrap();
                let k = stack.pop().unwrap();
                stats.batches.push(1);
                let Some(Py::Dict(d)) = stack.last_mut() else {
                    panic!("SETITEM on a dict")
                };
                d.push((k, v));
            }
            b'.' => break,
            other => panic!("opcode {other:#x} is not one torch's weights-only loader accepts"),
        }
    }
    assert_eq!(i, data.len(), "nothing after STOP");
    assert_eq!(stack.len(), 1);
    (stack.pop().unwrap(), stats)
}

/// One tensor of data.pkl, as torch would rebuild it.
#[derive(Debug, PartialEq)]
struct Rebuilt {
    rebuild: String,
    storage: String,
    key: String,
    numel: i128,
    shape: Vec<i128>,
    stride: Vec<i128>,
    dtype: Option<String>,
}

fn ints(p: &Py) -> Vec<i128> {
    let Py::Tuple(items) = p else { panic!("tuple") };
    items
        .iter()
        .map(|x| match x {
            Py::Int(i) => *i,
            other => panic!("int expected, got {other:?}"),
        })
        .collect()
}

fn rebuilt(p: &Py) -> Rebuilt {
    let Py::Call(func, args) = p else {
        panic!("a tensor is a call, got {p:?}")
    };
    let Py::Global(rebuild) = &**func else {
        panic!()
    };
    let Py::PersId(pid) = &args[0] else { panic!() };
    let Py::Tuple(pid) = &**pid else { panic!() };
    assert_eq!(pid.len(), 5);
    assert_eq!(pid[0], Py::Str("storage".into()));
    let Py::Global(storage) = &pid[1] else {
        panic!()
    };
    let Py::Str(key) = &pid[2] else { panic!() };
    assert_eq!(pid[3], Py::Str("cpu".into()));
    let Py::Int(numel) = pid[4] else { panic!() };
    assert_eq!(args[1], Py::Int(0), "storage offset");
    assert_eq!(args[4], Py::Bool(false), "requires_grad");
    assert_eq!(args[5], Py::Dict(vec![]), "backward hooks");
    let dtype = match rebuild.as_str() {
        "torch._utils._rebuild_tensor_v2" => {
            assert_eq!(args.len(), 6);
            None
        }
        "torch._utils._rebuild_tensor_v3" => {
            assert_eq!(args.len(), 7);
            let Py::Global(d) = &args[6] else { panic!() };
            Some(d.clone())
        }
        other => panic!("unexpected rebuild function {other}"),
    };
    Rebuilt {
        rebuild: rebuild.clone(),
        storage: storage.clone(),
        key: key.clone(),
        numel,
        shape: ints(&args[2]),
        stride: ints(&args[3]),
        dtype,
    }
}

fn dict_items(p: &Py) -> &[(Py, Py)] {
    let Py::Dict(items) = p else {
        panic!("top level is an OrderedDict, got {p:?}")
    };
    items
}

fn key_str(k: &Py) -> &str {
    let Py::Str(s) = k else { panic!("string key") };
    s
}

// ---------------------------------------------------------------------------------------------
// Sources and sinks

/// Deterministic bytes for a tensor (0/1 for bool).
fn sample_bytes(info: &TensorInfo, seed: u8) -> Vec<u8> {
    let n = info.byte_len().unwrap() as usize;
    (0..n)
        .map(|i| {
            let v = (i as u8).wrapping_mul(31).wrapping_add(seed);
            if info.dtype == DType::Bool {
                v & 1
            } else {
                v
            }
        })
        .collect()
}

fn source(tensors: &[(&str, DType, Vec<u64>)]) -> MemorySource {
    let mut m = MemorySource::new();
    for (i, (name, dtype, shape)) in tensors.iter().enumerate() {
        let info = TensorInfo::new(*name, *dtype, shape.clone());
        let data = sample_bytes(&info, i as u8);
        m.push(info, data).unwrap();
    }
    m
}

fn write(src: &dyn TensorSource, archive: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let n = write_pytorch(&mut out, src, archive, &NoProgress).unwrap();
    assert_eq!(n, out.len() as u64, "returns the bytes written");
    out
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Progress for Recorder {
    fn begin(&self, label: &str, total: u64) {
        self.0
            .lock()
            .unwrap()
            .push(format!("begin {label} {total}"));
    }
    fn advance(&self, n: u64) {
        self.0.lock().unwrap().push(format!("advance {n}"));
    }
    fn end(&self) {
        self.0.lock().unwrap().push("end".into());
    }
}

/// A source whose tensors claim `claimed` bytes but stream `actual`, or which fails.
struct Lying {
    infos: Vec<TensorInfo>,
    actual: usize,
    fail: bool,
    empty_meta: BTreeMap<String, String>,
    empty_values: BTreeMap<String, Value>,
}

impl Lying {
    fn new(actual: usize, fail: bool) -> Self {
        Lying {
            infos: vec![TensorInfo::new("w", DType::F32, vec![4])],
            actual,
            fail,
            empty_meta: BTreeMap::new(),
            empty_values: BTreeMap::new(),
        }
    }
}

impl TensorSource for Lying {
    fn format(&self) -> Format {
        Format::Memory
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, _index: usize) -> Result<std::borrow::Cow<'_, [u8]>, FormatError> {
        if self.fail {
            return Err(FormatError::memory("the source broke"));
        }
        Ok(vec![7u8; self.actual].into())
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.empty_meta
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.empty_values
    }
}

/// Tensors streamed in chunks of about 4 MiB, never held: zeros, or with `pattern` the byte at
/// position `i` is `i % 251`.
struct Streamed {
    infos: Vec<TensorInfo>,
    pattern: bool,
    empty_meta: BTreeMap<String, String>,
    empty_values: BTreeMap<String, Value>,
}

impl TensorSource for Streamed {
    fn format(&self) -> Format {
        Format::Memory
    }
    fn tensors(&self) -> &[TensorInfo] {
        &self.infos
    }
    fn tensor_bytes(&self, _index: usize) -> Result<std::borrow::Cow<'_, [u8]>, FormatError> {
        panic!("the writer must stream")
    }
    fn stream_tensor(
        &self,
        index: usize,
        sink: &mut dyn FnMut(&[u8]) -> Result<(), FormatError>,
    ) -> Result<(), FormatError> {
        // A multiple of 251, so that every chunk of the pattern is the same.
        let chunk: Vec<u8> = (0..251 * 16384)
            .map(|i| if self.pattern { (i % 251) as u8 } else { 0 })
            .collect();
        let mut left = self.infos[index].byte_len().unwrap();
        while left > 0 {
            let k = left.min(chunk.len() as u64);
            sink(&chunk[..k as usize])?;
            left -= k;
        }
        Ok(())
    }
    fn metadata(&self) -> &BTreeMap<String, String> {
        &self.empty_meta
    }
    fn values(&self) -> &BTreeMap<String, Value> {
        &self.empty_values
    }
}

/// A writer that fails after `budget` bytes.
struct FailingWriter {
    budget: usize,
}

impl Write for FailingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() > self.budget {
            return Err(io::Error::other("disk full"));
        }
        self.budget -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn expected_storage(dtype: DType) -> Option<(&'static str, Option<&'static str>)> {
    Some(match dtype {
        DType::F64 => ("torch.DoubleStorage", None),
        DType::F32 => ("torch.FloatStorage", None),
        DType::F16 => ("torch.HalfStorage", None),
        DType::BF16 => ("torch.BFloat16Storage", None),
        DType::I64 => ("torch.LongStorage", None),
        DType::I32 => ("torch.IntStorage", None),
        DType::I16 => ("torch.ShortStorage", None),
        DType::I8 => ("torch.CharStorage", None),
        DType::U8 => ("torch.ByteStorage", None),
        DType::Bool => ("torch.BoolStorage", None),
        DType::C64 => ("torch.ComplexFloatStorage", None),
        DType::F8E4M3 => ("torch.storage.UntypedStorage", Some("torch.float8_e4m3fn")),
        DType::F8E5M2 => ("torch.storage.UntypedStorage", Some("torch.float8_e5m2")),
        DType::F8E4M3Fnuz => (
            "torch.storage.UntypedStorage",
            Some("torch.float8_e4m3fnuz"),
        ),
        DType::F8E5M2Fnuz => (
            "torch.storage.UntypedStorage",
            Some("torch.float8_e5m2fnuz"),
        ),
        DType::F8E8M0 => ("torch.storage.UntypedStorage", Some("torch.float8_e8m0fnu")),
        DType::U16 => ("torch.storage.UntypedStorage", Some("torch.uint16")),
        DType::U32 => ("torch.storage.UntypedStorage", Some("torch.uint32")),
        DType::U64 => ("torch.storage.UntypedStorage", Some("torch.uint64")),
        // Two 4-bit values per element: the last dimension halves.
        DType::F4 => (
            "torch.storage.UntypedStorage",
            Some("torch.float4_e2m1fn_x2"),
        ),
        DType::F6E2M3 | DType::F6E3M2 => return None,
    })
}

// ---------------------------------------------------------------------------------------------
// Tests

/// torch's own `all_dtypes.pt`, re-created from its tensors: the same bytes, apart from the
/// serialization id (and that record's CRC).
#[test]
fn reproduces_torchs_archive_byte_for_byte() {
    let fixture = std::fs::read(format!("{FIXTURES}/torch/all_dtypes.pt")).unwrap();
    let entries = parse_zip(&fixture);
    let data = |name: &str| {
        let e = entries.iter().find(|e| e.name == name).unwrap();
        entry_data(&fixture, e)
    };
    let (top, _) = unpickle(&data("all_dtypes/data.pkl"));
    let mut src = MemorySource::new();
    for (k, v) in dict_items(&top) {
        let t = rebuilt(v);
        let dtype = ALL_DTYPES
            .into_iter()
            .find(|&d| expected_storage(d) == Some((t.storage.as_str(), t.dtype.as_deref())))
            .unwrap_or_else(|| panic!("{t:?}"));
        let shape = t.shape.iter().map(|&d| d as u64).collect();
        src.push(
            TensorInfo::new(key_str(k), dtype, shape),
            data(&format!("all_dtypes/data/{}", t.key)),
        )
        .unwrap();
    }
    assert_eq!(src.tensors().len(), 14);

    let mine = write(&src, "all_dtypes");
    let my_entries = parse_zip(&mine);
    assert_eq!(mine.len(), fixture.len());
    // Put torch's id (and its CRC) into our bytes; then the files must be identical.
    let id_name = "all_dtypes/.data/serialization_id";
    let theirs = entries.iter().find(|e| e.name == id_name).unwrap();
    let ours = my_entries.iter().find(|e| e.name == id_name).unwrap();
    assert_eq!(theirs.data_start, ours.data_start);
    let mut patched = mine.clone();
    let at = ours.data_start as usize;
    patched[at..at + 40].copy_from_slice(&fixture[at..at + 40]);
    let their_crc = theirs.crc.to_le_bytes();
    let our_crc = ours.crc.to_le_bytes();
    let descriptor = at + 40 + 4;
    assert_eq!(&patched[descriptor..descriptor + 4], &our_crc);
    patched[descriptor..descriptor + 4].copy_from_slice(&their_crc);
    let cd_crc = (0..patched.len() - 4)
        .rev()
        .find(|&i| {
            patched[i..i + 4] == *b"PK\x01\x02" && patched[i + 46..].starts_with(id_name.as_bytes())
        })
        .unwrap()
        + 16;
    patched[cd_crc..cd_crc + 4].copy_from_slice(&their_crc);
    assert!(
        patched == fixture,
        "differs from torch's file beyond the serialization id"
    );
}

#[test]
fn layout_entries_and_pickle() {
    let mut src = source(&[
        ("layers.0.weight", DType::F32, vec![4, 3]),
        ("layers.0.bias", DType::BF16, vec![4]),
        ("scale", DType::F64, vec![]),
        ("mask", DType::Bool, vec![2, 2, 2, 2]),
    ]);
    src.values_mut().insert("epoch".into(), Value::Int(3));
    src.values_mut()
        .insert("optimizer.param_groups.0.lr".into(), Value::Float(1e-3));
    let bytes = write(&src, "model");
    let entries = entries_by_name(&bytes, "model", 4);
    for (i, t) in src.tensors().iter().enumerate() {
        assert_eq!(
            entries[&format!("data/{i}")],
            *src.tensor_bytes(i).unwrap(),
            "{}",
            t.name
        );
    }
    let (top, stats) = unpickle(&entries["data.pkl"]);
    assert_eq!(stats.batches, vec![6]);
    let items = dict_items(&top);
    let keys: Vec<&str> = items.iter().map(|(k, _)| key_str(k)).collect();
    assert_eq!(
        keys,
        [
            "layers.0.weight",
            "layers.0.bias",
            "scale",
            "mask",
            "epoch",
            "optimizer.param_groups.0.lr"
        ]
    );
    assert_eq!(
        rebuilt(&items[0].1),
        Rebuilt {
            rebuild: "torch._utils._rebuild_tensor_v2".into(),
            storage: "torch.FloatStorage".into(),
            key: "0".into(),
            numel: 12,
            shape: vec![4, 3],
            stride: vec![3, 1],
            dtype: None,
        }
    );
    let mask = rebuilt(&items[3].1);
    assert_eq!((mask.shape, mask.stride), (vec![2; 4], vec![8, 4, 2, 1]));
    assert_eq!(rebuilt(&items[2].1).shape, Vec::<i128>::new());
    assert_eq!(items[4].1, Py::Int(3));
    assert_eq!(items[5].1, Py::Float(1e-3));
}

#[test]
fn output_is_deterministic() {
    let mut src = source(&[("a", DType::F16, vec![3, 7]), ("b", DType::U8, vec![100])]);
    src.values_mut()
        .insert("name".into(), Value::Str("run".into()));
    let one = write(&src, "archive");
    let two = write(&src, "archive");
    assert!(one == two);
    // The id follows the content.
    let mut other = source(&[("a", DType::F16, vec![3, 7]), ("b", DType::U8, vec![100])]);
    other
        .values_mut()
        .insert("name".into(), Value::Str("run".into()));
    let mut changed = MemorySource::new();
    for (i, t) in other.tensors().iter().enumerate() {
        let mut d = other.tensor_bytes(i).unwrap().into_owned();
        if i == 1 {
            d[0] ^= 1;
        }
        changed.push(t.clone(), d).unwrap();
    }
    let id = |b: &Vec<u8>| entries_by_name(b, "archive", 2)[".data/serialization_id"].clone();
    assert_ne!(id(&one), id(&write(&changed, "archive")));
}

#[test]
fn every_dtype_is_written_or_refused() {
    for (i, dtype) in ALL_DTYPES.into_iter().enumerate() {
        let src = source(&[("t", dtype, vec![2, 4])]);
        let mut out = Vec::new();
        let result = write_pytorch(&mut out, &src, "a", &NoProgress);
        let Some((storage, dtype_global)) = expected_storage(dtype) else {
            let err = result.expect_err("refused");
            match &err.kind {
                ErrorKind::PytorchWrite(WriteError::NoTorchDType { name, dtype: d }) => {
                    assert_eq!((name.as_str(), *d), ("t", dtype))
                }
                other => panic!("{dtype}: {other:?}"),
            }
            assert!(out.is_empty(), "{dtype}: nothing written before a refusal");
            continue;
        };
        result.unwrap_or_else(|e| panic!("{dtype}: {e}"));
        let entries = entries_by_name(&out, "a", 1);
        assert_eq!(entries["data/0"], *src.tensor_bytes(0).unwrap());
        let (top, _) = unpickle(&entries["data.pkl"]);
        let t = rebuilt(&dict_items(&top)[0].1);
        assert_eq!(t.storage, storage, "{dtype} (#{i})");
        assert_eq!(t.dtype.as_deref(), dtype_global, "{dtype}");
        if dtype == DType::F4 {
            // safetensors [2, 4] F4 is torch [2, 2] float4_e2m1fn_x2: 4 bytes.
            assert_eq!(t.numel, 4);
            assert_eq!((t.shape, t.stride), (vec![2, 2], vec![2, 1]));
            continue;
        }
        let size = dtype.size().unwrap() as i128;
        let numel = if dtype_global.is_some() { 8 * size } else { 8 };
        assert_eq!(t.numel, numel, "{dtype}: v2 counts elements, v3 bytes");
        assert_eq!((t.shape, t.stride), (vec![2, 4], vec![4, 1]));
    }
}

#[test]
fn scalars_and_empty_tensors() {
    let src = source(&[
        ("scalar", DType::F32, vec![]),
        ("empty", DType::F32, vec![0]),
        ("empty3", DType::I64, vec![3, 0, 2]),
        ("scalar8", DType::F8E5M2, vec![]),
        ("empty8", DType::U16, vec![0, 5]),
    ]);
    let bytes = write(&src, "x");
    let entries = entries_by_name(&bytes, "x", 5);
    assert_eq!(entries["data/0"].len(), 4);
    assert!(entries["data/1"].is_empty() && entries["data/2"].is_empty());
    assert_eq!(entries["data/3"].len(), 1);
    assert!(entries["data/4"].is_empty());
    let (top, _) = unpickle(&entries["data.pkl"]);
    let t: Vec<Rebuilt> = dict_items(&top).iter().map(|(_, v)| rebuilt(v)).collect();
    assert_eq!(
        (t[0].numel, &t[0].shape, &t[0].stride),
        (1, &vec![], &vec![])
    );
    assert_eq!(
        (t[1].numel, &t[1].shape, &t[1].stride),
        (0, &vec![0], &vec![1])
    );
    assert_eq!((t[2].numel, &t[2].stride), (0, &vec![2, 2, 1]));
    assert_eq!(
        (t[3].numel, t[3].dtype.as_deref()),
        (1, Some("torch.float8_e5m2"))
    );
    assert_eq!((t[4].numel, &t[4].stride), (0, &vec![5, 1]));
}

#[test]
fn no_tensors_at_all() {
    let src = MemorySource::new();
    let bytes = write(&src, "empty");
    let entries = entries_by_name(&bytes, "empty", 0);
    let (top, stats) = unpickle(&entries["data.pkl"]);
    assert!(dict_items(&top).is_empty() && stats.batches.is_empty());
}

#[test]
fn many_tensors_are_batched_like_python() {
    for (n, batches) in [
        (1usize, vec![1usize]),
        (1000, vec![1000]),
        (1001, vec![1000, 1]),
        (2500, vec![1000, 1000, 500]),
    ] {
        let mut src = MemorySource::new();
        for i in 0..n {
            src.push_f32(format!("t.{i}"), vec![1], &[i as f32])
                .unwrap();
        }
        let bytes = write(&src, "many");
        let entries = entries_by_name(&bytes, "many", n);
        let (top, stats) = unpickle(&entries["data.pkl"]);
        assert_eq!(stats.batches, batches, "{n} tensors");
        assert_eq!(stats.long_memo, n > 20, "{n}: memo indices beyond 255");
        let items = dict_items(&top);
        assert_eq!(items.len(), n);
        for (i, (k, v)) in items.iter().enumerate() {
            assert_eq!(key_str(k), format!("t.{i}"));
            let t = rebuilt(v);
            assert_eq!(t.key, i.to_string());
            assert_eq!(entries[&format!("data/{i}")], (i as f32).to_le_bytes());
        }
    }
}

#[test]
fn values_of_every_kind() {
    let mut src = source(&[("w", DType::F32, vec![2])]);
    let two_200 = "1606938044258990275541962092341162602522202993782792835301376";
    let values = [
        ("a.none", Value::None),
        ("a.true", Value::Bool(true)),
        ("a.false", Value::Bool(false)),
        ("b.small", Value::Int(7)),
        ("b.negative", Value::Int(-70000)),
        ("b.i64min", Value::Int(i64::MIN)),
        ("b.u64max", Value::BigInt("18446744073709551615".into())),
        ("b.huge", Value::BigInt(two_200.into())),
        ("c.float", Value::Float(-0.25)),
        ("c.nan", Value::Float(f64::NAN)),
        ("d.text", Value::Str("héllo\n".into())),
        ("e.bytes", Value::Bytes(vec![0, 0x80, 0xff, b'a'])),
        ("e.empty", Value::Bytes(vec![])),
    ];
    for (k, v) in &values {
        src.values_mut().insert(k.to_string(), v.clone());
    }
    let bytes = write(&src, "vals");
    let entries = entries_by_name(&bytes, "vals", 1);
    let (top, _) = unpickle(&entries["data.pkl"]);
    let items = dict_items(&top);
    assert_eq!(items.len(), 1 + values.len());
    let got: BTreeMap<&str, &Py> = items[1..].iter().map(|(k, v)| (key_str(k), v)).collect();
    assert_eq!(*got["a.none"], Py::None);
    assert_eq!(*got["a.true"], Py::Bool(true));
    assert_eq!(*got["a.false"], Py::Bool(false));
    assert_eq!(*got["b.small"], Py::Int(7));
    assert_eq!(*got["b.negative"], Py::Int(-70000));
    assert_eq!(*got["b.i64min"], Py::Int(i128::from(i64::MIN)));
    assert_eq!(*got["b.u64max"], Py::Int(i128::from(u64::MAX)));
    let mut huge = vec![0u8; 25];
    huge.push(1);
    assert_eq!(*got["b.huge"], Py::Long(huge));
    assert_eq!(*got["c.float"], Py::Float(-0.25));
    assert!(matches!(got["c.nan"], Py::Float(f) if f.is_nan()));
    assert_eq!(*got["d.text"], Py::Str("héllo\n".into()));
    let codecs = |text: &str| {
        Py::Call(
            Box::new(Py::Global("_codecs.encode".into())),
            vec![Py::Str(text.into()), Py::Str("latin1".into())],
        )
    };
    assert_eq!(*got["e.bytes"], codecs("\u{0}\u{80}\u{ff}a"));
    assert_eq!(*got["e.empty"], codecs(""));
}

#[test]
fn refusals_write_nothing() {
    let unsupported = |r: Result<u64, FormatError>, needle: &str| match r {
        Err(FormatError {
            kind: ErrorKind::PytorchWrite(e),
            ..
        }) => {
            let msg = e.to_string();
            assert!(msg.contains(needle), "{msg:?} should mention {needle:?}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    };
    let mut out = Vec::new();
    let mut clash = source(&[("epoch", DType::F32, vec![1])]);
    clash.values_mut().insert("epoch".into(), Value::Int(1));
    unsupported(write_pytorch(&mut out, &clash, "a", &NoProgress), "epoch");
    let src = source(&[("w", DType::F32, vec![1])]);
    for bad in ["", "a/b", "a\\b"] {
        unsupported(
            write_pytorch(&mut out, &src, bad, &NoProgress),
            "archive name",
        );
    }
    let f6 = source(&[
        ("ok", DType::F32, vec![1]),
        ("packed.f6", DType::F6E3M2, vec![4]),
    ]);
    unsupported(write_pytorch(&mut out, &f6, "a", &NoProgress), "packed.f6");
    let mut big = source(&[]);
    big.values_mut()
        .insert("n".into(), Value::BigInt("9".repeat(700)));
    unsupported(write_pytorch(&mut out, &big, "a", &NoProgress), "\"n\"");
    assert!(out.is_empty());
}

#[test]
fn source_with_wrong_length_is_an_error() {
    for actual in [12, 20] {
        let mut out = Vec::new();
        let err = write_pytorch(&mut out, &Lying::new(actual, false), "a", &NoProgress)
            .expect_err("wrong length");
        match &err.kind {
            ErrorKind::Io(e) => {
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(e.to_string().contains("\"w\""), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }
    let err = write_pytorch(&mut Vec::new(), &Lying::new(16, true), "a", &NoProgress)
        .expect_err("source error");
    assert!(matches!(err.kind, ErrorKind::Memory(_)), "{err}");
}

#[test]
fn write_errors_pass_through() {
    let src = source(&[("w", DType::F32, vec![1024])]);
    for budget in [0, 10, 200, 1000, 4200] {
        let err = write_pytorch(&mut FailingWriter { budget }, &src, "a", &NoProgress)
            .expect_err("disk full");
        assert!(
            matches!(&err.kind, ErrorKind::Io(e) if e.to_string() == "disk full"),
            "{err}"
        );
    }
}

#[test]
fn progress_counts_tensor_bytes() {
    let src = source(&[("a", DType::F32, vec![10]), ("b", DType::I8, vec![3])]);
    let rec = Recorder::default();
    write_pytorch(&mut Vec::new(), &src, "p", &rec).unwrap();
    let events = rec.0.into_inner().unwrap();
    assert_eq!(
        events,
        ["begin writing pytorch 43", "advance 40", "advance 3", "end"]
    );
    // A refusal reports nothing; a failed write still ends.
    let rec = Recorder::default();
    let _ = write_pytorch(&mut Vec::new(), &Lying::new(3, false), "p", &rec);
    assert_eq!(
        rec.0.into_inner().unwrap(),
        ["begin writing pytorch 16", "advance 3", "end"]
    );
}

/// A tensor past 4 GiB: ZIP64 fields for its size, and for the offsets of every record after
/// it. Written through a sink that keeps only headers, so the test needs little memory.
#[test]
fn zip64_for_large_tensors_and_offsets() {
    let big = (1u64 << 32) + 100;
    let src = Streamed {
        pattern: false,
        infos: vec![
            TensorInfo::new("small", DType::F32, vec![3]),
            TensorInfo::new("big", DType::U8, vec![big]),
            TensorInfo::new("after", DType::I16, vec![5]),
        ],
        empty_meta: BTreeMap::new(),
        empty_values: BTreeMap::new(),
    };
    let mut out = Holey::default();
    let n = write_pytorch(&mut out, &src, "huge", &NoProgress).unwrap();
    assert_eq!(n, out.len);
    let entries = parse_zip(&out);
    let by_name: HashMap<&str, &Entry> = entries
        .iter()
        .map(|e| (e.name.strip_prefix("huge/").unwrap(), e))
        .collect();
    assert!(!by_name["data/0"].local_zip64);
    let e = by_name["data/1"];
    assert_eq!(e.size, big);
    assert!(e.local_zip64);
    for name in ["data/2", "version", ".data/serialization_id"] {
        assert!(by_name[name].offset > u64::from(u32::MAX));
        assert!(by_name[name].local_zip64, "{name}");
    }
    let pkl = entry_data(&out, by_name["data.pkl"]);
    let (top, _) = unpickle(&pkl);
    let t = rebuilt(&dict_items(&top)[1].1);
    assert_eq!((t.numel, t.shape), (i128::from(big), vec![i128::from(big)]));
}

/// Writes sample archives and their expected digests into `$TANTRA_TORCH_CHECK_DIR`, for a
/// manual cross-check with real torch (`torch-check digest`). Not part of the normal run.
#[test]
#[ignore = "writes files for a manual check with real torch"]
fn write_samples_for_torch_check() {
    let Ok(dir) = std::env::var("TANTRA_TORCH_CHECK_DIR") else {
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    let mut samples: Vec<(&str, MemorySource)> = Vec::new();
    let mut all = MemorySource::new();
    for (i, dtype) in ALL_DTYPES.into_iter().enumerate() {
        if expected_storage(dtype).is_none() {
            continue;
        }
        for (j, shape) in [vec![3, 5], vec![], vec![0, 4], vec![2, 1, 3, 2, 2]]
            .into_iter()
            .enumerate()
        {
            let info = TensorInfo::new(
                format!("{}.{j}", dtype.as_str().to_lowercase()),
                dtype,
                shape,
            );
            let data = sample_bytes(&info, (i * 7 + j) as u8);
            all.push(info, data).unwrap();
        }
    }
    all.values_mut().insert("epoch".into(), Value::Int(3));
    all.values_mut()
        .insert("step".into(), Value::BigInt("18446744073709551615".into()));
    all.values_mut().insert("opt.lr".into(), Value::Float(1e-3));
    all.values_mut()
        .insert("name".into(), Value::Str("héllo".into()));
    all.values_mut()
        .insert("blob".into(), Value::Bytes(vec![0, 0x80, 0xff]));
    all.values_mut()
        .insert("empty_blob".into(), Value::Bytes(vec![]));
    all.values_mut().insert("flag".into(), Value::Bool(true));
    all.values_mut().insert("nothing".into(), Value::None);
    samples.push(("all_dtypes_written", all));
    let mut many = MemorySource::new();
    for i in 0..1500 {
        many.push_f32(format!("layers.{i}.w"), vec![2], &[i as f32, -(i as f32)])
            .unwrap();
    }
    samples.push(("many", many));
    let big = (std::env::var_os("TANTRA_TORCH_CHECK_BIG").is_some()).then(|| Streamed {
        pattern: true,
        infos: vec![
            TensorInfo::new("big", DType::U8, vec![(1 << 32) + 1000]),
            TensorInfo::new("after", DType::I16, vec![3, 5]),
        ],
        empty_meta: BTreeMap::new(),
        empty_values: BTreeMap::new(),
    });
    let mut samples: Vec<(&str, &dyn TensorSource)> = samples
        .iter()
        .map(|(n, s)| (*n, s as &dyn TensorSource))
        .collect();
    if let Some(big) = &big {
        samples.push(("big", big));
    }
    let fixtures: Vec<(String, tantra_formats::pytorch::PytorchFile)> = [
        "all_dtypes.pt",
        "views.pt",
        "checkpoint.pt",
        "plain_dict.bin",
        "all_dtypes_legacy.pt",
        "views_legacy.pt",
    ]
    .iter()
    .map(|name| {
        let path = std::path::PathBuf::from(format!("{FIXTURES}/torch/{name}"));
        let stem = name.split('.').next().unwrap();
        (
            format!("rewritten_{stem}"),
            tantra_formats::pytorch::PytorchFile::open(&path).unwrap(),
        )
    })
    .collect();
    for (name, f) in &fixtures {
        samples.push((name, f));
    }
    for (name, src) in samples {
        let path = dir.join(format!("{name}.pt"));
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        write_pytorch(&mut file, src, name, &NoProgress).unwrap();
        file.flush().unwrap();
        let digests: BTreeMap<String, (String, Vec<u64>, String)> = src
            .tensors()
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let d = tantra_formats::tensor_digest(src, i).unwrap();
                (t.name.clone(), (t.dtype.to_string(), t.shape.clone(), d))
            })
            .collect();
        std::fs::write(
            dir.join(format!("{name}.expected.json")),
            serde_json::to_string_pretty(&digests).unwrap(),
        )
        .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Round trips through the crate's own reader.

/// Names, dtypes, shapes and digests of every tensor, and the values, keyed by name.
type Summary = (
    BTreeMap<String, (DType, Vec<u64>, String)>,
    BTreeMap<String, Value>,
);

fn summary(src: &dyn TensorSource) -> Summary {
    let tensors = src
        .tensors()
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let digest = tantra_formats::tensor_digest(src, i).unwrap();
            (t.name.clone(), (t.dtype, t.shape.clone(), digest))
        })
        .collect();
    (tensors, src.values().clone())
}

fn assert_same(a: &Summary, b: &Summary, what: &str) {
    assert_eq!(a.0, b.0, "{what}: tensors");
    assert_eq!(
        a.1.keys().collect::<Vec<_>>(),
        b.1.keys().collect::<Vec<_>>(),
        "{what}: value names"
    );
    for (k, v) in &a.1 {
        match (v, &b.1[k]) {
            (Value::Float(x), Value::Float(y)) => {
                assert!(
                    x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
                    "{what}: {k}"
                )
            }
            (x, y) => assert_eq!(x, y, "{what}: {k}"),
        }
    }
}

fn write_and_reopen(src: &dyn TensorSource, dir: &std::path::Path, name: &str) -> Summary {
    let path = dir.join(format!("{name}.pt"));
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    write_pytorch(&mut file, src, name, &NoProgress).unwrap();
    file.flush().unwrap();
    drop(file);
    let back = tantra_formats::pytorch::PytorchFile::open(&path).unwrap();
    summary(&back)
}

#[test]
fn round_trip_through_the_reader() {
    let dir = tempfile::tempdir().unwrap();
    let mut src = MemorySource::new();
    for (i, dtype) in ALL_DTYPES.into_iter().enumerate() {
        // F4 needs whole bytes and an even last dimension: its own test below.
        if expected_storage(dtype).is_none() || dtype == DType::F4 {
            continue;
        }
        for (j, shape) in [vec![3, 5], vec![], vec![0, 4], vec![2, 1, 3]]
            .into_iter()
            .enumerate()
        {
            let info = TensorInfo::new(format!("{dtype}.{j}"), dtype, shape);
            let data = sample_bytes(&info, (i * 5 + j) as u8);
            src.push(info, data).unwrap();
        }
    }
    src.values_mut().insert("epoch".into(), Value::Int(-3));
    src.values_mut()
        .insert("step".into(), Value::BigInt("18446744073709551616".into()));
    src.values_mut()
        .insert("opt.lr".into(), Value::Float(2.5e-4));
    src.values_mut()
        .insert("run".into(), Value::Str("tiny".into()));
    src.values_mut()
        .insert("raw".into(), Value::Bytes(vec![1, 0xfe]));
    src.values_mut().insert("ok".into(), Value::Bool(false));
    src.values_mut().insert("none".into(), Value::None);
    let want = summary(&src);
    assert_same(
        &want,
        &write_and_reopen(&src, dir.path(), "memory"),
        "memory source",
    );

    let mut many = MemorySource::new();
    for i in 0..1200 {
        many.push_f32(format!("l.{i}"), vec![1], &[i as f32])
            .unwrap();
    }
    assert_same(
        &summary(&many),
        &write_and_reopen(&many, dir.path(), "many"),
        "1200 tensors",
    );
}

/// torch's own files, re-written: every tensor (views materialized, shared storages split) and
/// every value survives.
#[test]
fn fixtures_survive_a_rewrite() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "all_dtypes.pt",
        "views.pt",
        "checkpoint.pt",
        "plain_dict.bin",
        "all_dtypes_legacy.pt",
        "views_legacy.pt",
    ] {
        let path = std::path::PathBuf::from(format!("{FIXTURES}/torch/{name}"));
        let original = tantra_formats::pytorch::PytorchFile::open(&path).unwrap();
        let want = summary(&original);
        assert!(!want.0.is_empty(), "{name}");
        let stem = name.split('.').next().unwrap();
        assert_same(&want, &write_and_reopen(&original, dir.path(), stem), name);
    }
}

#[test]
fn convert_to_pt_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let input = std::path::PathBuf::from(format!("{FIXTURES}/torch/checkpoint.pt"));
    let output = dir.path().join("copy.pt");
    let report = tantra_formats::convert(
        &input,
        &output,
        &tantra_formats::ConvertOptions::default(),
        &NoProgress,
    )
    .unwrap();
    assert!(report.verified);
    assert_eq!(
        report.bytes_written,
        std::fs::metadata(&output).unwrap().len()
    );
}

#[test]
fn f4_round_trips_through_torchs_float4_e2m1fn_x2() {
    // safetensors F4 [2, 6] (6 bytes) is torch float4_e2m1fn_x2 [2, 3], as safetensors.torch
    // maps it; tantra reads it back as F4 [2, 6] with the same bytes.
    let mut src = MemorySource::new();
    let bytes = vec![0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc];
    src.push(TensorInfo::new("f", DType::F4, vec![2, 6]), bytes.clone())
        .unwrap();
    let out = write(&src, "a");
    let back = tantra_formats::pytorch::PytorchFile::from_bytes(out).unwrap();
    assert_eq!(
        back.tensors()[0],
        TensorInfo::new("f", DType::F4, vec![2, 6])
    );
    assert_eq!(back.tensor_bytes(0).unwrap().as_ref(), bytes.as_slice());
    // An odd last dimension has no float4_e2m1fn_x2 shape.
    let mut odd = MemorySource::new();
    odd.push(TensorInfo::new("f", DType::F4, vec![4, 3]), vec![0; 6])
        .unwrap();
    let mut sink = Vec::new();
    assert!(matches!(
        write_pytorch(&mut sink, &odd, "a", &NoProgress)
            .unwrap_err()
            .kind,
        ErrorKind::PytorchWrite(WriteError::OddF4Shape { .. })
    ));
}
