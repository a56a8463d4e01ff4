//! Shared test helpers: a fake host, an env map, running the CLI in-process or as a process,
//! the `../shared` locator, the skip-or-fail rule for tests that need root or a kernel, and
//! (submodules) the pod topology, the traffic scenarios and the packet tracer.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use meshtables::host::{Host, HostError};

pub mod mutate;
pub mod net;
pub mod netns;
pub mod rng;
pub mod scenarios;
pub mod topo;
pub mod tracer;
pub mod trials;

/// A machine with chosen addresses and files.
#[derive(Default, Clone)]
pub struct FakeHost {
    pub addrs: Vec<IpAddr>,
    pub files: HashMap<String, String>,
}

impl FakeHost {
    /// An IPv4-only pod with the tests' /etc/group (`GROUP_FILE`) and no /etc/passwd entry
    /// for istio-proxy.
    pub fn v4_pod() -> Self {
        FakeHost {
            addrs: vec!["127.0.0.1".parse().unwrap(), "10.244.1.5".parse().unwrap()],
            files: [("/etc/group".to_string(), GROUP_FILE.to_string())].into(),
        }
    }
}

impl Host for FakeHost {
    fn interface_addrs(&self) -> Result<Vec<IpAddr>, HostError> {
        Ok(self.addrs.clone())
    }
    fn read_file(&self, path: &str) -> Result<String, HostError> {
        self.files
            .get(path)
            .cloned()
            .ok_or_else(|| HostError::Read {
                path: path.into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            })
    }
}

pub fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs `meshtables ARGS` in-process; returns (exit code, stdout).
pub fn run_in_process(
    args: &[&str],
    env: &HashMap<String, String>,
    host: &FakeHost,
) -> (i32, String) {
    let argv: Vec<OsString> = std::iter::once("meshtables")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let mut out = Vec::new();
    let code = meshtables::cmd::main_with(argv, env, host, &mut out);
    (code, String::from_utf8(out).expect("stdout is UTF-8"))
}

/// The built binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshtables"))
}

/// Env var prefixes meshtables reads; cleared before running the binary in tests.
pub const OUR_ENV_PREFIXES: &[&str] = &[
    "ISTIO_",
    "DRY_RUN",
    "INBOUND_",
    "PROXY_",
    "NATIVE_",
    "REDIRECT_",
    "CAPTURE_",
    "DROP_",
    "INVALID_",
    "DUAL_",
    "KUBE_",
    "ENVOY_",
    "RUN_",
    "SKIP_",
    "RECONCILE",
    "CLEANUP_",
    "FORCE_",
    "NETWORK_NAMESPACE",
    "CNI_",
    "IPTABLES_",
    "PROBE_",
    "ENABLE_IPV6",
    "DNS_SERVERS",
    "RESOLV_CONF",
    "OUTBOUND_",
    "IPV4_LOOPBACK",
];

/// A `Command` for the binary with our env vars removed and `extra` added.
pub fn command(args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    for (k, _) in std::env::vars() {
        if OUR_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) {
            c.env_remove(k);
        }
    }
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `../shared` beside the checkout, when it is there.
pub fn shared_path() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared");
    p.join("istio/cases.json").exists().then_some(p)
}

/// `../shared` beside the checkout: `None` (test skips) when absent; a panic under CI=true.
pub fn shared_dir() -> Option<PathBuf> {
    if let Some(p) = shared_path() {
        return Some(p);
    }
    if in_ci() {
        panic!("../shared/istio/cases.json is missing, and CI=true requires it");
    }
    eprintln!("SKIP: ../shared is not beside this checkout");
    None
}

