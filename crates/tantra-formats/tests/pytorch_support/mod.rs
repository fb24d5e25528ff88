//! Test helpers: a pickle builder and writers for torch-like zip archives and legacy files, so
//! that tests can hand-build exactly the bytes a rule needs (no Python at test time).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// Builds a pickle opcode by opcode.
#[derive(Default, Clone)]
pub struct P {
    pub b: Vec<u8>,
}

impl P {
    pub fn new(proto: u8) -> P {
        P {
            b: vec![0x80, proto],
        }
    }
    pub fn bare() -> P {
        P { b: Vec::new() }
    }
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.b.extend_from_slice(bytes);
        self
    }
    pub fn op(&mut self, c: u8) -> &mut Self {
        self.b.push(c);
        self
    }
    pub fn mark(&mut self) -> &mut Self {
        self.op(b'(')
    }
    pub fn stop(&mut self) -> &mut Self {
        self.op(b'.')
    }
    pub fn none(&mut self) -> &mut Self {
        self.op(b'N')
    }
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.op(if v { 0x88 } else { 0x89 })
    }
    pub fn int(&mut self, v: i64) -> &mut Self {
        if (0..256).contains(&v) {
            self.op(b'K').op(v as u8)
        } else if (0..65536).contains(&v) {
            self.op(b'M').raw(&(v as u16).to_le_bytes())
        } else if i32::try_from(v).is_ok() {
            self.op(b'J').raw(&(v as i32).to_le_bytes())
        } else {
            self.op(0x8a).op(8).raw(&v.to_le_bytes())
        }
    }
    pub fn long1(&mut self, le: &[u8]) -> &mut Self {
        self.op(0x8a).op(le.len() as u8).raw(le)
    }
    pub fn float(&mut self, v: f64) -> &mut Self {
        self.op(b'G').raw(&v.to_be_bytes())
    }
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.op(b'X')
            .raw(&(s.len() as u32).to_le_bytes())
            .raw(s.as_bytes())
    }
    pub fn short_str(&mut self, s: &str) -> &mut Self {
        self.op(0x8c).op(s.len() as u8).raw(s.as_bytes())
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.op(b'B').raw(&(b.len() as u32).to_le_bytes()).raw(b)
    }
    pub fn global(&mut self, m: &str, n: &str) -> &mut Self {
        self.op(b'c')
            .raw(m.as_bytes())
            .op(b'\n')
            .raw(n.as_bytes())
            .op(b'\n')
    }
    /// Protocol 4 style: `SHORT_BINUNICODE m MEMOIZE SHORT_BINUNICODE n MEMOIZE STACK_GLOBAL`.
    pub fn stack_global(&mut self, m: &str, n: &str) -> &mut Self {
        self.short_str(m).op(0x94).short_str(n).op(0x94).op(0x93)
    }
    pub fn put(&mut self, i: u8) -> &mut Self {
        self.op(b'q').op(i)
    }
    pub fn get(&mut self, i: u8) -> &mut Self {
        self.op(b'h').op(i)
    }
    pub fn tuple(&mut self) -> &mut Self {
        self.op(b't')
    }
    pub fn tuple_n(&mut self, n: u8) -> &mut Self {
        match n {
            0 => self.op(b')'),
            1..=3 => self.op(0x84 + n),
            _ => panic!("tuple_n {n}"),
        }
    }
    pub fn empty_tuple(&mut self) -> &mut Self {
        self.op(b')')
    }
    pub fn empty_list(&mut self) -> &mut Self {
        self.op(b']')
    }
    pub fn empty_dict(&mut self) -> &mut Self {
        self.op(b'}')
    }
    pub fn reduce(&mut self) -> &mut Self {
        self.op(b'R')
    }
    pub fn build(&mut self) -> &mut Self {
        self.op(b'b')
    }
    pub fn setitem(&mut self) -> &mut Self {
        self.op(b's')
    }
    pub fn setitems(&mut self) -> &mut Self {
        self.op(b'u')
    }
    pub fn append(&mut self) -> &mut Self {
        self.op(b'a')
    }
    pub fn appends(&mut self) -> &mut Self {
        self.op(b'e')
    }
    pub fn binpersid(&mut self) -> &mut Self {
        self.op(b'Q')
    }
    pub fn ordered_dict(&mut self) -> &mut Self {
        self.global("collections", "OrderedDict")
            .empty_tuple()
            .reduce()
    }
    pub fn int_tuple(&mut self, v: &[i64]) -> &mut Self {
        self.mark();
        for &x in v {
            self.int(x);
        }
        self.tuple()
    }
    /// The persistent id `('storage', torch.<cls>, key, 'cpu', numel[, None])`.
    pub fn storage(
        &mut self,
        module: &str,
        cls: &str,
        key: &str,
        numel: i64,
        legacy: bool,
    ) -> &mut Self {
        self.mark()
            .str("storage")
            .global(module, cls)
            .str(key)
            .str("cpu")
            .int(numel);
        if legacy {
            self.none();
        }
        self.tuple().binpersid()
    }
    /// `_rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())`.
    #[allow(clippy::too_many_arguments)]
    pub fn tensor_v2(
        &mut self,
        cls: &str,
        key: &str,
        numel: i64,
        offset: i64,
        shape: &[i64],
        stride: &[i64],
        legacy: bool,
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").mark();
        self.storage("torch", cls, key, numel, legacy);
        self.int(offset)
            .int_tuple(shape)
            .int_tuple(stride)
            .bool(false)
            .ordered_dict();
        self.tuple().reduce()
    }
    /// `_rebuild_tensor_v3(UntypedStorage, offset, size, stride, False, OrderedDict(), dtype)`.
    pub fn tensor_v3(
        &mut self,
        key: &str,
        nbytes: i64,
        dtype: &str,
        shape: &[i64],
        stride: &[i64],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v3").mark();
        self.storage("torch.storage", "UntypedStorage", key, nbytes, false);
        self.int(0)
            .int_tuple(shape)
            .int_tuple(stride)
            .bool(false)
            .ordered_dict();
        self.global("torch", dtype);
        self.tuple().reduce()
    }
    /// `numpy.dtype(descr, False, True)` with BUILD state `(3, order, None, None, None, -1, -1, 0)`,
    /// as numpy pickles a dtype.
    pub fn np_dtype(&mut self, descr: &str, order: &str) -> &mut Self {
        self.global("numpy", "dtype")
            .str(descr)
            .bool(false)
            .bool(true)
            .tuple_n(3)
            .reduce();
        self.mark()
            .int(3)
            .str(order)
            .none()
            .none()
            .none()
            .int(-1)
            .int(-1)
            .int(0)
            .tuple()
            .build()
    }
    /// A numpy array as numpy pickles it: `_reconstruct(ndarray, (0,), b"b")`, then BUILD with
    /// `(1, shape, dtype, fortran_order, data)`.
    pub fn np_array(
        &mut self,
        shape: &[i64],
        descr: &str,
        order: &str,
        fortran_order: bool,
        data: &[u8],
    ) -> &mut Self {
        self.global("numpy.core.multiarray", "_reconstruct")
            .global("numpy", "ndarray");
        self.int_tuple(&[0]).bytes(b"b").tuple_n(3).reduce();
        self.mark().int(1).int_tuple(shape).np_dtype(descr, order);
        self.bool(fortran_order).bytes(data).tuple().build()
    }
    pub fn done(&mut self) -> Vec<u8> {
        self.stop();
        self.b.clone()
    }
}

