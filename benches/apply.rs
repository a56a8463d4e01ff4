//! Whole-process apply benchmark (root): each run is a fresh network namespace
//! (`unshare -n`), timed from spawn to exit; medians over interleaved rounds, so every tool
//! sees the same machine state. Compares `meshtables --native-nftables` with `nft -f` and
//! `iptables-nft-restore --noflush` loading the same rules (our dry-run text), and reports
//! what each adds over a bare `unshare -n true`.
//!
//! Run: `cargo bench --bench apply` (add `-- --rounds N` for more rounds).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bin() -> PathBuf {
    // cargo bench builds the binary in the same profile directory as this bench.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let b = dir.join("meshtables");
    assert!(b.exists(), "build the binary first: cargo build --release");
    b
}

fn time(cmd: &mut Command, stdin: Option<&Path>) -> Duration {
    if let Some(p) = stdin {
        cmd.stdin(File::open(p).unwrap());
    }
    cmd.stdout(Stdio::null()).stderr(Stdio::null());
    let t = Instant::now();
    let status = cmd.status().expect("spawn");
    let d = t.elapsed();
    assert!(status.success(), "{cmd:?} failed");
    d
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Scenario {
    name: String,
    args: Vec<String>,
}

fn main() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the apply benchmark creates network namespaces and needs root");
        return;
    }
    let rounds: usize = std::env::args()
        .skip_while(|a| a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(31);
    let b = bin();
    let tmp = std::env::temp_dir().join(format!("meshtables-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();

    let injected: Vec<String> = [
        "istio-iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        "",
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
        "--enable-ipv6",
        "false",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut scenarios = vec![Scenario {
        name: "Istio injected args".into(),
        args: injected.clone(),
    }];
    for n in [1_000usize, 10_000] {
        // One-digit octets keep 10,000 CIDRs under Linux's 128 KiB limit for one argument.
        let cidrs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "{}.{}.{}.{}/32",
                    i / 1000,
                    i / 100 % 10,
                    i / 10 % 10,
                    i % 10
                )
            })
            .collect();
        let mut args = injected.clone();
        let x = args.iter().position(|a| a == "-x").unwrap();
        args[x + 1] = cidrs.join(",");
        scenarios.push(Scenario {
            name: format!("{n} excluded CIDRs"),
            args,
        });
    }

    println!(
        "| scenario | unshare -n true | meshtables (netlink) | nft -f | iptables-nft-restore | meshtables added / nft -f added |"
    );
    println!("|---|---|---|---|---|---|");
    for sc in &scenarios {
        let nft_text = tmp.join("rules.nft");
        let ipt_text = tmp.join("rules.v4");
        let dry = |extra: &[&str], out: &Path| {
            let o = Command::new(&b)
                .args(&sc.args)
                .args(extra)
                .arg("--dry-run")
                .output()
                .unwrap();
            assert!(o.status.success());
            std::fs::write(out, o.stdout).unwrap();
        };
        dry(&["--native-nftables"], &nft_text);
        dry(&[], &ipt_text);

        let (mut base, mut mesh, mut nft, mut ipt) = (vec![], vec![], vec![], vec![]);
        for _ in 0..rounds {
            base.push(time(Command::new("unshare").args(["-n", "true"]), None));
            mesh.push(time(
                Command::new("unshare")
                    .args(["-n"])
                    .arg(&b)
                    .args(&sc.args)
                    .arg("--native-nftables"),
                None,
            ));
            nft.push(time(
                Command::new("unshare")
                    .args(["-n", "nft", "-f"])
                    .arg(&nft_text),
                None,
            ));
            ipt.push(time(
                Command::new("unshare").args(["-n", "iptables-nft-restore", "--noflush"]),
                Some(&ipt_text),
            ));
        }
        let (base, mesh, nft, ipt) = (median(base), median(mesh), median(nft), median(ipt));
        let added = |d: Duration| d.saturating_sub(base).as_secs_f64() * 1e3;
        let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
        println!(
            "| {} | {} | {} (+{:.2}) | {} (+{:.2}) | {} (+{:.2}) | {:.2} |",
            sc.name,
            ms(base),
            ms(mesh),
            added(mesh),
            ms(nft),
            added(nft),
            ms(ipt),
            added(ipt),
            added(mesh) / added(nft)
        );
    }
    println!("(medians of {rounds} interleaved rounds; each run a fresh network namespace)");
    std::fs::remove_dir_all(&tmp).ok();
}
