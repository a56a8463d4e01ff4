//! The rendered text is valid input for the real tools on a real kernel: every nftables
//! transaction loads with `nft -f`, and every restore text with both `iptables-legacy-restore`
//! and `iptables-nft-restore` (and the ip6tables twins), each in a throwaway network namespace
//! (`unshare -n`). Covers upstream's cases and the project's golden scenarios. Needs root.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use support::{command, require_program, require_root, shared_dir, upstream_cases};

/// Loads `text` with `tool args...` in a fresh netns (with the tests' own /etc/group, so
/// upstream's `skgid java` resolves); returns the error output on failure.
fn load(text: &str, tool: &str, args: &[&str]) -> Result<(), String> {
    let mut child = support::unshare_hermetic()
        .arg(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Splits dry-run stdout into (family label, restore text) blocks at the `# IPv4` / `# IPv6`
/// header lines.
fn blocks(stdout: &str) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            out.push((rest.starts_with("IPv6"), String::new()));
        } else if let Some((_, text)) = out.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    out
}

fn golden_files(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_str().is_some_and(&keep))
        .collect();
    v.sort();
    v
}

#[test]
fn nft_transactions_load() {
    if !require_root("loading nftables text into a namespace") || !require_program("nft") {
        return;
    }
    let mut files = golden_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
        |p| p.ends_with(".nft.golden"),
    );
    if let Some(shared) = shared_dir() {
        files.extend(golden_files(&shared.join("istio/golden/nftables"), |p| {
            p.ends_with(".golden")
        }));
    }
    let mut failures = Vec::new();
    let mut loaded = 0;
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        match load(&text, "nft", &["-f", "-"]) {
            Ok(()) => loaded += 1,
            Err(e) => failures.push(format!("{}: {e}", f.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every file found loaded; with ../shared there are upstream's 28 besides our own.
    assert!(!files.is_empty(), "no nftables golden found");
    assert_eq!(loaded, files.len());
    println!("{loaded} nftables transactions loaded with nft -f");
}

#[test]
fn restore_texts_load_with_both_variants() {
    if !require_root("loading iptables rules into a namespace") {
        return;
    }
    for p in [
        "iptables-legacy-restore",
        "iptables-nft-restore",
        "ip6tables-legacy-restore",
        "ip6tables-nft-restore",
    ] {
        if !require_program(p) {
            return;
        }
    }
    let mut outputs: Vec<(String, String)> = Vec::new();
    for f in golden_files(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden"),
        |p| {
            !p.contains(".nft.")
                && !p.contains(".trace.")
                && !p.contains(".json.")
                && !p.contains("clean")
                && !p.contains("tproxy-custom")
        },
    ) {
        outputs.push((
            f.display().to_string(),
            std::fs::read_to_string(&f).unwrap(),
        ));
    }
    for case in upstream_cases().unwrap_or_default() {
        if !case.trace {
            continue;
        }
        let out = command(&case.args(), &case.env()).output().unwrap();
        assert!(out.status.success());
        outputs.push((case.name.clone(), String::from_utf8(out.stdout).unwrap()));
    }
    let mut failures = Vec::new();
    let mut loaded = 0;
    let mut candidates = 0;
    for (name, stdout) in &outputs {
        for (v6, text) in blocks(stdout) {
            candidates += 2;
            for variant in ["legacy", "nft"] {
                let tool = format!(
                    "{}-{variant}-restore",
                    if v6 { "ip6tables" } else { "iptables" }
                );
                match load(&text, &tool, &["--noflush"]) {
                    Ok(()) => loaded += 1,
                    Err(e) => failures.push(format!("{name} with {tool}: {e}")),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every block of every output loaded with both variants.
    assert!(candidates > 0, "no restore text found");
    assert_eq!(loaded, candidates);
    println!("{loaded} restore texts loaded with iptables-legacy-restore and iptables-nft-restore");
}
