//! Upstream conformance: each case of `../shared/istio/cases.json` (55) is a trial of its own,
//! run through the built binary, its output compared with Istio's golden (trimmed, as
//! upstream's tests compare). Without ../shared the suite is one ignored trial saying so
//! (failed under CI=true).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use support::trials::{SHARED, Trials};
use support::{UpstreamCase, command, diff, shared_path, upstream_cases};

fn reproduce(case: &UpstreamCase, n: usize) {
    let istio = shared_path().expect("checked by the trial").join("istio");
    let trace = std::env::temp_dir().join(format!("meshtables-conf-{}-{n}", std::process::id()));
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

fn main() {
    let mut t = Trials::new();
    match shared_path().and_then(|_| upstream_cases()) {
        Some(cases) => {
            t.add("upstream::cases_json_holds_55_cases", SHARED, {
                let n = cases.len();
                move || assert_eq!(n, 55, "cases.json should hold 55 cases")
            });
            for (n, case) in cases.into_iter().enumerate() {
                t.add(format!("upstream::{}", case.name), SHARED, move || {
                    reproduce(&case, n)
                });
            }
        }
        None => t.add("upstream::goldens", SHARED, || {}),
    }
    t.run()
}
