//! The iptables-binaries backend against a real kernel, with iptables-legacy and with
//! iptables-nft, each test in fresh network namespaces, each configuration × variant a trial of
//! its own (root; ignored with the reason without it, failed under CI=true).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

#[path = "iptables/decisions.rs"]
mod decisions;
#[path = "iptables/fixtures.rs"]
mod fixtures;

use std::collections::HashMap;

use meshtables::backend::iptables::state::{State, expected, parse_save};
use meshtables::plan::Family;
use support::ambient::CONFIGURATIONS as AMBIENT_CONFIGURATIONS;
use support::trials::{Needs, Trials, root};
use support::{
    COMPACT_ALL_INBOUND, COMPACT_LISTS, Dialect, EVERYTHING, FakeHost, INJECTED, SLOPPY,
    UPSTREAM_IPTABLES, in_netns, mt, owned, stderr, stdout, upstream_case, upstream_names_of,
};

const VARIANTS: [&str; 2] = ["legacy", "nft"];

const NEEDS: Needs = root(&[
    "iptables-legacy-restore",
    "iptables-nft-restore",
    "ip6tables-legacy-save",
    "ip6tables-nft-save",
    "unshare",
]);

/// The state the plan for `args` should leave, per family, in save form.
fn want(args: &[&str]) -> Vec<(Family, State)> {
    let argv = ["meshtables"]
        .iter()
        .chain(args)
        .map(std::ffi::OsString::from)
        .collect();
    let plan = if args.first() == Some(&"ambient") {
        support::ambient::plan(args).unwrap()
    } else {
        let r = meshtables::cmd::resolve_args(argv, &HashMap::new(), &FakeHost::v4_pod()).unwrap();
        meshtables::profile::istio::build(&r.policy)
    };
    plan.xtables
        .families()
        .into_iter()
        .map(|fam| (fam, expected(plan.xtables.rules(fam), fam)))
        .collect()
}

/// Non-empty chains of a state (built-in chains without rules carry no information).
fn content(s: &State) -> Vec<(String, String, Vec<String>)> {
    s.iter()
        .flat_map(|(t, ts)| {
            ts.chains
                .iter()
                .filter(|(c, r)| !r.is_empty() || c.starts_with("ISTIO_"))
                .map(move |(c, r)| (t.clone(), c.clone(), r.clone()))
        })
        .collect()
}

fn save_cmd(f: Family, v: &str) -> String {
    format!(
        "{}-{v}-save",
        if f == Family::V4 {
            "iptables"
        } else {
            "ip6tables"
        }
    )
}

/// `iptables-save` text without comments, counters, or tables holding nothing.
const STRIP: &str = "grep -v '^#' | sed -E 's/\\[[0-9]+:[0-9]+\\]//'";

/// Our configurations and ambient's (upstream's iptables cases are added in `main`).
fn configurations() -> Vec<(String, Vec<String>)> {
    let mut cases: Vec<(String, Vec<String>)> = vec![
        ("istio-injected".into(), owned(INJECTED)),
        ("everything".into(), owned(EVERYTHING)),
        (
            "capture-all-dns+groups".into(),
            owned(&[
                "apply",
                "-u",
                "3,4",
                "-g",
                "1,2",
                "--enable-ipv6",
                "true",
                "--redirect-dns",
                "--capture-all-dns",
                "--outbound-owner-groups",
                "5,6",
                "--ipv4-loopback-cidr",
                "127.0.0.1/8",
            ]),
        ),
        ("sloppy-lists".into(), owned(SLOPPY)),
        ("compact-lists".into(), owned(COMPACT_LISTS)),
        ("compact-all-inbound".into(), owned(COMPACT_ALL_INBOUND)),
    ];
    // Istio ambient's in-pod goldens (upstream's GetCommonInPodTestCases, IPv6 off and on).
    for (name, args) in support::ambient::configurations() {
        cases.push((format!("ambient-{name}"), args));
    }
    cases
}

