//! The rendered text is valid input for the real tools on a real kernel: every nftables
//! transaction loads with `nft -f`, and every restore text with both `iptables-legacy-restore`
//! and `iptables-nft-restore` (and the ip6tables twins), each in a throwaway network namespace
//! with the tests' own /etc/group (so upstream's `skgid java` resolves). Covers upstream's
//! cases (`tests/upstream-cases.txt`; they need `../shared`) and the project's golden
//! scenarios; each nftables file, and each restore output × variant (both families' blocks
//! with that variant's tools), is a trial of its own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use support::trials::{Needs, Trials, root};
use support::{
    Dialect, UPSTREAM_IPTABLES, UPSTREAM_NFTABLES, command, shared_path, upstream_case,
    upstream_names_of,
};

const VARIANTS: [&str; 2] = ["legacy", "nft"];

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
    // Files only: a directory (tests/golden/ambient, say) holds goldens of another suite.
    v.retain(|p| p.is_file() && p.to_str().is_some_and(&keep));
    v.sort();
    v
}

fn own_goldens() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// Our restore goldens: every iptables-restore text of `tests/golden`.
fn own_restore_goldens() -> Vec<PathBuf> {
    golden_files(&own_goldens(), |p| {
        !p.contains(".nft.")
            && !p.contains(".trace.")
            && !p.contains(".json.")
            && !p.contains("clean")
            && !p.contains("tproxy-custom")
    })
}

/// Loads every block of a dry run's stdout (`# IPv4` / `# IPv6` headers) with the `variant`
/// restore tool of its family.
fn restore_loads(stdout: &str, variant: &str) {
    let blocks = blocks(stdout);
    assert!(!blocks.is_empty(), "no restore block in:\n{stdout}");
    for (v6, text) in blocks {
        let tool = format!(
            "{}-{variant}-restore",
            if v6 { "ip6tables" } else { "iptables" }
        );
        load(&text, &tool, &["--noflush"]);
    }
}

/// The dry-run output of upstream's iptables case `name` (`../shared`'s args).
fn upstream_restore_output(name: &str) -> String {
    let case = upstream_case(Dialect::Iptables, name);
    let out = command(&case.args(), &case.env()).output().unwrap();
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn main() {
    let mut t = Trials::new();
    for f in golden_files(&own_goldens(), |p| p.ends_with(".nft.golden")) {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        t.add(format!("nft_f_loads::golden/{name}"), NFT, move || {
            load(&std::fs::read_to_string(&f).unwrap(), "nft", &["-f", "-"])
        });
    }
    for name in upstream_names_of(Dialect::Nftables) {
        t.add(
            format!("nft_f_loads::nftables/{name}.golden"),
            NFT.and_shared(),
            move || {
                let case = upstream_case(Dialect::Nftables, &name);
                let golden = shared_path().unwrap().join("istio").join(&case.golden);
                load(
                    &std::fs::read_to_string(golden).unwrap(),
                    "nft",
                    &["-f", "-"],
                )
            },
        );
    }
    for f in own_restore_goldens() {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        for variant in VARIANTS {
            let f = f.clone();
            t.add(
                format!("restore_loads::{name}::{variant}"),
                RESTORE,
                move || restore_loads(&std::fs::read_to_string(&f).unwrap(), variant),
            );
        }
    }
    for name in upstream_names_of(Dialect::Iptables) {
        for variant in VARIANTS {
            let name = name.clone();
            t.add(
                format!("restore_loads::upstream-{name}::{variant}"),
                RESTORE.and_shared(),
                move || restore_loads(&upstream_restore_output(&name), variant),
            );
        }
    }
    // Our 8 nftables goldens and 11 restore goldens (× 2 variants), and upstream's cases.
    t.declare(
        8 + UPSTREAM_NFTABLES + (11 + UPSTREAM_IPTABLES) * 2,
        &[
            ("nft_f_loads", 8 + UPSTREAM_NFTABLES),
            ("restore_loads", (11 + UPSTREAM_IPTABLES) * 2),
        ],
    );
    t.run()
}
