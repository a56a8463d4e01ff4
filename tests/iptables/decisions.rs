//! Without root or a kernel: the `*-save` parser on the captured text in
//! `tests/fixtures/iptables-save/` (`parse::FILE`), and the backend's decisions when a fake
//! `Machine` prints those captures as what the binaries' `-save` printed (`decisions::...`):
//! which variant detection picks, whether an apply writes, what a write and a clean say, and
//! that drift stops an apply. The fake records every run, so a trial sees each restore text.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use meshtables::backend::api::{Backend, BackendError};
use meshtables::backend::iptables::detect::has_rules;
use meshtables::backend::iptables::machine::Machine;
use meshtables::backend::iptables::state::{
    State, drift, expected, has_ours, has_probe, parse_save,
};
use meshtables::backend::iptables::{IptError, Iptables};
use meshtables::backend::nl::session::NetlinkError;
use meshtables::plan::{Family, Plan};

use super::fixtures::read;
use crate::support::trials::{NOTHING, Trials};
use crate::support::{EVERYTHING, FakeHost, INJECTED};

/// The configuration a fixture's rules were made with (`fixtures::injected`, `tproxy`).
fn injected_args() -> Vec<&'static str> {
    let mut a = INJECTED.to_vec();
    a.extend(["--enable-ipv6", "true"]);
    a
}

fn resolved(args: &[&str]) -> meshtables::profile::istio::config::Resolved {
    let argv = ["meshtables"]
        .iter()
        .chain(args)
        .map(std::ffi::OsString::from)
        .collect();
    meshtables::cmd::resolve_args(argv, &HashMap::new(), &FakeHost::v4_pod()).unwrap()
}

fn plan(args: &[&str]) -> Plan {
    meshtables::profile::istio::build(&resolved(args).policy)
}

fn family(file: &str) -> Family {
    if file.contains(".v6.") {
        Family::V6
    } else {
        Family::V4
    }
}

/// The chains of ours `live` differs from the plan for `args` in.
fn drift_from(file: &str, args: &[&str]) -> Vec<String> {
    let p = plan(args);
    let f = family(file);
    drift(
        &parse_save(&read(file)),
        &expected(p.xtables.rules(f), f),
        &p.ours,
    )
}

fn rules(s: &State, table: &str, chain: &str) -> Vec<String> {
    s.get(table)
        .and_then(|t| t.chains.get(chain))
        .cloned()
        .unwrap_or_default()
}

