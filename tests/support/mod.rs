//! Shared test helpers: a fake host, an env map, running the CLI in-process or as a process
//! with every variable meshtables reads cleared, the `../shared` locator and the committed list
//! of upstream's cases, and (submodules) the trials harness, the pod topology, the traffic
//! scenarios and the packet tracer.
#![allow(dead_code, reason = "each test binary uses part of it")]

use std::collections::HashMap;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use meshtables::host::{Host, HostError};

pub mod ambient;
#[cfg(feature = "agent")]
pub mod kubeapi;
pub mod mutate;
pub mod net;
pub mod netns;
pub mod podproc;
pub mod rng;
pub mod scenarios;
pub mod topo;
pub mod tracer;
pub mod trials;
#[cfg(feature = "agent")]
pub mod ztunnel;

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

/// Variables meshtables reads outside the flag tables (`env.var("...")` in src/: the CNI
/// protocol's, the installer's API server address, upstream's `ENVOY_USER` and trace file,
/// the tests' fault switch), and one it hands on: `XTABLES_LOCKFILE`, which the iptables
/// binaries it runs read. `bad_input`'s `env::every_variable_src_reads_is_cleared` keeps this
/// list whole.
pub const OTHER_ENV: &[&str] = &[
    "ENVOY_USER",
    "DRY_RUN_FILE_PATH",
    "KUBERNETES_SERVICE_HOST",
    "KUBERNETES_SERVICE_PORT",
    "CNI_COMMAND",
    "CNI_CONTAINERID",
    "CNI_NETNS",
    "CNI_IFNAME",
    "CNI_ARGS",
    "CNI_PATH",
    "MESHTABLES_TEST_FAULT",
    "XTABLES_LOCKFILE",
];

/// Every flag table meshtables has: Istio's, ambient's and the installer's.
pub fn flag_tables() -> impl Iterator<Item = &'static meshtables::flags::Spec> {
    meshtables::profile::istio::flags::ALL
        .iter()
        .chain(meshtables::profile::ambient::flags::ALL)
        .chain(meshtables::flags::install::INSTALL)
        .copied()
}

/// Every environment variable meshtables reads: those of its flag tables (`flag_tables`) and
/// `OTHER_ENV`. Tests clear them all before running the binary, so the shell a test runs in
/// (`COMPACT=true`, say) cannot change an outcome.
pub fn our_env_vars() -> Vec<&'static str> {
    let mut v: Vec<&'static str> = flag_tables()
        .flat_map(|s| s.envs.iter().copied())
        .chain(OTHER_ENV.iter().copied())
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Removes every variable meshtables reads (`our_env_vars`) from `c`'s environment.
pub fn clear_our_env(c: &mut Command) -> &mut Command {
    for k in our_env_vars() {
        c.env_remove(k);
    }
    c
}

/// Every variable of `our_env_vars` with a value that would change a run if it leaked into
/// one: a boolean flag's variables `true` (`COMPACT=true`, `DRY_RUN=true`, ...), every other
/// one a value its flag refuses, and the variables outside the tables something as bad.
pub fn polluted_env() -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = flag_tables()
        .flat_map(|s| {
            let v = if s.boolean { "true" } else { "x-not-a-value" };
            s.envs.iter().map(move |e| (*e, v.to_string()))
        })
        .collect();
    for k in OTHER_ENV {
        let v = match *k {
            "MESHTABLES_TEST_FAULT" => "reject-rule",
            "DRY_RUN_FILE_PATH" | "XTABLES_LOCKFILE" => "/nonexistent/meshtables-polluted",
            _ => "x-not-a-value",
        };
        env.push((k, v.to_string()));
    }
    env
}

