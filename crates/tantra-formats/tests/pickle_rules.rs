//! Every refusal rule of the safe pickle reader, each with its own hand-built pickle, plus the
//! constructs real checkpoints need (LONG1, protocol 4, SETITEMS batches, v3 dtypes, numpy).

#![allow(clippy::unwrap_used)] // tests may unwrap

mod pytorch_support;

use pytorch_support::P;
use tantra_formats::pickle::{
    scan, scan_prefix, ElementType, Leaf, Limits, Object, ParseOptions, PersistentIds, Pickle,
    PickleError, Verdict,
};
use tantra_formats::{DType, Value};

fn zip_opts() -> ParseOptions {
    ParseOptions::new(PersistentIds::Zip)
}

fn parse(b: &[u8]) -> Result<Pickle, PickleError> {
    Pickle::parse(b, &zip_opts())
}

fn err(b: &[u8]) -> PickleError {
    parse(b).expect_err("refused")
}

/// The error of flattening `b`, which must parse.
fn flatten_err(b: &[u8]) -> PickleError {
    parse(b)
        .unwrap()
        .flatten(&Limits::default())
        .expect_err("refused when flattened")
}

fn flat_values(p: &Pickle) -> Vec<(String, Value)> {
    p.flatten(&Limits::default())
        .unwrap()
        .entries
        .into_iter()
        .filter_map(|(n, l)| match l {
            Leaf::Value(v) => Some((n, v)),
            _ => None,
        })
        .collect()
}

// --- globals ---------------------------------------------------------------------------------

#[test]
fn forbidden_global_is_named_with_its_offset() {
    let b = P::new(2)
        .global("os", "system")
        .str("ls")
        .tuple_n(1)
        .reduce()
        .done();
    let e = err(&b);
    assert_eq!(
        e,
        PickleError::ForbiddenGlobal {
            offset: 2,
            global: "os.system".into()
        }
    );
    assert!(e.to_string().contains("os.system"));
}

#[test]
fn nested_loaders_and_subprocess_are_refused() {
    for (m, n) in [
        ("torch.storage", "_load_from_bytes"),
        ("pickle", "loads"),
        ("numpy", "load"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "getattr"),
        ("torch", "load"),
    ] {
        let b = P::new(2).global(m, n).done();
        assert!(
            matches!(err(&b), PickleError::ForbiddenGlobal { global, .. } if global == format!("{m}.{n}")),
            "{m}.{n}"
        );
    }
}

#[test]
fn dotted_attribute_paths_are_refused() {
    let b = P::new(2)
        .global("torch._utils", "_rebuild_tensor_v2.__globals__")
        .done();
    assert!(matches!(err(&b), PickleError::DottedName { .. }));
}

#[test]
fn whole_module_pickles_name_the_class() {
    for (m, n) in [("__main__", "Net"), ("torch.nn.modules.linear", "Linear")] {
        let b = P::new(2).global(m, n).empty_tuple().op(0x81).done();
        let e = err(&b);
        assert!(matches!(e, PickleError::WholeModule { .. }));
        let msg = e.to_string();
        assert!(msg.contains(&format!("{m}.{n}")), "{msg}");
        assert!(msg.contains("state_dict()"), "{msg}");
    }
}

#[test]
fn stack_global_takes_literal_strings_only() {
    // Allowed global through STACK_GLOBAL (protocol 4).
    let b = P::new(4)
        .stack_global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .done();
    let p = parse(&b).unwrap();
    assert!(matches!(p.get(p.root()), Object::OrderedDict(_)));
    // Forbidden one.
    let b = P::new(4).stack_global("posix", "system").done();
    assert!(
        matches!(err(&b), PickleError::ForbiddenGlobal { global, .. } if global == "posix.system")
    );
    // Operands that are not strings.
    let b = P::new(4).int(1).short_str("system").op(0x93).done();
    assert!(matches!(err(&b), PickleError::NonLiteralStackGlobal { .. }));
    let b = P::new(4).empty_tuple().empty_tuple().op(0x93).done();
    assert!(matches!(err(&b), PickleError::NonLiteralStackGlobal { .. }));
}

// --- refused opcodes -------------------------------------------------------------------------

#[test]
fn extension_registry_is_refused() {
    for op in [&[0x82u8, 1][..], &[0x83, 1, 0], &[0x84, 1, 0, 0, 0]] {
        let b = P::new(2).raw(op).done();
        assert!(matches!(err(&b), PickleError::ExtensionRegistry { .. }));
    }
}

