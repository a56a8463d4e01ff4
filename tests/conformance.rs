//! Upstream conformance: each of Istio's cases (27 istio-iptables, 28 istio-nftables; the list
//! is `tests/upstream-cases.txt`, their args and goldens `../shared/istio`) is a trial of its
//! own, run through the built binary, its output compared with Istio's golden (trimmed, as
//! upstream's tests compare). Without ../shared every trial is listed and ignored with the
//! reason (failed under CI=true). Two more: the committed list equals `cases.json`, and a
//! case passes with every variable meshtables reads set in the test's own environment.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use support::trials::{SHARED, Trials};
use support::{
    Dialect, UPSTREAM_IPTABLES, UPSTREAM_LIST, UPSTREAM_NFTABLES, command, diff, shared_path,
    upstream_case, upstream_cases, upstream_names,
};

fn reproduce(dialect: Dialect, name: &str) {
    let case = upstream_case(dialect, name);
    let istio = shared_path().expect("checked by the trial").join("istio");
    let trace = std::env::temp_dir().join(format!(
        "meshtables-conf-{}-{}-{name}",
        std::process::id(),
        dialect.name()
    ));
    let mut cmd = command(&case.args(), &case.env());
    if case.trace {
        cmd.env("DRY_RUN_FILE_PATH", &trace);
    }
    let out = cmd.output().unwrap();
    let got = if case.trace {
        let t = std::fs::read_to_string(&trace).unwrap_or_default();
        let _ = std::fs::remove_file(&trace);
        t
    } else {
        String::from_utf8(out.stdout).unwrap()
    };
    let want = std::fs::read_to_string(istio.join(&case.golden)).unwrap();
    assert!(
        out.status.success() && got.trim() == want.trim(),
        "{} ({}): status {:?}, stderr {}\n{}",
        case.name,
        case.golden,
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        diff(want.trim(), got.trim())
    );
}

/// `tests/upstream-cases.txt` lists exactly `cases.json`'s cases, in its order, each with the
/// dialect its args and its golden's directory both say. With `UPDATE_UPSTREAM_CASES=1` it is
/// rewritten from `cases.json` instead.
fn list_matches_cases_json() {
    let cases = upstream_cases();
    let mut lines = Vec::new();
    for c in &cases {
        let dir = format!("golden/{}/", c.dialect.name());
        assert!(
            c.golden.starts_with(&dir),
            "{}: its args say {} but its golden is {}",
            c.name,
            c.dialect.name(),
            c.golden
        );
        lines.push(format!("{} {}", c.dialect.name(), c.name));
    }
    let comments: String = UPSTREAM_LIST
        .lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    let want = format!("{comments}{}\n", lines.join("\n"));
    if std::env::var("UPDATE_UPSTREAM_CASES").is_ok_and(|v| v == "1") {
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/upstream-cases.txt");
        std::fs::write(file, &want).unwrap();
        return;
    }
    assert!(
        UPSTREAM_LIST == want,
        "tests/upstream-cases.txt differs from ../shared/istio/cases.json (- committed, + cases.json); refresh it with UPDATE_UPSTREAM_CASES=1 cargo test --test conformance upstream::list_matches_cases_json, then the counts in tests/support/mod.rs\n{}",
        diff(UPSTREAM_LIST, &want)
    );
}

fn main() {
    let mut t = Trials::new();
    t.add(
        "upstream::list_matches_cases_json",
        SHARED,
        list_matches_cases_json,
    );
    for (dialect, name) in upstream_names() {
        t.add(
            format!("upstream::{}::{name}", dialect.name()),
            SHARED,
            move || reproduce(dialect, &name),
        );
    }
    // One case of each dialect (upstream's trace file, and stdout), with lists `--compact`
    // would change, run with the test's own environment full of meshtables' variables: the
    // outcome must not change.
    for case in [
        "upstream::iptables::ipv6-inbound-ports",
        "upstream::nftables::ipv6-inbound-ports",
    ] {
        t.add(format!("env::polluted::{case}"), SHARED, move || {
            support::trial_passes_in_a_polluted_environment(case)
        });
    }
    t.declare(
        1 + UPSTREAM_IPTABLES + UPSTREAM_NFTABLES + 2,
        &[
            ("upstream::iptables", UPSTREAM_IPTABLES),
            ("upstream::nftables", UPSTREAM_NFTABLES),
            ("env::polluted", 2),
        ],
    );
    t.run()
}