/// A captured file's name and what parsing it must give.
type Parsed = (&'static str, fn(&str));

/// What parsing each captured file must give.
const PARSED: &[Parsed] = &[
    ("legacy-foreign.v4.save", |f| foreign(f, "10.96.0.1/32")),
    ("legacy-foreign.v6.save", |f| {
        foreign(f, "fd00:10:96::1/128")
    }),
    ("legacy-injected.v4.save", |f| {
        ours_as_planned(f, &injected_args())
    }),
    ("legacy-injected.v6.save", |f| {
        ours_as_planned(f, &injected_args())
    }),
    ("nft-injected.v4.save", |f| {
        ours_as_planned(f, &injected_args())
    }),
    ("nft-injected.v6.save", |f| {
        ours_as_planned(f, &injected_args())
    }),
    ("nft-tproxy.v4.save", |f| ours_as_planned(f, EVERYTHING)),
    ("nft-tproxy.v6.save", |f| ours_as_planned(f, EVERYTHING)),
    ("legacy-probe-left.v4.save", |f| {
        let text = read(f);
        let s = parse_save(&text);
        assert!(has_probe(&s), "{f}: the probe rule is not seen");
        assert!(has_rules(&text), "{f}: the probe rule is a rule");
        assert!(!has_ours(&s, &plan(INJECTED).ours), "{f}: nothing is ours");
    }),
    ("legacy-empty.v4.save", |f| {
        let text = read(f);
        let s = parse_save(&text);
        assert!(s.contains_key("nat"), "{f}: the nat table is listed");
        assert!(!has_probe(&s), "{f}: no probe rule is left");
        assert!(!has_rules(&text), "{f}: empty tables hold no rules");
    }),
];

/// Foreign rules (with `-c` counters) parse to their exact text, quotes and all, and are not
/// ours.
fn foreign(f: &str, svc: &str) {
    let s = parse_save(&read(f));
    assert_eq!(
        rules(&s, "nat", "KUBE-SERVICES"),
        [format!(
            "-d {svc} -p tcp -m comment --comment \"default/kubernetes:https cluster IP\" -m tcp --dport 443 -j RETURN"
        )],
        "{f}"
    );
    assert_eq!(
        rules(&s, "nat", "OUTPUT"),
        ["-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"],
        "{f}"
    );
    assert_eq!(
        rules(&s, "filter", "INPUT"),
        ["-p tcp -m tcp --dport 22 -j ACCEPT"],
        "{f}"
    );
    assert_eq!(rules(&s, "mangle", "PREROUTING").len(), 1, "{f}");
    assert!(!has_ours(&s, &plan(INJECTED).ours), "{f}: nothing is ours");
}

/// Our rules as the binaries print them equal the plan that made them (no drift), beside the
/// foreign rules, which stay foreign.
fn ours_as_planned(f: &str, args: &[&str]) {
    let s = parse_save(&read(f));
    assert!(
        has_ours(&s, &plan(args).ours),
        "{f}: our rules are not seen"
    );
    assert_eq!(drift_from(f, args), Vec::<String>::new(), "{f}");
}

/// One run the backend made: the program's name, its arguments, its stdin.
type Run = (String, Vec<String>, Option<String>);

/// A machine with `installed` programs whose `-save` binaries print `saves` (program name →
/// text; an installed one not named prints nothing).
struct Fake {
    installed: Vec<String>,
    saves: HashMap<String, String>,
    runs: Arc<Mutex<Vec<Run>>>,
}

impl Machine for Fake {
    fn which(&self, name: &str) -> Option<PathBuf> {
        self.installed
            .iter()
            .any(|p| p == name)
            .then(|| Path::new("/fake/bin").join(name))
    }

    fn run(
        &self,
        bin: &Path,
        args: &[&str],
        stdin: Option<&str>,
        _env: &[(&str, &str)],
    ) -> Result<String, IptError> {
        let name = bin.file_name().unwrap().to_string_lossy().into_owned();
        self.runs.lock().unwrap().push((
            name.clone(),
            args.iter().map(|a| a.to_string()).collect(),
            stdin.map(str::to_string),
        ));
        Ok(match (name.ends_with("-save"), args) {
            (true, ["--version"]) if name.contains("-nft") => format!("{name} v1.8.9 (nf_tables)"),
            (true, ["--version"]) => format!("{name} v1.8.9 (legacy)"),
            (true, _) => without_rule_counters(self.saves.get(&name).map_or("", String::as_str)),
            (false, _) => String::new(),
        })
    }

    fn nat_probe_nf_tables(&self, _: Family) -> Result<(), String> {
        Ok(())
    }

    fn legacy_tables_exist(&self, _: Family) -> bool {
        true
    }

    fn guard_present(&self) -> Result<bool, NetlinkError> {
        Ok(false)
    }

    fn raise_guard(&self) -> Result<(), NetlinkError> {
        Ok(())
    }

    fn lower_guard(&self) -> Result<(), NetlinkError> {
        Ok(())
    }
}

/// A `-save -c` capture as plain `-save` prints the same state: rules without their
/// `[packets:bytes]` (the backend never asks for counters).
fn without_rule_counters(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once("] -A ") {
            Some((c, rule)) if l.starts_with('[') => {
                assert!(
                    c[1..].chars().all(|c| c.is_ascii_digit() || c == ':'),
                    "{l}"
                );
                format!("-A {rule}\n")
            }
            _ => format!("{l}\n"),
        })
        .collect()
}