#[test]
fn inst_and_obj_are_refused() {
    let b = P::bare().mark().raw(b"ios\nsystem\n").done();
    assert!(matches!(
        err(&b),
        PickleError::InstObj { opcode: "INST", .. }
    ));
    let b = P::new(2)
        .mark()
        .global("collections", "OrderedDict")
        .op(b'o')
        .done();
    assert!(matches!(
        err(&b),
        PickleError::InstObj { opcode: "OBJ", .. }
    ));
}

#[test]
fn text_persistent_id_is_refused() {
    let b = P::bare().raw(b"P0\n").done();
    assert!(matches!(err(&b), PickleError::TextPersistentId { .. }));
}

#[test]
fn out_of_band_buffers_are_refused() {
    let b = P::new(5).op(0x97).done();
    assert!(matches!(err(&b), PickleError::OutOfBandBuffer { .. }));
    let b = P::new(5).bytes(b"x").op(0x98).done();
    assert!(matches!(err(&b), PickleError::OutOfBandBuffer { .. }));
}

#[test]
fn unknown_opcode_and_protocol() {
    let b = P::new(2).op(0xff).done();
    assert_eq!(
        err(&b),
        PickleError::UnknownOpcode {
            offset: 2,
            byte: 0xff
        }
    );
    let b = P::new(6).none().done();
    assert!(matches!(
        err(&b),
        PickleError::UnsupportedProtocol { version: 6, .. }
    ));
}

// --- targets of BUILD, SETITEM(S), APPEND(S) -------------------------------------------------

#[test]
fn build_only_on_ordered_dict_and_tensors() {
    let ok = P::new(2)
        .ordered_dict()
        .empty_dict()
        .str("_metadata")
        .empty_dict()
        .setitem()
        .build()
        .done();
    assert!(parse(&ok).is_ok());
    for target in [
        P::new(2).empty_dict().clone(),
        P::new(2).empty_list().clone(),
        P::new(2).int(1).clone(),
    ] {
        let mut b = target;
        b.empty_dict().build();
        assert!(matches!(err(&b.done()), PickleError::BuildTarget { .. }));
    }
}

#[test]
fn setitem_only_on_dicts() {
    let b = P::new(2).empty_list().str("k").int(1).setitem().done();
    assert!(matches!(
        err(&b),
        PickleError::SetItemTarget {
            opcode: "SETITEM",
            target: "list",
            ..
        }
    ));
    let b = P::new(2)
        .empty_tuple()
        .mark()
        .str("k")
        .int(1)
        .setitems()
        .done();
    assert!(matches!(
        err(&b),
        PickleError::SetItemTarget {
            opcode: "SETITEMS",
            ..
        }
    ));
    let b = P::new(2).empty_dict().mark().str("k").setitems().done();
    assert!(matches!(err(&b), PickleError::OddItems { .. }));
}

#[test]
fn append_only_on_lists() {
    let b = P::new(2).empty_dict().int(1).append().done();
    assert!(matches!(
        err(&b),
        PickleError::AppendTarget {
            opcode: "APPEND",
            target: "dict",
            ..
        }
    ));
    let b = P::new(2).empty_tuple().mark().int(1).appends().done();
    assert!(matches!(
        err(&b),
        PickleError::AppendTarget {
            opcode: "APPENDS",
            ..
        }
    ));
    let b = P::new(4).empty_list().mark().int(1).op(0x90).done();
    assert!(matches!(err(&b), PickleError::AddItemsTarget { .. }));
    let b = P::new(4).op(0x8f).mark().int(1).int(2).op(0x90).done();
    assert!(parse(&b).is_ok());
}

// --- persistent ids --------------------------------------------------------------------------

#[test]
fn persistent_id_must_be_the_storage_tuple() {
    // Not a tuple.
    let b = P::new(2).str("storage").binpersid().done();
    assert!(matches!(err(&b), PickleError::PersistentId { .. }));
    // Wrong arity (legacy 6-tuple in a zip archive).
    let b = P::new(2)
        .storage("torch", "FloatStorage", "0", 4, true)
        .done();
    assert!(matches!(err(&b), PickleError::PersistentId { .. }));
    // First field.
    let b = P::new(2)
        .mark()
        .str("module")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(4)
        .tuple()
        .binpersid()
        .done();
    assert!(matches!(err(&b), PickleError::PersistentId { .. }));
    // Class not a storage class.
    let b = P::new(2)
        .storage("collections", "OrderedDict", "0", 4, false)
        .done();
    assert!(matches!(err(&b), PickleError::PersistentId { .. }));
    // Negative numel.
    let b = P::new(2)
        .mark()
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .raw(b"J\xff\xff\xff\xff")
        .tuple()
        .binpersid()
        .done();
    assert!(matches!(err(&b), PickleError::PersistentId { .. }));
    // Not allowed at all in header pickles.
    let b = P::new(2)
        .storage("torch", "FloatStorage", "0", 4, false)
        .done();
    assert!(matches!(
        Pickle::parse(&b, &ParseOptions::new(PersistentIds::Forbidden)),
        Err(PickleError::NoPersistentIds { .. })
    ));
    // Legacy view metadata.
    let b = P::new(2)
        .mark()
        .str("storage")
        .global("torch", "FloatStorage")
        .str("0")
        .str("cpu")
        .int(4)
        .mark()
        .str("1")
        .int(0)
        .int(2)
        .tuple()
        .tuple()
        .binpersid()
        .done();
    assert!(matches!(
        Pickle::parse(&b, &ParseOptions::new(PersistentIds::Legacy)),
        Err(PickleError::PersistentId { .. })
    ));
}

