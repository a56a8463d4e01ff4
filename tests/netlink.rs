//! The native nftables backend against a real kernel, each test in fresh network namespaces,
//! each configuration (ours, and upstream's nftables cases from `tests/upstream-cases.txt`)
//! compared with `nft -f` a trial of its own (root, and `../shared` for upstream's; ignored
//! with the reason without them, failed under CI=true).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use support::ambient::CONFIGURATIONS as AMBIENT_CONFIGURATIONS;
use support::trials::{Needs, Trials, root};
use support::{
    COMPACT_ALL_INBOUND, COMPACT_LISTS, Dialect, EVERYTHING, INJECTED, SLOPPY, UPSTREAM_NFTABLES,
    in_netns, mt, owned, stderr, stdout, upstream_case, upstream_names_of,
};

const NEEDS: Needs = root(&["nft", "unshare", "ip"]);

/// `nft list ruleset` (and, stricter, the bytecode with rule handles removed) after applying
/// `args` over netlink, and after `nft -f` of the same args' dry-run text; `table` is one
/// the ruleset must hold (the scheme's nat table).
fn both_ways(args: &[&str], table: &str) -> Result<(String, String), String> {
    let mut native: Vec<&str> = args.to_vec();
    native.push("--native-nftables");
    let list = "nft list ruleset; echo ===; nft --debug=netlink list ruleset | sed -E 's/^(inet [a-z-]+ [a-z-]+)( [0-9]+)+$/\\1/; s/__set[0-9]+/__set/g'";
    let table = format!("table inet {table}");
    let a = in_netns(&format!("{} && {{ {list}; }}", mt(&native)));
    if !a.status.success() || !stdout(&a).contains(&table) {
        return Err(format!("netlink apply failed: {}", stderr(&a)));
    }
    let mut dry = native.clone();
    dry.push("--dry-run");
    let b = in_netns(&format!(
        "{} > /tmp/mt-$$.nft && nft -f /tmp/mt-$$.nft; rc=$?; rm -f /tmp/mt-$$.nft; [ $rc = 0 ] && {{ {list}; }}",
        mt(&dry)
    ));
    if !b.status.success() || !stdout(&b).contains(&table) {
        return Err(format!("nft -f failed: {}", stderr(&b)));
    }
    Ok((stdout(&a), stdout(&b)))
}

/// Our configurations and ambient's, compared with `nft -f` (upstream's nftables cases are
/// added in `main`).
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
                "daemon,5",
                "-x",
                "0.0.0.0/0",
            ]),
        ),
        ("sloppy-lists".into(), owned(SLOPPY)),
        ("compact-lists".into(), owned(COMPACT_LISTS)),
        ("compact-all-inbound".into(), owned(COMPACT_ALL_INBOUND)),
        // Compact CIDR lists that end at the last address (128.0.0.0/1, ff00::/8): the last
        // interval has no end element, and nft marks its start with the open-interval user
        // data.
        (
            "compact-open-interval".into(),
            owned(&[
                "apply",
                "--compact",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "-i",
                "*",
                "-x",
                "10.0.0.0/8,128.0.0.0/1,fd00::/8,ff00::/8",
            ]),
        ),
        // A port named twice: `nft -f` makes one set element of it, the kernel refuses a
        // second copy (EEXIST), so the plan (compact lists) and the sets name it once.
        (
            "compact-duplicate-ports".into(),
            owned(&[
                "apply",
                "--compact",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "-b",
                "8080,8080,9090",
                "-q",
                "8443,8443,9443",
                "-o",
                "25,587,25",
                "-i",
                "*",
            ]),
        ),
        (
            "compact-duplicate-excluded-ports".into(),
            owned(&[
                "apply",
                "--compact",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "-b",
                "*",
                "-d",
                "15090,15021,15090",
                "-i",
                "*",
            ]),
        ),
        // Upstream's `! --dports 53,15008` names 53 twice when the tunnel port is 53.
        (
            "tunnel-port-53-with-dns".into(),
            owned(&[
                "apply",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "-e",
                "53",
                "--redirect-dns",
                "--capture-all-dns",
                "-b",
                "*",
                "-i",
                "*",
            ]),
        ),
    ];
    // Istio ambient's in-pod goldens (upstream's GetCommonInPodTestCases, IPv6 off and on).
    for (name, args) in support::ambient::configurations() {
        cases.push((format!("ambient-{name}"), args));
    }
    // Interface names nft reads otherwise when they are written bare: `x|y`, `x&y` and `x^y`
    // are expressions (they match y, x and the empty name), `0x1` is the number 1, `eth*` a
    // wildcard, `a+` (iptables' wildcard) and `c!d` syntax errors (found by the ambient
    // break run: the dry-run text was not what the netlink apply installed).
    const NAMES: &str = "eth*,a+,x|y,x&y,x^y,0x1,c!d,e@f,eth0,k6t-eth0";
    cases.push((
        "ambient-interface-names-nft-would-misread".into(),
        owned(&["ambient", "apply", "--reroute-virtual-interfaces", NAMES]),
    ));
    cases.push((
        "interface-names-nft-would-misread".into(),
        owned(&["apply", "-u", "1337", "-b", "*", "-i", "*", "-c", NAMES]),
    ));
    cases
}

