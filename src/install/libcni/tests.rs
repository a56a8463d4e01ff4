//! One test per rule of `libcni`. "podman 4.3.1" marks a verdict confirmed with podman's CNI
//! backend (libcni v1.1.2): the same bytes in a `.conflist` under `--network-config-dir`,
//! and podman's `network ls` printing libcni's error or listing the network. "containerd
//! 1.6.20" marks one confirmed with containerd's CRI plugin (go-cni 1.1.x, libcni 1.1.x)
//! reloading a scratch `conf_dir`: its log's error, or none.

use super::*;

fn file(name: &str, body: &str) -> Entry {
    bytes_file(name.as_bytes(), body.as_bytes())
}

fn bytes_file(name: &[u8], body: &[u8]) -> Entry {
    Entry {
        name: name.to_vec(),
        is_dir: false,
        file: FileRead::Bytes(body.to_vec()),
        dir: DirRead::Error(ErrorKind::NotADirectory),
    }
}

fn subdir(name: &str, entries: Vec<Entry>) -> Entry {
    Entry {
        name: name.as_bytes().to_vec(),
        is_dir: true,
        file: FileRead::Error(ErrorKind::IsADirectory),
        dir: DirRead::Entries(entries),
    }
}

/// The loads of the only file of a one-file directory.
fn one(name: &str, body: &str) -> FileView {
    let v = view(&[file(name, body)]);
    assert_eq!(v.files.len(), 1);
    v.files.into_iter().next().unwrap()
}

fn loads(load: &Load) -> &Network {
    match load {
        Load::Loads(n) => n,
        other => panic!("expected a network, got {other:?}"),
    }
}

