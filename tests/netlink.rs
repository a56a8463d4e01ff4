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

use support::trials::{Needs, Trials, root};
use support::{
    COMPACT_ALL_INBOUND, COMPACT_LISTS, Dialect, EVERYTHING, INJECTED, SLOPPY, UPSTREAM_NFTABLES,
    in_netns, mt, owned, stderr, stdout, upstream_case, upstream_names_of,
};

const NEEDS: Needs = root(&["nft", "unshare", "ip"]);

/// `nft list ruleset` (and, stricter, the bytecode with rule handles removed) after applying
/// `args` over netlink, and after `nft -f` of the same args' dry-run text.
fn both_ways(args: &[&str]) -> Result<(String, String), String> {
    let mut native: Vec<&str> = args.to_vec();
    native.push("--native-nftables");
    let list = "nft list ruleset; echo ===; nft --debug=netlink list ruleset | sed -E 's/^(inet [a-z-]+ [a-z-]+)( [0-9]+)+$/\\1/; s/__set[0-9]+/__set/g'";
    let a = in_netns(&format!("{} && {{ {list}; }}", mt(&native)));
    if !a.status.success() || !stdout(&a).contains("table inet istio-proxy-nat") {
        return Err(format!("netlink apply failed: {}", stderr(&a)));
    }
    let mut dry = native.clone();
    dry.push("--dry-run");
    let b = in_netns(&format!(
        "{} > /tmp/mt-$$.nft && nft -f /tmp/mt-$$.nft; rc=$?; rm -f /tmp/mt-$$.nft; [ $rc = 0 ] && {{ {list}; }}",
        mt(&dry)
    ));
    if !b.status.success() || !stdout(&b).contains("table inet istio-proxy-nat") {
        return Err(format!("nft -f failed: {}", stderr(&b)));
    }
    Ok((stdout(&a), stdout(&b)))
}

/// Our configurations compared with `nft -f` (upstream's nftables cases are added in `main`).
fn configurations() -> Vec<(String, Vec<String>)> {
    vec![
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
    ]
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
    match both_ways(&argv) {
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

fn main() {
    let mut t = Trials::new();
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
    for (name, f) in tests {
        let needs = if name == "needs_only_net_admin" {
            root(&["nft", "unshare", "ip", "setpriv"])
        } else {
            NEEDS
        };
        t.add(name, needs, f);
    }
    // Our 10 configurations, upstream's nftables cases, and 6 tests of their own.
    t.declare(
        10 + UPSTREAM_NFTABLES + 6,
        &[("netlink_equals_nft_f", 10 + UPSTREAM_NFTABLES)],
    );
    t.run()
}