#[test]
fn storage_key_must_be_a_plain_name() {
    for key in ["../0", "data/0", "/etc/passwd", "", "a\\b", "a.b", "0\0"] {
        let b = P::new(2)
            .storage("torch", "FloatStorage", key, 4, false)
            .done();
        assert!(matches!(err(&b), PickleError::StorageKey { .. }), "{key:?}");
    }
}

// --- lengths, memo, budgets ------------------------------------------------------------------

#[test]
fn length_fields_beyond_the_input_are_refused() {
    for op in [
        &b"X\xff\xff\xff\xff"[..],
        b"B\xff\xff\xff\x7f",
        b"\x8e\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x8d\x00\x00\x00\x00\x01\x00\x00\x00",
        b"C\x05ab",
        b"\x8c\x10a",
        b"T\x00\x00\x00\x10",
        b"\x96\x00\x00\x00\x00\x00\x00\x00\x01",
    ] {
        let b = P::new(4).raw(op).done();
        assert!(
            matches!(err(&b), PickleError::LengthBeyondEnd { offset: 2, .. }),
            "{op:?}"
        );
    }
    let b = P::new(2).raw(b"T\xff\xff\xff\xff").done();
    assert!(matches!(err(&b), PickleError::NegativeLength { .. }));
    let b = P::new(4)
        .raw(b"\x95\xff\xff\x00\x00\x00\x00\x00\x00")
        .none()
        .done();
    assert!(matches!(err(&b), PickleError::LengthBeyondEnd { .. }));
}

#[test]
fn memo_is_a_map_and_gets_share() {
    // LONG_BINPUT at index 2^32-1 does not allocate 2^32 slots.
    let b = P::new(2)
        .str("x")
        .raw(b"r\xff\xff\xff\xff")
        .op(b'0')
        .raw(b"j\xff\xff\xff\xff")
        .done();
    let p = parse(&b).unwrap();
    assert_eq!(p.root_str(), Some("x"));
    let b = P::new(2).get(7).done();
    assert!(matches!(err(&b), PickleError::MemoMissing { index: 7, .. }));
}

#[test]
fn billion_laughs_shares_nodes_and_the_walk_is_budgeted() {
    // l0 = [1]; l(i+1) = [l(i)] * 10 through the memo: 10^20 leaves if expanded.
    let mut p = P::new(2);
    p.empty_list().int(1).append().put(0);
    for i in 0..20u8 {
        p.empty_list().mark();
        for _ in 0..10 {
            p.get(i);
        }
        p.appends().put(i + 1);
    }
    let b = p.done();
    let pk = parse(&b).unwrap();
    assert!(pk.node_count() < 100, "{} nodes", pk.node_count());
    let limits = Limits {
        max_visits: 100_000,
        ..Limits::default()
    };
    // The budget is the smaller of the limit and what the input's size allows.
    assert!(matches!(
        pk.flatten(&limits),
        Err(PickleError::ExpansionBudget { limit }) if limit <= 100_000
    ));
}

#[test]
fn names_are_budgeted() {
    // One 1000-byte key shared (through the memo) at every level of a 500-deep tree.
    let key = "k".repeat(1000);
    let mut p = P::new(2);
    p.str(&key).put(0).op(b'0');
    for _ in 0..500 {
        p.empty_dict().get(0);
    }
    p.int(1);
    for _ in 0..500 {
        p.setitem();
    }
    let b = p.done();
    let pk = parse(&b).unwrap();
    let limits = Limits {
        max_name_bytes: 1 << 20,
        ..Limits::default()
    };
    assert_eq!(
        pk.flatten(&limits),
        Err(PickleError::NameBudget { limit: 1 << 20 })
    );
}