/// The absolute path of program `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// A line diff for failure messages: `-want` / `+got`, with a little context.
pub fn diff(want: &str, got: &str) -> String {
    let w: Vec<&str> = want.lines().collect();
    let g: Vec<&str> = got.lines().collect();
    // Longest-common-subsequence table; inputs are small.
    let mut lcs = vec![vec![0usize; g.len() + 1]; w.len() + 1];
    for i in (0..w.len()).rev() {
        for j in (0..g.len()).rev() {
            lcs[i][j] = if w[i] == g[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < w.len() || j < g.len() {
        if i < w.len() && j < g.len() && w[i] == g[j] {
            out.push_str(&format!("  {}\n", w[i]));
            i += 1;
            j += 1;
        } else if j < g.len() && (i == w.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", g[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", w[i]));
            i += 1;
        }
    }
    out
}

/// Single-quotes `s` for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// `meshtables ARGS` as a shell command line (binary path from `$B`).
pub fn mt(args: &[&str]) -> String {
    let mut s = String::from("\"$B\"");
    for a in args {
        s.push(' ');
        s.push_str(&sh_quote(a));
    }
    s
}

/// The groups every throwaway namespace sees as /etc/group: tests do not depend on the
/// machine's groups. Upstream's owner-group cases name `java` and `ftp`.
pub const GROUP_FILE: &str =
    "root:x:0:\ndaemon:x:1:\nbin:x:2:\njava:x:4242:\nftp:x:4243:\nistio-proxy:x:1337:\n";
/// The users every throwaway namespace sees as /etc/passwd (no `istio-proxy`: `-u` defaults
/// to 1337).
pub const PASSWD_FILE: &str = "root:x:0:0:root:/root:/bin/sh\ndaemon:x:1:1:daemon:/:/bin/false\n";

/// Shell commands that bind-mount `GROUP_FILE` and `PASSWD_FILE` over /etc/group and
/// /etc/passwd; run them in a private mount namespace (`unshare -m`).
pub fn hermetic_files() -> String {
    let dir = std::env::temp_dir().join(format!("meshtables-etc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (group, passwd) = (dir.join("group"), dir.join("passwd"));
    // Written once per test process (concurrent tests write the same bytes, each renaming
    // its own copy into place); passwd first, so an existing group file implies both.
    if !group.exists() {
        let me = format!("{:?}", std::thread::current().id());
        for (path, text) in [(&passwd, PASSWD_FILE), (&group, GROUP_FILE)] {
            let tmp = path.with_extension(&me);
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
    }
    format!(
        "mount --bind {} /etc/group && mount --bind {} /etc/passwd",
        sh_quote(&group.display().to_string()),
        sh_quote(&passwd.display().to_string())
    )
}

/// `unshare -n -m sh -c '<hermetic files> && exec "$@"' sh`: append the program and its
/// arguments; it runs in a fresh network namespace with the controlled /etc/group and passwd.
pub fn unshare_hermetic() -> Command {
    let mut c = Command::new("unshare");
    c.args([
        "-n",
        "-m",
        "sh",
        "-c",
        &format!("{} && exec \"$@\"", hermetic_files()),
        "sh",
    ]);
    c
}

/// Runs `script` with `sh` in a fresh network namespace (`unshare -n`) that looks like a pod
/// (lo up, eth0 with 10.244.1.5/24 on a veth), with `$B` set to the binary and our env vars
/// cleared, and in a private mount namespace where /etc/group and /etc/passwd are the
/// controlled `GROUP_FILE` and `PASSWD_FILE`; both disappear with the process.
pub fn in_netns(script: &str) -> std::process::Output {
    let mut c = Command::new("unshare");
    let setup = "ip link set lo up && ip link add eth0 type veth peer name veth0 && ip addr add 10.244.1.5/24 dev eth0 && ip link set eth0 up";
    let files = hermetic_files();
    c.args([
        "-n",
        "-m",
        "sh",
        "-c",
        &format!("{files} && {setup} || exit 99; {script}"),
    ]);
    for (k, _) in std::env::vars() {
        if OUR_ENV_PREFIXES.iter().any(|p| k.starts_with(p)) {
            c.env_remove(k);
        }
    }
    c.env("B", bin());
    c.output().expect("unshare runs")
}

pub fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Istio's injected container args (injection template, REDIRECT, default ports).
pub const INJECTED: &[&str] = &[
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
    "--log_output_level=default:info",
];

/// Lists as people type them: spaces, empty items, trailing commas.
pub const SLOPPY: &[&str] = &[
    "apply",
    "-u",
    " 1337 ",
    "--enable-ipv6",
    "true",
    "-b",
    " 80 , 443,",
    "-q",
    "8443,",
    "-o",
    ",25, 587",
    "-x",
    " 10.0.0.0/8 , fd00::/8 ,",
    "-i",
    " * ",
    "-k",
    " eth1 ,",
    "-c",
    ",eth2 ",
];

/// TPROXY + IPv6 + DNS + every list flag.
/// `--compact` with every list long enough to become a set: inbound ports (TPROXY), included
/// and excluded CIDRs of both families (overlapping, touching, from 0.0.0.0), included and
/// excluded outbound ports (more than multiport's 15), a virtual interface.
pub const COMPACT_LISTS: &[&str] = &[
    "apply",
    "--compact",
    "-m",
    "TPROXY",
    "-u",
    "1337",
    "-g",
    "1337",
    "--enable-ipv6",
    "true",
    "-b",
    "80,443,8080,8443,9090",
    "-i",
    "10.96.0.0/12,10.100.0.0/16,10.101.0.0/16,192.168.0.0/16,fd00:10:96::/112,fd00:20::/64",
    "-x",
    "10.96.0.1/32,10.96.0.2/32,172.16.0.0/12,0.0.0.0/8,fd00:10:96::1/128,2001:db8::/32",
    "-q",
    "3306,5432,6379",
    "-o",
    "1000,1001,1002,1003,1004,1005,1006,1007,1008,1009,1010,1011,1012,1013,1014,1015,1016,1017,1018,1019,1020",
    "-k",
    "virt0",
];

/// `--compact` capturing every inbound port but a long exclusion list (REDIRECT).
pub const COMPACT_ALL_INBOUND: &[&str] = &[
    "apply",
    "--compact",
    "-m",
    "REDIRECT",
    "-u",
    "1337",
    "-g",
    "1337",
    "--enable-ipv6",
    "true",
    "-b",
    "*",
    "-d",
    "15090,15021,15020,2000,2001,2002,2003,2004,2005,2006,2007,2008,2009,2010,2011,2012,2013,2014",
    "-i",
    "*",
    "-x",
    "10.0.0.0/24,10.0.1.0/24,10.0.2.0/24,fd00::1/128,fd00::2/128,fd00::9/128",
    "--drop-invalid",
];

pub const EVERYTHING: &[&str] = &[
    "apply",
    "-m",
    "TPROXY",
    "-u",
    "1337",
    "-g",
    "1337",
    "--enable-ipv6",
    "true",
    "--redirect-dns",
    "--dns-servers",
    "10.96.0.10,fd00:10:96::a",
    "-b",
    "8080,9090",
    "-d",
    "15090",
    "-c",
    "eth9",
    "-i",
    "10.96.0.0/12,fd00:10:96::/112",
    "-x",
    "10.96.0.1/32,fd00:10:96::1/128",
    "-q",
    "3306",
    "-o",
    "5432",
    "-k",
    "virt0",
    "--drop-invalid",
];

/// One case of `../shared/istio/cases.json`.
pub struct UpstreamCase {
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// Path of the golden, relative to `../shared/istio`.
    pub golden: String,
    /// Compared through `DRY_RUN_FILE_PATH` (upstream's trace) rather than stdout.
    pub trace: bool,
}

impl UpstreamCase {
    pub fn args(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }
    pub fn env(&self) -> Vec<(&str, &str)> {
        self.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }
    pub fn native(&self) -> bool {
        self.args.iter().any(|a| a == "--native-nftables")
    }
    /// The args without `--dry-run`, with the case's env-only inputs as their own flags, so
    /// the case can be applied for real.
    pub fn apply_args(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .args
            .iter()
            .filter(|a| *a != "--dry-run")
            .cloned()
            .collect();
        for (k, v) in &self.env {
            let flag = match k.as_str() {
                "ISTIO_OUTBOUND_OWNER_GROUPS" => "--outbound-owner-groups",
                "ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE" => "--outbound-owner-groups-exclude",
                "ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR" => "--ipv4-loopback-cidr",
                other => panic!("unexpected env {other} in cases.json"),
            };
            a.push(flag.into());
            a.push(v.clone());
        }
        a
    }
}

/// Istio's upstream cases; `None` (skip) when `../shared` is absent, a panic under CI=true.
pub fn upstream_cases() -> Option<Vec<UpstreamCase>> {
    let shared = shared_dir()?;
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(shared.join("istio/cases.json")).unwrap())
            .unwrap();
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    Some(
        json["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| UpstreamCase {
                name: c["name"].as_str().unwrap().to_string(),
                args: strs(&c["args"]),
                env: c["env"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                golden: c["golden"].as_str().unwrap().to_string(),
                trace: c["output"] == "dry-run-file",
            })
            .collect(),
    )
}

/// `&[&str]` → owned strings.
pub fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}
