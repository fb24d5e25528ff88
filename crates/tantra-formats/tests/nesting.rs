//! Nested checkpoints keep their nesting through tantra: read from a torch-written `.pt`
//! (`fixtures/torch/nested_checkpoint.pt`, made by `make_nested_checkpoint.py`), written back as
//! `.pt`, and carried through safetensors under `tantra.structure`. The expected structure
//! (`nested_checkpoint.structure.json`) was written from what `torch.load(weights_only=True)`
//! returns for the fixture, so the reader is checked against torch, not against itself.

#![allow(clippy::unwrap_used)] // tests may unwrap

use std::path::Path;

use tantra_formats::pytorch::PytorchFile;
use tantra_formats::pytorch_write::write_pytorch;
use tantra_formats::safetensors::{write_safetensors, SafetensorsFile};
use tantra_formats::structure::{Key, Node, Structure};
use tantra_formats::subtree::{Selection, Subtree};
use tantra_formats::{
    DType, MemorySource, NoProgress, TensorSource, Value, STRUCTURE_METADATA_KEY,
    VALUES_METADATA_KEY,
};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/torch");

fn fixture() -> PytorchFile {
    PytorchFile::open(&Path::new(FIXTURES).join("nested_checkpoint.pt")).unwrap()
}

fn expected() -> Structure {
    let text =
        std::fs::read_to_string(Path::new(FIXTURES).join("nested_checkpoint.structure.json"))
            .unwrap();
    Structure::from_json_str(&text).unwrap()
}

fn to_pt(src: &dyn TensorSource) -> PytorchFile {
    let mut out = Vec::new();
    write_pytorch(&mut out, src, "ckpt", &NoProgress).unwrap();
    PytorchFile::from_bytes(out).unwrap()
}

fn to_safetensors(src: &dyn TensorSource) -> (Vec<u8>, SafetensorsFile) {
    let mut out = Vec::new();
    write_safetensors(&mut out, src, &NoProgress).unwrap();
    (out.clone(), SafetensorsFile::from_bytes(out).unwrap())
}

/// Same tensors (names, dtypes, shapes, bytes), values and structure.
fn assert_same(a: &dyn TensorSource, b: &dyn TensorSource) {
    assert_eq!(a.values(), b.values());
    assert_eq!(a.structure(), b.structure());
    assert_eq!(a.tensors().len(), b.tensors().len());
    for (i, t) in a.tensors().iter().enumerate() {
        let j = b.find(&t.name).unwrap();
        assert_eq!(&b.tensors()[j], t);
        assert_eq!(
            a.tensor_bytes(i).unwrap(),
            b.tensor_bytes(j).unwrap(),
            "{}",
            t.name
        );
    }
}