#[test]
fn node_budget_and_stack_cap() {
    let mut p = P::new(2);
    for _ in 0..100 {
        p.int(300);
    }
    let b = p.done();
    let small = ParseOptions {
        limits: Limits {
            max_nodes: 50,
            ..Limits::default()
        },
        ..zip_opts()
    };
    assert!(matches!(
        Pickle::parse(&b, &small),
        Err(PickleError::NodeBudget { limit: 50, .. })
    ));
    // A flood of one-byte NONEs: no nodes, but the stack is capped.
    let mut p = P::new(2);
    for _ in 0..100 {
        p.none();
    }
    let b = p.done();
    let small = ParseOptions {
        limits: Limits {
            max_stack: 50,
            ..Limits::default()
        },
        ..zip_opts()
    };
    assert!(matches!(
        Pickle::parse(&b, &small),
        Err(PickleError::StackOverflow { limit: 50, .. })
    ));
}

#[test]
fn deep_nesting_is_capped_without_overflowing_the_stack() {
    // 100k nested lists: ] ] ] ... a a a.
    let n = 100_000;
    let mut b = vec![0x80, 2];
    b.extend(std::iter::repeat_n(b']', n));
    b.extend(std::iter::repeat_n(b'a', n - 1));
    b.push(b'.');
    let p = parse(&b).unwrap();
    assert!(matches!(
        p.flatten(&Limits::default()),
        Err(PickleError::TooDeep { limit: 1000, .. })
    ));
    drop(p); // flat arena: no recursive drop
             // 100k nested MARKs hit the mark cap.
    let mut b = vec![0x80, 2];
    b.extend(std::iter::repeat_n(b'(', n));
    b.push(b'.');
    assert!(matches!(err(&b), PickleError::TooManyMarks { .. }));
    // The scanner survives both.
    assert!(matches!(scan(&b).verdict, Verdict::Invalid(_)));
}

#[test]
fn cycles_are_refused_when_walked() {
    let b = P::new(2).empty_list().put(0).get(0).append().done();
    assert!(matches!(flatten_err(&b), PickleError::Cycle { .. }));
    let b = P::new(2)
        .empty_dict()
        .put(0)
        .str("self")
        .get(0)
        .setitem()
        .done();
    assert!(matches!(flatten_err(&b), PickleError::Cycle { .. }));
}

// --- structure -------------------------------------------------------------------------------

#[test]
fn stack_underflow_and_missing_marks() {
    assert!(matches!(
        err(&P::new(2).done()),
        PickleError::StackUnderflow { opcode: "STOP", .. }
    ));
    assert!(matches!(
        err(&P::new(2).int(1).tuple_n(2).done()),
        PickleError::StackUnderflow { .. }
    ));
    assert!(matches!(
        err(&P::new(2).append().done()),
        PickleError::StackUnderflow { .. }
    ));
    // Items below a MARK are out of reach.
    assert!(matches!(
        err(&P::new(2).empty_list().mark().append().done()),
        PickleError::StackUnderflow { .. }
    ));
    assert!(matches!(
        err(&P::new(2).int(1).tuple().done()),
        PickleError::NoMark { .. }
    ));
    assert!(matches!(
        err(&P::new(2).reduce().done()),
        PickleError::StackUnderflow { .. }
    ));
}

#[test]
fn stop_is_required_and_must_end_the_input() {
    let b = P::new(2).none().b.clone();
    assert_eq!(err(&b), PickleError::MissingStop { offset: 3 });
    let mut b = P::new(2).none().done();
    b.extend_from_slice(b"extra");
    assert_eq!(
        err(&b),
        PickleError::TrailingBytes {
            offset: 4,
            count: 5
        }
    );
    let (p, end) = Pickle::parse_prefix(&b, &zip_opts()).unwrap();
    assert_eq!(end, 4);
    assert!(matches!(p.get(p.root()), Object::None));
}

#[test]
fn truncations_and_corruptions_never_panic() {
    let b = P::new(2)
        .ordered_dict()
        .mark()
        .str("w")
        .tensor_v2("FloatStorage", "0", 6, 0, &[2, 3], &[3, 1], false)
        .str("n")
        .long1(&[1, 2, 3, 4, 5, 6, 7, 8, 9])
        .setitems()
        .done();
    assert!(parse(&b).is_ok());
    for n in 0..b.len() {
        assert!(parse(&b[..n]).is_err());
        let _ = scan(&b[..n]);
        for bit in [0x01u8, 0x80, 0xff] {
            let mut c = b.clone();
            c[n] ^= bit;
            if let Ok(p) = parse(&c) {
                let _ = p.flatten(&Limits::default());
            }
            let _ = scan(&c);
        }
    }
}

