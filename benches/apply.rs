//! Whole-process apply benchmark (root). Every run happens in a fresh network namespace: the
//! bench re-executes itself under `unshare -n`, brings `lo` up there (as a pod's runtime does;
//! TPROXY routing needs it), then times the tool's processes from spawn to exit and reads their
//! peak RSS. Tools run interleaved, round after round, so each sees the same machine state;
//! the tables give medians.
//!
//! Tools, all loading the same rules (meshtables' dry-run text):
//! - `meshtables --native-nftables` (one netlink transaction);
//! - `meshtables` with its iptables backend (detection as upstream, iptables-nft chosen);
//! - `nft -f` of the nftables text;
//! - `iptables-nft-restore` and `iptables-legacy-restore --noflush` of the restore text
//!   (each family);
//! - the sequence of processes upstream's istio-iptables execs for one apply (docs/upstream.md, "Applying with iptables"):
//!   legacy then nft detection probes (`-save`, `-save --version`, the nat-table probe rule
//!   added and deleted) for both families, `-save` of both families, the restore(s), and the
//!   final `-save`(s). Upstream's own Go process start-up is not counted, which favours it.
//!
//! Run: `cargo bench --bench apply` (`-- --rounds N` for more rounds, default 21; the 10,000
//! CIDR scenario runs a third as many).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// One process of a tool's run: argv, and a file for stdin.
#[derive(Serialize, Deserialize, Clone)]
struct Step {
    argv: Vec<String>,
    stdin: Option<PathBuf>,
}

/// What a tool's run measured inside the namespace.
struct Measure {
    elapsed: Duration,
    max_rss_kb: i64,
}

fn bin() -> PathBuf {
    // cargo bench builds the binary in the same profile directory as this bench.
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let b = dir.join("meshtables");
    assert!(b.exists(), "build the binary first: cargo build --release");
    b
}

/// Child mode: inside the fresh namespace, `lo` up, then the steps, timed.
fn in_netns(job: &Path) -> ! {
    let steps: Vec<Step> = serde_json::from_slice(&std::fs::read(job).unwrap()).unwrap();
    lo_up();
    let start = Instant::now();
    for s in &steps {
        let mut c = Command::new(&s.argv[0]);
        c.args(&s.argv[1..])
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(p) = &s.stdin {
            c.stdin(std::fs::File::open(p).unwrap());
        }
        let o = c.output().expect("spawn");
        if !o.status.success() {
            eprintln!("{:?}: {}", s.argv, String::from_utf8_lossy(&o.stderr));
            std::process::exit(1);
        }
    }
    let elapsed = start.elapsed();
    let rss = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .unwrap()
        .max_rss();
    println!("{} {rss}", elapsed.as_nanos());
    std::process::exit(0);
}

/// `ip link set lo up` over rtnetlink, without spawning a process (it would count in RSS).
fn lo_up() {
    use netlink_packet_core::{
        NLM_F_ACK, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
    };
    use netlink_packet_route::RouteNetlinkMessage;
    use netlink_packet_route::link::{LinkFlags, LinkMessage};
    let mut link = LinkMessage::default();
    link.header.index = 1;
    link.header.flags = LinkFlags::Up;
    link.header.change_mask = LinkFlags::Up;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    let mut msg = NetlinkMessage::new(
        header,
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(link)),
    );
    msg.finalize();
    let mut buf = vec![0; msg.buffer_len()];
    msg.serialize(&mut buf);
    let mut sock = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_ROUTE).unwrap();
    sock.bind_auto().unwrap();
    sock.connect(&netlink_sys::SocketAddr::new(0, 0)).unwrap();
    sock.send(&buf, 0).unwrap();
    let mut reply = vec![0u8; 4096];
    sock.recv(&mut &mut reply[..], 0).unwrap();
}

