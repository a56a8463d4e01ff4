//! The project's own golden scenarios, for what upstream's goldens do not cover: TPROXY +
//! IPv6 + DNS + every list; owner groups; sloppy lists; capture-all DNS; clean-up dry runs;
//! host facts (resolv.conf, /etc/passwd, interface addresses); JSON. Each scenario is a trial of
//! its own, run in-process with a fake host and env map. `UPDATE_GOLDEN=1 cargo test --test
//! golden` rewrites the files.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::PathBuf;

use support::trials::{NOTHING, Trials};
use support::{FakeHost, diff, env, run_in_process};

struct Scenario {
    name: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    host: fn() -> FakeHost,
    /// Compare upstream's dry-run trace file instead of stdout.
    trace: bool,
}

fn injected() -> &'static [&'static str] {
    with(support::INJECTED, &["--dry-run"])
}
fn compact_lists() -> &'static [&'static str] {
    with(support::COMPACT_LISTS, &["--dry-run"])
}
fn compact_all_inbound() -> &'static [&'static str] {
    with(support::COMPACT_ALL_INBOUND, &["--dry-run"])
}
fn everything() -> &'static [&'static str] {
    with(support::EVERYTHING, &["-n"])
}

fn v4() -> FakeHost {
    FakeHost::v4_pod()
}
fn v6_only() -> FakeHost {
    FakeHost {
        addrs: vec![
            "::1".parse().unwrap(),
            "fe80::1".parse().unwrap(),
            "fd00:244::5".parse().unwrap(),
        ],
        ..FakeHost::default()
    }
}
fn with_files() -> FakeHost {
    let mut h = FakeHost::v4_pod();
    h.files.insert(
        "/etc/resolv.conf".into(),
        "search default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00:10:96::a\nnameserver bogus\noptions ndots:5\n".into(),
    );
    h.files.insert(
        "/etc/passwd".into(),
        "root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1500:1500::/home/istio-proxy:/bin/false\n"
            .into(),
    );
    h
}

fn with(args: &'static [&'static str], extra: &'static [&'static str]) -> &'static [&'static str] {
    Box::leak([args, extra].concat().into_boxed_slice())
}

