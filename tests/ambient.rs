//! `meshtables ambient`, without root: every in-pod golden of upstream's two generators
//! (`tests/golden/ambient/`, copied from istio/istio) reproduced byte for byte by the dry run,
//! one trial per configuration and backend; the dry run of a clean; and bad input, derived
//! from the flag table (every flag, and every variable, with values it must refuse), plus the
//! checks that span flags (ports that collide, marks that match each other).
//!
//! How upstream's tests build their expected text: `strings.Join(ExecutedAll, "\n")` of its
//! dependency stub (iptables: the two saves of its state check, then each restore's input
//! line by line; no newline at the end) or of the transactions' text (nftables). So the nft
//! dry run must equal the golden; upstream's stub writes the same lines, each ending in a
//! newline, to `DRY_RUN_FILE_PATH`, which must equal the iptables golden plus that newline;
//! and the iptables dry run's stdout is the golden's restore lines under one `#` line per
//! family.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::PathBuf;

use meshtables::flags::Spec;
use meshtables::profile::ambient::flags;
use support::ambient::{CONFIGURATIONS, configurations};
use support::trials::{NOTHING, Trials};
use support::{command, diff};

fn golden(dialect: &str, name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/ambient")
        .join(dialect)
        .join(format!("{name}.golden"));
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn run(args: &[String], extra_env: &[(&str, &str)]) -> std::process::Output {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    command(&a, extra_env).output().expect("meshtables runs")
}

fn ok_stdout(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).expect("UTF-8")
}

/// `--native-nftables --dry-run` prints upstream's transaction, byte for byte.
fn nftables_golden(name: &str, args: &[String]) {
    let mut a = args.to_vec();
    a.extend(["--native-nftables".into(), "--dry-run".into()]);
    let got = ok_stdout(&run(&a, &[]));
    let want = golden("nftables", name);
    assert!(got == want, "{name}:\n{}", diff(&want, &got));
}

/// The iptables dry run: the trace file is the stub's record, byte for byte; stdout is the
/// restore input of each family.
fn iptables_golden(name: &str, args: &[String]) {
    let trace = std::env::temp_dir().join(format!("mt-ambient-{}-{name}", std::process::id()));
    let mut a = args.to_vec();
    a.push("--dry-run".into());
    let trace_env = trace.to_string_lossy().into_owned();
    let stdout = ok_stdout(&run(&a, &[("DRY_RUN_FILE_PATH", &trace_env)]));
    let recorded = std::fs::read_to_string(&trace).expect("the trace was written");
    let _ = std::fs::remove_file(&trace);
    let want = golden("iptables", name);
    let want_file = format!("{want}\n");
    assert!(
        recorded == want_file,
        "{name} (DRY_RUN_FILE_PATH):\n{}",
        diff(&want_file, &recorded)
    );
    // The golden without the two saves, and stdout without its `#` lines.
    let restores: String = want.lines().skip(2).map(|l| format!("{l}\n")).collect();
    assert!(
        want.starts_with("iptables-save\nip6tables-save\n"),
        "{name}: the golden starts with the state check's saves"
    );
    let families = stdout.lines().filter(|l| l.starts_with("# IPv")).count();
    let v6 = name.ends_with("_ipv6");
    assert_eq!(families, 1 + usize::from(v6), "{name}: {stdout}");
    let shown: String = stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        shown == restores,
        "{name} (stdout):\n{}",
        diff(&restores, &shown)
    );
}

/// Every in-pod golden file is one of the configurations (none is forgotten).
fn every_in_pod_golden_is_a_case() {
    let names: Vec<String> = configurations().into_iter().map(|(n, _)| n).collect();
    for dialect in ["iptables", "nftables"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/ambient")
            .join(dialect);
        let mut n = 0;
        for e in std::fs::read_dir(&dir).unwrap() {
            let f = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some(stem) = f.strip_suffix(".golden") else {
                continue;
            };
            if stem.starts_with("hostprobe") {
                continue;
            }
            n += 1;
            assert!(names.iter().any(|c| c == stem), "{dialect}/{f} has no case");
        }
        assert_eq!(n, 12, "{dialect}: upstream's 12 in-pod goldens");
    }
}

