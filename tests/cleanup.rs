//! Every spelling of "clean" removes exactly what an apply installed, with every backend:
//! the `clean` subcommand, the `istio-clean-iptables` name (argv[0], as a symlink), upstream's
//! `istio-iptables --cleanup-only` and `CLEANUP_ONLY=true`. Each test runs in a fresh network
//! namespace holding foreign rules in every table and built-in chain an apply touches (both
//! iptables variants, both families), a foreign nftables table and a foreign policy route:
//!
//! 1. the clean, run before anything of ours exists, changes nothing;
//! 2. an apply (TPROXY, dual-stack, DNS, `-c`, `-k`: every kind of object we create) installs;
//! 3. the clean, with the same flags, leaves the namespace byte-identical to step 1's state.
//!
//! Plus: in a namespace with nothing at all, a clean creates nothing (no table, no chain); and a
//! clean removes what the *other* backend installed, whatever `--native-nftables` says.
//! Each spelling × backend is a trial of its own. Root; ignored with the reason without it,
//! failed under CI=true.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::PathBuf;

use support::trials::{Needs, Trials, root};
use support::{in_netns, mt, sh_quote, stderr, stdout};

const NEEDS: Needs = root(&[
    "nft",
    "ip",
    "iptables-legacy-save",
    "iptables-nft-save",
    "ip6tables-legacy-save",
    "ip6tables-nft-save",
]);

/// Everything a run could change, as text: both iptables variants and families (without
/// counters and comments), the nftables ruleset (without counter values), policy rules, every
/// routing table, and the addresses on `lo`.
const STATE: &str = r#"state() {
  for v in legacy nft; do for b in iptables ip6tables; do
    echo "== $b-$v"; $b-$v-save | grep -v '^#' | sed -E 's/ \[[0-9]+:[0-9]+\]//'
  done; done
  echo "== nft"; nft list ruleset | sed -E 's/counter packets [0-9]+ bytes [0-9]+/counter/'
  echo "== rules"; ip -4 rule; ip -6 rule
  echo "== routes"; ip -4 route show table all; ip -6 route show table all
  echo "== lo"; ip -6 addr show dev lo | grep inet6
}"#;

/// Foreign rules in every built-in chain an apply writes to, in both variants and families, a
/// foreign `inet filter` table, and a foreign fwmark rule with its route.
fn foreign() -> String {
    let mut s = String::new();
    for v in ["legacy", "nft"] {
        for b in ["iptables", "ip6tables"] {
            let x = format!("{b}-{v}");
            for rule in [
                "-t nat -N KUBE-SERVICES",
                "-t nat -A OUTPUT -j KUBE-SERVICES",
                "-t nat -A KUBE-SERVICES -p tcp --dport 80 -j RETURN",
                "-t nat -A PREROUTING -p tcp --dport 81 -j RETURN",
                "-A INPUT -p tcp --dport 22 -j ACCEPT",
                "-t mangle -A PREROUTING -i eth0 -j MARK --set-mark 7",
                "-t mangle -A OUTPUT -o lo -p tcp -m mark --mark 9 -j RETURN",
                "-t raw -A PREROUTING -p udp --dport 9 -j NOTRACK",
                "-t raw -A OUTPUT -p udp --dport 9 -j NOTRACK",
            ] {
                s.push_str(&format!("{x} {rule} && "));
            }
        }
    }
    s.push_str(
        "nft add table inet filter && nft add chain inet filter input '{ type filter hook input priority 0 ; }' && nft add rule inet filter input tcp dport 22 accept && \
         ip rule add fwmark 7 lookup 7 && ip route add local default dev lo table 7 && true",
    );
    s
}

