//! The plan table: each case is a registry, a request and the plan it must give, checked
//! without touching a file.

use super::*;
use crate::registry::Extra;

const T0: &str = "2025-01-01T00:00:00.000000Z";
const T1: &str = "2025-02-02T00:00:00.000000Z";

fn frec(path: &str, sha: &str) -> FormatRecord {
    FormatRecord {
        path: path.into(),
        bytes: 10,
        sha256: sha.into(),
        created: T0.into(),
        source: Source::Generated { by: None },
        extra: Extra::new(),
    }
}

fn ver(content: &str, formats: &[(&str, &str, &str)], tags: &[&str]) -> VersionRecord {
    VersionRecord {
        created: T0.into(),
        parameters: 3,
        tensors: 1,
        dtypes: vec!["F32".into()],
        content: content.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        note: Some("old note".into()),
        config: Some("cfg".into()),
        formats: formats
            .iter()
            .map(|(f, p, s)| (f.to_string(), frec(p, s)))
            .collect(),
        extra: Extra::new(),
    }
}

/// A registry with m:a (content c1; pt + safetensors) as default and m:b (content c2; pt,
/// tagged "gold").
fn base() -> Registry {
    let mut r = Registry::default();
    let mut m = ModelRecord::default();
    m.versions.insert(
        "a".into(),
        ver(
            "c1",
            &[
                ("pt", "weights/m_a_pt.pt", "s1"),
                ("safetensors", "weights/m_a_safetensors.safetensors", "s2"),
            ],
            &[],
        )
        .into(),
    );
    m.versions.insert(
        "b".into(),
        ver("c2", &[("pt", "weights/m_b_pt.pt", "s3")], &["gold"]).into(),
    );
    m.default = Some("a".into());
    r.models.insert("m".into(), m);
    r.generation = 7;
    r
}

fn file(format: OutputFormat, sha: &str, staged: bool) -> NewFile {
    NewFile {
        format,
        sha256: sha.into(),
        bytes: 10,
        source: Source::Imported { from: "/in".into() },
        staged,
    }
}

fn req(version: &str, content: &str, files: Vec<NewFile>) -> RegisterRequest {
    RegisterRequest {
        model: "m".into(),
        version: version.into(),
        content: content.into(),
        parameters: 3,
        tensors: 1,
        dtypes: vec!["F32".into()],
        files,
        tags: vec![],
        note: None,
        config: None,
        make_default: false,
        force: false,
        now: T1.into(),
        reason: "replaced by register --force".into(),
    }
}

/// A plan's shape: (placed rels, retired rels, backed-up rels, number of renames).
type Shape = (
    Vec<&'static str>,
    Vec<&'static str>,
    Vec<&'static str>,
    usize,
);

struct Expect {
    name: &'static str,
    request: RegisterRequest,
    /// `Err(substring)` or the plan's shape.
    want: std::result::Result<Shape, &'static str>,
    actions: Vec<FileAction>,
}