/// Runs `steps` once in a fresh namespace.
fn measure(steps: &[Step], job: &Path) -> Measure {
    std::fs::write(job, serde_json::to_vec(steps).unwrap()).unwrap();
    let o = Command::new("unshare")
        .arg("-n")
        .arg(std::env::current_exe().unwrap())
        .arg("--in-netns")
        .arg(job)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8(o.stdout).unwrap();
    let mut f = out.split_whitespace();
    Measure {
        elapsed: Duration::from_nanos(f.next().unwrap().parse().unwrap()),
        max_rss_kb: f.next().unwrap().parse().unwrap(),
    }
}

fn step(argv: &[&str], stdin: Option<&Path>) -> Step {
    Step {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        stdin: stdin.map(Path::to_path_buf),
    }
}

/// Upstream's processes for one apply into a fresh namespace (docs/upstream.md, "Applying with iptables"): legacy is
/// usable but holds no rules, so nft is chosen; IPv6 is detected and verified even when off.
fn upstream_sequence(v4: &Path, v6: Option<&Path>) -> Vec<Step> {
    let mut s = Vec::new();
    for fam in ["iptables", "ip6tables"] {
        for (variant, wait) in [("legacy", Some("--wait=30")), ("nft", None)] {
            let bin = format!("{fam}-{variant}");
            let save = format!("{bin}-save");
            s.push(step(&[&save], None));
            s.push(step(&[&save, "--version"], None));
            for op in ["-A", "-D"] {
                let mut argv = vec![
                    bin.as_str(),
                    "-t",
                    "nat",
                    op,
                    "INPUT",
                    "-p",
                    "255",
                    "-j",
                    "RETURN",
                ];
                argv.extend(wait);
                s.push(step(&argv, None));
            }
        }
    }
    s.push(step(&["iptables-nft-save"], None));
    s.push(step(&["ip6tables-nft-save"], None));
    s.push(step(&["iptables-nft-restore", "--noflush"], Some(v4)));
    if let Some(v6) = v6 {
        s.push(step(&["ip6tables-nft-restore", "--noflush"], Some(v6)));
    }
    s.push(step(&["iptables-nft-save"], None));
    if v6.is_some() {
        s.push(step(&["ip6tables-nft-save"], None));
    }
    s
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

struct Scenario {
    name: String,
    args: Vec<String>,
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn scenarios() -> Vec<Scenario> {
    let injected = owned(&[
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
    ]);
    // Istio's args with TPROXY inbound, DNS capture and IPv6 (last flag wins, as in pflag).
    let mut tproxy = injected.clone();
    tproxy.extend(owned(&[
        "-m",
        "TPROXY",
        "--redirect-dns",
        "--dns-servers",
        "10.96.0.10,fd00::a",
        "--enable-ipv6",
        "true",
    ]));
    let mut out = vec![
        Scenario {
            name: "Istio injected args".into(),
            args: injected.clone(),
        },
        Scenario {
            name: "TPROXY + DNS + IPv6".into(),
            args: tproxy,
        },
    ];
    for n in [100usize, 1_000, 10_000] {
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
        out.push(Scenario {
            name: format!("{n} excluded CIDRs"),
            args,
        });
    }
    out
}

const TOOLS: [&str; 7] = [
    "true",
    "meshtables netlink",
    "meshtables iptables",
    "nft -f",
    "iptables-nft-restore",
    "iptables-legacy-restore",
    "upstream sequence",
];

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--in-netns") {
        in_netns(Path::new(&args[i + 1]));
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the apply benchmark creates network namespaces and needs root");
        return;
    }
    let rounds: usize = args
        .iter()
        .skip_while(|a| *a != "--rounds")
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let b = bin();
    let tmp = std::env::temp_dir().join(format!("meshtables-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let job = tmp.join("job.json");
    let bs = b.to_str().unwrap();

    let mut times = Vec::new();
    let mut rss = Vec::new();
    for sc in scenarios() {
        let dry = |extra: &[&str]| {
            let o = Command::new(&b)
                .args(&sc.args)
                .args(extra)
                .arg("--dry-run")
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            String::from_utf8(o.stdout).unwrap()
        };
        let nft = tmp.join("rules.nft");
        std::fs::write(&nft, dry(&["--native-nftables"])).unwrap();
        // The restore text holds both families, each after a "# IPv4"/"# IPv6" line.
        let text = dry(&[]);
        let (v4_text, v6_text) = match text.find("# IPv6") {
            Some(i) => (&text[..i], Some(&text[i..])),
            None => (text.as_str(), None),
        };
        let v4 = tmp.join("rules.v4");
        let v6 = tmp.join("rules.v6");
        std::fs::write(&v4, v4_text).unwrap();
        if let Some(t) = v6_text {
            std::fs::write(&v6, t).unwrap();
        }
        let v6p = v6_text.map(|_| v6.as_path());
        let restore = |bin4: &str, bin6: &str| {
            let mut s = vec![step(&[bin4, "--noflush"], Some(&v4))];
            if let Some(p) = v6p {
                s.push(step(&[bin6, "--noflush"], Some(p)));
            }
            s
        };
        let mesh = |extra: &[&str]| {
            let mut argv: Vec<&str> = vec![bs];
            argv.extend(sc.args.iter().map(String::as_str));
            argv.extend(extra);
            vec![step(&argv, None)]
        };
        let tools: [Vec<Step>; 7] = [
            vec![step(&["true"], None)],
            mesh(&["--native-nftables"]),
            mesh(&[]),
            vec![step(&["nft", "-f", nft.to_str().unwrap()], None)],
            restore("iptables-nft-restore", "ip6tables-nft-restore"),
            restore("iptables-legacy-restore", "ip6tables-legacy-restore"),
            upstream_sequence(&v4, v6p),
        ];
        let n = if sc.name.starts_with("10000") {
            rounds.div_ceil(3).max(3)
        } else {
            rounds
        };
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
        let mut peak = vec![0i64; tools.len()];
        for _ in 0..n {
            for (i, t) in tools.iter().enumerate() {
                let m = measure(t, &job);
                samples[i].push(m.elapsed);
                peak[i] = peak[i].max(m.max_rss_kb);
            }
        }
        eprintln!("{}: {n} rounds", sc.name);
        times.push((
            sc.name.clone(),
            samples.into_iter().map(median).collect::<Vec<_>>(),
            n,
        ));
        rss.push((sc.name, peak));
    }

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!("Median wall time of each tool's processes, each run in a fresh network namespace:\n");
    println!("| scenario (rounds) | {} |", TOOLS.join(" | "));
    println!("|---|{}", "---|".repeat(TOOLS.len()));
    for (name, t, n) in &times {
        let cells: Vec<String> = t.iter().map(|d| ms(*d)).collect();
        println!("| {name} ({n}) | {} |", cells.join(" | "));
    }
    println!(
        "\nWhat each tool adds to a bare process start (`true`), as a ratio to what meshtables netlink adds (> 1: meshtables is faster):\n"
    );
    println!("| scenario | {} |", TOOLS[2..].join(" | "));
    println!("|---|{}", "---|".repeat(TOOLS.len() - 2));
    for (name, t, _) in &times {
        let added = |d: &Duration| d.saturating_sub(t[0]).as_secs_f64();
        let base = added(&t[1]);
        let cells: Vec<String> = t[2..]
            .iter()
            .map(|d| format!("{:.2}", added(d) / base))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!("\nPeak RSS (the largest of the tool's processes):\n");
    println!("| scenario | {} |", TOOLS[1..].join(" | "));
    println!("|---|{}", "---|".repeat(TOOLS.len() - 1));
    for (name, peak) in &rss {
        let cells: Vec<String> = peak[1..]
            .iter()
            .map(|kb| format!("{:.1} MB", *kb as f64 / 1024.0))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let size = std::fs::metadata(&b).unwrap().len();
    println!(
        "\nmeshtables binary: {:.2} MB ({}; stripped, LTO)",
        size as f64 / 1e6,
        b.display()
    );
    std::fs::remove_dir_all(&tmp).ok();
}