/// After an apply of `args` with variant `v`, the live state of each family equals the plan.
fn live_rules_equal_the_plan(name: &str, args: &[String], v: &str) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let want = want(&argv);
    let mut a = argv.clone();
    a.extend(["--force-iptables-binary", v]);
    let saves: Vec<String> = want.iter().map(|(f, _)| save_cmd(*f, v)).collect();
    let o = in_netns(&format!(
        "{} && {} && echo '#===' && {}",
        mt(&a),
        saves[0],
        saves.get(1).map_or("true", |s| s.as_str())
    ));
    assert!(
        o.status.success(),
        "{name} ({v}): apply failed: {}",
        stderr(&o)
    );
    let out = stdout(&o);
    let (s4, s6) = out.split_once("#===\n").unwrap_or((&out, ""));
    for ((f, w), live) in want.iter().zip([s4, s6]) {
        assert_eq!(
            content(&parse_save(live)),
            content(w),
            "{name} ({v}, {f:?}): live state differs from the plan"
        );
    }
}

fn reruns_drift_and_reconcile(v: &str) {
    {
        let a = mt(&[
            "apply",
            "-u",
            "1337",
            "-m",
            "TPROXY",
            "-b",
            "*",
            "--enable-ipv6",
            "true",
            "--redirect-dns",
            "--dns-servers",
            "10.96.0.10",
            "--force-iptables-binary",
            v,
        ]);
        let b = mt(&[
            "apply",
            "-u",
            "1337",
            "-b",
            "8080",
            "-i",
            "*",
            "--enable-ipv6",
            "true",
            "--force-iptables-binary",
            v,
        ]);
        let b_reconcile = format!("{b} --reconcile");
        let save = format!("{{ iptables-{v}-save; ip6tables-{v}-save; }} | {STRIP}");
        let o = in_netns(&format!(
            "{a} 2>/dev/null; {save} > /tmp/a-$$; {a}; echo rc=$?; {save} | cmp - /tmp/a-$$ && echo SAME-AFTER-RERUN
             {b}; echo rc=$?; {save} | cmp - /tmp/a-$$ && echo UNCHANGED-AFTER-DRIFT
             {b_reconcile} && echo RECONCILED; {save} > /tmp/b-$$; rm -f /tmp/a-$$
             iptables-{v}-save | grep -c -- '-j ISTIO_\\|^:ISTIO_'; cat /tmp/b-$$ > /dev/null"
        ));
        let out = stdout(&o);
        let err = stderr(&o);
        assert!(out.contains("rc=0\nSAME-AFTER-RERUN"), "{v}: {out} {err}");
        assert!(
            out.contains("rc=1\nUNCHANGED-AFTER-DRIFT"),
            "{v}: {out} {err}"
        );
        assert!(
            err.contains("differ from the requested ones in") && err.contains("--reconcile"),
            "{v}: {err}"
        );
        assert!(
            err.contains("mangle/ISTIO_TPROXY"),
            "the message names the drift: {err}"
        );
        assert!(out.contains("RECONCILED"), "{v}: {out} {err}");

        // After --reconcile the state is exactly a fresh apply of b (legacy keeps tables it
        // once loaded, empty: compare content).
        let fresh = in_netns(&format!("{b} 2>/dev/null; {save}"));
        let over = in_netns(&format!(
            "{a} 2>/dev/null; {b_reconcile} 2>/dev/null; {save}"
        ));
        assert_eq!(
            content(&parse_save(&stdout(&fresh))),
            content(&parse_save(&stdout(&over))),
            "{v}: reconcile converges to the new rules"
        );
        assert!(
            stdout(&fresh).contains("ISTIO_OUTPUT"),
            "{}",
            stdout(&fresh)
        );
    }
}