#[test]
fn register_plans_follow_the_table() {
    let force = |mut r: RegisterRequest| {
        r.force = true;
        r
    };
    let cases = vec![
        Expect {
            name: "new version: canonical name, nothing retired",
            request: req("c", "c3", vec![file(OutputFormat::Pt, "s9", true)]),
            want: Ok((vec!["weights/m_c_pt.pt"], vec![], vec![], 0)),
            actions: vec![FileAction::Added],
        },
        Expect {
            name: "same weights, same bytes: nothing at all",
            request: req("a", "c1", vec![file(OutputFormat::Pt, "s1", true)]),
            want: Ok((vec![], vec![], vec![], 0)),
            actions: vec![FileAction::Unchanged],
        },
        Expect {
            name: "same weights, new format: only the new file",
            request: req("a", "c1", vec![file(OutputFormat::Bin, "s7", true)]),
            want: Ok((vec!["weights/m_a_bin.bin"], vec![], vec![], 0)),
            actions: vec![FileAction::Added],
        },
        Expect {
            name: "same weights, other bytes, no force: keep what is registered",
            request: req("a", "c1", vec![file(OutputFormat::Pt, "s8", true)]),
            want: Ok((vec![], vec![], vec![], 0)),
            actions: vec![FileAction::Unchanged],
        },
        Expect {
            name:
                "same weights, other bytes, force: alternate name, old file backed up and retired",
            request: force(req("a", "c1", vec![file(OutputFormat::Pt, "s8", true)])),
            want: Ok((
                vec!["weights/m_a_pt.1.pt"],
                vec!["weights/m_a_pt.pt"],
                vec!["weights/m_a_pt.pt"],
                1,
            )),
            actions: vec![FileAction::Replaced],
        },
        Expect {
            name: "same bytes with force: replaced (a damaged file is put right)",
            request: force(req("a", "c1", vec![file(OutputFormat::Pt, "s1", true)])),
            want: Ok((
                vec!["weights/m_a_pt.1.pt"],
                vec!["weights/m_a_pt.pt"],
                vec!["weights/m_a_pt.pt"],
                1,
            )),
            actions: vec![FileAction::Replaced],
        },
        Expect {
            name: "other weights without force: refused",
            request: req("a", "c9", vec![file(OutputFormat::Pt, "s9", true)]),
            want: Err("already registered with different weights"),
            actions: vec![],
        },
        Expect {
            name: "other weights with force: every old file backed up and retired",
            request: force(req("a", "c9", vec![file(OutputFormat::Pt, "s9", true)])),
            want: Ok((
                vec!["weights/m_a_pt.1.pt"],
                vec!["weights/m_a_pt.pt", "weights/m_a_safetensors.safetensors"],
                vec!["weights/m_a_pt.pt", "weights/m_a_safetensors.safetensors"],
                1,
            )),
            actions: vec![FileAction::Replaced],
        },
        Expect {
            name: "bytes another version holds: a hard link, stored once",
            request: req("c", "c2", vec![file(OutputFormat::Pt, "s3", true)]),
            want: Ok((vec!["weights/m_c_pt.pt"], vec![], vec![], 0)),
            actions: vec![FileAction::Added],
        },
        Expect {
            name: "a file written in place by its generator: recorded where it is",
            request: req(
                "c",
                "c3",
                vec![file(OutputFormat::Safetensors, "s5", false)],
            ),
            want: Ok((
                vec!["weights/m_c_safetensors.safetensors"],
                vec![],
                vec![],
                0,
            )),
            actions: vec![FileAction::Added],
        },
        Expect {
            name: "a registered file rewritten in place: refused",
            request: req("a", "c1", vec![file(OutputFormat::Pt, "zz", false)]),
            want: Err("rewritten in place"),
            actions: vec![],
        },
    ];
    let cur = base();
    for c in cases {
        let got = plan_register(&cur, &c.request);
        match (&c.want, got) {
            (Err(needle), Err(e)) => {
                assert!(e.to_string().contains(needle), "{}: {e}", c.name)
            }
            (Err(_), Ok(_)) => panic!("{}: planned, expected a refusal", c.name),
            (Ok(_), Err(e)) => panic!("{}: {e}", c.name),
            (Ok((place, retire, backups, renames)), Ok((plan, report))) => {
                let rels: Vec<&str> = plan.place.iter().map(|p| p.rel.as_str()).collect();
                assert_eq!(&rels, place, "{}: placed", c.name);
                let mut ret: Vec<&str> = plan.retire.iter().map(String::as_str).collect();
                ret.sort();
                assert_eq!(&ret, retire, "{}: retired", c.name);
                let mut bk: Vec<&str> = plan.backups.iter().map(|b| b.src_rel.as_str()).collect();
                bk.sort();
                assert_eq!(&bk, backups, "{}: backed up", c.name);
                assert_eq!(plan.renames.len(), *renames, "{}: renames", c.name);
                let acts: Vec<FileAction> = report.iter().map(|f| f.action).collect();
                assert_eq!(acts, c.actions, "{}: actions", c.name);
                // The invariant the executor relies on: nothing placed where the current
                // registry names a file, and nothing retired that the new registry names.
                for p in &plan.place {
                    if p.from != PlaceFrom::InPlace {
                        assert!(
                            cur.owner_of(&p.rel).is_none(),
                            "{}: {} in use",
                            c.name,
                            p.rel
                        );
                    }
                }
                for r in &plan.retire {
                    assert!(
                        plan.registry.owner_of(r).is_none(),
                        "{}: {r} still named",
                        c.name
                    );
                }
            }
        }
    }
}

#[test]
fn a_forced_replacement_keeps_tags_note_config_and_default() {
    let mut r = req("a", "c9", vec![file(OutputFormat::Pt, "s9", true)]);
    r.force = true;
    let (plan, _) = plan_register(&base(), &r).unwrap();
    let v = plan.registry.version("m", "a").unwrap();
    assert_eq!(v.content, "c9");
    assert_eq!(v.note.as_deref(), Some("old note"));
    assert_eq!(v.config.as_deref(), Some("cfg"));
    assert_eq!(v.created, T1, "new weights, new date");
    assert_eq!(v.formats.keys().collect::<Vec<_>>(), vec!["pt"]);
    assert_eq!(plan.registry.models["m"].default.as_deref(), Some("a"));
    let backup = &plan.backups[0];
    let snap: VersionRecord = serde_json::from_value(backup.record.clone().unwrap()).unwrap();
    assert_eq!(snap.content, "c1", "the backup carries the old entry");
}