/// Upstream's nftables case `name` as a configuration to apply (`../shared`'s args). Owner-group
/// names ("java", "ftp") resolve in the namespace's own /etc/group (support::GROUP_FILE), for
/// meshtables and for `nft -f` alike.
fn upstream_configuration(name: &str) -> Vec<String> {
    upstream_case(Dialect::Nftables, name)
        .apply_args()
        .into_iter()
        .filter(|a| a != "--native-nftables")
        .collect()
}

/// The netlink ruleset of one configuration equals `nft -f` of its dry-run text, as text and
/// as bytecode.
fn netlink_equals_nft_f(name: &str, args: &[String]) {
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let table = if argv.first() == Some(&"ambient") {
        "istio-ambient-nat"
    } else {
        "istio-proxy-nat"
    };
    match both_ways(&argv, table) {
        Ok((a, b)) => {
            let (a, b) = (elements_sorted(&a), elements_sorted(&b));
            assert!(a == b, "{name}: rulesets differ\n{}", support::diff(&b, &a))
        }
        Err(e) => panic!("{name}: {e}"),
    }
}

/// The bytecode listing with each set's element lines sorted: the kernel dumps a hash set in
/// its hash order, which a per-set random seed decides.
fn elements_sorted(listing: &str) -> String {
    let mut out = Vec::new();
    let mut run: Vec<&str> = Vec::new();
    for line in listing.lines() {
        if line.trim_start().starts_with("element ") {
            run.push(line);
            continue;
        }
        run.sort();
        out.append(&mut run);
        out.push(line);
    }
    run.sort();
    out.append(&mut run);
    out.join("\n")
}

