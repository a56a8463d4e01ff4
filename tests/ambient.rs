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
use support::ambient::{CONFIGURATIONS, configurations, host_configurations};
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

/// The node's rules: the nft dry run is upstream's host transaction byte for byte (its args
/// carry `--native-nftables`).
fn host_nftables_golden(name: &str, args: &[String]) {
    let mut a = args.to_vec();
    a.push("--dry-run".into());
    let got = ok_stdout(&run(&a, &[]));
    let want = golden("nftables", name);
    assert!(got == want, "{name}:\n{}", diff(&want, &got));
}

/// Every `hostprobe*` golden is a host configuration, in both dialects.
fn every_host_golden_is_a_case() {
    let names: Vec<String> = host_configurations().into_iter().map(|c| c.0).collect();
    for dialect in ["iptables", "nftables"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/ambient")
            .join(dialect);
        let mut stems: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let f = e.unwrap().file_name().to_string_lossy().into_owned();
                f.strip_suffix(".golden")
                    .filter(|s| s.starts_with("hostprobe"))
                    .map(str::to_string)
            })
            .collect();
        stems.sort();
        assert_eq!(stems, names, "{dialect}");
    }
}

/// The node's clean as a dry run: the table's delete, and per family upstream's commands
/// (each rule undone in reverse order, then the chain flushed and deleted).
fn host_clean_dry_runs() {
    let nft = ok_stdout(&run(
        &["ambient", "host", "clean", "--dry-run", "--native-nftables"].map(String::from),
        &[],
    ));
    assert_eq!(
        nft,
        "add table inet istio-ambient-nat\ndelete table inet istio-ambient-nat\n"
    );
    let ipt = ok_stdout(&run(
        &["ambient", "host", "clean", "--dry-run", "--ambient-ipv6"].map(String::from),
        &[],
    ));
    let cmds: Vec<&str> = ipt.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        cmds,
        [
            "iptables -t nat -D ISTIO_POSTRT -m owner --socket-exists -p tcp -m set --match-set istio-inpod-probes-v4 dst -j SNAT --to-source 169.254.7.127",
            "iptables -t nat -D POSTROUTING -j ISTIO_POSTRT",
            "iptables -t nat -F ISTIO_POSTRT",
            "iptables -t nat -X ISTIO_POSTRT",
            "ip6tables -t nat -D ISTIO_POSTRT -m owner --socket-exists -p tcp -m set --match-set istio-inpod-probes-v6 dst -j SNAT --to-source fd16:9254:7127:1337:ffff:ffff:ffff:ffff",
            "ip6tables -t nat -D POSTROUTING -j ISTIO_POSTRT",
            "ip6tables -t nat -F ISTIO_POSTRT",
            "ip6tables -t nat -X ISTIO_POSTRT",
        ]
    );
}

const UID: &str = "0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a2b";

/// A member's add and remove as a dry run: upstream's element transaction (nftables) or the
/// `ipset` command that does the same; an IPv6 address with IPv6 off is skipped.
fn member_dry_runs() {
    let member = |verb: &str, extra: &[&str]| {
        let mut a: Vec<String> = ["ambient", "host", verb, "--dry-run", "--pod-uid", UID]
            .map(String::from)
            .to_vec();
        a.extend(extra.iter().map(|s| s.to_string()));
        ok_stdout(&run(&a, &[]))
    };
    let ips = ["--pod-ip", "10.0.0.5,fd00::5"];
    let mut nft = ips.to_vec();
    nft.push("--native-nftables");
    assert_eq!(
        member("add-pod", &nft),
        format!(
            "add element inet istio-ambient-nat istio-inpod-probes-v4 {{ 10.0.0.5 comment \"{UID}\" }}\n"
        )
    );
    nft.push("--ambient-ipv6");
    assert_eq!(
        member("remove-pod", &nft),
        "delete element inet istio-ambient-nat istio-inpod-probes-v4 { 10.0.0.5 }\ndelete element inet istio-ambient-nat istio-inpod-probes-v6 { fd00::5 }\n"
    );
    assert_eq!(
        member("add-pod", &ips),
        format!("ipset add istio-inpod-probes-v4 10.0.0.5 comment \"{UID}\" -exist\n")
    );
}

/// The JSON plan of the node's rules names the probe sets.
fn host_json_names_the_sets() {
    let out = ok_stdout(&run(
        &[
            "ambient",
            "host",
            "apply",
            "--dry-run",
            "--output",
            "json",
            "--kubelet-uid",
            "0",
            "--ambient-ipv6",
        ]
        .map(String::from),
        &[],
    ));
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(
        v["sets"],
        serde_json::json!([
            {"name": "istio-inpod-probes-v4", "family": "ipv4"},
            {"name": "istio-inpod-probes-v6", "family": "ipv6"}
        ])
    );
}

