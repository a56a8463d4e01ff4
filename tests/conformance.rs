//! Upstream conformance: every case of `../shared/istio/cases.json` run through the built
//! binary, its output compared with Istio's golden (trimmed, as upstream's tests compare).

mod support;

use support::{command, diff, shared_dir, upstream_cases};

#[test]
fn upstream_goldens_reproduced() {
    let Some(cases) = upstream_cases() else {
        return;
    };
    let istio = shared_dir().unwrap().join("istio");
    assert_eq!(cases.len(), 55, "cases.json should hold 55 cases");
    let tmp = std::env::temp_dir().join(format!("meshtables-conf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let trace = tmp.join(format!("trace-{n}"));
        let mut cmd = command(&case.args(), &case.env());
        if case.trace {
            cmd.env("DRY_RUN_FILE_PATH", &trace);
        }
        let out = cmd.output().unwrap();
        let got = if case.trace {
            std::fs::read_to_string(&trace).unwrap_or_default()
        } else {
            String::from_utf8(out.stdout).unwrap()
        };
        let want = std::fs::read_to_string(istio.join(&case.golden)).unwrap();
        if !out.status.success() || got.trim() != want.trim() {
            failures.push(format!(
                "{} ({}): status {:?}, stderr {}\n{}",
                case.name,
                case.golden,
                out.status.code(),
                String::from_utf8_lossy(&out.stderr),
                diff(want.trim(), got.trim())
            ));
        }
    }
    std::fs::remove_dir_all(&tmp).ok();
    println!(
        "{} passed, {} failed",
        cases.len() - failures.len(),
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
