//! Differential tests: pickles that `torch.load(weights_only=True)` reads in a way a naive
//! reader would not. Each test states what torch returns for the same bytes and asserts that
//! tantra returns exactly that, or refuses the file as ambiguous. The statements were checked
//! with torch 2.15 by `fixtures/torch_semantics.py` (which builds the same pickles in a zip
//! archive and loads them); none of these tests needs Python.

#![allow(clippy::unwrap_used)] // tests may unwrap

mod pytorch_support;

use pytorch_support::{f32_bytes, temp_file, torch_archive, P};
use tantra_formats::pickle::{Leaf, Limits, ParseOptions, PersistentIds, Pickle, PickleError};
use tantra_formats::pytorch::PytorchFile;
use tantra_formats::{TensorSource, Value};

fn parse(b: &[u8]) -> Result<Pickle, PickleError> {
    Pickle::parse(b, &ParseOptions::new(PersistentIds::Zip))
}

/// The flattened names of a pickle that must parse, each with its value or tensor storage key.
fn names(b: &[u8]) -> Vec<(String, String)> {
    let p = parse(b).unwrap();
    p.flatten(&Limits::default())
        .unwrap()
        .entries
        .into_iter()
        .map(|(n, l)| {
            let what = match l {
                Leaf::Tensor(t) => format!("tensor {}", t.storage.key),
                Leaf::Value(v) => format!("{v:?}"),
                Leaf::Array(_) => "array".into(),
            };
            (n, what)
        })
        .collect()
}

/// `_rebuild_tensor_v2` of two floats in storage `key`.
fn tensor(p: &mut P, key: &str) {
    p.tensor_v2("FloatStorage", key, 2, 0, &[2], &[1], false);
}

fn is_ambiguous(e: &PickleError) -> bool {
    matches!(e, PickleError::AmbiguousTensorState { .. })
}

#[test]
fn build_on_a_tensor_is_refused() {
    // torch: `tensor.set_(*{})`, i.e. `set_()`: {'w': tensor([])} (the data is gone); with a
    // (storage, offset, size, stride) tuple, set_ points the tensor at other data.
    let mut p = P::new(2);
    p.empty_dict().str("w");
    tensor(&mut p, "0");
    p.empty_dict().build().setitem();
    assert!(is_ambiguous(&parse(&p.done()).unwrap_err()));
    let mut p = P::new(2);
    p.empty_dict().str("w");
    tensor(&mut p, "0");
    p.mark();
    tensor(&mut p, "1");
    p.int(0)
        .int_tuple(&[2])
        .int_tuple(&[1])
        .tuple()
        .build()
        .setitem();
    assert!(is_ambiguous(&parse(&p.done()).unwrap_err()));
}

/// `{'w': _rebuild_parameter_with_state(tensor '0', False, OrderedDict(), state)}` where
/// `state(p)` pushes the state.
fn parameter_with_state(state: impl Fn(&mut P)) -> Vec<u8> {
    let mut p = P::new(2);
    p.empty_dict().str("w");
    p.global("torch._utils", "_rebuild_parameter_with_state")
        .mark();
    tensor(&mut p, "0");
    p.bool(false).ordered_dict();
    state(&mut p);
    p.tuple().reduce().setitem();
    p.done()
}

#[test]
fn parameter_state_that_sets_data_is_refused() {
    // torch: `_set_obj_state(param, {'data': t1})` runs `param.data = t1`: 'w' holds storage
    // 1's values, not storage 0's.
    let b = parameter_with_state(|p| {
        p.empty_dict().str("data");
        tensor(p, "1");
        p.setitem();
    });
    assert!(is_ambiguous(&parse(&b).unwrap_err()));
    // `real` and `imag` write into the tensor too; a (dict, slots) pair is read the same way.
    let b = parameter_with_state(|p| {
        p.none().empty_dict().str("real");
        tensor(p, "1");
        p.setitem().tuple_n(2);
    });
    assert!(is_ambiguous(&parse(&b).unwrap_err()));
    // torch raises on a 3-tuple state.
    let b = parameter_with_state(|p| {
        p.none().none().none().tuple_n(3);
    });
    assert!(is_ambiguous(&parse(&b).unwrap_err()));
}

#[test]
fn parameter_state_with_inert_attributes_keeps_the_data() {
    // torch: {'w': Parameter(storage 0)} with `w._is_sharded = True`; the data is storage 0.
    let b = parameter_with_state(|p| {
        p.empty_dict().str("_is_sharded").bool(true).setitem();
    });
    assert_eq!(names(&b), vec![("w".into(), "tensor 0".into())]);
    let b = parameter_with_state(|p| {
        p.none();
    });
    assert_eq!(names(&b), vec![("w".into(), "tensor 0".into())]);
}

/// `{'w': _rebuild_from_type_v2(_rebuild_tensor_v2, Parameter, (args of tensor '0'), state)}`.
fn from_type_v2(state: impl Fn(&mut P)) -> Vec<u8> {
    let mut p = P::new(2);
    p.empty_dict().str("w");
    p.global("torch._tensor", "_rebuild_from_type_v2").mark();
    p.global("torch._utils", "_rebuild_tensor_v2")
        .global("torch.nn.parameter", "Parameter")
        .mark();
    p.storage("torch", "FloatStorage", "0", 2, false);
    p.int(0)
        .int_tuple(&[2])
        .int_tuple(&[1])
        .bool(false)
        .ordered_dict()
        .tuple();
    state(&mut p);
    p.tuple().reduce().setitem();
    p.done()
}