/// Both variants of both families installed; `saves` maps `-save` program names to fixtures.
fn machine(saves: &[(&str, &str)]) -> (Fake, Arc<Mutex<Vec<Run>>>) {
    let mut installed = Vec::new();
    for b in ["iptables", "ip6tables"] {
        for v in ["legacy", "nft"] {
            for s in ["", "-save", "-restore"] {
                installed.push(format!("{b}-{v}{s}"));
            }
        }
    }
    let runs = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake {
        installed,
        saves: saves
            .iter()
            .map(|(p, f)| (p.to_string(), read(f)))
            .collect(),
        runs: runs.clone(),
    };
    (fake, runs)
}

/// What each `-restore` run was fed, in order, with the program's name.
fn restores(runs: &Mutex<Vec<Run>>) -> Vec<(String, String)> {
    runs.lock()
        .unwrap()
        .iter()
        .filter(|(n, _, _)| n.ends_with("-restore"))
        .map(|(n, _, s)| (n.clone(), s.clone().unwrap_or_default()))
        .collect()
}

fn backend(m: Fake, args: &[&str]) -> (Iptables, Plan) {
    let r = resolved(args);
    let p = meshtables::profile::istio::build(&r.policy);
    (Iptables::on(Box::new(m), &r.run, None), p)
}

/// Without `--force-iptables-binary`: legacy when its save shows rules (here foreign ones),
/// else nft; the restore goes to the chosen variant.
fn detection_picks(legacy_save: &str, want: &str) {
    let (m, runs) = machine(&[("iptables-legacy-save", legacy_save)]);
    let (b, p) = backend(m, INJECTED);
    b.apply(&p).unwrap();
    let r = restores(&runs);
    assert_eq!(
        r.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        [want],
        "{legacy_save}"
    );
}

/// The apply's text: ours added, nothing foreign named (`--noflush` leaves it alone).
fn writes_the_plan_beside_foreign_rules() {
    let (m, runs) = machine(&[
        ("iptables-legacy-save", "legacy-foreign.v4.save"),
        ("ip6tables-legacy-save", "legacy-foreign.v6.save"),
    ]);
    let (b, p) = backend(m, &injected_args());
    b.apply(&p).unwrap();
    let r = restores(&runs);
    assert_eq!(r.len(), 2, "one restore per family: {r:?}");
    for (name, text) in &r {
        assert!(name.contains("-legacy-"), "{name}");
        assert!(text.contains("-N ISTIO_OUTPUT"), "{name}: {text}");
        assert!(
            !text.contains("KUBE-SERVICES"),
            "{name} names a foreign chain: {text}"
        );
        assert!(
            !text.contains("--dport 22"),
            "{name} names a foreign rule: {text}"
        );
    }
    let runs = runs.lock().unwrap();
    let args: Vec<&Vec<String>> = runs
        .iter()
        .filter(|(n, _, _)| n.ends_with("-restore"))
        .map(|(_, a, _)| a)
        .collect();
    assert!(
        args.iter().all(|a| a.iter().any(|x| x == "--noflush")),
        "{args:?}"
    );
}

/// Rules already as planned: the apply reads and writes nothing.
fn rerun_writes_nothing() {
    let (m, runs) = machine(&[
        ("iptables-nft-save", "nft-injected.v4.save"),
        ("ip6tables-nft-save", "nft-injected.v6.save"),
    ]);
    let (b, p) = backend(m, &injected_args());
    b.apply(&p).unwrap();
    assert_eq!(restores(&runs), Vec::<(String, String)>::new());
}

