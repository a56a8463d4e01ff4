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
//! Also, for `--compact`: the same tools on the compact rulesets (meshtables netlink
//! `--compact`, `nft -f` of its text); the kernel's own cost of inserting the address set's
//! elements (`netlink::element_floor`, in-process, ascending and descending order); the cost
//! of a new outbound connection with the rules of each tool loaded (thousands of connections
//! through nat OUTPUT to a redirected listener); and the size of the nat table blob
//! iptables-legacy-restore hands the kernel (`IPT_SO_SET_REPLACE`, from strace), which gVisor
//! caps at 8 KiB. Plots (SVG) of apply time and connection cost against list size go to
//! `--svg DIR` (default target/bench).
//!
//! Also Istio ambient's in-pod rules (`meshtables ambient apply`) against `nft -f`, the
//! restores and upstream's per-pod sequence.
//!
//! Run: `.ci/image-rootfs && cargo bench --bench apply` (`-- --rounds N` for more rounds,
//! default 21; the 7,000 CIDR scenario runs a third as many; `-- --bin PATH` times another
//! meshtables binary than the init image's static one; `-- --ambient` runs only ambient's).

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

/// The binary timed: the init image's (static, built as `.ci/image-rootfs` builds it, what
/// runs Istio's injected args), or `--bin PATH`.
fn bin(arg: Option<String>) -> PathBuf {
    let b = arg.map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image-rootfs/meshtables")
    });
    assert!(
        b.exists(),
        "{}: build the image's binary first: .ci/image-rootfs",
        b.display()
    );
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

#[path = "svg.rs"]
mod svg;

struct Scenario {
    name: String,
    args: Vec<String>,
    /// The list size, for the plots (excluded CIDRs).
    size: Option<usize>,
}

fn owned(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Istio's injected args (REDIRECT, everything captured, no exclusions).
fn injected() -> Vec<String> {
    owned(&[
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
    ])
}

/// `n` distinct /24 prefixes, none adjacent to another (so no set can merge them), short
/// enough that 7,000 fit in one argument (Linux caps one at 128 KiB).
fn cidrs(n: usize) -> String {
    (0..n)
        .map(|i| format!("{}.{}.{}.0/24", 10 + i / 5000, i / 50 % 100, (i % 50) * 2))
        .collect::<Vec<_>>()
        .join(",")
}

/// Istio's args with `-x` set to `n` CIDRs.
fn excluding(n: usize) -> Vec<String> {
    let mut args = injected();
    let x = args.iter().position(|a| a == "-x").unwrap_or(0);
    args[x + 1] = cidrs(n);
    args
}

const SIZES: [usize; 4] = [10, 100, 1_000, 7_000];

fn scenarios() -> Vec<Scenario> {
    // Istio's args with TPROXY inbound, DNS capture and IPv6 (last flag wins, as in pflag).
    let mut tproxy = injected();
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
            args: injected(),
            size: None,
        },
        Scenario {
            name: "TPROXY + DNS + IPv6".into(),
            args: tproxy,
            size: None,
        },
    ];
    for n in SIZES {
        out.push(Scenario {
            name: format!("{n} excluded CIDRs"),
            args: excluding(n),
            size: Some(n),
        });
    }
    out
}

const TOOLS: [&str; 9] = [
    "true",
    "meshtables netlink",
    "meshtables netlink --compact",
    "meshtables iptables",
    "nft -f",
    "nft -f (compact text)",
    "iptables-nft-restore",
    "iptables-legacy-restore",
    "upstream sequence",
];

/// The files a scenario's tools read: the nft text (plain and compact) and the restore text
/// per family.
struct Texts {
    nft: PathBuf,
    nft_compact: PathBuf,
    v4: PathBuf,
    v6: Option<PathBuf>,
}