#[test]
fn callables_are_only_the_allowlisted_ones() {
    let b = P::new(2).str("x").empty_tuple().reduce().done();
    assert!(matches!(err(&b), PickleError::NotCallable { .. }));
    let b = P::new(2)
        .global("torch", "FloatStorage")
        .empty_tuple()
        .reduce()
        .done();
    assert!(matches!(err(&b), PickleError::NotCallable { .. }));
    let b = P::new(2)
        .global("torch._utils", "_rebuild_tensor_v2")
        .empty_tuple()
        .op(0x81)
        .done();
    assert!(matches!(err(&b), PickleError::NotCallable { .. }));
    let b = P::new(2)
        .global("torch", "Size")
        .str("x")
        .tuple_n(1)
        .reduce()
        .done();
    assert!(matches!(err(&b), PickleError::BadArguments { .. }));
    // _rebuild_from_type_v2 wraps tensors only.
    let b = P::new(2)
        .global("torch._tensor", "_rebuild_from_type_v2")
        .global("collections", "OrderedDict")
        .global("torch", "Tensor")
        .empty_tuple()
        .empty_dict()
        .tuple()
        .done();
    // (not reduced: just check the tuple parses) then reduce with a bad function:
    assert!(parse(&b).is_err()); // TUPLE without MARK
    let b = P::new(2)
        .global("torch._tensor", "_rebuild_from_type_v2")
        .mark()
        .global("collections", "OrderedDict")
        .global("torch", "Tensor")
        .empty_tuple()
        .empty_dict()
        .tuple()
        .reduce()
        .done();
    assert!(matches!(err(&b), PickleError::BadArguments { .. }));
}

// --- tensors ---------------------------------------------------------------------------------

fn one_tensor(cls: &str, numel: i64, offset: i64, shape: &[i64], stride: &[i64]) -> Vec<u8> {
    P::new(2)
        .empty_dict()
        .str("t")
        .tensor_v2(cls, "0", numel, offset, shape, stride, false)
        .setitem()
        .done()
}

#[test]
fn views_are_checked_against_the_storage() {
    assert!(parse(&one_tensor("FloatStorage", 6, 0, &[2, 3], &[3, 1])).is_ok());
    assert!(parse(&one_tensor("FloatStorage", 6, 0, &[3, 2], &[1, 3])).is_ok());
    assert!(parse(&one_tensor("FloatStorage", 1, 0, &[4, 3], &[0, 0])).is_ok());
    assert!(parse(&one_tensor("FloatStorage", 0, 0, &[0, 4], &[4, 1])).is_ok());
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, 1, &[2, 3], &[3, 1])),
        PickleError::ViewOutOfBounds {
            max_index: 6,
            elements: 6,
            ..
        }
    ));
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, 0, &[2, -3], &[3, 1])),
        PickleError::BadTensorView { .. }
    ));
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, 0, &[2, 3], &[-3, 1])),
        PickleError::BadTensorView { .. }
    ));
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, 0, &[2, 3], &[1])),
        PickleError::BadTensorView { .. }
    ));
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, -1, &[2, 3], &[3, 1])),
        PickleError::BadTensorView { .. }
    ));
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, 0, &[3, 3], &[i64::MAX, 1])),
        PickleError::BadTensorView { .. }
    ));
    assert!(matches!(
        err(&one_tensor("FloatStorage", 6, 7, &[0], &[1])),
        PickleError::ViewOutOfBounds { .. }
    ));
}

#[test]
fn complex128_is_refused_naming_the_tensor() {
    let e = flatten_err(&one_tensor("ComplexDoubleStorage", 2, 0, &[2], &[1]));
    assert_eq!(
        e,
        PickleError::UnsupportedDType {
            name: "t".into(),
            dtype: "complex128"
        }
    );
}

#[test]
fn v3_untyped_storage_counts_bytes() {
    for (dtype, want) in [
        ("float8_e4m3fn", DType::F8E4M3),
        ("float8_e5m2", DType::F8E5M2),
        ("float8_e4m3fnuz", DType::F8E4M3Fnuz),
        ("float8_e5m2fnuz", DType::F8E5M2Fnuz),
        ("float8_e8m0fnu", DType::F8E8M0),
        ("uint16", DType::U16),
        ("uint32", DType::U32),
        ("uint64", DType::U64),
        ("bfloat16", DType::BF16),
    ] {
        let size = want.size().unwrap() as i64;
        let b = P::new(2)
            .empty_dict()
            .str("t")
            .tensor_v3("0", 6 * size, dtype, &[2, 3], &[3, 1])
            .setitem()
            .done();
        let p = parse(&b).unwrap();
        let f = p.flatten(&Limits::default()).unwrap();
        match &f.entries[0].1 {
            Leaf::Tensor(t) => {
                assert_eq!(t.elem, ElementType::DType(want));
                assert_eq!(t.storage.byte_len(), Some(6 * size as u64));
            }
            other => panic!("{other:?}"),
        }
        // One byte short of the view.
        let b = P::new(2)
            .empty_dict()
            .str("t")
            .tensor_v3("0", 6 * size - 1, dtype, &[2, 3], &[3, 1])
            .setitem()
            .done();
        assert!(
            matches!(err(&b), PickleError::ViewOutOfBounds { .. }),
            "{dtype}"
        );
    }
}

