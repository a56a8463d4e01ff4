//! Upstream conformance: every case of `../shared/istio/cases.json` run through the built
//! binary, its output compared with Istio's golden (trimmed, as upstream's tests compare).

mod support;

use support::{command, diff, shared_dir};

#[test]
fn upstream_goldens_reproduced() {
    let Some(shared) = shared_dir() else { return };
    let istio = shared.join("istio");
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(istio.join("cases.json")).unwrap()).unwrap();
    let cases = cases["cases"].as_array().expect("cases array");
    assert_eq!(cases.len(), 55, "cases.json should hold 55 cases");
    let tmp = std::env::temp_dir().join(format!("meshtables-conf-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let golden = case["golden"].as_str().unwrap();
        let args: Vec<&str> = case["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        let env: Vec<(&str, &str)> = case["env"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str().unwrap()))
            .collect();
        let trace = tmp.join(format!("trace-{n}"));
        let mut cmd = command(&args, &env);
        let file_output = case["output"] == "dry-run-file";
        if file_output {
            cmd.env("DRY_RUN_FILE_PATH", &trace);
        }
        let out = cmd.output().unwrap();
        let got = if file_output {
            std::fs::read_to_string(&trace).unwrap_or_default()
        } else {
            String::from_utf8(out.stdout).unwrap()
        };
        let want = std::fs::read_to_string(istio.join(golden)).unwrap();
        if !out.status.success() || got.trim() != want.trim() {
            failures.push(format!(
                "{name} ({golden}): status {:?}, stderr {}\n{}",
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