/// `compact`: whether the scheme has `--compact` (ambient's rules have no lists).
fn texts(b: &Path, args: &[String], dir: &Path, compact: bool) -> Texts {
    let dry = |extra: &[&str]| {
        let o = Command::new(b)
            .args(args)
            .args(extra)
            .arg("--dry-run")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let nft = dir.join("rules.nft");
    std::fs::write(&nft, dry(&["--native-nftables"])).unwrap();
    let nft_compact = dir.join("rules-compact.nft");
    if compact {
        std::fs::write(&nft_compact, dry(&["--native-nftables", "--compact"])).unwrap();
    }
    // The restore text holds both families, each after a "# IPv4"/"# IPv6" line.
    let text = dry(&[]);
    let (v4_text, v6_text) = match text.find("# IPv6") {
        Some(i) => (&text[..i], Some(&text[i..])),
        None => (text.as_str(), None),
    };
    let v4 = dir.join("rules.v4");
    std::fs::write(&v4, v4_text).unwrap();
    let v6 = v6_text.map(|t| {
        let p = dir.join("rules.v6");
        std::fs::write(&p, t).unwrap();
        p
    });
    Texts {
        nft,
        nft_compact,
        v4,
        v6,
    }
}

fn restore(t: &Texts, bin4: &str, bin6: &str) -> Vec<Step> {
    let mut s = vec![step(&[bin4, "--noflush"], Some(&t.v4))];
    if let Some(p) = &t.v6 {
        s.push(step(&[bin6, "--noflush"], Some(p)));
    }
    s
}

fn mesh(b: &Path, args: &[String], extra: &[&str]) -> Vec<Step> {
    let mut argv: Vec<&str> = vec![b.to_str().unwrap()];
    argv.extend(args.iter().map(String::as_str));
    argv.extend(extra);
    vec![step(&argv, None)]
}

/// Child mode: a pod-like namespace (lo up, eth0 with a default route), the steps applied
/// (not timed), a listener on 15001, then `n` connections from this (non-proxy) uid to a
/// remote address, each redirected by nat OUTPUT to the listener: prints ns per connection.
fn connect_in_netns(job: &Path, n: usize) -> ! {
    let steps: Vec<Step> = serde_json::from_slice(&std::fs::read(job).unwrap()).unwrap();
    lo_up();
    for cmd in [
        "ip link add eth0 type veth peer name veth0",
        "ip addr add 10.244.1.5/24 dev eth0",
        "ip link set eth0 up",
        "ip link set veth0 up",
        "ip route add default via 10.244.1.1",
    ] {
        let ok = Command::new("sh").args(["-c", cmd]).status().unwrap();
        assert!(ok.success(), "{cmd}");
    }
    for s in &steps {
        let mut c = Command::new(&s.argv[0]);
        c.args(&s.argv[1..]).stdout(Stdio::null());
        if let Some(p) = &s.stdin {
            c.stdin(std::fs::File::open(p).unwrap());
        }
        assert!(c.status().unwrap().success(), "{:?}", s.argv);
    }
    let listener = std::net::TcpListener::bind("0.0.0.0:15001").unwrap();
    std::thread::spawn(move || {
        for c in listener.incoming() {
            drop(c);
        }
    });
    let remote: std::net::SocketAddr = "192.0.2.7:80".parse().unwrap();
    let one = || {
        let c = std::net::TcpStream::connect_timeout(&remote, Duration::from_secs(2)).unwrap();
        // No TIME_WAIT pile-up: close with a reset.
        let _ = nix::sys::socket::setsockopt(
            &c,
            nix::sys::socket::sockopt::Linger,
            &nix::libc::linger {
                l_onoff: 1,
                l_linger: 0,
            },
        );
    };
    for _ in 0..200 {
        one();
    }
    let start = Instant::now();
    for _ in 0..n {
        one();
    }
    println!("{}", start.elapsed().as_nanos() / n as u128);
    std::process::exit(0);
}

/// Child mode: the kernel floor of `n` CIDRs' elements (ns), best of ascending/descending.
fn floor_in_netns(n: usize) -> ! {
    lo_up();
    let list: Vec<meshtables::plan::Cidr> = cidrs(n)
        .split(',')
        .map(|c| meshtables::plan::Cidr(c.parse().unwrap()))
        .collect();
    let up = meshtables::backend::netlink::element_floor(&list, false).unwrap();
    let down = meshtables::backend::netlink::element_floor(&list, true).unwrap();
    println!("{} {}", up.as_nanos(), down.as_nanos());
    std::process::exit(0);
}

/// How a tool loads a scenario's rules, as process steps.
type ToolSteps<'a> = Box<dyn Fn(&Scenario, &Texts) -> Vec<Step> + 'a>;

fn run_child(mode: &str, extra: &[String]) -> String {
    let o = Command::new("unshare")
        .arg("-n")
        .arg(std::env::current_exe().unwrap())
        .arg(mode)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// The nat table blob iptables-legacy-restore hands the kernel for `args`' IPv4 nat text
/// (`IPT_SO_SET_REPLACE`'s length, read from strace), in a fresh namespace.
fn replace_blob(b: &Path, args: &[String], dir: &Path) -> Option<usize> {
    which("strace")?;
    let t = texts(b, args, dir, true);
    let text = std::fs::read_to_string(&t.v4).ok()?;
    let nat: String = text
        .split("COMMIT")
        .find(|block| block.contains("* nat"))
        .map(|b| format!("{}COMMIT\n", b.trim_start()))?
        .replace("* nat", "*nat");
    let file = dir.join("nat.v4");
    std::fs::write(&file, nat).ok()?;
    let o = Command::new("unshare")
        .args([
            "-n",
            "strace",
            "-f",
            "-e",
            "trace=setsockopt",
            "iptables-legacy-restore",
            "--noflush",
        ])
        .stdin(std::fs::File::open(&file).ok()?)
        .output()
        .ok()?;
    String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.contains("IPT_SO_SET_REPLACE"))
        .filter_map(|l| {
            l.rsplit(", ")
                .next()?
                .split(')')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .max()
}

/// Istio ambient's in-pod rules (`meshtables ambient apply`), each tool loading the same rules
/// (meshtables' ambient dry-run text): meshtables over netlink and with its iptables backend,
/// `nft -f` of the nftables text, `iptables-nft-restore` per family, and upstream's sequence
/// for one pod: the node agent detected the variant once at start, so per pod it runs the two
/// saves its state check reads, then one restore per family (its nftables path, one `nft`
/// process, is the `nft -f` column). Returns the netlink apply's ratio to `nft -f` for the
/// default configuration (the bound: at most 0.5×).
fn ambient_section(b: &Path, rounds: usize, tmp: &Path, job: &Path) -> Option<f64> {
    const AMBIENT_TOOLS: [&str; 6] = [
        "true",
        "meshtables ambient netlink",
        "meshtables ambient iptables",
        "nft -f",
        "iptables-nft-restore",
        "upstream sequence (iptables)",
    ];
    let scenarios: [(&str, &[&str]); 2] = [
        ("ambient default", &[]),
        (
            "ambient DNS + IPv6",
            &["--ambient-dns-capture", "--ambient-ipv6"],
        ),
    ];
    let mut rows = Vec::new();
    for (name, flags) in scenarios {
        let mut args = vec!["ambient".to_string(), "apply".to_string()];
        args.extend(owned(flags));
        let t = texts(b, &args, tmp, false);
        let mut saves = vec![
            step(&["iptables-nft-save"], None),
            step(&["ip6tables-nft-save"], None),
        ];
        saves.extend(restore(&t, "iptables-nft-restore", "ip6tables-nft-restore"));
        let tools: [Vec<Step>; 6] = [
            vec![step(&["true"], None)],
            mesh(b, &args, &["--native-nftables"]),
            mesh(b, &args, &["--force-iptables-binary", "nft"]),
            vec![step(&["nft", "-f", t.nft.to_str().unwrap()], None)],
            restore(&t, "iptables-nft-restore", "ip6tables-nft-restore"),
            saves,
        ];
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
        for _ in 0..rounds {
            for (i, tool) in tools.iter().enumerate() {
                samples[i].push(measure(tool, job).elapsed);
            }
        }
        eprintln!("{name}: {rounds} rounds");
        rows.push((name, samples.into_iter().map(median).collect::<Vec<_>>()));
    }
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    let added = |t: &[Duration], i: usize| t[i].saturating_sub(t[0]).as_secs_f64();
    println!(
        "\nIstio ambient's in-pod rules: median wall time of each tool's processes ({rounds} rounds), then what each adds over `true` as a ratio to what meshtables ambient netlink adds (> 1: meshtables is faster):\n"
    );
    println!("| scenario | {} |", AMBIENT_TOOLS.join(" | "));
    println!("|---|{}", "---|".repeat(AMBIENT_TOOLS.len()));
    for (name, t) in &rows {
        let cells: Vec<String> = t.iter().map(|d| ms(*d)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!("\n| scenario | {} |", AMBIENT_TOOLS[2..].join(" | "));
    println!("|---|{}", "---|".repeat(AMBIENT_TOOLS.len() - 2));
    for (name, t) in &rows {
        let cells: Vec<String> = (2..AMBIENT_TOOLS.len())
            .map(|i| format!("{:.2}", added(t, i) / added(t, 1)))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    let (_, t) = rows.first()?;
    let ratio = added(t, 1) / added(t, 3);
    println!(
        "\nambient default: meshtables ambient netlink adds {:.2} ms, nft -f {:.2} ms: {ratio:.2}× ({} the 0.5× bound)",
        added(t, 1) * 1e3,
        added(t, 3) * 1e3,
        if ratio <= 0.5 { "within" } else { "over" }
    );
    Some(ratio)
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--in-netns") {
        in_netns(Path::new(&args[i + 1]));
    }
    if let Some(i) = args.iter().position(|a| a == "--connect") {
        connect_in_netns(Path::new(&args[i + 1]), args[i + 2].parse().unwrap());
    }
    if let Some(i) = args.iter().position(|a| a == "--floor") {
        floor_in_netns(args[i + 1].parse().unwrap());
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIP: the apply benchmark creates network namespaces and needs root");
        return;
    }
    let opt = |name: &str| args.iter().skip_while(|a| *a != name).nth(1).cloned();
    let rounds: usize = opt("--rounds").and_then(|v| v.parse().ok()).unwrap_or(21);
    let svg_dir = PathBuf::from(opt("--svg").unwrap_or_else(|| "target/bench".into()));
    let b = bin(opt("--bin"));
    let tmp = std::env::temp_dir().join(format!("meshtables-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let job = tmp.join("job.json");
    if args.iter().any(|a| a == "--ambient") {
        ambient_section(&b, rounds, &tmp, &job);
        std::fs::remove_dir_all(&tmp).ok();
        return;
    }

    let mut times = Vec::new();
    let mut rss = Vec::new();
    for sc in scenarios() {
        let t = texts(&b, &sc.args, &tmp, true);
        let tools: [Vec<Step>; 9] = [
            vec![step(&["true"], None)],
            mesh(&b, &sc.args, &["--native-nftables"]),
            mesh(&b, &sc.args, &["--native-nftables", "--compact"]),
            mesh(&b, &sc.args, &[]),
            vec![step(&["nft", "-f", t.nft.to_str().unwrap()], None)],
            vec![step(&["nft", "-f", t.nft_compact.to_str().unwrap()], None)],
            restore(&t, "iptables-nft-restore", "ip6tables-nft-restore"),
            restore(&t, "iptables-legacy-restore", "ip6tables-legacy-restore"),
            upstream_sequence(&t.v4, t.v6.as_deref()),
        ];
        let n = if sc.size == Some(7_000) {
            rounds.div_ceil(3).max(3)
        } else {
            rounds
        };
        let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); tools.len()];
        let mut peak = vec![0i64; tools.len()];
        for _ in 0..n {
            for (i, tool) in tools.iter().enumerate() {
                let m = measure(tool, &job);
                samples[i].push(m.elapsed);
                peak[i] = peak[i].max(m.max_rss_kb);
            }
        }
        eprintln!("{}: {n} rounds", sc.name);
        times.push((
            sc.name.clone(),
            sc.size,
            samples.into_iter().map(median).collect::<Vec<_>>(),
            n,
        ));
        rss.push((sc.name, peak));
    }

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1e3);
    println!("Median wall time of each tool's processes, each run in a fresh network namespace:\n");
    println!("| scenario (rounds) | {} |", TOOLS.join(" | "));
    println!("|---|{}", "---|".repeat(TOOLS.len()));
    for (name, _, t, n) in &times {
        let cells: Vec<String> = t.iter().map(|d| ms(*d)).collect();
        println!("| {name} ({n}) | {} |", cells.join(" | "));
    }
    let added = |t: &[Duration], i: usize| t[i].saturating_sub(t[0]).as_secs_f64();
    println!(
        "\nWhat each tool adds to a bare process start (`true`), as a ratio to what meshtables netlink adds (> 1: meshtables is faster):\n"
    );
    println!("| scenario | {} |", TOOLS[2..].join(" | "));
    println!("|---|{}", "---|".repeat(TOOLS.len() - 2));
    for (name, _, t, _) in &times {
        let cells: Vec<String> = (2..TOOLS.len())
            .map(|i| format!("{:.2}", added(t, i) / added(t, 1)))
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
    println!(
        "\n`--compact` and the byte-identical netlink apply against their references (time added over `true`):\n"
    );
    println!(
        "| scenario | netlink --compact / iptables-legacy-restore | netlink / nft -f | netlink --compact / nft -f (compact text) |"
    );
    println!("|---|---|---|---|");
    for (name, _, t, _) in &times {
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} |",
            added(t, 2) / added(t, 7),
            added(t, 1) / added(t, 4),
            added(t, 2) / added(t, 5)
        );
    }
    // The bound the static binary is held to: for Istio's args, the apply adds at most 0.4×
    // what `nft -f` adds (process start-up included: a dynamic binary loading its libraries
    // paid 0.5).
    if let Some((_, _, t, _)) = times
        .iter()
        .find(|(name, _, _, _)| name == "Istio injected args")
    {
        let ratio = added(t, 1) / added(t, 4);
        println!(
            "\nIstio injected args: meshtables netlink adds {:.2} ms, nft -f {:.2} ms: {ratio:.2}× ({} the 0.4× bound)",
            added(t, 1) * 1e3,
            added(t, 4) * 1e3,
            if ratio <= 0.4 { "within" } else { "over" }
        );
    }
    ambient_section(&b, rounds, &tmp, &job);
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

    // The kernel's own cost of the address set's elements, against the compact apply.
    println!(
        "\nThe kernel's cost of inserting the interval set's elements alone (in-process `sendmsg` to verdict, medians), and the compact netlink apply's added time against it:\n"
    );
    println!(
        "| CIDRs | elements ascending (as nft) | descending | compact netlink added | ratio to the best floor |"
    );
    println!("|---|---|---|---|---|");
    for n in SIZES {
        let mut up = Vec::new();
        let mut down = Vec::new();
        for _ in 0..rounds.div_ceil(3).max(3) {
            let out = run_child("--floor", &[n.to_string()]);
            let mut f = out
                .split_whitespace()
                .map(|v| v.parse::<u64>().unwrap_or(0));
            up.push(Duration::from_nanos(f.next().unwrap_or(0)));
            down.push(Duration::from_nanos(f.next().unwrap_or(0)));
        }
        let (up, down) = (median(up), median(down));
        let best = up.min(down).as_secs_f64();
        let compact = times
            .iter()
            .find(|(_, size, _, _)| *size == Some(n))
            .map(|(_, _, t, _)| added(t, 2))
            .unwrap_or(0.0);
        println!(
            "| {n} | {} | {} | {:.2} ms | {:.2} |",
            ms(up),
            ms(down),
            compact * 1e3,
            compact / best
        );
    }

    // A new outbound connection's cost with each tool's rules loaded.
    let conn_tools: [(&str, ToolSteps); 5] = [
        (
            "no exclusions (netlink)",
            Box::new(|_, _| mesh(&b, &injected(), &["--native-nftables"])),
        ),
        (
            "meshtables netlink",
            Box::new(|sc, _| mesh(&b, &sc.args, &["--native-nftables"])),
        ),
        (
            "meshtables netlink --compact",
            Box::new(|sc, _| mesh(&b, &sc.args, &["--native-nftables", "--compact"])),
        ),
        (
            "iptables-legacy",
            Box::new(|_, t| restore(t, "iptables-legacy-restore", "ip6tables-legacy-restore")),
        ),
        (
            "iptables-nft",
            Box::new(|_, t| restore(t, "iptables-nft-restore", "ip6tables-nft-restore")),
        ),
    ];
    let connections = 3000;
    let mut conn: Vec<(usize, Vec<f64>)> = Vec::new();
    for n in SIZES {
        let sc = Scenario {
            name: String::new(),
            args: excluding(n),
            size: Some(n),
        };
        let t = texts(&b, &sc.args, &tmp, true);
        let mut row = Vec::new();
        for (_, tool) in &conn_tools {
            std::fs::write(&job, serde_json::to_vec(&tool(&sc, &t)).unwrap()).unwrap();
            let mut v: Vec<u64> = (0..5)
                .map(|_| {
                    run_child(
                        "--connect",
                        &[job.display().to_string(), connections.to_string()],
                    )
                    .trim()
                    .parse()
                    .unwrap_or(0)
                })
                .collect();
            v.sort();
            row.push(v[v.len() / 2] as f64 / 1e3);
        }
        conn.push((n, row));
    }
    println!(
        "\nCost of one new outbound connection (connect to a remote address, redirected to a local listener; µs, median of 5 runs of {connections}):\n"
    );
    println!(
        "| excluded CIDRs | {} |",
        conn_tools
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    println!("|---|{}", "---|".repeat(conn_tools.len()));
    for (n, row) in &conn {
        let cells: Vec<String> = row.iter().map(|us| format!("{us:.1} µs")).collect();
        println!("| {n} | {} |", cells.join(" | "));
    }
    if let Some((_, row)) = conn.last() {
        println!(
            "\nAt {} CIDRs, `--compact` costs {:.2}× a connection with no exclusions; the byte-identical ruleset {:.2}×, iptables-legacy {:.2}×.",
            SIZES[SIZES.len() - 1],
            row[2] / row[0],
            row[1] / row[0],
            row[3] / row[0]
        );
    }

    // gVisor's 8 KiB bound on the replace blob.
    let mut gvisor = injected();
    let d = gvisor.iter().position(|a| a == "-d").unwrap_or(0) + 1;
    gvisor[d] = (0..20)
        .map(|i| (2000 + i).to_string())
        .chain(["15090".into(), "15021".into(), "15020".into()])
        .collect::<Vec<_>>()
        .join(",");
    gvisor.extend(owned(&[
        "-o",
        &(0..20)
            .map(|i| (3000 + i).to_string())
            .collect::<Vec<_>>()
            .join(","),
    ]));
    let plain = replace_blob(&b, &gvisor, &tmp);
    let mut compact_args = gvisor.clone();
    compact_args.push("--compact".into());
    let compact = replace_blob(&b, &compact_args, &tmp);
    println!(
        "\ngVisor's bound (8,192 bytes) on the nat table iptables-legacy-restore sends (`IPT_SO_SET_REPLACE`), Istio's args + 20 excluded inbound and 20 excluded outbound ports: {} with `--compact`, {} without.",
        compact.map_or("(strace not installed)".into(), |v| format!("{v} bytes")),
        plain.map_or("(strace not installed)".into(), |v| format!("{v} bytes")),
    );

    // Plots.
    std::fs::create_dir_all(&svg_dir).unwrap();
    let apply_series: Vec<svg::Series> = (1..TOOLS.len())
        .map(|i| svg::Series {
            name: TOOLS[i].into(),
            points: times
                .iter()
                .filter_map(|(_, size, t, _)| Some(((*size)? as f64, added(t, i) * 1e3)))
                .collect(),
        })
        .collect();
    std::fs::write(
        svg_dir.join("apply-time.svg"),
        svg::chart(
            "Apply time over a bare process, against excluded CIDRs",
            "excluded CIDRs",
            "ms added (log)",
            &apply_series,
        ),
    )
    .unwrap();
    let conn_series: Vec<svg::Series> = conn_tools
        .iter()
        .enumerate()
        .map(|(i, (name, _))| svg::Series {
            name: (*name).into(),
            points: conn.iter().map(|(n, row)| (*n as f64, row[i])).collect(),
        })
        .collect();
    std::fs::write(
        svg_dir.join("connection-cost.svg"),
        svg::chart(
            "Cost of a new outbound connection, against excluded CIDRs",
            "excluded CIDRs",
            "µs per connection (log)",
            &conn_series,
        ),
    )
    .unwrap();
    println!("\nPlots: {}", svg_dir.display());
    let size = std::fs::metadata(&b).unwrap().len();
    println!(
        "\nmeshtables binary: {:.2} MB ({}; stripped, LTO)",
        size as f64 / 1e6,
        b.display()
    );
    let installer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/installer-rootfs/meshtables");
    if let Ok(m) = std::fs::metadata(&installer) {
        println!(
            "installer's binary (default features): {:.2} MB ({})",
            m.len() as f64 / 1e6,
            installer.display()
        );
    }
    std::fs::remove_dir_all(&tmp).ok();
}