/// Everything an apply can create: TPROXY (mangle, policy routing), both families (`::6` on
/// lo), DNS (raw), an excluded and a virtual interface (rules in built-in chains that carry
/// no trace of us but the flags).
const ARGS: &[&str] = &[
    "-p",
    "15001",
    "-z",
    "15006",
    "-u",
    "1337",
    "-m",
    "TPROXY",
    "-i",
    "*",
    "-b",
    "*",
    "-d",
    "15090,15021,15020",
    "--enable-ipv6",
    "true",
    "--redirect-dns",
    "--dns-servers",
    "10.96.0.10,fd00::a",
    "-c",
    "eth9",
    "-k",
    "virt0",
    "--drop-invalid",
];

/// How a backend is selected on the command line.
fn backend_args(backend: &str) -> &'static [&'static str] {
    match backend {
        "nftables" => &["--native-nftables"],
        "legacy" => &["--force-iptables-binary", "legacy"],
        "nft" => &["--force-iptables-binary", "nft"],
        other => panic!("unknown backend {other}"),
    }
}

/// A directory with `istio-clean-iptables` and `istio-iptables` links to the binary.
fn aliases() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshtables-aliases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["istio-clean-iptables", "istio-iptables"] {
        let link = dir.join(name);
        if !link.exists() {
            // Another test of this process may create it at the same moment.
            let _ = std::os::unix::fs::symlink(support::bin(), &link);
        }
    }
    dir
}

/// The shell command of one spelling of "clean", with `args`.
fn clean_command(spelling: &str, args: &[&str]) -> String {
    let quoted: Vec<String> = args.iter().map(|a| sh_quote(a)).collect();
    let args = quoted.join(" ");
    let alias = |name: &str| sh_quote(&aliases().join(name).display().to_string());
    match spelling {
        "clean" => format!("\"$B\" clean {args}"),
        "istio_clean_iptables" => format!("{} {args}", alias("istio-clean-iptables")),
        "cleanup_only_flag" => format!("{} {args} --cleanup-only", alias("istio-iptables")),
        "cleanup_only_env" => format!("CLEANUP_ONLY=true {} {args}", alias("istio-iptables")),
        other => panic!("unknown spelling {other}"),
    }
}

/// Steps 1-3 of the module comment for one spelling and backend.
fn clean_restores_the_state_before_apply(spelling: &str, backend: &str) {
    let args: Vec<&str> = ARGS.iter().chain(backend_args(backend)).copied().collect();
    let apply = mt(&[&["apply"], &args[..]].concat());
    let clean = clean_command(spelling, &args);
    let script = format!(
        "{STATE}
        {foreign} || exit 98
        state > /tmp/s0-$$
        {clean} || echo CLEAN-BEFORE-FAILED
        state | diff /tmp/s0-$$ - && echo UNCHANGED-BEFORE-APPLY
        {apply} || echo APPLY-FAILED
        state | diff -q /tmp/s0-$$ - >/dev/null || echo APPLY-CHANGED-STATE
        {clean} || echo CLEAN-FAILED
        state | diff /tmp/s0-$$ - && echo IDENTICAL-AFTER-CLEAN
        rm -f /tmp/s0-$$",
        foreign = foreign()
    );
    let o = in_netns(&script);
    let out = stdout(&o);
    let err = stderr(&o);
    for want in [
        "UNCHANGED-BEFORE-APPLY",
        "APPLY-CHANGED-STATE",
        "IDENTICAL-AFTER-CLEAN",
    ] {
        assert!(
            out.contains(want),
            "{spelling} with {backend}: no {want}\n{out}\n{err}"
        );
    }
    for bad in ["CLEAN-BEFORE-FAILED", "APPLY-FAILED", "CLEAN-FAILED"] {
        assert!(
            !out.contains(bad),
            "{spelling} with {backend}: {bad}\n{out}\n{err}"
        );
    }
}