/// Runs trial `name` of this test binary as a child whose own environment holds
/// `polluted_env()`, and asserts it ran and passed: the support code keeps the shell's
/// variables away from the binary under test.
pub fn trial_passes_in_a_polluted_environment(name: &str) {
    let me = std::env::current_exe().unwrap();
    let o = Command::new(&me)
        .args([name, "--exact", "--test-threads", "1"])
        .envs(polluted_env())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 passed; 0 failed; 0 ignored"),
        "{name} with every variable meshtables reads set: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A `Command` for the binary with our env vars removed and `extra` added.
pub fn command(args: &[&str], extra: &[(&str, &str)]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    clear_our_env(&mut c);
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// `../shared` beside the checkout (or where `MESHTABLES_TEST_SHARED` points, e.g. a missing
/// directory to see the suites without it), when it holds Istio's cases.
pub fn shared_path() -> Option<PathBuf> {
    let p = match std::env::var_os("MESHTABLES_TEST_SHARED") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared"),
    };
    p.join("istio/cases.json").exists().then_some(p)
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
    clear_our_env(&mut c);
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

/// Which of upstream's generators a case is Istio's golden of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// istio-iptables (`golden/iptables/`): compared through upstream's trace file.
    Iptables,
    /// istio-nftables (`golden/nftables/`, `--native-nftables`): compared on stdout.
    Nftables,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Iptables => "iptables",
            Dialect::Nftables => "nftables",
        }
    }
}

/// The committed list of upstream's cases (`tests/upstream-cases.txt`): dialect and name, in
/// `cases.json`'s order. The suites build their upstream trials from it, so they list the same
/// trials with or without `../shared`; conformance's `upstream::list_matches_cases_json` fails
/// when it and `cases.json` differ.
pub const UPSTREAM_LIST: &str = include_str!("../upstream-cases.txt");

/// How many cases of each dialect `UPSTREAM_LIST` holds, as the suites declare them.
pub const UPSTREAM_IPTABLES: usize = 27;
pub const UPSTREAM_NFTABLES: usize = 28;

/// The cases of `UPSTREAM_LIST`.
pub fn upstream_names() -> Vec<(Dialect, String)> {
    UPSTREAM_LIST
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (d, name) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("upstream-cases.txt: {l:?} is not DIALECT NAME"));
            let d = match d {
                "iptables" => Dialect::Iptables,
                "nftables" => Dialect::Nftables,
                other => panic!("upstream-cases.txt: unknown dialect {other:?}"),
            };
            (d, name.to_string())
        })
        .collect()
}

/// The names of `dialect`'s cases in `UPSTREAM_LIST`.
pub fn upstream_names_of(dialect: Dialect) -> Vec<String> {
    upstream_names()
        .into_iter()
        .filter(|(d, _)| *d == dialect)
        .map(|(_, n)| n)
        .collect()
}

/// One case of `../shared/istio/cases.json`.
pub struct UpstreamCase {
    pub name: String,
    pub dialect: Dialect,
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
    /// The args without `--dry-run`, with the case's env-only inputs as the flags the flag
    /// table gives those variables, so the case can be applied for real.
    pub fn apply_args(&self) -> Vec<String> {
        let mut a: Vec<String> = self
            .args
            .iter()
            .filter(|a| *a != "--dry-run")
            .cloned()
            .collect();
        for (k, v) in &self.env {
            let spec = meshtables::profile::istio::flags::ALL
                .iter()
                .find(|s| s.envs.contains(&k.as_str()))
                .unwrap_or_else(|| panic!("cases.json sets {k}, which no flag reads"));
            a.push(format!("--{}", spec.long));
            a.push(v.clone());
        }
        a
    }
}

/// Every case of `../shared/istio/cases.json`, in its order. Only for trials that need
/// `../shared` (`Needs::shared`): a panic when it is not there.
pub fn upstream_cases() -> Vec<UpstreamCase> {
    let shared = shared_path().expect("the trial needs ../shared (Needs::shared)");
    let text = std::fs::read_to_string(shared.join("istio/cases.json")).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let strs = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    json["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let args = strs(&c["args"]);
            UpstreamCase {
                name: c["name"].as_str().unwrap().to_string(),
                dialect: if args.iter().any(|a| a == "--native-nftables") {
                    Dialect::Nftables
                } else {
                    Dialect::Iptables
                },
                args,
                env: c["env"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect(),
                golden: c["golden"].as_str().unwrap().to_string(),
                trace: c["output"] == "dry-run-file",
            }
        })
        .collect()
}

/// Upstream's case `name` of `dialect`, from `cases.json` (see `upstream_cases`).
pub fn upstream_case(dialect: Dialect, name: &str) -> UpstreamCase {
    upstream_cases()
        .into_iter()
        .find(|c| c.dialect == dialect && c.name == name)
        .unwrap_or_else(|| {
            panic!(
                "{} case {name} is in tests/upstream-cases.txt but not in cases.json: refresh the list (README, \"How we know it works\")",
                dialect.name()
            )
        })
}

/// `&[&str]` → owned strings.
pub fn owned(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}