fn clean_leaves_foreign_rules_byte_identical(v: &str) {
    {
        let foreign = ["iptables", "ip6tables"].map(|b| {
            format!(
                "{b}-{v} -t nat -N KUBE-SERVICES && {b}-{v} -t nat -A OUTPUT -j KUBE-SERVICES && {b}-{v} -t nat -A KUBE-SERVICES -p tcp --dport 80 -j RETURN && {b}-{v} -A INPUT -p tcp --dport 22 -j ACCEPT && {b}-{v} -t mangle -A PREROUTING -i eth0 -j MARK --set-mark 7 && {b}-{v} -t raw -A PREROUTING -j NOTRACK && {b}-{v} -t mangle -A OUTPUT -o lo -p tcp -m mark --mark 9 -j RETURN"
            )
        });
        let save = format!("{{ iptables-{v}-save; ip6tables-{v}-save; }} | {STRIP}");
        let args = [
            "-u",
            "1337",
            "-m",
            "TPROXY",
            "-b",
            "*",
            "-i",
            "*",
            "--enable-ipv6",
            "true",
            "--redirect-dns",
            "--dns-servers",
            "10.96.0.10,fd00::a",
            "-c",
            "eth9",
            "-k",
            "virt0",
            "--force-iptables-binary",
            v,
        ];
        let apply = mt(&[&["apply"], &args[..]].concat());
        let clean = mt(&[&["clean"], &args[..]].concat());
        let o = in_netns(&format!(
            "set -e; {}; {}; {save} > /tmp/before-$$; {apply}; {save} | grep -c ISTIO_; {clean}; {save} | cmp - /tmp/before-$$ && echo IDENTICAL; {clean} && echo SECOND-CLEAN-OK; {save} | cmp - /tmp/before-$$ && echo STILL-IDENTICAL; rm -f /tmp/before-$$",
            foreign[0], foreign[1]
        ));
        let out = stdout(&o);
        assert!(
            out.contains("IDENTICAL\nSECOND-CLEAN-OK\nSTILL-IDENTICAL"),
            "{v}: {out}\n{}",
            stderr(&o)
        );
    }
}

fn clean_with_default_flags_removes_leftovers_of_another_configuration(v: &str) {
    {
        let apply = mt(&[
            "apply",
            "-u",
            "1337",
            "-m",
            "TPROXY",
            "-b",
            "*",
            "--enable-ipv6",
            "true",
            "--redirect-dns",
            "--dns-servers",
            "10.96.0.10",
            "--drop-invalid",
            "--force-iptables-binary",
            v,
        ]);
        let clean = mt(&["clean", "--enable-ipv6", "false"]);
        let o = in_netns(&format!(
            "{apply} 2>/dev/null && {clean} 2>/dev/null; for b in iptables-{v} ip6tables-{v}; do $b-save | grep -v '^#' | grep -E 'ISTIO|0x539|0x53a' ; $b-save -t raw | grep -c '^-A'; done; ip rule | grep -c fwmark"
        ));
        let out = stdout(&o);
        assert_eq!(
            out.lines().collect::<Vec<_>>(),
            ["0", "0", "0"],
            "{v}: leftovers: {out}\n{}",
            stderr(&o)
        );
    }
}

fn detection_follows_upstream() {
    let args = ["apply", "-u", "1337", "--enable-ipv6", "false"];
    // Legacy holds nothing: the nft variant is used.
    let o = in_netns(&mt(&args));
    assert!(stderr(&o).contains("using iptables-nft"), "{}", stderr(&o));
    // Legacy holds rules: legacy is used.
    let o = in_netns(&format!(
        "iptables-legacy -A INPUT -j ACCEPT && {}",
        mt(&args)
    ));
    assert!(
        stderr(&o).contains("using iptables-legacy"),
        "{}",
        stderr(&o)
    );
    // Forced.
    let mut forced = args.to_vec();
    forced.extend(["--force-iptables-binary", "legacy"]);
    let o = in_netns(&mt(&forced));
    assert!(
        stderr(&o).contains("using iptables-legacy"),
        "{}",
        stderr(&o)
    );
    // No binaries at all: the error suggests --native-nftables.
    let o = in_netns(&format!("PATH=/nonexistent {}; echo rc=$?", mt(&args)));
    assert!(stdout(&o).contains("rc=1"), "{}", stdout(&o));
    assert!(stderr(&o).contains("--native-nftables"), "{}", stderr(&o));
}