/// In a namespace with nothing in it, every spelling with every backend creates nothing: no
/// table (legacy tables appear in `*-save` once loaded), no nftables table, no route.
fn clean_in_an_empty_namespace_creates_nothing(spelling: &str) {
    let mut script = format!("{STATE}\nstate > /tmp/e0-$$\n");
    for backend in ["nftables", "legacy", "nft"] {
        let args: Vec<&str> = ARGS.iter().chain(backend_args(backend)).copied().collect();
        script.push_str(&format!(
            "{} || echo FAILED-{backend}\n",
            clean_command(spelling, &args)
        ));
    }
    script.push_str("state | diff /tmp/e0-$$ - && echo NOTHING-CREATED; state | grep -c -e '^\\*' -e '^table' ; rm -f /tmp/e0-$$");
    let o = in_netns(&script);
    let out = stdout(&o);
    assert!(
        out.contains("NOTHING-CREATED\n0\n"),
        "{spelling}: {out}\n{}",
        stderr(&o)
    );
    assert!(
        !out.contains("FAILED-"),
        "{spelling}: {out}\n{}",
        stderr(&o)
    );
}

/// A clean removes what the other backend installed: `--native-nftables` does not limit it to
/// nftables tables, and `--force-iptables-binary` does not limit it to one variant. (Same flags
/// otherwise: iptables rules that carry no trace of us, the `-c`/`-k` RETURN rules in built-in
/// chains, are recognised by the flags that name them.)
fn clean_crosses_backends(installed_with: &str, cleaned_with: &str) {
    let apply_args: Vec<&str> = ARGS
        .iter()
        .chain(backend_args(installed_with))
        .copied()
        .collect();
    let apply = mt(&[&["apply"], &apply_args[..]].concat());
    let clean_args: Vec<&str> = ARGS
        .iter()
        .chain(backend_args(cleaned_with))
        .copied()
        .collect();
    let clean = mt(&[&["clean"], &clean_args[..]].concat());
    let o = in_netns(&format!(
        "{STATE}\n{foreign} || exit 98\nstate > /tmp/x0-$$\n{apply} || echo APPLY-FAILED\n{clean} || echo CLEAN-FAILED\nstate | diff /tmp/x0-$$ - && echo IDENTICAL\nrm -f /tmp/x0-$$",
        foreign = foreign()
    ));
    let out = stdout(&o);
    assert!(
        out.contains("IDENTICAL") && !out.contains("FAILED"),
        "installed with {installed_with}, cleaned with {cleaned_with}: {out}\n{}",
        stderr(&o)
    );
}

const SPELLINGS: [&str; 4] = [
    "clean",
    "istio_clean_iptables",
    "cleanup_only_flag",
    "cleanup_only_env",
];
const BACKENDS: [&str; 3] = ["nftables", "legacy", "nft"];

fn main() {
    let mut t = Trials::new();
    for spelling in SPELLINGS {
        for backend in BACKENDS {
            let b = if backend == "nftables" {
                backend.to_string()
            } else {
                format!("iptables_{backend}")
            };
            t.add(
                format!("restores_the_state_before_apply::{spelling}::{b}"),
                NEEDS,
                move || clean_restores_the_state_before_apply(spelling, backend),
            );
        }
        t.add(
            format!("creates_nothing_in_an_empty_namespace::{spelling}"),
            NEEDS,
            move || clean_in_an_empty_namespace_creates_nothing(spelling),
        );
    }
    for (installed, cleaned) in [
        ("nft", "nftables"),
        ("legacy", "nftables"),
        ("nftables", "legacy"),
        ("nft", "legacy"),
    ] {
        t.add(
            format!("crosses_backends::installed_with_{installed}::cleaned_with_{cleaned}"),
            NEEDS,
            move || clean_crosses_backends(installed, cleaned),
        );
    }
    // 4 spellings × 3 backends; 4 spellings in an empty namespace; 4 backend crossings.
    t.declare(
        4 * 3 + 4 + 4,
        &[
            ("restores_the_state_before_apply", 4 * 3),
            ("creates_nothing_in_an_empty_namespace", 4),
            ("crosses_backends", 4),
        ],
    );
    t.run()
}