/// Our rules made with other flags: the apply stops, naming the chains, and writes nothing;
/// with `--reconcile` it replaces them, still naming nothing foreign.
fn drift_stops_unless_reconcile(reconcile: bool) {
    let (m, runs) = machine(&[
        ("iptables-nft-save", "nft-injected.v4.save"),
        ("ip6tables-nft-save", "nft-injected.v6.save"),
    ]);
    let mut args = injected_args();
    args.extend(["-b", "8080"]);
    if reconcile {
        args.push("--reconcile");
    }
    let (b, p) = backend(m, &args);
    let out = b.apply(&p);
    let r = restores(&runs);
    if reconcile {
        out.unwrap();
        assert!(!r.is_empty(), "nothing was written");
        for (name, text) in &r {
            assert!(!text.contains("KUBE-SERVICES"), "{name}: {text}");
            assert!(text.contains("--dport 8080"), "{name}: {text}");
        }
    } else {
        match out {
            Err(BackendError::Failed(e)) => match e.downcast_ref::<IptError>() {
                Some(IptError::Drift { chains, .. }) => {
                    assert!(
                        chains.iter().any(|c| c.contains("ISTIO_INBOUND")),
                        "{chains:?}"
                    )
                }
                _ => panic!("expected drift, got {e}"),
            },
            other => panic!("expected drift, got {other:?}"),
        }
        assert_eq!(r, Vec::<(String, String)>::new());
    }
}

/// A probe rule an earlier detection left (legacy, so legacy is picked): the apply deletes it.
fn removes_a_left_probe() {
    let (m, runs) = machine(&[("iptables-legacy-save", "legacy-probe-left.v4.save")]);
    let (b, p) = backend(m, INJECTED);
    b.apply(&p).unwrap();
    let r = restores(&runs);
    assert_eq!(r.len(), 1, "{r:?}");
    assert!(r[0].0.starts_with("iptables-legacy"), "{r:?}");
    assert!(r[0].1.contains("-D INPUT -p 255 -j RETURN"), "{}", r[0].1);
}

/// Clean deletes our chains and rules and names nothing foreign; with nothing of ours it
/// writes nothing.
fn clean(v4: &str, v6: &str, writes: bool) {
    let (m, runs) = machine(&[("iptables-nft-save", v4), ("ip6tables-nft-save", v6)]);
    let (b, p) = backend(m, &injected_args());
    b.clean(&p).unwrap();
    let r = restores(&runs);
    if !writes {
        assert_eq!(r, Vec::<(String, String)>::new());
        return;
    }
    assert_eq!(r.len(), 2, "{r:?}");
    for (name, text) in &r {
        assert!(text.contains("-X ISTIO_OUTPUT"), "{name}: {text}");
        assert!(!text.contains("KUBE-SERVICES"), "{name}: {text}");
        assert!(!text.contains("--dport 22"), "{name}: {text}");
    }
}

/// The parse trials, one per captured file, and the decision trials. `PARSED` names every
/// file `fixtures::CAPTURES` makes (`count::declared` counts both groups).
pub fn add(t: &mut Trials) {
    for (file, check) in PARSED {
        t.add(format!("parse::{file}"), NOTHING, move || check(file));
    }
    t.add(
        "decisions::detection_picks_legacy_when_it_holds_rules",
        NOTHING,
        || detection_picks("legacy-foreign.v4.save", "iptables-legacy-restore"),
    );
    t.add(
        "decisions::detection_picks_nft_over_empty_legacy_tables",
        NOTHING,
        || detection_picks("legacy-empty.v4.save", "iptables-nft-restore"),
    );
    t.add(
        "decisions::apply_writes_the_plan_beside_foreign_rules",
        NOTHING,
        writes_the_plan_beside_foreign_rules,
    );
    t.add(
        "decisions::rerun_writes_nothing",
        NOTHING,
        rerun_writes_nothing,
    );
    t.add("decisions::drift_stops_the_apply", NOTHING, || {
        drift_stops_unless_reconcile(false)
    });
    t.add("decisions::reconcile_replaces_drift", NOTHING, || {
        drift_stops_unless_reconcile(true)
    });
    t.add(
        "decisions::apply_removes_a_left_probe_rule",
        NOTHING,
        removes_a_left_probe,
    );
    t.add("decisions::clean_removes_only_ours", NOTHING, || {
        clean("nft-injected.v4.save", "nft-injected.v6.save", true)
    });
    t.add(
        "decisions::clean_of_foreign_rules_writes_nothing",
        NOTHING,
        || clean("legacy-foreign.v4.save", "legacy-foreign.v6.save", false),
    );
}