#[test]
fn dedup_links_to_the_file_that_holds_the_bytes() {
    let (plan, report) = plan_register(
        &base(),
        &req("c", "c2", vec![file(OutputFormat::Pt, "s3", true)]),
    )
    .unwrap();
    assert_eq!(
        plan.place[0].from,
        PlaceFrom::Link("weights/m_b_pt.pt".into())
    );
    assert_eq!(report[0].same_as.as_deref(), Some("m:b"));
}

#[test]
fn a_tag_names_one_version_and_defaults_follow_the_rules() {
    let mut r = req("c", "c3", vec![file(OutputFormat::Pt, "s9", true)]);
    r.tags = vec!["gold".into()];
    let (plan, _) = plan_register(&base(), &r).unwrap();
    assert!(plan.registry.version("m", "b").unwrap().tags.is_empty());
    assert_eq!(plan.registry.version("m", "c").unwrap().tags, vec!["gold"]);
    assert_eq!(plan.registry.models["m"].default.as_deref(), Some("a"));
    let mut r = req("c", "c3", vec![file(OutputFormat::Pt, "s9", true)]);
    r.make_default = true;
    let (plan, _) = plan_register(&base(), &r).unwrap();
    assert_eq!(plan.registry.models["m"].default.as_deref(), Some("c"));
    let plan = plan_tag(&base(), "m", "a", "gold", false).unwrap();
    assert!(plan.registry.version("m", "b").unwrap().tags.is_empty());
    assert_eq!(plan.registry.version("m", "a").unwrap().tags, vec!["gold"]);
    let plan = plan_tag(&base(), "m", "b", "gold", true).unwrap();
    assert!(plan.registry.version("m", "b").unwrap().tags.is_empty());
    assert!(plan_tag(&base(), "m", "zz", "t", false).is_err());
    let plan = plan_set_default(&base(), "m", "b").unwrap();
    assert_eq!(plan.registry.models["m"].default.as_deref(), Some("b"));
    assert!(plan_set_default(&base(), "m", "zz").is_err());
    assert!(plan_set_default(&base(), "nosuch", "a").is_err());
}

#[test]
fn removal_plans_follow_the_table() {
    let cur = base();
    let rm = |v: &str, formats: Option<Vec<&str>>| Removal {
        model: "m".into(),
        version: v.into(),
        formats: formats.map(|f| f.into_iter().map(String::from).collect()),
    };
    // A whole version: backed up and retired, gone from the registry.
    let plan = plan_remove(&cur, &[rm("b", None)], false, false, "r").unwrap();
    assert!(plan.registry.version("m", "b").is_none());
    assert_eq!(plan.retire, vec!["weights/m_b_pt.pt"]);
    assert_eq!(plan.backups.len(), 1);
    // One format: the version stays with the other.
    let plan = plan_remove(&cur, &[rm("a", Some(vec!["pt"]))], false, false, "r").unwrap();
    assert_eq!(
        plan.registry
            .version("m", "a")
            .unwrap()
            .formats
            .keys()
            .collect::<Vec<_>>(),
        vec!["safetensors"]
    );
    // The default: refused without force; with force the model has no default.
    let e = plan_remove(&cur, &[rm("a", None)], false, false, "r").unwrap_err();
    assert!(matches!(e, StoreError::IsDefault { .. }));
    let plan = plan_remove(&cur, &[rm("a", None)], true, false, "r").unwrap();
    assert_eq!(plan.registry.models["m"].default, None);
    // --no-backup: retired, not backed up.
    let plan = plan_remove(&cur, &[rm("b", None)], false, true, "r").unwrap();
    assert!(plan.backups.is_empty());
    assert_eq!(plan.retire.len(), 1);
    // The last version of a model takes the model with it.
    let plan = plan_remove(&cur, &[rm("b", None), rm("a", None)], true, false, "r").unwrap();
    assert!(plan.registry.models.is_empty());
    // Unknown names and formats.
    assert!(plan_remove(&cur, &[rm("zz", None)], false, false, "r").is_err());
    assert!(plan_remove(&cur, &[rm("b", Some(vec!["bin"]))], false, false, "r").is_err());
}