/// A state dict pickle `OrderedDict{name: FloatStorage tensor}` with contiguous tensors, one
/// storage each (keys "0", "1", ...).
pub fn state_dict_pickle(tensors: &[(&str, &[i64])]) -> Vec<u8> {
    let mut p = P::new(2);
    p.ordered_dict().mark();
    for (i, (name, shape)) in tensors.iter().enumerate() {
        let numel: i64 = shape.iter().product();
        let stride = contiguous(shape);
        p.str(name).tensor_v2(
            "FloatStorage",
            &i.to_string(),
            numel,
            0,
            shape,
            &stride,
            false,
        );
    }
    p.setitems();
    p.done()
}

pub fn contiguous(shape: &[i64]) -> Vec<i64> {
    let mut s = vec![0i64; shape.len()];
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i];
    }
    s
}

/// Writes a zip archive the way torch does: stored, flags 0x0808, zero CRCs, data descriptors,
/// `FB` padding so every record starts at a multiple of 64, ZIP64 end records.
pub fn torch_zip(prefix: &str, records: &[(&str, Vec<u8>)]) -> Vec<u8> {
    use tantra_formats::zip::records::{
        encode_end, extra_field, CentralHeader, DataDescriptor, LocalHeader, DATA_DESCRIPTOR_FLAG,
        PADDING_EXTRA_ID, UTF8_FLAG,
    };
    let flags = UTF8_FLAG | DATA_DESCRIPTOR_FLAG;
    let mut out = Vec::new();
    let mut cd = Vec::new();
    for (rel, data) in records {
        let name = format!("{prefix}/{rel}");
        let off = out.len() as u32;
        let base = out.len() + 30 + name.len() + 4;
        let pad = (64 - base % 64) % 64;
        let mut extra = Vec::new();
        extra_field(&mut extra, PADDING_EXTRA_ID, &vec![b'Z'; pad]);
        LocalHeader {
            flags,
            name: name.as_bytes(),
            extra: &extra,
            ..LocalHeader::default()
        }
        .encode(&mut out);
        assert_eq!(out.len() % 64, 0);
        out.extend_from_slice(data);
        let size = data.len() as u32;
        DataDescriptor {
            crc: 0,
            size: u64::from(size),
            zip64: false,
        }
        .encode(&mut out);
        CentralHeader {
            flags,
            compressed_size: size,
            size,
            local_offset: off,
            name: name.as_bytes(),
            ..CentralHeader::default()
        }
        .encode(&mut cd);
    }
    let cd_offset = out.len() as u64;
    let n = records.len() as u64;
    out.extend_from_slice(&cd);
    let at = out.len() as u64;
    encode_end(&mut out, at, n, cd.len() as u64, cd_offset, true);
    out
}