fn reruns_converge_and_clean_leaves_foreign_tables_untouched() {
    let foreign = "nft add table inet filter && nft add chain inet filter input '{ type filter hook input priority 0 ; }' && nft add rule inet filter input tcp dport 22 accept && nft add table ip nat && nft add chain ip nat POSTROUTING '{ type nat hook postrouting priority 100 ; }' && nft add rule ip nat POSTROUTING oifname eth0 masquerade";
    let tproxy = mt(&[
        "apply",
        "--native-nftables",
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-u",
        "1337",
        "--enable-ipv6",
        "true",
        "--redirect-dns",
        "--dns-servers",
        "10.96.0.10",
    ]);
    let redirect = mt(&[
        "apply",
        "--native-nftables",
        "-b",
        "*",
        "-i",
        "*",
        "-u",
        "1337",
        "--enable-ipv6",
        "false",
    ]);
    let clean = mt(&["clean", "--native-nftables"]);
    let script = format!(
        "set -e; {foreign}; nft list ruleset > /tmp/before-$$
        {tproxy}; nft list ruleset > /tmp/t1-$$; {tproxy}; nft list ruleset > /tmp/t2-$$
        cmp /tmp/t1-$$ /tmp/t2-$$ && echo SAME-ON-RERUN
        {redirect}; nft list ruleset > /tmp/r-$$
        nft list tables | tr '\\n' ' '; echo
        {clean}; nft list ruleset > /tmp/after-$$
        cmp /tmp/before-$$ /tmp/after-$$ && echo FOREIGN-UNTOUCHED
        {clean} && echo SECOND-CLEAN-OK
        nft flush ruleset; {clean} && echo EMPTY-CLEAN-OK
        rm -f /tmp/*-$$"
    );
    let o = in_netns(&script);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("SAME-ON-RERUN"), "{out}");
    // TPROXY → REDIRECT: mangle and raw are gone in the same transaction (upstream keeps them).
    assert!(
        out.contains("table inet filter table ip nat table inet istio-proxy-nat \n"),
        "{out}"
    );
    assert!(out.contains("FOREIGN-UNTOUCHED"), "{out}");
    assert!(
        out.contains("SECOND-CLEAN-OK") && out.contains("EMPTY-CLEAN-OK"),
        "{out}"
    );

    // Rerun with different flags == a fresh apply of those flags.
    let fresh = in_netns(&format!("{redirect} && nft list ruleset"));
    let over = in_netns(&format!("{tproxy} && {redirect} && nft list ruleset"));
    assert_eq!(
        stdout(&fresh),
        stdout(&over),
        "nothing stale after switching flags"
    );
}

fn rejected_batch_changes_nothing_and_names_the_rule() {
    let first = mt(&[
        "apply",
        "--native-nftables",
        "-b",
        "*",
        "-i",
        "*",
        "-u",
        "1337",
        "--enable-ipv6",
        "false",
    ]);
    let second = mt(&[
        "apply",
        "--native-nftables",
        "-m",
        "TPROXY",
        "-b",
        "8080",
        "-u",
        "1337",
        "--enable-ipv6",
        "true",
    ]);
    let o = in_netns(&format!(
        "{first} 2>/dev/null; nft list ruleset > /tmp/a-$$; MESHTABLES_TEST_FAULT=reject-rule {second}; echo rc=$?; nft list ruleset | cmp - /tmp/a-$$ && echo UNCHANGED; rm -f /tmp/a-$$"
    ));
    let out = stdout(&o);
    let err = stderr(&o);
    assert!(out.contains("rc=1"), "{out} {err}");
    assert!(out.contains("UNCHANGED"), "{out} {err}");
    assert!(
        err.contains("kernel rejected rule 'add rule inet istio-proxy-nat output tproxy ip to :9 meta mark set 4242 counter accept': Operation not supported (os error 95)"),
        "{err}"
    );
    assert_eq!(
        err.matches("kernel rejected").count(),
        1,
        "reported once: {err}"
    );
}

fn needs_only_net_admin() {
    let args = [
        "apply",
        "--native-nftables",
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-u",
        "1337",
        "--enable-ipv6",
        "true",
    ];
    let only = format!(
        "setpriv --bounding-set=-all,+net_admin --inh-caps=-all {} && nft list tables",
        mt(&args)
    );
    let o = in_netns(&only);
    assert!(o.status.success(), "with only NET_ADMIN: {}", stderr(&o));
    assert!(stdout(&o).contains("istio-proxy-mangle"), "{}", stdout(&o));

    let none = format!(
        "setpriv --bounding-set=-all --inh-caps=-all {}; echo rc=$?",
        mt(&args)
    );
    let o = in_netns(&none);
    let err = stderr(&o);
    assert!(!stdout(&o).contains("rc=0"), "{}", stdout(&o));
    assert!(
        err.contains("CAP_NET_ADMIN")
            && err.contains("securityContext")
            && err.contains("NET_ADMIN"),
        "{err}"
    );
}

fn tproxy_routing_is_idempotent_and_cleaned() {
    let apply = mt(&[
        "apply",
        "--native-nftables",
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-u",
        "1337",
        "--enable-ipv6",
        "true",
    ]);
    let clean = mt(&["clean", "--native-nftables"]);
    let o = in_netns(&format!(
        "{apply} && {apply} && ip -4 rule | grep -c 'fwmark 0x539 lookup 133'; ip -6 rule | grep -c 'fwmark 0x539 lookup 133'; ip -4 route show table 133; ip -6 route show table 133; ip -6 addr show dev lo | grep -c '::6/128'; echo ---; {clean}; ip -4 rule | grep -c fwmark; ip -6 rule | grep -c fwmark; ip -4 route show table 133 | wc -l; ip -6 addr show dev lo | grep -c '::6/128'"
    ));
    let out = stdout(&o);
    let (before, after) = out
        .split_once("---\n")
        .unwrap_or_else(|| panic!("{out} {}", stderr(&o)));
    let b: Vec<&str> = before.lines().collect();
    assert_eq!(b[0], "1", "one IPv4 rule after two applies: {out}");
    assert_eq!(b[1], "1", "one IPv6 rule after two applies: {out}");
    assert!(b[2].starts_with("local default dev lo"), "{out}");
    assert!(b[3].starts_with("local default dev lo"), "{out}");
    assert_eq!(b[4], "1", "::6 on lo: {out}");
    assert_eq!(
        after.lines().collect::<Vec<_>>(),
        ["0", "0", "0", "0"],
        "{out}"
    );
}

fn large_batch_is_one_transaction() {
    let cidrs: Vec<String> = (0..5000)
        .map(|i| format!("10.{}.{}.0/24", 100 + i / 256, i % 256))
        .collect();
    let list = cidrs.join(",");
    let args = [
        "apply",
        "--native-nftables",
        "-i",
        "*",
        "-x",
        &list,
        "-u",
        "1337",
        "--enable-ipv6",
        "false",
    ];
    let o = in_netns(&format!(
        "{} && nft list chain inet istio-proxy-nat istio-output | grep -c 'ip daddr 10\\.'",
        mt(&args)
    ));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "5000", "every excluded CIDR installed");
}

fn an_unknown_group_name_is_refused_before_anything_changes() {
    let args = [
        "apply",
        "--native-nftables",
        "-u",
        "1337",
        "--enable-ipv6",
        "false",
        "--outbound-owner-groups",
        "java,no-such-group",
    ];
    let o = in_netns(&format!("{}; echo rc=$?; nft list ruleset", mt(&args)));
    assert_eq!(stdout(&o).trim_end(), "rc=1", "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--outbound-owner-groups")
            && err.contains("\"no-such-group\" is not in /etc/group"),
        "{err}"
    );
}

/// `ambient apply --native-nftables` with DNS and IPv6, and `extra`.
fn ambient(verb: &str, extra: &[&str]) -> String {
    let mut a = vec![
        "ambient",
        verb,
        "--native-nftables",
        "--ambient-ipv6",
        "--ambient-dns-capture",
    ];
    a.extend(extra);
    mt(&a)
}

/// Ambient reruns converge (one rule per family, the same ruleset), switching flags replaces
/// the tables in one transaction, and a clean leaves the namespace as it was: foreign tables,
/// a foreign `fwmark 0x111` rule (no mask: not ours) and another table's route stay.
fn ambient_reruns_converge_and_clean_removes_exactly_ours() {
    let foreign = "nft add table inet filter && nft add chain inet filter input '{ type filter hook input priority 0 ; }' && nft add rule inet filter input tcp dport 22 accept && ip rule add fwmark 0x111 lookup 101 pref 100 && ip route add local default dev lo table 101";
    let state = "{ nft list ruleset; ip -4 rule; ip -6 rule; ip -4 route show table all; ip -6 route show table all | grep -v '^ff00::/8\\|^fe80::/64'; }";
    let a = ambient("apply", &[]);
    let ingress = ambient(
        "apply",
        &["--bypass-inbound-capture", "--pod-dns-capture=false"],
    );
    let clean = mt(&["ambient", "clean"]);
    let script = format!(
        "set -e; {foreign}; {state} > /tmp/before-$$
        {a}; {state} > /tmp/a1-$$; {a}; {state} > /tmp/a2-$$
        cmp /tmp/a1-$$ /tmp/a2-$$ && echo SAME-ON-RERUN
        ip -4 rule | grep -c 'fwmark 0x111/0xfff lookup 100'; ip -6 rule | grep -c 'fwmark 0x111/0xfff lookup 100'
        {ingress}; nft list ruleset > /tmp/i-$$
        {clean}; {state} > /tmp/after-$$
        cmp /tmp/before-$$ /tmp/after-$$ && echo AS-BEFORE
        {clean} && echo SECOND-CLEAN-OK
        rm -f /tmp/*-$$"
    );
    let o = in_netns(&script);
    let out = stdout(&o);
    assert!(o.status.success(), "{out}\n{}", stderr(&o));
    assert!(out.contains("SAME-ON-RERUN\n1\n1\n"), "{out}");
    assert!(
        out.contains("AS-BEFORE") && out.contains("SECOND-CLEAN-OK"),
        "{out}"
    );
    let fresh = in_netns(&format!("{ingress} && nft list ruleset"));
    let over = in_netns(&format!("{a} && {ingress} && nft list ruleset"));
    assert_eq!(
        stdout(&fresh),
        stdout(&over),
        "nothing stale after switching flags"
    );
    assert!(
        !stdout(&over).contains("istio-ambient-raw"),
        "no DNS: the raw table went in the same transaction"
    );
}

/// `ambient check` names what differs: a rule deleted behind our back, the policy rule gone.
fn ambient_check_names_the_drift() {
    let a = ambient("apply", &[]);
    let c = ambient("check", &[]);
    let o = in_netns(&format!(
        "{a} && {c} && echo CHECK-OK; nft delete rule inet istio-ambient-nat istio-output handle $(nft -a list chain inet istio-ambient-nat istio-output | grep 'redirect to :15001' | head -1 | sed 's/.*handle //'); {c}; echo rc=$?; {a} --reconcile >/dev/null 2>&1; {a} && ip -6 rule del fwmark 0x111/0xfff lookup 100 pref 32764 && {c}; echo rc=$?"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.contains("CHECK-OK\nrc=1\nrc=1"), "{out} {err}");
    assert!(
        err.contains("chain inet istio-ambient-nat istio-output has"),
        "{err}"
    );
    assert!(
        err.contains("missing: ip -6 rule pref 32764 fwmark 0x111/0xfff lookup 100"),
        "{err}"
    );
}

/// Ambient's policy routing is a connmark's, not TPROXY's: `check` must not call its missing
/// route "TPROXY routing" (the backend names no scheme; routes.rs's errors already say
/// "policy routing", the drift message of backend/api.rs did not).
fn ambient_check_does_not_call_its_routing_tproxy() {
    let a = ambient("apply", &[]);
    let c = ambient("check", &[]);
    let o = in_netns(&format!(
        "{a} && ip -4 route del local default dev lo table 100 && {c}; echo rc=$?"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(out.ends_with("rc=1\n"), "{out} {err}");
    assert!(
        err.contains(
            "policy routing is not in place: missing: ip -4 route local default dev lo table 100"
        ),
        "{err}"
    );
    assert!(!err.contains("TPROXY"), "{err}");
}

/// A route of table 100 that is not ours fails the apply before anything changes;
/// `--reconcile` replaces it; a clean leaves it with a warning.
fn ambient_route_conflicts_are_refused() {
    let a = ambient("apply", &[]);
    let clean = mt(&["ambient", "clean"]);
    let o = in_netns(&format!(
        "ip route add unreachable default table 100; {a}; echo rc=$?; nft list tables | grep -c ambient; ip rule | grep -c 0x111; {a} --reconcile && ip route show table 100; {clean}; ip route add unreachable default table 100 && {a} --reconcile >/dev/null 2>&1; ip route add unreachable 10.0.0.0/8 table 100; {clean}; ip route show table 100"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..3], ["rc=1", "0", "0"], "{out} {err}");
    assert!(lines[3].starts_with("local default dev lo"), "{out}");
    assert!(
        err.contains("table 100 holds routes that are not ours"),
        "{err}"
    );
    assert!(
        out.trim_end().ends_with("unreachable 10.0.0.0/8"),
        "left in place: {out}"
    );
    assert!(err.contains("left in place (not ours)"), "{err}");
}

/// The sidecar's and ambient's objects are their own: each clean leaves the other's tables
/// and routing.
fn sidecar_and_ambient_clean_only_their_own() {
    let sidecar = mt(&[
        "apply",
        "--native-nftables",
        "-m",
        "TPROXY",
        "-b",
        "*",
        "-u",
        "1337",
        "--enable-ipv6",
        "true",
    ]);
    let a = ambient("apply", &[]);
    let o = in_netns(&format!(
        "{sidecar} && {a} && {} && nft list tables | tr '\\n' ' '; echo; ip rule | grep -c 'lookup 133'; ip -6 addr show dev lo | grep -c '::6/128'; {a} && {} && nft list tables | tr '\\n' ' '; echo; ip rule | grep -c 'lookup 100'",
        mt(&["ambient", "clean"]),
        mt(&["clean", "--native-nftables"])
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "table inet istio-proxy-nat table inet istio-proxy-mangle ",
            "1",
            "1",
            "table inet istio-ambient-nat table inet istio-ambient-mangle table inet istio-ambient-raw ",
            "1"
        ],
        "{out} {err}"
    );
}

/// IPv6 on, the pod's `lo` without IPv6: the rules of both families go in, the policy routing
/// for IPv4 only (as upstream), with a warning; check and clean agree.
fn ambient_loopback_without_ipv6() {
    let a = ambient("apply", &[]);
    let o = in_netns(&format!(
        "sysctl -q -w net.ipv6.conf.lo.disable_ipv6=1 && {a} && {} && ip -4 rule | grep -c 0x111; ip -6 rule | grep -c 0x111; nft list chain inet istio-ambient-nat istio-output | grep -c 'ip6 daddr'",
        ambient("check", &[])
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["1", "0", "4"],
        "{out} {err}"
    );
    assert!(
        err.contains("loopback interface has IPv6 disabled"),
        "{err}"
    );
}

/// `meshtables ambient host VERB --native-nftables --kubelet-uid 1000 --ambient-ipv6 ...`.
fn host(verb: &str, extra: &[&str]) -> String {
    let mut a = vec!["ambient", "host", verb, "--native-nftables"];
    if !matches!(verb, "add-pod" | "remove-pod") {
        a.extend(["--kubelet-uid", "1000"]);
    }
    a.push("--ambient-ipv6");
    a.extend(extra);
    mt(&a)
}

const POD_A: &str = "0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a2b";
const POD_B: &str = "1b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a2b";

/// The in-pod rules run by mistake in the node's namespace, where `inet istio-ambient-nat` is
/// the node's table with the probe sets: `ambient clean` and `ambient apply --reconcile` exit
/// 1 naming the set and leave the ruleset byte-identical, members and all (found by the
/// ambient break run: the clean deleted the node's table, the apply replaced it, exit 0).
fn in_pod_rules_leave_the_nodes_table() {
    let apply = host("apply", &[]);
    let add = host("add-pod", &["--pod-uid", POD_A, "--pod-ip", "10.244.1.7"]);
    let clean = mt(&["ambient", "clean"]);
    let in_pod = mt(&["ambient", "apply", "--native-nftables", "--reconcile"]);
    let o = in_netns(&format!(
        "{apply} 2>/dev/null && {add} 2>/dev/null && nft list ruleset > /tmp/node-$$; {clean}; echo rc=$?; {in_pod}; echo rc=$?; nft list ruleset | cmp - /tmp/node-$$ && echo UNCHANGED; grep -c 10.244.1.7 /tmp/node-$$; rm -f /tmp/node-$$"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(out, "rc=1\nrc=1\nUNCHANGED\n1\n", "{err}");
    assert!(
        err.contains("not ours, left in place (nothing was changed): set inet istio-ambient-nat istio-inpod-probes-v4"),
        "{err}"
    );
}

/// The node's rules over netlink equal `nft -f` of the trace upstream's start writes (its
/// sets' transaction, then the golden's rules transaction), as text and bytecode.
fn host_netlink_equals_nft_f(v6: bool) {
    let v6flag = format!("--ambient-ipv6={v6}");
    let args = [
        "ambient",
        "host",
        "apply",
        "--native-nftables",
        "--kubelet-uid",
        "1000",
        &v6flag,
    ];
    let list = "nft list ruleset; echo ===; nft --debug=netlink list ruleset | sed -E 's/^(inet [a-z-]+ [a-z-]+)( [0-9]+)+$/\\1/'";
    let a = in_netns(&format!("{} 2>/dev/null && {{ {list}; }}", mt(&args)));
    assert!(a.status.success(), "netlink: {}", stderr(&a));
    let mut dry: Vec<&str> = args.to_vec();
    dry.push("--dry-run");
    let b = in_netns(&format!(
        "DRY_RUN_FILE_PATH=/tmp/mt-$$.nft {} >/dev/null && nft -f /tmp/mt-$$.nft; rc=$?; rm -f /tmp/mt-$$.nft; [ $rc = 0 ] && {{ {list}; }}",
        mt(&dry)
    ));
    assert!(b.status.success(), "nft -f: {}", stderr(&b));
    let (a, b) = (stdout(&a), stdout(&b));
    assert!(a.contains("snat ip to 169.254.7.127"), "{a}");
    assert!(a == b, "rulesets differ\n{}", support::diff(&b, &a));
}

/// Reruns converge and keep the sets' members; a flush behind our back (a firewalld reload,
/// istio/istio#60607) is what `check` finds, and `apply` puts the rules back with the members
/// still in; a clean removes the table, and a second clean has nothing to do.
fn host_reruns_keep_members_and_check_finds_a_flush() {
    let (a, c) = (host("apply", &[]), host("check", &[]));
    let add = host(
        "add-pod",
        &["--pod-uid", POD_A, "--pod-ip", "10.244.1.7,fd00::7"],
    );
    let clean = mt(&["ambient", "host", "clean", "--native-nftables"]);
    let o = in_netns(&format!(
        "set -e; {a} 2>/dev/null; {add} 2>/dev/null; nft list ruleset > /tmp/h1-$$; {a} 2>/dev/null; nft list ruleset > /tmp/h2-$$
        cmp /tmp/h1-$$ /tmp/h2-$$ && echo SAME-ON-RERUN; {c} 2>/dev/null && echo CHECK-OK
        nft flush table inet istio-ambient-nat; ! {c}; echo FOUND-FLUSH
        {a} 2>/dev/null; {c} 2>/dev/null && echo REPAIRED; nft list ruleset > /tmp/h3-$$; cmp /tmp/h1-$$ /tmp/h3-$$ && echo AS-BEFORE
        {clean} 2>/dev/null; nft list tables | grep -c istio || true; {clean} 2>/dev/null && echo SECOND-CLEAN-OK; rm -f /tmp/h?-$$"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    assert_eq!(
        out, "SAME-ON-RERUN\nCHECK-OK\nFOUND-FLUSH\nREPAIRED\nAS-BEFORE\n0\nSECOND-CLEAN-OK\n",
        "{err}"
    );
    assert!(
        err.contains("chain inet istio-ambient-nat postrouting has 0 rules, expected 2"),
        "{err}"
    );
}

/// A member is its pod's: an add by another pod takes the address over (upstream's upsert), a
/// remove by the old pod leaves it, a remove by its pod takes it out.
fn host_members_are_their_pods() {
    let a = host("apply", &[]);
    let member = |verb: &str, pod: &str, ip: &str| host(verb, &["--pod-uid", pod, "--pod-ip", ip]);
    let list =
        "nft list set inet istio-ambient-nat istio-inpod-probes-v4 | grep elements || echo none";
    let o = in_netns(&format!(
        "set -e; {a} 2>/dev/null; {} 2>/dev/null; {list}; {} 2>/dev/null; {list}; {}; {list}; {} 2>/dev/null; {list}",
        member("add-pod", POD_A, "10.244.1.7"),
        member("add-pod", POD_B, "10.244.1.7"),
        member("remove-pod", POD_A, "10.244.1.7"),
        member("remove-pod", POD_B, "10.244.1.7"),
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert!(o.status.success(), "{out}\n{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            format!("elements = {{ 10.244.1.7 comment \"{POD_A}\" }}").as_str(),
            &format!("elements = {{ 10.244.1.7 comment \"{POD_B}\" }}"),
            &format!("elements = {{ 10.244.1.7 comment \"{POD_B}\" }}"),
            "none",
        ],
        "{err}"
    );
    assert!(
        err.contains(&format!("it is pod {POD_B}'s, not pod {POD_A}'s")),
        "{err}"
    );
}

/// What is not ours in the host's table stops an apply, a clean and a member change, and
/// nothing changes: a chain of another's, a set of another's, an element without a comment.
fn host_foreign_objects_are_conflicts() {
    let a = host("apply", &[]);
    let clean = mt(&["ambient", "host", "clean", "--native-nftables"]);
    let rm = host(
        "remove-pod",
        &["--pod-uid", POD_A, "--pod-ip", "10.244.1.9"],
    );
    let o = in_netns(&format!(
        "{a} 2>/dev/null; nft list ruleset > /tmp/f0-$$
        nft add chain inet istio-ambient-nat theirs; nft list ruleset > /tmp/f1-$$; {a}; echo rc=$?; {clean}; echo rc=$?; nft list ruleset | cmp - /tmp/f1-$$ && echo UNCHANGED
        nft delete chain inet istio-ambient-nat theirs; nft add set inet istio-ambient-nat theirs '{{ type ipv4_addr ; }}'; {clean}; echo rc=$?; nft delete set inet istio-ambient-nat theirs
        nft add element inet istio-ambient-nat istio-inpod-probes-v4 '{{ 10.244.1.9 }}'; {rm}; echo rc=$?; nft list set inet istio-ambient-nat istio-inpod-probes-v4 | grep -c 10.244.1.9; rm -f /tmp/f?-$$"
    ));
    let (out, err) = (stdout(&o), stderr(&o));
    assert_eq!(out, "rc=1\nrc=1\nUNCHANGED\nrc=1\nrc=1\n1\n", "{err}");
    assert!(err.contains("chain inet istio-ambient-nat theirs"), "{err}");
    assert!(err.contains("set inet istio-ambient-nat theirs"), "{err}");
    assert!(err.contains("element 10.244.1.9 of set"), "{err}");
}

/// Twenty pods added at once (the agent's CNI events and informer race): every member lands,
/// each with its pod's UID.
fn host_concurrent_add_pods_all_land() {
    let a = host("apply", &[]);
    let mut adds = String::new();
    for i in 10..30 {
        let uid = format!("0b0d8f5e-3c1a-4a47-9a51-2f6c1b7f1a{i}");
        let ip = format!("10.244.1.{i}");
        adds.push_str(&format!(
            "{} 2>/dev/null & ",
            host("add-pod", &["--pod-uid", &uid, "--pod-ip", &ip])
        ));
    }
    let o = in_netns(&format!(
        "{a} 2>/dev/null; {adds} wait; nft list set inet istio-ambient-nat istio-inpod-probes-v4 | grep -o 'comment \"0b0d[^\"]*\"' | sort -u | wc -l"
    ));
    assert_eq!(stdout(&o).trim(), "20", "{}", stderr(&o));
}

fn main() {
    let mut t = Trials::new();
    for v6 in [false, true] {
        let name = if v6 { "hostprobe_ipv6" } else { "hostprobe" };
        t.add(
            format!("netlink_equals_nft_f::ambient-host-{name}"),
            NEEDS,
            move || host_netlink_equals_nft_f(v6),
        );
    }
    let host_trials: [(&str, fn()); 4] = [
        (
            "ambient::host::concurrent_add_pods_all_land",
            host_concurrent_add_pods_all_land,
        ),
        (
            "ambient::host::reruns_keep_members_and_check_finds_a_flush",
            host_reruns_keep_members_and_check_finds_a_flush,
        ),
        (
            "ambient::host::members_are_their_pods",
            host_members_are_their_pods,
        ),
        (
            "ambient::host::foreign_objects_are_conflicts",
            host_foreign_objects_are_conflicts,
        ),
    ];
    for (name, f) in host_trials {
        t.add(name, NEEDS, f);
    }
    for (name, args) in configurations() {
        t.add(format!("netlink_equals_nft_f::{name}"), NEEDS, move || {
            netlink_equals_nft_f(&name, &args)
        });
    }
    for name in upstream_names_of(Dialect::Nftables) {
        let trial = format!("netlink_equals_nft_f::upstream-{name}");
        t.add(trial, NEEDS.and_shared(), move || {
            netlink_equals_nft_f(&name, &upstream_configuration(&name))
        });
    }
    let tests: [(&str, fn()); 6] = [
        (
            "reruns_converge_and_clean_leaves_foreign_tables_untouched",
            reruns_converge_and_clean_leaves_foreign_tables_untouched,
        ),
        (
            "rejected_batch_changes_nothing_and_names_the_rule",
            rejected_batch_changes_nothing_and_names_the_rule,
        ),
        (
            "tproxy_routing_is_idempotent_and_cleaned",
            tproxy_routing_is_idempotent_and_cleaned,
        ),
        (
            "large_batch_is_one_transaction",
            large_batch_is_one_transaction,
        ),
        (
            "an_unknown_group_name_is_refused_before_anything_changes",
            an_unknown_group_name_is_refused_before_anything_changes,
        ),
        ("needs_only_net_admin", needs_only_net_admin),
    ];
    let ambient: [(&str, fn()); 7] = [
        (
            "ambient::in_pod_rules_leave_the_nodes_table",
            in_pod_rules_leave_the_nodes_table,
        ),
        (
            "ambient::check_does_not_call_its_routing_tproxy",
            ambient_check_does_not_call_its_routing_tproxy,
        ),
        (
            "ambient::reruns_converge_and_clean_removes_exactly_ours",
            ambient_reruns_converge_and_clean_removes_exactly_ours,
        ),
        (
            "ambient::check_names_the_drift",
            ambient_check_names_the_drift,
        ),
        (
            "ambient::route_conflicts_are_refused",
            ambient_route_conflicts_are_refused,
        ),
        (
            "ambient::sidecar_and_ambient_clean_only_their_own",
            sidecar_and_ambient_clean_only_their_own,
        ),
        (
            "ambient::loopback_without_ipv6",
            ambient_loopback_without_ipv6,
        ),
    ];
    for (name, f) in tests.into_iter().chain(ambient) {
        let needs = if name == "needs_only_net_admin" {
            root(&["nft", "unshare", "ip", "setpriv"])
        } else {
            NEEDS
        };
        t.add(name, needs, f);
    }
    // Our 10 configurations, ambient's, 2 of hostile interface names, upstream's nftables
    // cases, 6 tests of their own and 7 of ambient's.
    let equal = 10 + AMBIENT_CONFIGURATIONS + 2 + UPSTREAM_NFTABLES;
    // And the node's rules: 2 equal to nft -f, 4 of their own.
    t.declare(
        equal + 2 + 6 + 7 + 4,
        &[("netlink_equals_nft_f", equal + 2), ("ambient", 7 + 4)],
    );
    t.run()
}