fn f32s(src: &dyn TensorSource, name: &str) -> Vec<f32> {
    let i = src.find(name).unwrap();
    assert_eq!(src.tensors()[i].dtype, DType::F32);
    src.tensor_bytes(i)
        .unwrap()
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn the_reader_records_the_nesting_torch_loads() {
    let src = fixture();
    assert_eq!(src.structure(), Some(&expected()));
    let Some(Structure {
        root: Node::Dict(top),
    }) = src.structure()
    else {
        panic!("the root is a dict")
    };
    let keys: Vec<&Key> = top.iter().map(|(k, _)| k).collect();
    assert_eq!(
        keys[..3],
        [
            &Key::Str("model".into()),
            &Key::Str("optimizer".into()),
            &Key::Str("epoch".into())
        ]
    );
    assert!(matches!(top[0].1, Node::OrderedDict(_)));
    // The values and tensors the leaves name.
    let v = src.values();
    assert_eq!(v["epoch"], Value::Int(3));
    assert_eq!(v["run"], Value::Str("nested-demo".into()));
    assert_eq!(v["optimizer.param_groups.0.betas.0"], Value::Float(0.9));
    assert_eq!(v["optimizer.param_groups.0.betas.1"], Value::Float(0.999));
    assert_eq!(v["optimizer.param_groups.0.amsgrad"], Value::Bool(false));
    assert_eq!(v["optimizer.param_groups.0.foreach"], Value::None);
    assert_eq!(v["optimizer.param_groups.0.params.1"], Value::Int(1));
    assert_eq!(
        f32s(&src, "model.embed.weight"),
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    );
    assert_eq!(f32s(&src, "optimizer.state.0.exp_avg"), [0.25; 6]);
    assert_eq!(f32s(&src, "optimizer.state.1.step"), [3.0]);
    let i = src.find("a.b.c.d").unwrap();
    assert_eq!(src.tensors()[i].dtype, DType::I64);
    assert_eq!(src.tensor_bytes(i).unwrap().as_ref(), 7i64.to_le_bytes());
}

#[test]
fn pt_to_pt_keeps_the_nesting() {
    let src = fixture();
    let back = to_pt(&src);
    assert_eq!(back.structure(), Some(&expected()));
    assert_same(&src, &back);
    // Written twice, the same bytes.
    let (mut a, mut b) = (Vec::new(), Vec::new());
    write_pytorch(&mut a, &src, "ckpt", &NoProgress).unwrap();
    write_pytorch(&mut b, &back, "ckpt", &NoProgress).unwrap();
    assert_eq!(a, b);
}

#[test]
fn pt_to_safetensors_to_pt_keeps_the_nesting() {
    let src = fixture();
    let (bytes, st) = to_safetensors(&src);
    // The structure is in `__metadata__`, as JSON, under the documented key; the reader takes
    // it out of the metadata as it does the values.
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let meta = &header["__metadata__"];
    let text = meta[STRUCTURE_METADATA_KEY].as_str().unwrap();
    assert_eq!(Structure::from_json_str(text).unwrap(), expected());
    assert!(meta[VALUES_METADATA_KEY].is_string());
    assert!(!st.metadata().contains_key(STRUCTURE_METADATA_KEY));
    assert_same(&src, &st);
    let back = to_pt(&st);
    assert_same(&src, &back);
    // And through memory (what `convert` and the store copy).
    let mem = MemorySource::copy_from(&back).unwrap();
    assert_same(&src, &to_pt(&mem));
}

fn dict(items: Vec<(Key, Node)>) -> Node {
    Node::Dict(items)
}

fn leaf(name: &str) -> Node {
    Node::Leaf(name.into())
}

/// Writes `src` as `.pt` and safetensors.
fn written(src: &MemorySource) -> (Vec<u8>, Vec<u8>) {
    let (mut pt, mut st) = (Vec::new(), Vec::new());
    write_pytorch(&mut pt, src, "m", &NoProgress).unwrap();
    write_safetensors(&mut st, src, &NoProgress).unwrap();
    (pt, st)
}

#[test]
fn a_structure_that_does_not_fit_is_not_used() {
    let mut flat = MemorySource::new();
    flat.push_f32("a.w", vec![2], &[1.0, 2.0]).unwrap();
    flat.values_mut().insert("7.0".into(), Value::Int(5));
    let plain = written(&flat);
    let a = (
        Key::Str("a".into()),
        dict(vec![(Key::Str("w".into()), leaf("a.w"))]),
    );
    for (why, root) in [
        // A leaf the source does not hold (as after --select).
        (
            "missing",
            dict(vec![
                a.clone(),
                (Key::Str("gone".into()), leaf("gone")),
                (Key::Int(7), Node::List(vec![leaf("7.0")])),
            ]),
        ),
        // A value the structure does not place.
        ("unplaced", dict(vec![a.clone()])),
        // A leaf not at the place its name says.
        (
            "misplaced",
            dict(vec![
                a.clone(),
                (Key::Int(8), Node::List(vec![leaf("7.0")])),
            ]),
        ),
        // A leaf twice.
        (
            "twice",
            dict(vec![
                a.clone(),
                (Key::Int(7), Node::List(vec![leaf("7.0"), leaf("7.0")])),
            ]),
        ),
    ] {
        let mut stale = flat.clone();
        stale.set_structure(Some(Structure { root }));
        assert_eq!(written(&stale), plain, "{why}: written flat, byte for byte");
    }

    // One that fits is used: `a` comes back a dict, `7` an int key holding a list.
    let mut nested = flat.clone();
    let s = Structure {
        root: dict(vec![a, (Key::Int(7), Node::List(vec![leaf("7.0")]))]),
    };
    nested.set_structure(Some(s.clone()));
    let back = to_pt(&nested);
    assert_eq!(back.structure(), Some(&s));
    assert_eq!(back.values()["7.0"], Value::Int(5));
    assert_eq!(f32s(&back, "a.w"), [1.0, 2.0]);
    let (_, st) = to_safetensors(&nested);
    assert_eq!(st.structure(), Some(&s));
}

#[test]
fn a_tensor_at_the_root_is_written_bare() {
    let mut one = MemorySource::new();
    one.push_f32("tensor", vec![1], &[4.0]).unwrap();
    let s = Structure {
        root: leaf("tensor"),
    };
    one.set_structure(Some(s.clone()));
    let back = to_pt(&one);
    assert_eq!(back.structure(), Some(&s));
    assert_eq!(f32s(&back, "tensor"), [4.0]);
}

#[test]
fn plain_state_dicts_have_no_structure() {
    for name in ["all_dtypes.pt", "plain_dict.bin", "views.pt"] {
        let src = PytorchFile::open(&Path::new(FIXTURES).join(name)).unwrap();
        assert_eq!(src.structure(), None, "{name}");
    }
}

/// `node` with every leaf renamed by `f`.
fn renamed(node: &Node, f: &dyn Fn(&str) -> String) -> Node {
    match node {
        Node::Leaf(n) => Node::Leaf(f(n)),
        Node::Dict(items) => Node::Dict(
            items
                .iter()
                .map(|(k, c)| (k.clone(), renamed(c, f)))
                .collect(),
        ),
        Node::OrderedDict(items) => Node::OrderedDict(
            items
                .iter()
                .map(|(k, c)| (k.clone(), renamed(c, f)))
                .collect(),
        ),
        Node::List(items) => Node::List(items.iter().map(|c| renamed(c, f)).collect()),
        Node::Tuple(items) => Node::Tuple(items.iter().map(|c| renamed(c, f)).collect()),
    }
}

/// The item `key` of the fixture's root dict, as torch loads it.
fn expected_item(key: &str) -> Node {
    let Node::Dict(items) = expected().root else {
        panic!("the fixture's root is a dict")
    };
    items
        .into_iter()
        .find(|(k, _)| *k == Key::Str(key.into()))
        .map(|(_, n)| n)
        .unwrap()
}

fn selected(select: Option<&str>, strip: Option<&str>) -> Subtree {
    let sel = Selection {
        select: select.map(String::from),
        strip: strip.map(String::from),
    };
    Subtree::new(Box::new(fixture()), &sel).unwrap()
}

#[test]
fn select_keeps_the_path_to_the_subtree() {
    let sub = selected(Some("optimizer"), None);
    let want = Structure {
        root: Node::Dict(vec![(
            Key::Str("optimizer".into()),
            expected_item("optimizer"),
        )]),
    };
    assert_eq!(sub.structure(), Some(&want));
    assert!(sub.values().contains_key("optimizer.param_groups.0.lr"));
    assert!(!sub.values().contains_key("epoch"));
    // Written as .pt it loads as {"optimizer": {...}}; and through safetensors too.
    let pt = to_pt(&sub);
    assert_eq!(pt.structure(), Some(&want));
    assert_same(&sub, &pt);
    let (_, st) = to_safetensors(&sub);
    assert_eq!(st.structure(), Some(&want));
    assert_same(&sub, &to_pt(&st));
}

#[test]
fn select_and_strip_make_the_subtree_the_root() {
    let sub = selected(Some("optimizer"), Some("optimizer"));
    let strip = |n: &str| n.strip_prefix("optimizer.").unwrap().to_string();
    let want = Structure {
        root: renamed(&expected_item("optimizer"), &strip),
    };
    assert_eq!(sub.structure(), Some(&want));
    let Node::Dict(items) = &want.root else {
        panic!("optimizer is a dict")
    };
    assert_eq!(items[0].0, Key::Str("state".into()));
    // `state` keeps its int keys and `betas` stays a tuple, with dots in no name.
    assert_eq!(
        sub.values()["param_groups.0.betas.1"],
        fixture().values()["optimizer.param_groups.0.betas.1"]
    );
    let pt = to_pt(&sub);
    assert_eq!(pt.structure(), Some(&want));
    assert_same(&sub, &pt);
    let (_, st) = to_safetensors(&sub);
    let back = to_pt(&st);
    assert_eq!(back.structure(), Some(&want));
    assert_same(&sub, &back);
}

#[test]
fn a_stripped_state_dict_is_written_as_a_state_dict() {
    // `model` is an OrderedDict whose keys hold dots: stripped, it is a plain state dict, which
    // needs no structure (the flat writer's OrderedDict is what torch had).
    let sub = selected(Some("model"), Some("model"));
    assert_eq!(sub.structure(), None);
    let names: Vec<&str> = sub.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["embed.weight", "head.bias"]);
    let pt = to_pt(&sub);
    assert_eq!(pt.structure(), None);
    assert_same(&sub, &pt);
}

#[test]
fn a_key_with_dots_is_selected_by_its_dotted_name() {
    let sub = selected(Some("a.b"), None);
    let want = Structure {
        root: Node::Dict(vec![(Key::Str("a.b".into()), expected_item("a.b"))]),
    };
    assert_eq!(sub.structure(), Some(&want));
    assert_eq!(to_pt(&sub).structure(), Some(&want));
}