#[test]
fn parameters_and_tensor_subclasses_unwrap_to_tensors() {
    let mut p = P::new(2);
    p.empty_dict()
        .str("p")
        .global("torch._utils", "_rebuild_parameter")
        .mark();
    p.tensor_v2("FloatStorage", "0", 3, 0, &[3], &[1], false);
    p.bool(true).ordered_dict().tuple().reduce().setitem();
    p.str("s")
        .global("torch._tensor", "_rebuild_from_type_v2")
        .mark();
    p.global("torch._utils", "_rebuild_tensor_v2")
        .global("torch.nn.parameter", "Parameter");
    p.mark()
        .storage("torch", "FloatStorage", "1", 2, false)
        .int(0)
        .int_tuple(&[2])
        .int_tuple(&[1])
        .bool(false)
        .ordered_dict()
        .tuple();
    p.empty_dict().tuple().reduce().setitem();
    p.str("w")
        .global("torch._utils", "_rebuild_parameter_with_state")
        .mark();
    p.tensor_v2("HalfStorage", "2", 1, 0, &[], &[], false);
    p.bool(false)
        .ordered_dict()
        .empty_dict()
        .tuple()
        .reduce()
        .setitem();
    let b = p.done();
    let pk = parse(&b).unwrap();
    let f = pk.flatten(&Limits::default()).unwrap();
    let names: Vec<&str> = f.entries.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["p", "s", "w"]);
    assert!(f.entries.iter().all(|(_, l)| matches!(l, Leaf::Tensor(_))));
}

#[test]
fn tied_weights_through_the_memo_give_two_names() {
    let b = P::new(2)
        .ordered_dict()
        .mark()
        .str("embed.weight")
        .tensor_v2("FloatStorage", "0", 4, 0, &[2, 2], &[2, 1], false)
        .put(50)
        .str("lm_head.weight")
        .get(50)
        .setitems()
        .done();
    let p = parse(&b).unwrap();
    let f = p.flatten(&Limits::default()).unwrap();
    assert_eq!(f.entries.len(), 2);
    assert_eq!(f.entries[0].1, f.entries[1].1);
}

// --- data ------------------------------------------------------------------------------------

#[test]
fn long1_and_long4_integers() {
    let b = P::new(2)
        .empty_dict()
        .mark()
        .str("small")
        .long1(&[0xff, 0x00])
        .str("neg")
        .long1(&[0xfe])
        .str("big")
        .long1(&[0, 0, 0, 0, 0, 0, 0, 0, 1])
        .str("zero")
        .long1(&[])
        .str("l4")
        .raw(b"\x8b\x02\x00\x00\x00\x00\x01")
        .setitems()
        .done();
    let p = parse(&b).unwrap();
    let v = flat_values(&p);
    assert_eq!(v[0], ("small".into(), Value::Int(255)));
    assert_eq!(v[1], ("neg".into(), Value::Int(-2)));
    assert_eq!(
        v[2],
        ("big".into(), Value::BigInt("18446744073709551616".into()))
    );
    assert_eq!(v[3], ("zero".into(), Value::Int(0)));
    assert_eq!(v[4], ("l4".into(), Value::Int(256)));
    let mut huge = vec![0x80, 2, 0x8b];
    huge.extend_from_slice(&1000u32.to_le_bytes());
    huge.extend(std::iter::repeat_n(1u8, 1000));
    huge.push(b'.');
    assert!(matches!(err(&huge), PickleError::IntegerTooLong { .. }));
}

#[test]
fn more_than_a_thousand_entries_in_setitems_batches() {
    let mut p = P::new(2);
    p.ordered_dict();
    let n = 2500;
    for batch in (0..n).collect::<Vec<_>>().chunks(1000) {
        p.mark();
        for &i in batch {
            p.str(&format!("layer.{i}.w")).int(i);
        }
        p.setitems();
    }
    let b = p.done();
    let pk = parse(&b).unwrap();
    let v = flat_values(&pk);
    assert_eq!(v.len(), n as usize);
    assert_eq!(v[1234], ("layer.1234.w".into(), Value::Int(1234)));
}