/// A clean's dry run: upstream's delete transaction, and per family its delete commands.
fn clean_dry_runs() {
    let nft = ok_stdout(&run(
        &["ambient", "clean", "--dry-run", "--native-nftables"].map(String::from),
        &[],
    ));
    let want: String = ["nat", "mangle", "raw"]
        .iter()
        .map(|t| format!("add table inet istio-ambient-{t}\ndelete table inet istio-ambient-{t}\n"))
        .collect();
    assert_eq!(nft, want);
    let ipt = ok_stdout(&run(
        &["ambient", "clean", "--dry-run", "--ambient-ipv6"].map(String::from),
        &[],
    ));
    assert!(
        ipt.contains("\niptables -t mangle -D PREROUTING -j ISTIO_PRERT\n"),
        "{ipt}"
    );
    assert!(
        ipt.contains("\nip6tables -t raw -X ISTIO_OUTPUT\n"),
        "{ipt}"
    );
    assert_eq!(
        ipt.lines().filter(|l| l.starts_with("iptables ")).count(),
        18
    );
    assert_eq!(
        ipt.lines().filter(|l| l.starts_with("ip6tables ")).count(),
        18
    );
}

/// The JSON plan names the policy routing upstream's in-pod rules need.
fn json_shows_the_policy_routing() {
    let out = ok_stdout(&run(
        &[
            "ambient",
            "apply",
            "--dry-run",
            "--output",
            "json",
            "--ambient-ipv6",
        ]
        .map(String::from),
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let r = &v["routes"];
    assert_eq!(r["rule"]["mark"], 0x111);
    assert_eq!(r["rule"]["mask"], 0xfff);
    assert_eq!(r["rule"]["table"], 100);
    assert_eq!(r["rule"]["priority"], 32764);
    assert_eq!(r["families"], serde_json::json!(["ipv4", "ipv6"]));
    assert_eq!(v["loopback_v6_address"], false);
}

// ---- Bad input, derived from the flag table. ----

/// Values a flag of this kind must refuse (one trial each).
fn bad_values(spec: &Spec) -> &'static [&'static str] {
    if spec.boolean {
        return &["maybe", "2"];
    }
    match spec.value {
        "IPv4 address" => &["169.254.7.127/32", "::1", "0.0.0.0", "127.0.0.1", "a.b.c.d"],
        "IPv6 address" => &["169.254.7.127", "::1", "ff02::1", "fd16::/64"],
        "port" => &["0", "70000", "15001;", "", "-1"],
        "interfaces" => &[
            // Upstream's own "various manglings" annotation, which it puts in rules.
            "asd^&&*$&*(#$&*(#&$*())),   ",
            "eth0 eth1",
            "averyveryverylongname0",
            "a/b",
            "-i",
        ],
        "VALUE/MASK (decimal or 0x hex)" => &["0x1539/0xfff", "0x539", "0x539/0", "0/0xfff", "x/y"],
        "table id (not 253-255)" => &["254", "0", "x"],
        "1-32765" => &["0", "32766", "32767", "x"],
        "`legacy` or `nft`" => &["legacy2"],
        "`text` or `json` (dry-run output)" => &["yaml"],
        "upstream's log level: `LEVEL` or `SCOPE:LEVEL,...`" => &["default:loud"],
        "path (/var/run/netns/NAME, /proc/PID/ns/net)" => &["/var/run/netns/x\ny"],
        v if v.starts_with("`true`, `false`, or empty") => &["tweedledum", "yes"],
        other => panic!("no bad values for a flag whose value is {other:?}: add some here"),
    }
}

/// Every flag has bad values (a new flag without any fails here, not silently).
fn every_flag_has_bad_values() {
    for s in flags::ALL {
        assert!(!bad_values(s).is_empty(), "--{}", s.long);
    }
}

/// One bad value, given as the flag (`env` None) or in a variable: exit 2, nothing on
/// stdout, one line on stderr naming the flag or variable and the value, and for a flag an
/// annotation sets, the annotation.
fn refused(spec: &'static Spec, value: &'static str, env: Option<&'static str>) {
    let flag = format!("--{}={value}", spec.long);
    let mut args = vec!["ambient", "apply"];
    // A dry run touches nothing (the flag would outrank DRY_RUN's own bad value).
    if !(env.is_some() && spec.long == "dry-run") {
        args.push("--dry-run");
    }
    let mut vars: Vec<(&str, &str)> = Vec::new();
    match env {
        Some(var) => vars.push((var, value)),
        None => args.push(&flag),
    }
    let out = command(&args, &vars).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let names = match env {
        Some(var) => format!("env {var}"),
        None => format!("--{}", spec.long),
    };
    assert!(stderr.contains(&names), "does not name {names}: {stderr}");
    let quoted = format!("{value:?}");
    assert!(
        stderr.contains(&quoted),
        "does not quote {quoted}: {stderr}"
    );
    if let Some(a) = flags::annotation_of(spec) {
        assert!(
            stderr.contains(a),
            "does not name the annotation {a}: {stderr}"
        );
    }
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}

/// Checks across flags: each names both flags.
fn clashes(args: &'static [&'static str], names: &'static [&'static str]) {
    let mut a = vec!["ambient", "apply", "--dry-run"];
    a.extend(args);
    let out = command(&a, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    for n in names {
        assert!(stderr.contains(n), "does not name {n}: {stderr}");
    }
}

/// A flag ambient does not have (`--compact`, the sidecar's) is refused, exit 2, naming the
/// flag and the help of the command that was run, not the sidecar's.
fn unknown_flag_points_at_its_help(verb: &str) {
    let o = run(&["ambient".into(), verb.into(), "--compact".into()], &[]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{e}");
    assert!(
        e.contains("unknown flag --compact")
            && e.contains(&format!("see meshtables ambient {verb} --help")),
        "{e}"
    );
}

/// The `bad::--FLAG=VALUE` and `bad::VAR=VALUE` trials: `bad_values` of each flag of the
/// table, given as the flag and in each of its variables (an empty value only as the flag).
/// A flag, a variable or a value added changes it, on purpose.
const BAD_VALUE_TRIALS: usize = 92;

fn main() {
    let mut t = Trials::new();
    for (name, args) in configurations() {
        let a = args.clone();
        let n = name.clone();
        t.add(format!("golden::{name}::nftables"), NOTHING, move || {
            nftables_golden(&n, &a)
        });
        t.add(format!("golden::{name}::iptables"), NOTHING, move || {
            iptables_golden(&name, &args)
        });
    }
    t.add(
        "golden::every_in_pod_golden_is_a_case",
        NOTHING,
        every_in_pod_golden_is_a_case,
    );
    t.add("dry_run::clean", NOTHING, clean_dry_runs);
    t.add(
        "dry_run::json_routing",
        NOTHING,
        json_shows_the_policy_routing,
    );
    t.add(
        "bad::every_flag_has_bad_values",
        NOTHING,
        every_flag_has_bad_values,
    );
    for spec in flags::ALL {
        for value in bad_values(spec) {
            let label = value.replace('\n', "\\n");
            t.add(
                format!("bad::--{}={label}", spec.long),
                NOTHING,
                move || refused(spec, value, None),
            );
            for var in spec.envs {
                // An empty variable is unset: it cannot be a bad value.
                if value.is_empty() {
                    continue;
                }
                t.add(format!("bad::{var}={label}"), NOTHING, move || {
                    refused(spec, value, Some(var))
                });
            }
        }
    }
    let cross: [(&str, &'static [&'static str], &'static [&'static str]); 4] = [
        (
            "ports_collide",
            &["--dns-capture-port", "15001"],
            &["--dns-capture-port", "--ztunnel-outbound-port"],
        ),
        (
            "hbone_is_plaintext",
            &["--ztunnel-inbound-port", "15006"],
            &["--ztunnel-inbound-port", "--ztunnel-inbound-plaintext-port"],
        ),
        (
            "marks_match_each_other",
            &["--connmark", "0x539/0xfff"],
            &["--connmark", "--ztunnel-mark"],
        ),
        (
            "mark_inside_the_other_mask",
            &["--ztunnel-mark", "0x111/0x1ff", "--connmark", "0x111/0xfff"],
            &["--connmark", "--ztunnel-mark"],
        ),
    ];
    for verb in ["apply", "clean", "check"] {
        t.add(
            format!("bad::unknown_flag_points_at_ambient_{verb}_help"),
            NOTHING,
            move || unknown_flag_points_at_its_help(verb),
        );
    }
    for (name, args, names) in cross {
        t.add(format!("bad::{name}"), NOTHING, move || {
            clashes(args, names)
        });
    }
    // Each configuration × 2 dialects and the golden directory's check; 2 dry runs; the bad
    // values of every flag and variable, their check, an unknown flag per verb, and the 4
    // cross-flag clashes.
    let golden = CONFIGURATIONS * 2 + 1;
    let bad = BAD_VALUE_TRIALS + 1 + 3 + 4;
    t.declare(
        golden + 2 + bad,
        &[("golden", golden), ("dry_run", 2), ("bad", bad)],
    );
    t.run()
}
