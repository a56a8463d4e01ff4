//! The rendered text is valid input for the real tools on a real kernel: every nftables
//! transaction loads with `nft -f`, and every restore text with both `iptables-legacy-restore`
//! and `iptables-nft-restore` (and the ip6tables twins), each in a throwaway network namespace
//! with the tests' own /etc/group (so upstream's `skgid java` resolves). Covers upstream's
//! cases and the project's golden scenarios; each file or case × tool is a trial of its own.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use support::trials::{Needs, Trials, root};
use support::{command, shared_path, upstream_cases};

const NFT: Needs = root(&["nft", "unshare"]);
const RESTORE: Needs = root(&[
    "iptables-legacy-restore",
    "iptables-nft-restore",
    "ip6tables-legacy-restore",
    "ip6tables-nft-restore",
    "unshare",
]);

/// Loads `text` with `tool args...` in a fresh netns.
fn load(text: &str, tool: &str, args: &[&str]) {
    let mut child = support::unshare_hermetic()
        .arg(tool)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool} refused it: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Splits dry-run stdout into (IPv6?, restore text) blocks at the `# IPv4` / `# IPv6` header
/// lines.
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
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    // Files only: `ambient/` holds upstream's ambient goldens, which tests/ambient.rs loads.
    v.retain(|p| p.is_file() && p.to_str().is_some_and(&keep));
    v.sort();
    v
}

fn own_goldens() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The restore outputs to load: our goldens, and the dry-run output of every upstream
/// iptables case.
fn restore_outputs() -> Vec<(String, String)> {
    let mut outputs: Vec<(String, String)> = Vec::new();
    let ours = golden_files(&own_goldens(), |p| {
        !p.contains(".nft.")
            && !p.contains(".trace.")
            && !p.contains(".json.")
            && !p.contains("clean")
            && !p.contains("tproxy-custom")
    });
    for f in ours {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        outputs.push((name, std::fs::read_to_string(&f).unwrap()));
    }
    for case in upstream_cases().unwrap_or_default() {
        if case.trace {
            let out = command(&case.args(), &case.env()).output().unwrap();
            assert!(out.status.success(), "{}", case.name);
            let text = String::from_utf8(out.stdout).unwrap();
            outputs.push((format!("upstream-{}", case.name), text));
        }
    }
    outputs
}

fn main() {
    let mut t = Trials::new();
    let mut nft = golden_files(&own_goldens(), |p| p.ends_with(".nft.golden"));
    if let Some(shared) = shared_path() {
        nft.extend(golden_files(&shared.join("istio/golden/nftables"), |p| {
            p.ends_with(".golden")
        }));
    }
    t.add("nft_goldens_found", support::trials::NOTHING, {
        let n = nft.len();
        move || assert!(n > 0, "no nftables golden found")
    });
    for f in nft {
        let dir = f
            .parent()
            .and_then(|d| d.file_name())
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        t.add(format!("nft_f_loads::{dir}/{name}"), NFT, move || {
            load(&std::fs::read_to_string(&f).unwrap(), "nft", &["-f", "-"])
        });
    }
    for (name, stdout) in restore_outputs() {
        for (v6, text) in blocks(&stdout) {
            for variant in ["legacy", "nft"] {
                let tool = format!(
                    "{}-{variant}-restore",
                    if v6 { "ip6tables" } else { "iptables" }
                );
                let text = text.clone();
                t.add(
                    format!("restore_loads::{name}::{tool}"),
                    RESTORE,
                    move || load(&text, &tool, &["--noflush"]),
                );
            }
        }
    }
    t.run()
}