fn fails(load: &Load) -> &LoadError {
    match load {
        Load::Fails(e) => e,
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// The 1.1.2 error of a file both versions refuse for the same reason (1.3.0's Go names its
/// struct `PluginConf`, so the words may differ).
fn both_fail(name: &str, body: &str) -> LoadError {
    let f = one(name, body);
    let e = fails(&f.v1_1_2).clone();
    let e3 = fails(&f.v1_3_0);
    assert_eq!(
        std::mem::discriminant(e3),
        std::mem::discriminant(&e),
        "{e3:?}"
    );
    e
}

fn types(n: &Network) -> Vec<&str> {
    n.plugins.iter().map(|p| p.plugin_type.as_str()).collect()
}

fn names(v: &DirView) -> Vec<&[u8]> {
    v.files.iter().map(|f| f.name.as_slice()).collect()
}

const NET: &str = r#"{"cniVersion":"1.0.0","name":"net","plugins":[{"type":"bridge"}]}"#;

fn all_valid(_: &str, _: &str) -> Result<(), String> {
    Ok(())
}

// --- ConfFiles ---

/// podman 4.3.1: a directory `x.conflist` is not mentioned; a symlink to one fails with
/// "read ...: is a directory".
#[test]
fn a_directory_is_skipped_and_a_symlink_to_one_is_listed_and_fails() {
    let symlink = Entry {
        name: b"b.conf".to_vec(),
        is_dir: false,
        file: FileRead::Error(ErrorKind::IsADirectory),
        dir: DirRead::Entries(Vec::new()),
    };
    let v = view(&[subdir("a.conflist", Vec::new()), symlink]);
    assert_eq!(names(&v), [b"b.conf"]);
    assert_eq!(
        fails(&v.files[0].v1_3_0),
        &LoadError::Read(ErrorKind::IsADirectory)
    );
}

/// podman 4.3.1: a file named `.conflist` loads, `x.CONFLIST` is not listed; containerd
/// 1.6.20: with only `a.CONF` there is "no network config found".
#[test]
fn the_extension_is_the_suffix_from_the_last_dot() {
    let listing: Vec<Entry> = [
        ".conf",
        ".hidden.conflist",
        "x.json",
        "x.conf.bak",
        "x.CONF",
        "conf",
        "x.conflist~",
    ]
    .into_iter()
    .map(|n| file(n, NET))
    .collect();
    let v = view(&listing);
    assert_eq!(names(&v), [&b".conf"[..], b".hidden.conflist", b"x.json"]);
    assert!(v.files[1].is_list && !v.files[0].is_list && !v.files[2].is_list);
}

#[test]
fn files_sort_bytewise_by_name() {
    let listing = vec![
        bytes_file(b"\xff.conf", br#"{"type":"a"}"#),
        file("9.conf", r#"{"type":"a"}"#),
        file("a.conf", r#"{"type":"a"}"#),
        file("10.conflist", NET),
        file("Z.json", r#"{"type":"a"}"#),
    ];
    let v = view(&listing);
    assert_eq!(
        names(&v),
        [
            &b"10.conflist"[..],
            b"9.conf",
            b"Z.json",
            b"a.conf",
            b"\xff.conf"
        ]
    );
    assert_eq!(v.files[0].index, 3);
}

// --- .conflist: ConfListFromFile ---

/// podman 4.3.1: "error parsing configuration list: no name".
#[test]
fn a_list_needs_a_name_under_that_exact_key() {
    let e = both_fail("a.conflist", r#"{"plugins":[{"type":"bridge"}]}"#);
    assert_eq!(e, LoadError::NoName);
    let e = both_fail(
        "a.conflist",
        r#"{"Name":"n","plugins":[{"type":"bridge"}]}"#,
    );
    assert_eq!(e, LoadError::NoName);
}

/// podman 4.3.1: "invalid name type float64" and "<nil>"; "" loads (podman itself then
/// refuses the name, after libcni).
#[test]
fn a_list_name_is_a_string_and_may_be_empty() {
    let e = both_fail("a.conflist", r#"{"name":1,"plugins":[{"type":"b"}]}"#);
    assert_eq!(e, LoadError::NameType("float64"));
    let e = both_fail("a.conflist", r#"{"name":null,"plugins":[{"type":"b"}]}"#);
    assert_eq!(e, LoadError::NameType("<nil>"));
    let f = one("a.conflist", r#"{"name":"","plugins":[{"type":"b"}]}"#);
    assert_eq!(loads(&f.v1_1_2).name, "");
}

/// podman 4.3.1: "invalid cniVersion type float64".
#[test]
fn a_list_version_is_a_string_when_present() {
    let e = both_fail(
        "a.conflist",
        r#"{"name":"n","cniVersion":1,"plugins":[{"type":"b"}]}"#,
    );
    assert_eq!(e, LoadError::VersionType("float64"));
    let f = one("a.conflist", r#"{"name":"n","plugins":[{"type":"b"}]}"#);
    assert_eq!(loads(&f.v1_3_0).cni_version, "");
}

/// podman 4.3.1: "invalid disableCheck type string".
#[test]
fn disable_check_is_a_bool_in_1_1_2_and_may_be_a_string_in_1_3_0() {
    let f = one(
        "a.conflist",
        r#"{"name":"n","disableCheck":"TRUE","plugins":[{"type":"b"}]}"#,
    );
    assert!(matches!(
        f.verdict(),
        Verdict::Disagree {
            why: "libcni 1.3.0 loads it and 1.1.2 does not",
            ..
        }
    ));
    let f = one(
        "a.conflist",
        r#"{"name":"n","disableCheck":"yes","plugins":[{"type":"b"}]}"#,
    );
    assert!(matches!(
        fails(&f.v1_1_2),
        LoadError::BoolType {
            key: "disableCheck",
            kind: "string"
        }
    ));
    assert!(matches!(
        fails(&f.v1_3_0),
        LoadError::BoolValue {
            key: "disableCheck",
            ..
        }
    ));
}

#[test]
fn disable_gc_and_load_only_inlined_plugins_are_read_by_1_3_0_only() {
    for key in ["disableGC", "loadOnlyInlinedPlugins"] {
        let f = one(
            "a.conflist",
            &format!(r#"{{"name":"n","{key}":1,"plugins":[{{"type":"b"}}]}}"#),
        );
        loads(&f.v1_1_2);
        assert!(matches!(
            fails(&f.v1_3_0),
            LoadError::BoolType {
                kind: "float64",
                ..
            }
        ));
    }
}

/// podman 4.3.1: "no 'plugins' key".
#[test]
fn plugins_are_required_in_1_1_2_and_optional_in_1_3_0() {
    let f = one("a.conflist", r#"{"name":"n"}"#);
    assert_eq!(fails(&f.v1_1_2), &LoadError::NoPluginsKey);
    assert_eq!(fails(&f.v1_3_0), &LoadError::NoPluginConfigs);
}

#[test]
fn load_only_inlined_plugins_without_plugins_fails_in_1_3_0() {
    let f = one(
        "a.conflist",
        r#"{"name":"n","loadOnlyInlinedPlugins":"true"}"#,
    );
    assert_eq!(fails(&f.v1_3_0), &LoadError::InlinedWithoutPlugins);
}

/// podman 4.3.1: "no plugins in list", "invalid 'plugins' type map[string]interface {}" and
/// "<nil>".
#[test]
fn plugins_are_a_non_empty_list() {
    let e = both_fail("a.conflist", r#"{"name":"n","plugins":[]}"#);
    assert_eq!(e, LoadError::PluginsEmpty);
    let e = both_fail("a.conflist", r#"{"name":"n","plugins":{"type":"b"}}"#);
    assert_eq!(e, LoadError::PluginsType("map[string]interface {}"));
    let e = both_fail("a.conflist", r#"{"name":"n","plugins":null}"#);
    assert_eq!(e, LoadError::PluginsType("<nil>"));
}

/// podman 4.3.1: "failed to parse plugin config 1: error parsing configuration: missing
/// 'type'" (for `{}` and for `null`), and "json: cannot unmarshal string into Go value of
/// type types.NetConf".
#[test]
fn each_plugin_needs_a_type() {
    for elem in ["{}", "null", r#"{"type":""}"#, r#"{"type":null}"#] {
        let e = both_fail(
            "a.conflist",
            &format!(r#"{{"name":"n","plugins":[{{"type":"b"}},{elem}]}}"#),
        );
        assert_eq!(
            e,
            LoadError::Plugin {
                index: 1,
                error: PluginError::MissingType
            },
            "{elem}"
        );
    }
    let e = both_fail("a.conflist", r#"{"name":"n","plugins":["bridge"]}"#);
    assert!(matches!(
        e,
        LoadError::Plugin {
            index: 0,
            error: PluginError::Decode(_)
        }
    ));
}

/// podman 4.3.1: this list loads, running "a".
#[test]
fn list_plugins_decode_from_sorted_keys() {
    let f = one(
        "a.conflist",
        r#"{"name":"n","plugins":[{"type":"a","Type":""}]}"#,
    );
    assert_eq!(types(loads(&f.v1_1_2)), ["a"]);
    // A duplicate key collapsed by the map: its earlier, wrongly typed value is gone.
    let f = one(
        "a.conflist",
        r#"{"name":"n","plugins":[{"type":1,"type":"a"}]}"#,
    );
    assert_eq!(types(loads(&f.v1_3_0)), ["a"]);
}

/// podman 4.3.1: "json: cannot unmarshal number into Go struct field NetConf.ipam of type
/// types.IPAM".
#[test]
fn a_list_plugin_s_known_fields_are_type_checked() {
    let e = both_fail(
        "a.conflist",
        r#"{"name":"n","plugins":[{"type":"b","ipam":1}]}"#,
    );
    assert!(matches!(
        e,
        LoadError::Plugin {
            index: 0,
            error: PluginError::Decode(_)
        }
    ));
}

#[test]
fn a_subdirectory_named_after_the_network_adds_plugins_in_1_3_0() {
    let listing = vec![
        file("10-n.conflist", NET),
        subdir(
            "net",
            vec![
                file("b.conf", r#"{"type":"tuning"}"#),
                file("a.conf", r#"{"type":"portmap"}"#),
                file("c.conflist", r#"{"type":"ignored"}"#),
            ],
        ),
    ];
    let v = view(&listing);
    let f = &v.files[0];
    assert_eq!(types(loads(&f.v1_1_2)), ["bridge"]);
    assert_eq!(types(loads(&f.v1_3_0)), ["bridge", "portmap", "tuning"]);
    assert_eq!(
        loads(&f.v1_3_0).plugins[1].from_file.as_deref(),
        Some(&b"a.conf"[..])
    );
    assert!(matches!(f.verdict(), Verdict::Disagree { .. }));
}

#[test]
fn a_list_without_plugins_takes_them_from_its_subdirectory_in_1_3_0() {
    let listing = vec![
        file("10-n.conflist", r#"{"name":"net","cniVersion":"1.0.0"}"#),
        subdir("net", vec![file("a.conf", r#"{"type":"bridge"}"#)]),
    ];
    let v = view(&listing);
    assert_eq!(fails(&v.files[0].v1_1_2), &LoadError::NoPluginsKey);
    assert_eq!(types(loads(&v.files[0].v1_3_0)), ["bridge"]);
}

#[test]
fn a_bad_subdirectory_plugin_fails_the_list_in_1_3_0() {
    let listing = vec![
        file("10-n.conflist", NET),
        subdir("net", vec![file("a.conf", r#"{"name":"x"}"#)]),
    ];
    let v = view(&listing);
    assert!(matches!(
        fails(&v.files[0].v1_3_0),
        LoadError::SubdirPlugin { .. }
    ));
}

#[test]
fn a_file_named_like_the_network_fails_the_list_in_1_3_0() {
    // os.ReadDir of a regular file: "not a directory", which is not "does not exist".
    let listing = vec![file("10-n.conflist", NET), file("net", "")];
    let v = view(&listing);
    loads(&v.files[0].v1_1_2);
    assert_eq!(
        fails(&v.files[0].v1_3_0),
        &LoadError::Subdir {
            path: "net".into(),
            kind: ErrorKind::NotADirectory
        }
    );
}

#[test]
fn an_empty_network_name_takes_plugins_from_the_directory_itself_in_1_3_0() {
    // filepath.Join(dir, "") is dir: its .conf files are plugins of the list.
    let listing = vec![
        file(
            "10-n.conflist",
            r#"{"name":"","plugins":[{"type":"bridge"}]}"#,
        ),
        file("20-x.conf", r#"{"type":"macvlan"}"#),
    ];
    let v = view(&listing);
    assert_eq!(types(loads(&v.files[0].v1_3_0)), ["bridge", "macvlan"]);
    let listing = vec![file(
        "10-n.conflist",
        NET.replace("\"net\"", "\"./x/..\"").as_str(),
    )];
    assert_eq!(types(loads(&view(&listing).files[0].v1_3_0)), ["bridge"]);
}

#[test]
fn a_network_subdirectory_this_model_cannot_see_is_unknown() {
    let unlisted = Entry {
        dir: DirRead::NotRead,
        ..subdir("net", Vec::new())
    };
    let v = view(&[file("10-n.conflist", NET), unlisted]);
    assert!(matches!(
        v.files[0].verdict(),
        Verdict::Unknown(Unknown::SubdirNotRead { .. })
    ));
    let outside = NET.replace("\"net\"", "\"../net\"");
    let v = view(&[file("10-n.conflist", &outside)]);
    assert!(matches!(
        v.files[0].verdict(),
        Verdict::Unknown(Unknown::SubdirOutside { .. })
    ));
    // A subdirectory that vanished (ENOENT) adds nothing.
    let gone = Entry {
        dir: DirRead::Error(ErrorKind::NotFound),
        ..subdir("net", Vec::new())
    };
    let v = view(&[file("10-n.conflist", NET), gone]);
    assert!(matches!(v.files[0].verdict(), Verdict::Loads { .. }));
}

/// podman 4.3.1: the first two load (the name "n\u{fffd}", the list 10000 deep), the others
/// fail with "exceeded max depth" and "cannot unmarshal number 1e400 into Go value of type
/// float64".
#[test]
fn a_list_is_decoded_as_go_decodes_json() {
    let f = one_bytes(b"{\"name\":\"n\xff\",\"plugins\":[{\"type\":\"b\"}]}");
    assert_eq!(loads(&f.v1_1_2).name, "n\u{FFFD}");
    let deep = |n: usize| {
        format!(
            r#"{{"name":"n","x":{}{},"plugins":[{{"type":"b"}}]}}"#,
            "[".repeat(n - 1),
            "]".repeat(n - 1)
        )
    };
    loads(&one("a.conflist", &deep(10_000)).v1_3_0);
    assert!(matches!(
        both_fail("a.conflist", &deep(10_001)),
        LoadError::Json(GoJsonError::TooDeep { .. })
    ));
    assert!(matches!(
        both_fail(
            "a.conflist",
            r#"{"name":"n","x":1e400,"plugins":[{"type":"b"}]}"#
        ),
        LoadError::Json(GoJsonError::NumberRange { .. })
    ));
    assert!(matches!(
        both_fail("a.conflist", "[]"),
        LoadError::ListNotAnObject("array")
    ));
    assert_eq!(both_fail("a.conflist", "null"), LoadError::NoName);
}

fn one_bytes(body: &[u8]) -> FileView {
    view(&[bytes_file(b"a.conflist", body)]).files.remove(0)
}

// --- .conf and .json: ConfFromFile, ConfListFromConf ---

/// containerd 1.6.20: "failed to load CNI config file ...: error parsing configuration:
/// missing 'type'".
#[test]
fn a_conf_needs_a_type_and_a_conf_holding_plugins_has_none() {
    let e = both_fail("a.conf", NET);
    assert_eq!(e, LoadError::Conf(PluginError::MissingType));
}

/// containerd 1.6.20: loads.
#[test]
fn a_conf_with_a_type_is_one_plugin_whatever_else_it_holds() {
    let f = one(
        "a.conf",
        r#"{"name":"n","type":"bridge","plugins":[{"type":"x"}]}"#,
    );
    assert_eq!(types(loads(&f.v1_1_2)), ["bridge"]);
}

#[test]
fn a_conf_is_named_and_versioned_by_its_struct_fields() {
    let f = one(
        "a.json",
        r#"{"cniVersion":"1.0.0","CNIVersion":"0.3.1","NAME":"n","type":"bridge","cniVersions":["1.1.0"]}"#,
    );
    let n = loads(&f.v1_3_0);
    assert_eq!((n.name.as_str(), n.cni_version.as_str()), ("n", "0.3.1"));
    assert_eq!(loads(&f.v1_1_2), n);
}

/// containerd 1.6.20: "failed to convert CNI config file ... to CNI config list: failed to
/// parse plugin config 0: error parsing configuration: missing 'type'" for the two failing
/// files.
#[test]
fn a_conf_runs_the_type_its_sorted_keys_give() {
    // Its own keys give "a"; re-marshalled, "Type" sorts first and "type" wins.
    let f = one("a.conf", r#"{"type":"b","Type":"a"}"#);
    assert_eq!(types(loads(&f.v1_1_2)), ["b"]);
    let e = both_fail("a.conf", r#"{"type":"","Type":"a"}"#);
    assert_eq!(e, LoadError::ConfPlugin(PluginError::MissingType));
    // A null is no assignment for the file's own struct, but the map keeps it as the last.
    let e = both_fail("a.conf", r#"{"type":"bridge","type":null}"#);
    assert_eq!(e, LoadError::ConfPlugin(PluginError::MissingType));
}

/// containerd 1.6.20: "failed to convert CNI config file ... to CNI config list: json:
/// cannot unmarshal number 1e400 into Go value of type float64".
#[test]
fn a_conf_s_numbers_must_fit_when_it_becomes_a_list() {
    // ConfFromBytes skips the unknown "mtu"; the map decode of ConfListFromConf does not.
    let e = both_fail("a.conf", r#"{"type":"b","mtu":1e400}"#);
    assert!(matches!(
        e,
        LoadError::ConfMap(GoJsonError::NumberRange { .. })
    ));
}

#[test]
fn a_conf_reads_no_subdirectory() {
    let listing = vec![
        file("a.conf", r#"{"name":"n","type":"bridge"}"#),
        subdir("n", vec![file("x.conf", r#"{"type":"tuning"}"#)]),
    ];
    let v = view(&listing);
    assert!(matches!(v.files[0].verdict(), Verdict::Loads { .. }));
}

// --- versions ---

#[test]
fn cni_versions_picks_the_highest_not_above_libcni_s_own_in_1_3_0() {
    let f = one(
        "a.conflist",
        r#"{"name":"n","cniVersion":"0.3.1","cniVersions":["0.4.0","1.1.0","2.0.0","1.0.0"],"plugins":[{"type":"b"}]}"#,
    );
    assert_eq!(loads(&f.v1_1_2).cni_version, "0.3.1");
    assert_eq!(loads(&f.v1_3_0).cni_version, "1.1.0");
    // Same chain, other versions: both load; a plugin must serve both.
    assert!(matches!(f.verdict(), Verdict::Loads { .. }));
}

#[test]
fn cni_versions_with_none_qualifying_keeps_cni_version() {
    let f = one(
        "a.conflist",
        r#"{"name":"n","cniVersion":"9.0.0","cniVersions":["3.0.0"],"plugins":[{"type":"b"}]}"#,
    );
    assert_eq!(loads(&f.v1_3_0).cni_version, "9.0.0");
}

/// podman 4.3.1: `"cniVersions":"garbage"` loads (1.1.2 never reads it).
#[test]
fn cni_versions_entries_must_be_versions() {
    let list = |extra: &str| format!(r#"{{"name":"n",{extra},"plugins":[{{"type":"b"}}]}}"#);
    let f = one("a.conflist", &list(r#""cniVersions":["1.x"]"#));
    loads(&f.v1_1_2);
    assert!(matches!(
        fails(&f.v1_3_0),
        LoadError::VersionsEntry { index: 0, .. }
    ));
    let f = one("a.conflist", &list(r#""cniVersions":[1]"#));
    assert!(matches!(
        fails(&f.v1_3_0),
        LoadError::VersionsEntryType {
            kind: "float64",
            ..
        }
    ));
    let f = one("a.conflist", &list(r#""cniVersions":"1.0.0""#));
    assert!(matches!(fails(&f.v1_3_0), LoadError::VersionsType(_)));
    // cniVersion is parsed only when cniVersions is there.
    let f = one(
        "a.conflist",
        &list(r#""cniVersion":"one","cniVersions":[]"#),
    );
    assert!(matches!(fails(&f.v1_3_0), LoadError::VersionInvalid { .. }));
    let f = one("a.conflist", &list(r#""cniVersion":"one""#));
    assert_eq!(loads(&f.v1_3_0).cni_version, "one");
}

#[test]
fn version_parts_are_go_atoi() {
    assert_eq!(parse_version("+1.-0.007"), Ok((1, 0, 7)));
    assert_eq!(parse_version("1"), Ok((1, 0, 0)));
    assert_eq!(parse_version(""), Ok((0, 1, 0)));
    assert!(parse_version("1.0.0.0").is_err());
    assert!(parse_version("1..0").is_err());
    assert!(parse_version(" 1").is_err());
    assert!(parse_version("99999999999999999999").is_err());
}

#[test]
fn cni_versions_spelling_ties_take_the_first_up_to_twelve() {
    let list = |vs: &str| {
        format!(
            r#"{{"name":"n","cniVersion":"1.0.0","cniVersions":[{vs}],"plugins":[{{"type":"b"}}]}}"#
        )
    };
    let f = one("a.conflist", &list(r#""0.4.0","1.0""#));
    assert_eq!(loads(&f.v1_3_0).cni_version, "1.0");
    let many = [r#""0.4.0""#; 11].join(",") + r#","1.0""#;
    let f = one("a.conflist", &list(&many));
    assert!(matches!(
        f.verdict(),
        Verdict::Unknown(Unknown::VersionTie { .. })
    ));
}

#[test]
fn an_absent_version_means_0_1_0() {
    let f = one("a.conflist", r#"{"name":"n","plugins":[{"type":"b"}]}"#);
    let n = loads(&f.v1_1_2);
    assert_eq!((n.cni_version.as_str(), n.spec_version()), ("", "0.1.0"));
}

// --- sizes and reads ---

#[test]
fn a_file_too_large_to_judge_is_unknown() {
    let big = Entry {
        file: FileRead::TooLarge { size: 1 << 30 },
        ..file("10.conflist", "")
    };
    let v = view(&[big, file("20.conflist", NET)]);
    assert!(matches!(
        v.files[0].verdict(),
        Verdict::Unknown(Unknown::TooLarge { .. })
    ));
    for r in [Runtime::Containerd, Runtime::CriO] {
        assert!(matches!(
            v.choice(r, Libcni::V1_3_0, &all_valid),
            Choice::Unknown { .. }
        ));
    }
}

#[test]
fn a_file_that_is_not_regular_is_unknown() {
    let fifo = Entry {
        file: FileRead::NotRegular,
        ..file("10.conf", "")
    };
    assert!(matches!(
        view(&[fifo]).files[0].verdict(),
        Verdict::Unknown(_)
    ));
}

#[test]
fn a_read_error_fails_the_file() {
    let gone = Entry {
        file: FileRead::Error(ErrorKind::NotFound),
        ..file("10.conf", "")
    };
    let v = view(&[gone]);
    assert!(matches!(v.files[0].verdict(), Verdict::Fails { .. }));
}

// --- the runtimes' choices ---

/// containerd 1.6.20: "failed to load CNI config list file .../10.conflist: error parsing
/// configuration list: no name" with a good 20.conflist beside it; a bad 20 after a good 10
/// is no error.
#[test]
fn containerd_takes_the_first_file_and_has_no_network_when_it_fails() {
    let v = view(&[file("10.conflist", "{}"), file("20.conflist", NET)]);
    let c = v.choice(Runtime::Containerd, Libcni::V1_1_2, &all_valid);
    assert!(matches!(c, Choice::NoNetwork { ref skipped } if skipped.len() == 1));
    let c = v.choice(Runtime::CriO, Libcni::V1_1_2, &all_valid);
    assert!(matches!(c, Choice::Uses { file, .. } if file.name == b"20.conflist"));
}

#[test]
fn crio_skips_a_list_whose_plugins_do_not_validate() {
    let v = view(&[
        file(
            "10.conflist",
            r#"{"name":"a","plugins":[{"type":"calico"}]}"#,
        ),
        file("20.conflist", NET),
    ]);
    let no_calico = |t: &str, _: &str| {
        if t == "calico" {
            Err("failed to find plugin \"calico\"".to_string())
        } else {
            Ok(())
        }
    };
    match v.choice(Runtime::CriO, Libcni::V1_3_0, &no_calico) {
        Choice::Uses { file, skipped, .. } => {
            assert_eq!(file.name, b"20.conflist");
            assert!(matches!(skipped[0].1, Skip::Invalid(_)));
        }
        other => panic!("{other:?}"),
    }
    let c = v.choice(Runtime::Containerd, Libcni::V1_3_0, &no_calico);
    assert!(matches!(c, Choice::Uses { file, .. } if file.name == b"10.conflist"));
}

#[test]
fn crio_validates_an_empty_version_as_0_1_0() {
    let v = view(&[file(
        "10.conflist",
        r#"{"name":"a","plugins":[{"type":"b"}]}"#,
    )]);
    let seen = std::cell::RefCell::new(Vec::new());
    let record = |t: &str, ver: &str| {
        seen.borrow_mut().push(format!("{t}@{ver}"));
        Ok(())
    };
    v.choice(Runtime::CriO, Libcni::V1_1_2, &record);
    assert_eq!(*seen.borrow(), ["b@0.1.0"]);
}

#[test]
fn the_primary_is_agreed_when_every_runtime_uses_the_same_file() {
    let v = view(&[file("10.conflist", NET), file("20.conf", r#"{"type":"x"}"#)]);
    match v.primary(&all_valid) {
        Primary::Agreed { file, v1_1_2, .. } => {
            assert_eq!(file.index, 0);
            assert_eq!(types(v1_1_2), ["bridge"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_primary_is_unsure_when_the_runtimes_choose_differently() {
    // containerd has no network (its first file fails), CRI-O takes the second.
    let v = view(&[file("10.conflist", "{}"), file("20.conflist", NET)]);
    assert!(matches!(v.primary(&all_valid), Primary::Unsure { .. }));
    // The libcni versions load the first file differently.
    let v = view(&[file(
        "10.conflist",
        r#"{"name":"n","disableCheck":"false","plugins":[{"type":"b"}]}"#,
    )]);
    assert!(matches!(v.primary(&all_valid), Primary::Unsure { .. }));
}

#[test]
fn no_loadable_file_is_no_network() {
    assert_eq!(view(&[]).primary(&all_valid), Primary::NoNetwork);
    let v = view(&[file("10.conflist", "{}"), file("x.txt", NET)]);
    assert_eq!(v.primary(&all_valid), Primary::NoNetwork);
}

// --- the installer's old disagreements with the runtime (issue #20) ---

/// podman 4.3.1 and containerd 1.6.20: a non-UTF-8 name and a 2 MiB file load (podman then
/// refuses the name itself); podman: a list nested 10000 deep loads.
#[test]
fn the_cases_serde_json_judged_otherwise_load() {
    // A non-UTF-8 byte in a string, a file over 1 MiB, nesting deeper than serde's 128.
    let non_utf8 = bytes_file(
        b"a.conflist",
        b"{\"name\":\"n\",\"x\":\"\xc3\",\"plugins\":[{\"type\":\"b\"}]}",
    );
    let padding = " ".repeat(2 << 20);
    let big = file("b.conflist", &format!("{NET}{padding}"));
    let deep = file(
        "c.conflist",
        &format!(
            r#"{{"name":"n","x":{}{},"plugins":[{{"type":"b"}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        ),
    );
    let v = view(&[non_utf8, big, deep]);
    for f in &v.files {
        assert!(matches!(f.verdict(), Verdict::Loads { .. }), "{:?}", f.name);
    }
}

#[test]
fn the_cases_serde_json_judged_otherwise_fail() {
    // A list without a name, a .conf holding plugins, a number beyond float64.
    let v = view(&[
        file("a.conflist", r#"{"plugins":[{"type":"b"}]}"#),
        file("b.conf", NET),
        file(
            "c.conflist",
            r#"{"name":"n","mtu":1e999,"plugins":[{"type":"b"}]}"#,
        ),
    ]);
    for f in &v.files {
        assert!(matches!(f.verdict(), Verdict::Fails { .. }), "{:?}", f.name);
    }
}

mod random {
    use super::*;
    use proptest::prelude::*;

    fn name() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..12),
            "[a-z.]{0,6}(\\.conf|\\.conflist|\\.json)".prop_map(String::into_bytes),
        ]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64),
            Just(NET.as_bytes().to_vec()),
            "\\{\"name\":\"[a-z./]{0,4}\"(,\"cniVersions?\":(\"[0-9.]{0,5}\"|\\[\"[0-9.]{0,5}\"\\]))?(,\"plugins\":\\[(\\{\"[tT]ype\":\"[a-z]\"\\}|null)?\\])?\\}"
                .prop_map(String::into_bytes),
        ]
    }

    fn entry(depth: u32) -> BoxedStrategy<Entry> {
        let file = prop_oneof![
            body().prop_map(FileRead::Bytes),
            Just(FileRead::TooLarge { size: 1 << 40 }),
            Just(FileRead::NotRegular),
            Just(FileRead::Error(ErrorKind::PermissionDenied)),
        ];
        let dir = if depth == 0 {
            prop_oneof![
                Just(DirRead::NotRead),
                Just(DirRead::Error(ErrorKind::NotFound)),
            ]
            .boxed()
        } else {
            prop_oneof![
                Just(DirRead::NotRead),
                Just(DirRead::Error(ErrorKind::NotADirectory)),
                proptest::collection::vec(entry(depth - 1), 0..4).prop_map(DirRead::Entries),
            ]
            .boxed()
        };
        (name(), any::<bool>(), file, dir)
            .prop_map(|(name, is_dir, file, dir)| Entry {
                name,
                is_dir,
                file,
                dir,
            })
            .boxed()
    }

    proptest! {
        #[test]
        fn no_listing_panics(listing in proptest::collection::vec(entry(1), 0..6)) {
            let v = view(&listing);
            let _ = v.primary(&|t: &str, _: &str| if t == "x" { Err("no".into()) } else { Ok(()) });
            for f in &v.files {
                let _ = f.verdict();
                prop_assert!(f.index < listing.len());
            }
        }
    }
}