#[test]
fn protocol_4_constructs() {
    // FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, BINUNICODE8, BINBYTES8, EMPTY_SET,
    // ADDITEMS, FROZENSET, NEWOBJ.
    let mut p = P::new(4);
    let body_start = p.b.len();
    p.raw(&[0x95, 0, 0, 0, 0, 0, 0, 0, 0]);
    p.empty_dict().op(0x94).mark();
    p.short_str("a")
        .op(0x94)
        .raw(b"\x8d\x02\x00\x00\x00\x00\x00\x00\x00hi");
    p.short_str("b")
        .raw(b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00\x07");
    p.short_str("c").op(0x8f).mark().int(1).int(2).op(0x90);
    p.short_str("d").mark().int(3).op(0x91);
    p.short_str("e")
        .stack_global("collections", "OrderedDict")
        .empty_tuple()
        .op(0x81);
    p.short_str("f").raw(b"h\x01");
    p.setitems();
    let mut b = p.done();
    let frame_len = (b.len() - body_start - 9) as u64;
    b[body_start + 1..body_start + 9].copy_from_slice(&frame_len.to_le_bytes());
    let pk = parse(&b).unwrap();
    assert_eq!(pk.protocol(), 4);
    let v = flat_values(&pk);
    assert_eq!(
        v,
        vec![
            ("a".into(), Value::Str("hi".into())),
            ("b".into(), Value::Bytes(vec![7])),
            ("c.0".into(), Value::Int(1)),
            ("c.1".into(), Value::Int(2)),
            ("d.0".into(), Value::Int(3)),
            ("f".into(), Value::Str("a".into())),
        ]
    );
}

#[test]
fn protocol_0_text_opcodes() {
    let b = b"(dp0\nS'name'\np1\nVcaf\\u00e9\np2\nsS'n'\nI42\nsS'big'\nL12L\nsS'x'\nF0.5\nsS't'\nI01\ns.";
    let p = parse(b).unwrap();
    let v = flat_values(&p);
    assert_eq!(
        v,
        vec![
            ("name".into(), Value::Str("caf\u{e9}".into())),
            ("n".into(), Value::Int(42)),
            ("big".into(), Value::Int(12)),
            ("x".into(), Value::Float(0.5)),
            ("t".into(), Value::Bool(true)),
        ]
    );
}

#[test]
fn inert_builtins_size_device_codecs_set() {
    let b = P::new(2)
        .empty_dict()
        .mark()
        .str("size")
        .global("torch", "Size")
        .int_tuple(&[2, 3])
        .tuple_n(1)
        .reduce()
        .str("dev")
        .global("torch", "device")
        .str("cuda")
        .int(1)
        .tuple_n(2)
        .reduce()
        .str("raw")
        .global("_codecs", "encode")
        .str("\u{ff}\u{1}")
        .str("latin1")
        .tuple_n(2)
        .reduce()
        .str("set")
        .global("__builtin__", "set")
        .empty_list()
        .mark()
        .int(5)
        .appends()
        .tuple_n(1)
        .reduce()
        .str("dtype")
        .global("torch", "bfloat16")
        .setitems()
        .done();
    let p = parse(&b).unwrap();
    let v = flat_values(&p);
    assert_eq!(
        v,
        vec![
            ("size.0".into(), Value::Int(2)),
            ("size.1".into(), Value::Int(3)),
            ("dev".into(), Value::Str("cuda:1".into())),
            ("raw".into(), Value::Bytes(vec![0xff, 1])),
            ("set.0".into(), Value::Int(5)),
            ("dtype".into(), Value::Str("torch.bfloat16".into())),
        ]
    );
}

#[test]
fn numpy_scalars_and_arrays_are_inert_data() {
    let mut p = P::new(2);
    p.empty_dict().mark();
    p.str("loss").global("numpy.core.multiarray", "scalar");
    p.np_dtype("f8", "<");
    p.global("_codecs", "encode")
        .str("\0\0\0\0\0\0\u{e0}?")
        .str("latin1")
        .tuple_n(2)
        .reduce();
    p.tuple_n(2).reduce();
    p.str("steps").global("numpy._core.multiarray", "scalar");
    p.np_dtype("i4", ">");
    p.bytes(&[0, 0, 1, 0]).tuple_n(2).reduce();
    // A 2x2 int16 array in Fortran order.
    p.str("arr")
        .np_array(&[2, 2], "i2", "<", true, &[1, 0, 3, 0, 2, 0, 4, 0]);
    p.setitems();
    let b = p.done();
    let pk = parse(&b).unwrap();
    let f = pk.flatten(&Limits::default()).unwrap();
    assert_eq!(
        f.entries[0],
        ("loss".into(), Leaf::Value(Value::Float(0.5)))
    );
    assert_eq!(f.entries[1], ("steps".into(), Leaf::Value(Value::Int(256))));
    match &f.entries[2].1 {
        Leaf::Array(a) => {
            assert_eq!(a.shape, vec![2, 2]);
            assert!(a.fortran_order);
            assert_eq!(a.dtype.dtype(), Some(DType::I16));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn names_must_be_unique_and_keys_simple() {
    let b = P::new(2)
        .empty_dict()
        .mark()
        .str("a.b")
        .int(1)
        .str("a")
        .empty_dict()
        .str("b")
        .int(2)
        .setitem()
        .setitems()
        .done();
    assert_eq!(
        flatten_err(&b),
        PickleError::DuplicateName { name: "a.b".into() }
    );
    let b = P::new(2)
        .empty_dict()
        .int_tuple(&[1])
        .int(1)
        .setitem()
        .done();
    assert!(matches!(
        flatten_err(&b),
        PickleError::BadKey { kind: "tuple", .. }
    ));
    // Int keys become decimal names.
    let b = P::new(2)
        .empty_dict()
        .int(7)
        .empty_dict()
        .str("x")
        .float(1.5)
        .setitem()
        .setitem()
        .done();
    let p = parse(&b).unwrap();
    assert_eq!(flat_values(&p), vec![("7.x".into(), Value::Float(1.5))]);
}

#[test]
fn bare_storages_and_callables_are_not_data() {
    let b = P::new(2)
        .empty_dict()
        .str("s")
        .storage("torch", "FloatStorage", "0", 1, false)
        .setitem()
        .done();
    assert!(matches!(flatten_err(&b), PickleError::NotData { .. }));
    let b = P::new(2)
        .empty_dict()
        .str("f")
        .global("collections", "OrderedDict")
        .setitem()
        .done();
    assert!(matches!(flatten_err(&b), PickleError::NotData { .. }));
}

// --- scanner ---------------------------------------------------------------------------------

#[test]
fn scan_lists_globals_and_opcodes() {
    let b = pytorch_support::state_dict_pickle(&[("a", &[2]), ("b", &[3])]);
    let r = scan(&b);
    assert_eq!(r.verdict, Verdict::Safe);
    assert_eq!(r.protocol, Some(2));
    assert_eq!(
        r.globals,
        vec![
            "collections.OrderedDict",
            "torch._utils._rebuild_tensor_v2",
            "torch.FloatStorage"
        ]
    );
    assert_eq!(r.opcodes.get("BINPERSID"), Some(&2));
    assert_eq!(r.opcodes.get("STOP"), Some(&1));
}

#[test]
fn scan_finds_unsafe_globals_through_the_memo_and_stack_global() {
    // STACK_GLOBAL operands fetched from the memo are still literals.
    let b = P::new(4)
        .short_str("os")
        .op(0x94)
        .short_str("system")
        .op(0x94)
        .op(b'0')
        .op(b'0')
        .get(0)
        .get(1)
        .op(0x93)
        .short_str("ls")
        .tuple_n(1)
        .reduce()
        .done();
    let r = scan(&b);
    assert_eq!(r.globals, vec!["os.system"]);
    assert!(matches!(&r.verdict, Verdict::Unsafe(v) if v[0].contains("os.system")));
    // Non-literal operands.
    let b = P::new(4).int(1).int(2).op(0x93).done();
    assert!(matches!(scan(&b).verdict, Verdict::Unsafe(v) if v[0].contains("STACK_GLOBAL")));
    // Refused opcodes.
    for op in [&[0x82u8, 1][..], b"P0\n", &[0x97]] {
        let b = P::new(5).raw(op).done();
        assert!(matches!(scan(&b).verdict, Verdict::Unsafe(_)), "{op:?}");
    }
    let r = scan(&P::new(2).global("torch.nn.modules.linear", "Linear").done());
    assert!(matches!(r.verdict, Verdict::Unsafe(v) if v[0].contains("whole pickled module")));
}

#[test]
fn scan_reports_malformed_input_as_invalid() {
    let b = P::new(2).none().b.clone();
    assert!(matches!(scan(&b).verdict, Verdict::Invalid(_)));
    let mut b = P::new(2).none().done();
    b.push(0);
    assert!(matches!(scan(&b).verdict, Verdict::Invalid(r) if r.contains("after the STOP")));
    let (r, end) = scan_prefix(&b);
    assert_eq!((r.verdict, end), (Verdict::Safe, Some(4)));
    // Unsafe wins over invalid.
    let b = P::new(2).global("os", "system").b.clone();
    assert!(matches!(scan(&b).verdict, Verdict::Unsafe(_)));
}