fn scenarios() -> Vec<Scenario> {
    let s = |name, args, env, host, trace| Scenario {
        name,
        args,
        env,
        host,
        trace,
    };
    vec![
        s("compact-lists", compact_lists(), &[], v4, false),
        s(
            "compact-lists.nft",
            with(compact_lists(), &["--native-nftables"]),
            &[],
            v4,
            false,
        ),
        s(
            "compact-lists.json",
            with(compact_lists(), &["--native-nftables", "--output", "json"]),
            &[],
            v4,
            false,
        ),
        s("compact-all-inbound", compact_all_inbound(), &[], v4, false),
        s(
            "compact-all-inbound.nft",
            with(compact_all_inbound(), &["--native-nftables"]),
            &[],
            v4,
            false,
        ),
        s(
            "istio-injected",
            injected(),
            &[],
            v4 as fn() -> FakeHost,
            false,
        ),
        s(
            "istio-injected.nft",
            with(injected(), &["--native-nftables"]),
            &[],
            v4,
            false,
        ),
        s("istio-injected.trace", injected(), &[], v4, true),
        s("everything", everything(), &[], v4, false),
        s(
            "everything.nft",
            with(everything(), &["--native-nftables"]),
            &[],
            v4,
            false,
        ),
        s("everything.trace", everything(), &[], v4, true),
        s(
            "everything.json",
            with(everything(), &["--output", "json"]),
            &[],
            v4,
            false,
        ),
        s(
            "owner-groups-include",
            &[
                "apply",
                "-n",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "--outbound-owner-groups",
                "1000,daemon,2000",
            ],
            &[],
            v4,
            false,
        ),
        s(
            "owner-groups-include.nft",
            &[
                "apply",
                "-n",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "--outbound-owner-groups",
                "1000,daemon,2000",
                "--native-nftables",
            ],
            &[],
            v4,
            false,
        ),
        s(
            "owner-groups-exclude-env",
            &["apply", "-n", "-u", "1337", "--enable-ipv6", "false"],
            &[("OUTBOUND_OWNER_GROUPS_EXCLUDE", " 2000, 2001,,")],
            v4,
            false,
        ),
        s(
            "sloppy-lists",
            with(support::SLOPPY, &["-n"]),
            &[],
            v4,
            false,
        ),
        s(
            "sloppy-lists.nft",
            with(support::SLOPPY, &["-n", "--native-nftables"]),
            &[],
            v4,
            false,
        ),
        s(
            "capture-all-dns",
            &[
                "apply",
                "-n",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "--redirect-dns",
                "--capture-all-dns",
            ],
            &[],
            v4,
            false,
        ),
        s(
            "capture-all-dns.nft",
            &[
                "apply",
                "-n",
                "-u",
                "1337",
                "--enable-ipv6",
                "true",
                "--redirect-dns",
                "--capture-all-dns",
                "--native-nftables",
            ],
            &[],
            v4,
            false,
        ),
        s(
            "dns-from-env-and-resolv-conf",
            &["apply", "-n", "-u", "1337", "--enable-ipv6", "true"],
            &[("ISTIO_META_DNS_CAPTURE", "true")],
            with_files,
            false,
        ),
        s(
            "proxy-uid-from-passwd",
            &["apply", "-n", "--enable-ipv6", "false", "-b", "*"],
            &[],
            with_files,
            false,
        ),
        s(
            "ipv6-detected",
            &["apply", "-n", "-u", "1337", "-b", "*"],
            &[],
            v6_only,
            false,
        ),
        s(
            "clean-tproxy-dns",
            &[
                "clean",
                "-n",
                "-m",
                "TPROXY",
                "-u",
                "1337",
                "-b",
                "*",
                "--redirect-dns",
                "--dns-servers",
                "10.96.0.10",
                "--enable-ipv6",
                "true",
            ],
            &[],
            v4,
            false,
        ),
        s(
            "clean-tproxy-dns.trace",
            &[
                "istio-clean-iptables",
                "-n",
                "-m",
                "TPROXY",
                "-u",
                "1337",
                "-b",
                "*",
                "--redirect-dns",
                "--dns-servers",
                "10.96.0.10",
                "--enable-ipv6",
                "true",
            ],
            &[],
            v4,
            true,
        ),
        s(
            "clean.nft",
            &[
                "apply",
                "-n",
                "--cleanup-only",
                "--native-nftables",
                "-u",
                "1337",
                "--enable-ipv6",
                "false",
            ],
            &[],
            v4,
            false,
        ),
        s(
            "tproxy-custom-mark-table",
            &[
                "apply",
                "-n",
                "-m",
                "TPROXY",
                "-u",
                "1337",
                "-b",
                "*",
                "-t",
                "0x100",
                "-r",
                "200",
                "--enable-ipv6",
                "false",
                "--output",
                "json",
            ],
            &[],
            v4,
            false,
        ),
    ]
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Runs one scenario and compares its output with its golden file (or rewrites the file with
/// `UPDATE_GOLDEN=1`).
fn check(sc: &Scenario) {
    let trace_path = std::env::temp_dir().join(format!(
        "meshtables-golden-{}-{}",
        std::process::id(),
        sc.name
    ));
    let mut e = env(sc.env);
    if sc.trace {
        e.insert(
            "DRY_RUN_FILE_PATH".into(),
            trace_path.to_string_lossy().into(),
        );
    }
    let (code, stdout) = run_in_process(sc.args, &e, &(sc.host)());
    assert_eq!(code, 0, "{}: exit status {code}", sc.name);
    let got = if sc.trace {
        let t = std::fs::read_to_string(&trace_path).unwrap();
        let _ = std::fs::remove_file(&trace_path);
        t
    } else {
        stdout
    };
    let file = golden_dir().join(format!("{}.golden", sc.name));
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&file, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&file).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run UPDATE_GOLDEN=1 cargo test --test golden",
            file.display()
        )
    });
    assert!(
        want == got,
        "--- {} (- golden, + now)\n{}\nIf the change is intended: UPDATE_GOLDEN=1 cargo test --test golden",
        sc.name,
        diff(&want, &got)
    );
}

fn main() {
    let mut t = Trials::new();
    for sc in scenarios() {
        t.add(format!("golden::{}", sc.name), NOTHING, move || check(&sc));
    }
    // One trial per golden scenario (each its file in tests/golden).
    t.declare(26, &[("golden", 26)]);
    t.run()
}