/// One bad value of a host flag: exit 2, nothing on stdout, one line naming the flag and
/// quoting the value.
fn host_refused(verb: &'static str, long: &'static str, value: &'static str) {
    let flag = format!("--{long}={value}");
    let mut args = vec!["ambient", "host", verb, "--dry-run", &flag];
    if verb != "apply" {
        for (f, v) in [("pod-uid", UID), ("pod-ip", "10.0.0.5")] {
            if f != long {
                args.extend([
                    if f == "pod-uid" {
                        "--pod-uid"
                    } else {
                        "--pod-ip"
                    },
                    v,
                ]);
            }
        }
    }
    let out = command(&args, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains(&format!("--{long}")), "{stderr}");
    assert!(stderr.contains(&format!("{value:?}")), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

/// add-pod and remove-pod without a pod UID or addresses: exit 2 naming the flag.
fn member_flag_required(verb: &'static str, given: &'static [&'static str], missing: &str) {
    let mut args = vec!["ambient", "host", verb, "--dry-run"];
    args.extend(given);
    let out = command(&args, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(missing) && stderr.contains("required"),
        "{stderr}"
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
        "IPv6 address" => &[
            "169.254.7.127",
            "::1",
            "ff02::1",
            "fd16::/64",
            // IPv4-mapped: an IPv4 address in IPv6's notation.
            "::ffff:169.254.7.127",
        ],
        "port" => &["0", "70000", "15001;", "", "-1"],
        "interfaces" => &[
            // Upstream's own "various manglings" annotation, which it puts in rules.
            "asd^&&*$&*(#$&*(#&$*())),   ",
            "eth0 eth1",
            "averyveryverylongname0",
            "a/b",
            "-i",
            // iptables' wildcard for every interface.
            "+",
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
const BAD_VALUE_TRIALS: usize = 95;

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
    for (name, nft, ipt) in host_configurations() {
        let n = name.clone();
        t.add(
            format!("golden::host::{name}::nftables"),
            NOTHING,
            move || host_nftables_golden(&n, &nft),
        );
        t.add(
            format!("golden::host::{name}::iptables"),
            NOTHING,
            move || iptables_golden(&name, &ipt),
        );
    }
    t.add(
        "golden::every_host_golden_is_a_case",
        NOTHING,
        every_host_golden_is_a_case,
    );
    t.add("dry_run::host_clean", NOTHING, host_clean_dry_runs);
    t.add("dry_run::host_members", NOTHING, member_dry_runs);
    t.add("dry_run::host_json_sets", NOTHING, host_json_names_the_sets);
    let host_bad: [(&str, &str, &[&str]); 4] = [
        ("apply", "network-namespace", &["/var/run/netns/x\ny"]),
        (
            "apply",
            "kubelet-uid",
            &["-1", "4294967296", "kubelet", "1 2"],
        ),
        (
            "add-pod",
            "pod-ip",
            &[
                "10.0.0.5,10.0.0.5",
                "10.0.0.5,10.0.0.6",
                "127.0.0.1",
                "224.0.0.1",
                "10.0.0.0/24",
                "::",
                "x",
            ],
        ),
        (
            "remove-pod",
            "pod-uid",
            &[
                "0B0D8F5E-3C1A-4A47-9A51-2F6C1B7F1A2B",
                "x\" comment \"y",
                "0b0d8f5e3c1a4a479a512f6c1b7f1a2b",
            ],
        ),
    ];
    let host_bad_values: usize = host_bad.iter().map(|(_, _, v)| v.len()).sum();
    for (verb, long, values) in host_bad {
        for value in values {
            t.add(
                format!("bad::host::{verb}::--{long}={value}"),
                NOTHING,
                move || host_refused(verb, long, value),
            );
        }
    }
    t.add("bad::host::add-pod_without_uid", NOTHING, || {
        member_flag_required("add-pod", &["--pod-ip", "10.0.0.5"], "--pod-uid")
    });
    t.add("bad::host::remove-pod_without_ip", NOTHING, || {
        member_flag_required("remove-pod", &["--pod-uid", UID], "--pod-ip")
    });
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
    // Each in-pod and host configuration × 2 dialects and each golden directory's check; 2
    // in-pod and 3 host dry runs; the bad values of every flag and variable, their check, an
    // unknown flag per verb, the 4 cross-flag clashes, the host's bad values and its 2 missing
    // flags.
    let golden = (CONFIGURATIONS + host_configurations().len()) * 2 + 2;
    let bad = BAD_VALUE_TRIALS + 1 + 3 + 4 + host_bad_values + 2;
    t.declare(
        golden + 5 + bad,
        &[("golden", golden), ("dry_run", 5), ("bad", bad)],
    );
    t.run()
}