#[test]
fn rebuild_from_type_v2_state_that_sets_data_is_refused() {
    // torch: `_set_obj_state(ret, {'data': t1})`: 'w' holds storage 1's values.
    let b = from_type_v2(|p| {
        p.empty_dict().str("data");
        tensor(p, "1");
        p.setitem();
    });
    assert!(is_ambiguous(&parse(&b).unwrap_err()));
    // An empty state keeps storage 0.
    let b = from_type_v2(|p| {
        p.empty_dict();
    });
    assert_eq!(names(&b), vec![("w".into(), "tensor 0".into())]);
}

#[test]
fn newobj_on_ordered_dict_and_set_ignores_the_arguments() {
    // torch: NEWOBJ is `cls.__new__(cls, *args)`; `OrderedDict.__new__` ignores its
    // arguments, so `torch.load` returns {'a': OrderedDict(), 'b': set()}.
    // (torch's weights_only loader has no LIST opcode: lists are EMPTY_LIST, MARK, APPENDS.)
    let mut q = P::new(2);
    q.empty_dict()
        .mark()
        .str("a")
        .global("collections", "OrderedDict");
    q.empty_list().mark().mark().str("w");
    tensor(&mut q, "0");
    q.tuple().appends().tuple_n(1).op(0x81);
    q.str("b").global("builtins", "set").empty_list().mark();
    q.int(1).int(2).appends().tuple_n(1).op(0x81);
    let b = q.setitems().done();
    assert_eq!(names(&b), Vec::<(String, String)>::new());
    // REDUCE (a call) does use the arguments: OrderedDict([('w', tensor([1., 2.]))]).
    let mut q = P::new(2);
    q.global("collections", "OrderedDict");
    q.empty_list().mark().mark().str("w");
    tensor(&mut q, "0");
    q.tuple().appends().tuple_n(1).reduce();
    assert_eq!(names(&q.done()), vec![("w".into(), "tensor 0".into())]);
}

#[test]
fn python_equal_keys_are_one_entry() {
    // torch: {1: 'a', True: 'b', 1.0: 'c'} is {1: 'c'}; {'x': 1, 'x': 2} is {'x': 2}.
    let b = P::new(2)
        .empty_dict()
        .mark()
        .int(1)
        .str("a")
        .bool(true)
        .str("b")
        .float(1.0)
        .str("c")
        .str("x")
        .int(1)
        .str("x")
        .int(2)
        .setitems()
        .done();
    assert_eq!(
        names(&b),
        vec![
            ("1".into(), format!("{:?}", Value::Str("c".into()))),
            ("x".into(), format!("{:?}", Value::Int(2))),
        ]
    );
    // The tensor torch keeps under key 1 is the last one set.
    let mut p = P::new(2);
    p.empty_dict().mark().int(1);
    tensor(&mut p, "0");
    p.bool(true);
    tensor(&mut p, "1");
    p.setitems();
    assert_eq!(names(&p.done()), vec![("1".into(), "tensor 1".into())]);
}

#[test]
fn python_equal_keys_in_a_whole_archive() {
    // torch.load: {'w': tensor([3., 4.])} (storage 1 replaced storage 0 under 'w').
    let mut p = P::new(2);
    p.ordered_dict().mark().str("w");
    tensor(&mut p, "0");
    p.str("w");
    tensor(&mut p, "1");
    p.setitems();
    let bytes = torch_archive(p.done(), &[f32_bytes(&[1., 2.]), f32_bytes(&[3., 4.])]);
    let (_d, path) = temp_file("dup.pt", &bytes);
    let f = PytorchFile::open(&path).unwrap();
    assert_eq!(f.tensors().len(), 1);
    assert_eq!(f.tensors()[0].name, "w");
    assert_eq!(
        f.tensor_bytes(0).unwrap().as_ref(),
        f32_bytes(&[3., 4.]).as_slice()
    );
}

#[test]
fn text_integers_with_leading_zeros_are_refused() {
    // Python's pickle.py reads `I010` with int(b'010', 0): ValueError; the C unpickler
    // (`pickle.loads`) with strtol(base 0): 8; a decimal reader: 10. torch's weights_only
    // unpickler has no INT opcode at all ("Unsupported operand 73"). Three readings: refused.
    // `L010L` is a ValueError in both unpicklers (int(text, 0)); refused too.
    for text in ["010", "0x10", "+5", " 5", "1_0", "-05", ""] {
        let b = P::bare()
            .raw(b"I")
            .raw(text.as_bytes())
            .raw(b"\n.")
            .b
            .clone();
        assert!(
            matches!(
                parse(&b).unwrap_err(),
                PickleError::AmbiguousInteger { opcode: "INT", .. }
            ),
            "{text:?}"
        );
    }
    let b = P::bare().raw(b"L010L\n.").b.clone();
    assert!(matches!(
        parse(&b).unwrap_err(),
        PickleError::AmbiguousInteger { opcode: "LONG", .. }
    ));
    // The spellings Python writes are read as Python reads them.
    for (text, want) in [
        ("0", Value::Int(0)),
        ("-12", Value::Int(-12)),
        ("00", Value::Bool(false)),
        ("01", Value::Bool(true)),
    ] {
        let b = P::bare()
            .raw(b"I")
            .raw(text.as_bytes())
            .raw(b"\n.")
            .b
            .clone();
        assert_eq!(
            names(&b),
            vec![("value".into(), format!("{want:?}"))],
            "{text:?}"
        );
    }
}