/// A complete torch-like archive: `data.pkl`, `byteorder`, `data/<i>` for each storage,
/// `version`.
pub fn torch_archive(pickle: Vec<u8>, storages: &[Vec<u8>]) -> Vec<u8> {
    let mut recs: Vec<(String, Vec<u8>)> = vec![
        ("data.pkl".into(), pickle),
        ("byteorder".into(), b"little".to_vec()),
    ];
    for (i, s) in storages.iter().enumerate() {
        recs.push((format!("data/{i}"), s.clone()));
    }
    recs.push(("version".into(), b"3\n".to_vec()));
    let refs: Vec<(&str, Vec<u8>)> = recs.iter().map(|(n, d)| (n.as_str(), d.clone())).collect();
    torch_zip("archive", &refs)
}

/// The five legacy pickles plus storages (`keys` in order, each `(key, element count, bytes)`).
pub fn legacy_file(
    object: Vec<u8>,
    storages: &[(&str, i64, Vec<u8>)],
    little_endian: bool,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend(
        P::new(2)
            .long1(&[0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19])
            .done(),
    );
    out.extend(P::new(2).int(1001).done());
    out.extend(
        P::new(2)
            .empty_dict()
            .mark()
            .str("protocol_version")
            .int(1001)
            .str("little_endian")
            .bool(little_endian)
            .setitems()
            .done(),
    );
    out.extend(object);
    let mut keys = P::new(2);
    keys.empty_list().mark();
    for (k, _, _) in storages {
        keys.str(k);
    }
    keys.appends();
    out.extend(keys.done());
    for (_, count, bytes) in storages {
        out.extend_from_slice(&count.to_le_bytes());
        out.extend_from_slice(bytes);
    }
    out
}

pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A temporary directory holding one file with `bytes`.
pub fn temp_file(name: &str, bytes: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    (dir, path)
}

pub fn fixture(rel: &str) -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures")).join(rel)
}