/// Ambient with one variant: a rerun changes nothing, other flags are refused naming the
/// chains until `--reconcile`, which converges to a fresh apply of them; `check` agrees at
/// each step; a clean leaves the foreign rules and a sidecar's chain byte-identical and
/// removes the policy routing; a second clean finds nothing.
fn ambient_reruns_reconcile_and_clean(v: &str) {
    let save = format!("{{ iptables-{v}-save; ip6tables-{v}-save; }} | {STRIP}");
    let flags = ["--ambient-ipv6", "--force-iptables-binary", v];
    let a = mt(&[&["ambient", "apply", "--ambient-dns-capture"], &flags[..]].concat());
    let check_a = mt(&[&["ambient", "check", "--ambient-dns-capture"], &flags[..]].concat());
    let b = mt(&[
        &["ambient", "apply", "--bypass-inbound-capture"],
        &flags[..],
    ]
    .concat());
    let clean = mt(&["ambient", "clean"]);
    let foreign = format!(
        "iptables-{v} -t nat -N KUBE-SERVICES && iptables-{v} -t nat -A OUTPUT -j KUBE-SERVICES && ip6tables-{v} -t mangle -A PREROUTING -i eth0 -j MARK --set-mark 7 && iptables-{v} -t mangle -A OUTPUT -m mark --mark 0x111/0xfff -j RETURN && iptables-{v} -t nat -N ISTIO_INBOUND && iptables-{v} -t nat -A PREROUTING -p tcp -j ISTIO_INBOUND"
    );
    let o = in_netns(&format!(
        "{foreign} && {save} > /tmp/before-$$; {a} 2>/dev/null; {save} > /tmp/a-$$; {a} && echo RERUN-OK; {save} | cmp - /tmp/a-$$ && echo SAME; {check_a} && echo CHECK-OK
         {b}; echo rc=$?; {save} | cmp - /tmp/a-$$ && echo UNCHANGED; {b} --reconcile && echo RECONCILED; {save} > /tmp/b-$$; {check_a}; echo check-rc=$?
         ip rule | grep -c 0x111; {clean}; ip rule | grep -c 0x111; ip -6 route show table 100 | wc -l; {clean} && echo SECOND-CLEAN-OK
         echo '#BEFORE'; cat /tmp/before-$$; echo '#AFTER'; {save}; rm -f /tmp/before-$$ /tmp/a-$$"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(
        out.contains("RERUN-OK\nSAME\nCHECK-OK\nrc=1\nUNCHANGED\nRECONCILED\ncheck-rc=1\n1\n0\n0\nSECOND-CLEAN-OK"),
        "{v}: {out}\n{err}"
    );
    // The built-in tables a variant creates stay, empty (as with upstream): compare content.
    let (_, saves) = out.split_once("#BEFORE\n").expect("the saves");
    let (before, after) = saves.split_once("#AFTER\n").expect("the saves");
    assert_eq!(
        content(&parse_save(after)),
        content(&parse_save(before)),
        "{v}: the foreign rules, and the sidecar's chain, as before"
    );
    assert!(before.contains("ISTIO_INBOUND"), "{before}");
    assert!(
        err.contains("nat/ISTIO_PRERT") && err.contains("--reconcile"),
        "the refusal names the chains: {err}"
    );
    let fresh = in_netns(&format!("{b} 2>/dev/null; {save}"));
    let over = in_netns(&format!(
        "{a} 2>/dev/null; {b} --reconcile 2>/dev/null; {save}"
    ));
    assert_eq!(
        content(&parse_save(&stdout(&fresh))),
        content(&parse_save(&stdout(&over))),
        "{v}: reconcile converges to the new rules"
    );
}

/// In a sidecar's pod, ambient's apply (even with `--reconcile`), check and clean leave the
/// sidecar's rules byte-identical and exit 1 naming its nat `ISTIO_OUTPUT`, which both
/// schemes name (found by the ambient break run: the clean removed that chain and its jump,
/// leaving the sidecar's inbound capture without its outbound one, and exited 0).
fn ambient_leaves_a_sidecars_rules(v: &str) {
    let save = format!("{{ iptables-{v}-save; ip6tables-{v}-save; }} | {STRIP}");
    let sidecar = mt(&[
        "apply",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-b",
        "*",
        "--force-iptables-binary",
        v,
    ]);
    let flags = ["--force-iptables-binary", v];
    let a = mt(&[&["ambient", "apply", "--reconcile"], &flags[..]].concat());
    let c = mt(&[&["ambient", "check"], &flags[..]].concat());
    let clean = mt(&["ambient", "clean"]);
    let o = in_netns(&format!(
        "{sidecar} 2>/dev/null; {save} > /tmp/sc-$$; {a}; echo rc=$?; {c} 2>/dev/null; echo rc=$?; {clean}; echo rc=$?; {save} | cmp - /tmp/sc-$$ && echo UNCHANGED; rm -f /tmp/sc-$$"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(out, "rc=1\nrc=1\nrc=1\nUNCHANGED\n", "{v}: {err}");
    assert!(
        err.contains("nat/ISTIO_OUTPUT -> ISTIO_REDIRECT") && err.contains("not ours"),
        "{v}: {err}"
    );
}

const POD: &str = "0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a2b";

/// The node's rules with one variant: reruns converge and keep the ipsets' members; a
/// firewalld reload (every nat chain flushed and deleted, istio/istio#60607) is what `check`
/// finds and `apply` repairs, members still in; a clean removes the rules and the ipsets.
fn host_reruns_check_a_reload_and_clean(v: &str) {
    let save = format!("{{ iptables-{v}-save -t nat; ip6tables-{v}-save -t nat; }} | {STRIP}");
    let flags = ["--ambient-ipv6", "--force-iptables-binary", v];
    let a = mt(&[&["ambient", "host", "apply"], &flags[..]].concat());
    let c = mt(&[&["ambient", "host", "check"], &flags[..]].concat());
    let add = mt(&[
        &[
            "ambient",
            "host",
            "add-pod",
            "--pod-uid",
            POD,
            "--pod-ip",
            "10.244.1.7,fd00::7",
        ],
        &flags[..],
    ]
    .concat());
    let clean = mt(&["ambient", "host", "clean"]);
    let reload =
        format!("for x in iptables-{v} ip6tables-{v}; do $x -t nat -F && $x -t nat -X; done");
    let members = "ipset list | grep -c 'comment \"0b0d8f5e'";
    let o = in_netns(&format!(
        "{a} 2>/dev/null; {add} 2>/dev/null; {save} > /tmp/h1-$$; {a} 2>/dev/null && {save} | cmp - /tmp/h1-$$ && echo SAME; {c} 2>/dev/null && echo CHECK-OK
         {reload}; {c}; echo rc=$?; {a} 2>/dev/null; {c} 2>/dev/null && echo REPAIRED; {save} | cmp - /tmp/h1-$$ && echo AS-BEFORE; {members}
         {clean} 2>/dev/null; {save} | grep -c ISTIO; ipset list | wc -l; {clean} 2>/dev/null && echo SECOND-CLEAN-OK; rm -f /tmp/h1-$$"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        out, "SAME\nCHECK-OK\nrc=1\nREPAIRED\nAS-BEFORE\n2\n0\n0\nSECOND-CLEAN-OK\n",
        "{v}: {err}"
    );
    assert!(err.contains("nat/"), "check names the chains: {err}");
}

/// An ipset of our name that we did not make (another type) stops the apply before any rule
/// is written; a member without a comment stops a remove; nothing changes.
fn host_foreign_ipset_is_a_conflict(v: &str) {
    let save = format!("iptables-{v}-save -t nat | {STRIP}");
    let a = mt(&["ambient", "host", "apply", "--force-iptables-binary", v]);
    let c = mt(&["ambient", "host", "check", "--force-iptables-binary", v]);
    let rm = mt(&[
        "ambient",
        "host",
        "remove-pod",
        "--pod-uid",
        POD,
        "--pod-ip",
        "10.244.1.9",
    ]);
    let o = in_netns(&format!(
        "ipset create istio-inpod-probes-v4 hash:net; {a}; echo rc=$?; {c}; echo rc=$?; {save} | grep -c ISTIO; ipset list istio-inpod-probes-v4 | grep Type
         ipset destroy istio-inpod-probes-v4; {a} 2>/dev/null; ipset add istio-inpod-probes-v4 10.244.1.9; {rm}; echo rc=$?; ipset list istio-inpod-probes-v4 | grep -c 10.244.1.9"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        out, "rc=1\nrc=1\n0\nType: hash:net\nrc=1\n1\n",
        "{v}: {err}"
    );
    assert!(
        err.contains("it is hash:net"),
        "check names what the set is: {err}"
    );
    assert!(
        err.contains("ipset create istio-inpod-probes-v4 hash:ip"),
        "{err}"
    );
    assert!(err.contains("member 10.244.1.9 of ipset"), "{err}");
}

/// The node's namespace never gets the fail-closed guard: it would drop the node's traffic
/// and every pod's forwarded traffic while it is up, and a kill would leave the node cut
/// off (found by the ambient break run: a dual-stack apply and a clean, two commits each,
/// raised it). `nft monitor` sees every table made; markers before and after tell when it
/// is listening and when it has seen all.
fn host_never_raises_the_guard(v: &str) {
    let a = mt(&[
        "ambient",
        "host",
        "apply",
        "--ambient-ipv6",
        "--force-iptables-binary",
        v,
    ]);
    let clean = mt(&["ambient", "host", "clean"]);
    let wait = |marker: &str| {
        format!(
            "i=0; until grep -q '{marker}' /tmp/mon-$$; do i=$((i+1)); [ $i -gt 1000 ] && echo TIMEOUT && break; sleep 0.01; done"
        )
    };
    let o = in_netns(&format!(
        ": > /tmp/mon-$$; nft monitor tables > /tmp/mon-$$ 2>&1 & m=$!; i=0; until nft add table inet mt-ready 2>/dev/null && grep -q 'add table inet mt-ready' /tmp/mon-$$; do nft delete table inet mt-ready 2>/dev/null; i=$((i+1)); [ $i -gt 1000 ] && echo TIMEOUT && break; sleep 0.01; done
         {a} 2>/dev/null; echo apply=$?; {clean} 2>/dev/null; echo clean=$?; nft add table inet mt-done; {}
         kill $m; grep -c meshtables-guard /tmp/mon-$$; rm -f /tmp/mon-$$",
        wait("add table inet mt-done")
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(out, "apply=0\nclean=0\n0\n", "{v}: {err}");
}

/// A clean leaves an ipset of our name that is not what an apply makes (another type, with
/// a member of another's), names it and exits 1 (found by the ambient break run: it was
/// destroyed, members and all).
fn host_clean_leaves_a_foreign_ipset(v: &str) {
    let a = mt(&["ambient", "host", "apply", "--force-iptables-binary", v]);
    let clean = mt(&["ambient", "host", "clean"]);
    let o = in_netns(&format!(
        "ipset create istio-inpod-probes-v4 hash:net comment && ipset add istio-inpod-probes-v4 10.9.0.0/16 comment other
         {clean}; echo rc=$?; ipset list istio-inpod-probes-v4 | grep -E '^Type|10.9.0.0'
         ipset destroy istio-inpod-probes-v4; {a} 2>/dev/null; {clean} 2>/dev/null; echo rc=$?; ipset list -n | wc -l"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        out, "rc=1\nType: hash:net\n10.9.0.0/16 comment \"other\"\nrc=0\n0\n",
        "{v}: {err}"
    );
    assert!(
        err.contains("not ours, left in place: ipset istio-inpod-probes-v4 is hash:net"),
        "{err}"
    );
}

/// Twenty pods added at once: every ipset member lands, each with its pod's UID.
fn host_concurrent_add_pods_all_land(v: &str) {
    let a = mt(&["ambient", "host", "apply", "--force-iptables-binary", v]);
    let mut adds = String::new();
    for i in 10..30 {
        let uid = format!("0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a{i}");
        let ip = format!("10.244.1.{i}");
        let add = mt(&[
            "ambient",
            "host",
            "add-pod",
            "--pod-uid",
            &uid,
            "--pod-ip",
            &ip,
        ]);
        adds.push_str(&format!("{add} 2>/dev/null & "));
    }
    let o = in_netns(&format!(
        "{a} 2>/dev/null; {adds} wait; ipset list istio-inpod-probes-v4 | grep -c 'comment \"0b0d'"
    ));
    assert_eq!(stdout(&o).trim(), "20", "{v}: {}", stderr(&o));
}

/// A test run with one iptables variant.
type PerVariant = fn(&str);

/// A zero-length prefix (`-i 0.0.0.0/0`, `-x ::/0`) is a match iptables drops: `*-save` prints
/// the rule without `-d`. A rerun and `check` must still see the rules as exactly ours
/// (found by the differential run of the refactor, in both trees: check 1, rerun 1).
fn zero_length_prefixes_rerun_and_check(v: &str) {
    for cidrs in [["-i", "0.0.0.0/0,::/0"], ["-x", "0.0.0.0/0,::/0"]] {
        let mut args = vec!["-u", "1337", "-b", "*", "--enable-ipv6", "true"];
        args.extend(cidrs);
        if cidrs[0] == "-x" {
            args.extend(["-i", "*"]);
        }
        args.extend(["--force-iptables-binary", v]);
        let apply = mt(&[&["apply"], args.as_slice()].concat());
        let check = mt(&[&["check"], args.as_slice()].concat());
        let o = in_netns(&format!(
            "{apply}; echo apply=$?; {check}; echo check=$?; {apply}; echo rerun=$?"
        ));
        let (out, err) = (stdout(&o), stderr(&o));
        assert!(
            out.contains("apply=0\ncheck=0\nrerun=0"),
            "{v} {cidrs:?}: {out} {err}"
        );
    }
}

fn main() {
    let mut t = Trials::new();
    for (name, args) in configurations() {
        for v in VARIANTS {
            let (name, args) = (name.clone(), args.clone());
            t.add(
                format!("live_rules_equal_the_plan::{name}::{v}"),
                NEEDS,
                move || live_rules_equal_the_plan(&name, &args, v),
            );
        }
    }
    // Upstream's iptables cases; owner-group names resolve in the namespace's /etc/group
    // (support::GROUP_FILE).
    for name in upstream_names_of(Dialect::Iptables) {
        for v in VARIANTS {
            let name = name.clone();
            t.add(
                format!("live_rules_equal_the_plan::upstream-{name}::{v}"),
                NEEDS.and_shared(),
                move || {
                    let args = upstream_case(Dialect::Iptables, &name).apply_args();
                    live_rules_equal_the_plan(&format!("upstream-{name}"), &args, v)
                },
            );
        }
    }
    let per_variant: [(&str, PerVariant); 6] = [
        (
            "ambient::leaves_a_sidecars_rules",
            ambient_leaves_a_sidecars_rules,
        ),
        (
            "zero_length_prefixes_rerun_and_check",
            zero_length_prefixes_rerun_and_check,
        ),
        (
            "ambient::reruns_reconcile_and_clean",
            ambient_reruns_reconcile_and_clean,
        ),
        ("reruns_drift_and_reconcile", reruns_drift_and_reconcile),
        (
            "clean_leaves_foreign_rules_byte_identical",
            clean_leaves_foreign_rules_byte_identical,
        ),
        (
            "clean_with_default_flags_removes_leftovers_of_another_configuration",
            clean_with_default_flags_removes_leftovers_of_another_configuration,
        ),
    ];
    for (name, f) in per_variant {
        for v in VARIANTS {
            t.add(format!("{name}::{v}"), NEEDS, move || f(v));
        }
    }
    // The tests read and make ipsets with the ipset tool; meshtables does not use it.
    let host_needs = root(&[
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "ip6tables-legacy-save",
        "ip6tables-nft-save",
        "unshare",
        "ipset",
    ]);
    let host: [(&str, PerVariant); 5] = [
        (
            "ambient::host::never_raises_the_guard",
            host_never_raises_the_guard,
        ),
        (
            "ambient::host::clean_leaves_a_foreign_ipset",
            host_clean_leaves_a_foreign_ipset,
        ),
        (
            "ambient::host::concurrent_add_pods_all_land",
            host_concurrent_add_pods_all_land,
        ),
        (
            "ambient::host::reruns_check_a_reload_and_clean",
            host_reruns_check_a_reload_and_clean,
        ),
        (
            "ambient::host::foreign_ipset_is_a_conflict",
            host_foreign_ipset_is_a_conflict,
        ),
    ];
    for (name, f) in host {
        for v in VARIANTS {
            t.add(format!("{name}::{v}"), host_needs, move || f(v));
        }
    }
    t.add(
        "detection_follows_upstream",
        NEEDS,
        detection_follows_upstream,
    );
    for c in fixtures::CAPTURES {
        t.add(
            format!("fixtures::{}_is_current", c.file),
            NEEDS,
            move || fixtures::is_current(c),
        );
    }
    decisions::add(&mut t);
    // Our 6 configurations, ambient's and upstream's iptables cases, each with both variants;
    // 6 tests per variant (two ambient's) and 5 of the node's; detection; the 10 captured files, each made again
    // (root) and parsed; 9 decisions on them.
    let live = (6 + AMBIENT_CONFIGURATIONS + UPSTREAM_IPTABLES) * 2;
    t.declare(
        live + 6 * 2 + 5 * 2 + 1 + 10 + 10 + 9,
        &[
            ("live_rules_equal_the_plan", live),
            ("ambient", 2 * 2 + 5 * 2),
            ("fixtures", 10),
            ("parse", 10),
            ("decisions", 9),
        ],
    );
    t.run()
}
