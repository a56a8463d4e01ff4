//! Bad input, table-driven: each case must exit 2, print one error naming the flag or env var
//! on stderr, print nothing on stdout, and so apply nothing. Upstream copies most of these
//! verbatim into rule text or ignores them. And the other side of it: every variable of the
//! flag table set to "" behaves exactly as if it were not set (one trial per variable).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use meshtables::flags::Spec;
use meshtables::profile::istio::flags;
use support::command;
use support::trials::{NOTHING, Trials};

struct Case {
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    /// Must appear in stderr: the flag or env var that carried the value.
    names: &'static str,
}

const fn flag(args: &'static [&'static str], names: &'static str) -> Case {
    Case {
        args,
        env: &[],
        names,
    }
}
const fn envc(env: &'static [(&'static str, &'static str)], names: &'static str) -> Case {
    Case {
        args: &[],
        env,
        names,
    }
}

const CASES: &[Case] = &[
    flag(&["-p", "0"], "--envoy-port (-p)"),
    flag(&["-p", "70000"], "--envoy-port (-p)"),
    flag(&["-p", "15001;"], "--envoy-port (-p)"),
    flag(&["-p", ""], "--envoy-port (-p)"),
    flag(&["-z", "abc"], "--inbound-capture-port (-z)"),
    flag(&["-e", "-1"], "--inbound-tunnel-port (-e)"),
    flag(&["-u", "istio-proxy"], "--proxy-uid (-u)"),
    flag(&["-u", "1337 1338"], "--proxy-uid (-u)"),
    flag(&["-g", "1337\n-A INPUT -j ACCEPT"], "--proxy-gid (-g)"),
    flag(&["-u", "99999999999"], "--proxy-uid (-u)"),
    flag(&["-m", "tproxy"], "--istio-inbound-interception-mode (-m)"),
    flag(&["-m", "TPROXY "], "--istio-inbound-interception-mode (-m)").ok_trimmed(),
    flag(&["-b", "80;rm -rf /"], "--istio-inbound-ports (-b)"),
    flag(&["-b", "*,80"], "--istio-inbound-ports (-b)"),
    flag(&["-b", "80-90"], "--istio-inbound-ports (-b)"),
    flag(&["-d", "15090 15021"], "--istio-local-exclude-ports (-d)"),
    flag(&["-q", "0"], "--istio-outbound-ports (-q)"),
    flag(
        &["-o", "65536"],
        "--istio-local-outbound-ports-exclude (-o)",
    ),
    flag(
        &["-o", "{ 53 }"],
        "--istio-local-outbound-ports-exclude (-o)",
    ),
    flag(&["-c", "eth0 eth1"], "--istio-exclude-interfaces (-c)"),
    flag(
        &["-c", "averyveryverylongname0"],
        "--istio-exclude-interfaces (-c)",
    ),
    flag(&["-c", "eth0\"; drop"], "--istio-exclude-interfaces (-c)"),
    flag(&["-k", "a/b"], "--kube-virt-interfaces (-k)"),
    flag(&["-k", "eth0:1"], "--kube-virt-interfaces (-k)"),
    flag(&["-k", "-i"], "--kube-virt-interfaces (-k)"),
    flag(&["-i", "10.0.0.1"], "--istio-service-cidr (-i)"),
    flag(&["-i", "10.0.0.0/33"], "--istio-service-cidr (-i)"),
    flag(&["-i", "*,10.0.0.0/8"], "--istio-service-cidr (-i)"),
    flag(&["-x", "*"], "--istio-service-exclude-cidr (-x)"),
    flag(
        &["-x", "10.0.0.0/8 -j ACCEPT"],
        "--istio-service-exclude-cidr (-x)",
    ),
    flag(&["-t", "0"], "--istio-inbound-tproxy-mark (-t)"),
    flag(&["-t", "mark"], "--istio-inbound-tproxy-mark (-t)"),
    flag(&["-r", "254"], "--istio-inbound-tproxy-route-table (-r)"),
    flag(&["-r", "x"], "--istio-inbound-tproxy-route-table (-r)"),
    flag(&["--iptables-probe-port", "0"], "--iptables-probe-port"),
    flag(&["--probe-timeout", "5 seconds"], "--probe-timeout"),
    flag(
        &["--force-iptables-binary", "legacy2"],
        "--force-iptables-binary",
    ),
    flag(&["--enable-ipv6", "yes"], "--enable-ipv6"),
    flag(
        &["--dns-servers", "10.96.0.10,dns.example"],
        "--dns-servers",
    ),
    flag(
        &["--outbound-owner-groups", "1000,bad group"],
        "--outbound-owner-groups",
    ),
    flag(
        &["--outbound-owner-groups-exclude", "a;b"],
        "--outbound-owner-groups-exclude",
    ),
    flag(
        &["--ipv4-loopback-cidr", "10.0.0.0/8"],
        "--ipv4-loopback-cidr",
    ),
    flag(
        &["--ipv4-loopback-cidr", "127.0.0.1/4"],
        "--ipv4-loopback-cidr",
    ),
    flag(&["--output", "yaml"], "--output"),
    flag(&["--redirect-dns=maybe"], "--redirect-dns"),
    flag(
        &["--log_output_level", "default:loud"],
        "--log_output_level",
    ),
    flag(&["--no-such-flag"], "--no-such-flag"),
    flag(&["-p"], "--envoy-port"),
    flag(&["--istio-service-cidr"], "--istio-service-cidr"),
    flag(
        &["--redirect-dns", "--resolv-conf", "/dev/zero"],
        "--resolv-conf",
    ),
    flag(
        &[
            "--redirect-dns",
            "--resolv-conf",
            "/nonexistent/resolv.conf",
        ],
        "--resolv-conf",
    ),
    envc(
        &[("INBOUND_CAPTURE_PORT", "15006x")],
        "env INBOUND_CAPTURE_PORT",
    ),
    envc(&[("PROXY_UID", "root")], "env PROXY_UID"),
    envc(
        &[("ISTIO_INBOUND_PORTS", "80,,x")],
        "env ISTIO_INBOUND_PORTS",
    ),
    envc(
        &[("ISTIO_SERVICE_EXCLUDE_CIDR", "fd00::/129")],
        "env ISTIO_SERVICE_EXCLUDE_CIDR",
    ),
    envc(
        &[("ISTIO_INBOUND_INTERCEPTION_MODE", "redirect")],
        "env ISTIO_INBOUND_INTERCEPTION_MODE",
    ),
    envc(
        &[("ISTIO_META_DNS_CAPTURE", "yes")],
        "env ISTIO_META_DNS_CAPTURE",
    ),
    envc(&[("INVALID_DROP", "2")], "env INVALID_DROP"),
    envc(
        &[("FORCE_IPTABLES_BINARY", "x")],
        "env FORCE_IPTABLES_BINARY",
    ),
    envc(
        &[("ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR", "127.0.0.1")],
        "env ISTIO_OUTBOUND_IPV4_LOOPBACK_CIDR",
    ),
    envc(
        &[("ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE", "g\n-A")],
        "env ISTIO_OUTBOUND_OWNER_GROUPS_EXCLUDE",
    ),
    envc(
        &[("KUBE_VIRT_INTERFACES", "eth 0")],
        "env KUBE_VIRT_INTERFACES",
    ),
    envc(&[("DNS_SERVERS", "10.96.0.10/32")], "env DNS_SERVERS"),
    envc(
        &[("REDIRECT_DNS", "true"), ("RESOLV_CONF", "/dev/zero")],
        "env RESOLV_CONF",
    ),
    envc(&[("ENABLE_IPV6", "1")], "env ENABLE_IPV6"),
    // The secondary env var wins over the primary one, so its bad value is the one named.
    envc(
        &[("REDIRECT_DNS", "true"), ("ISTIO_META_DNS_CAPTURE", "nope")],
        "env ISTIO_META_DNS_CAPTURE",
    ),
    // A flag wins over env: the env value is never looked at, the flag's bad value is named.
    Case {
        args: &["-b", "x"],
        env: &[("ISTIO_INBOUND_PORTS", "80")],
        names: "--istio-inbound-ports (-b)",
    },
];

impl Case {
    /// Marks a case whose value is fine once trimmed: it must succeed instead.
    const fn ok_trimmed(self) -> Case {
        Case { names: "", ..self }
    }
}

/// One case: exit 2, nothing on stdout, a message naming the flag or variable (or, for a
/// value that is fine once trimmed, success).
fn check(c: &Case) {
    let mut args = vec!["apply", "--dry-run", "--enable-ipv6", "false"];
    // Keep the user lookup off the machine: every case passes -u unless it tests -u.
    if !c.args.contains(&"-u") && !c.env.iter().any(|(k, _)| *k == "PROXY_UID") {
        args.extend(["-u", "1337"]);
    }
    if c.env.iter().any(|(k, _)| *k == "ENABLE_IPV6") {
        args.truncate(2);
        args.extend(["-u", "1337"]);
    }
    args.extend(c.args);
    let out = command(&args, c.env).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    if c.names.is_empty() {
        assert!(out.status.success(), "expected success, got {stderr}");
        return;
    }
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stdout.is_empty(), "stdout not empty: {stdout:?}");
    assert!(
        stderr.contains(c.names),
        "stderr does not name {:?}: {stderr}",
        c.names
    );
    assert_eq!(
        stderr.lines().filter(|l| !l.trim().is_empty()).count(),
        1,
        "one line: {stderr}"
    );
}

/// A trial name for a case: its flags or variables and values.
fn label(c: &Case) -> String {
    let mut parts: Vec<String> = c.args.iter().map(|a| a.to_string()).collect();
    parts.extend(c.env.iter().map(|(k, v)| format!("{k}={v}")));
    parts.join(" ").replace('\n', "\\n")
}

fn main() {
    let mut t = Trials::new();
    for (i, c) in CASES.iter().enumerate() {
        t.add(format!("bad::{i:02} {}", label(c)), NOTHING, move || {
            check(c)
        });
    }
    t.add("bad::errors_are_one_line", NOTHING, errors_are_one_line);
    for spec in flags::ALL {
        for (i, var) in spec.envs.iter().enumerate() {
            t.add(
                format!("empty_env::{var} ({})", kind(spec).replace('`', "")),
                NOTHING,
                move || an_empty_variable_is_unset(spec, i),
            );
        }
    }
    t.add(
        "env::every_variable_src_reads_is_cleared",
        NOTHING,
        every_variable_src_reads_is_cleared,
    );
    // `COMPACT=true` in the shell would make the run without the empty variable compact and
    // the run with it not; every other variable set to a bad value would fail either run.
    t.add("env::polluted::empty_env::COMPACT", NOTHING, || {
        support::trial_passes_in_a_polluted_environment("empty_env::COMPACT (bool)")
    });
    // The bad-input table (67 cases), one line, one trial per variable of the flag table, and the two
    // environment trials.
    t.declare(
        67 + 1 + ENV_VARIABLES + 2,
        &[("bad", 67 + 1), ("empty_env", ENV_VARIABLES), ("env", 2)],
    );
    t.run()
}

/// The variables of Istio's flag table.
const ENV_VARIABLES: usize = 44;

/// Every variable name src/ reads outside the flag tables (`var("NAME")`, `var_os("NAME")`,
/// and the CNI variables `require` lists) is one the tests clear (`support::OTHER_ENV`), so a
/// variable added to the code cannot leak from the shell into a test.
fn every_variable_src_reads_is_cleared() {
    fn sources(dir: &std::path::Path, out: &mut Vec<(String, String)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push((
                    p.display().to_string(),
                    std::fs::read_to_string(&p).unwrap(),
                ));
            }
        }
    }
    let mut files = Vec::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let cleared = support::our_env_vars();
    let mut read = Vec::new();
    for (path, text) in &files {
        for opener in ["var(\"", "var_os(\""] {
            for (at, _) in text.match_indices(opener) {
                let name: String = text[at + opener.len()..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    read.push((name, path.clone()));
                }
            }
        }
    }
    // `require`'s list continues after its first name.
    for (path, text) in &files {
        if let Some(at) = text.find("&[\"CNI_CONTAINERID\"") {
            let list = &text[at..at + text[at..].find(']').unwrap()];
            for name in list.split('"').filter(|w| w.starts_with("CNI_")) {
                read.push((name.to_string(), path.clone()));
            }
        }
    }
    assert!(
        read.iter().any(|(n, _)| n == "ENVOY_USER") && read.iter().any(|(n, _)| n == "CNI_IFNAME"),
        "the scan finds nothing: {read:?}"
    );
    let missing: Vec<String> = read
        .iter()
        .filter(|(n, _)| n != "PATH" && !cleared.contains(&n.as_str()))
        .map(|(n, p)| format!("{n} ({p})"))
        .collect();
    assert!(
        missing.is_empty(),
        "src/ reads variables the tests do not clear; add them to support::OTHER_ENV: {missing:?}"
    );
}

/// A value kind of the flag table, for trial names.
fn kind(spec: &Spec) -> &'static str {
    spec.value.split(';').next().unwrap_or(spec.value)
}

/// A valid value other than the default, by value kind: what a lower-precedence variable
/// holds, so that an empty variable above it can be seen to leave it in charge.
fn sample(spec: &Spec) -> &'static str {
    if spec.boolean {
        return if spec.default == Some("true") {
            "false"
        } else {
            "true"
        };
    }
    match kind(spec) {
        "`*` or groups (names or gids, at most 64)" | "groups" => "4242",
        "IPv4 loopback CIDR, /8 to /32" => "127.0.0.1/8",
        other => panic!("no sample value for a variable of kind {other:?}: add one here"),
    }
}

/// The settings every run has, as flags (long name, value), unless the flag under test is
/// one of them: its variables must not be outranked by the command line.
fn baseline(resolv_conf: &str) -> Vec<(&'static str, String)> {
    [
        ("proxy-uid", "1337"),
        ("enable-ipv6", "true"),
        ("istio-inbound-ports", "*"),
        ("istio-service-cidr", "*"),
        ("istio-local-exclude-ports", "15090,15021,15020"),
        ("redirect-dns", "true"),
        ("resolv-conf", resolv_conf),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_string()))
    .collect()
}

/// `spec`'s variable `i` set to "" against the same run without it: the same exit status
/// (success) and the same rules. The variables below it hold a sample value, so "unset"
/// means "the next one down decides", not merely "the default".
fn an_empty_variable_is_unset(spec: &'static Spec, i: usize) {
    let dir = std::env::temp_dir().join(format!(
        "meshtables-empty-env-{}-{}",
        std::process::id(),
        spec.envs[i]
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let resolv = dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 10.96.0.10\nnameserver fd00::a\n").unwrap();
    let mut args: Vec<String> = vec!["apply".into(), "--dry-run".into()];
    for (long, value) in baseline(&resolv.display().to_string()) {
        if long != spec.long {
            args.push(format!("--{long}={value}"));
        }
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let below: Vec<(&str, &str)> = spec.envs[..i].iter().map(|v| (*v, sample(spec))).collect();
    let mut empty = below.clone();
    empty.push((spec.envs[i], ""));
    let unset = command(&args, &below).output().unwrap();
    let set_empty = command(&args, &empty).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let text = |o: &std::process::Output| {
        format!(
            "status {:?}\n{}{}",
            o.status.code(),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    assert!(
        unset.status.success(),
        "the run without {} fails: {}",
        spec.envs[i],
        text(&unset)
    );
    assert_eq!(
        set_empty.status.code(),
        unset.status.code(),
        "{}=\"\": {}",
        spec.envs[i],
        text(&set_empty)
    );
    assert_eq!(
        String::from_utf8_lossy(&set_empty.stdout),
        String::from_utf8_lossy(&unset.stdout),
        "{}=\"\" changed the rules",
        spec.envs[i]
    );
}

fn errors_are_one_line() {
    let out = command(
        &[
            "apply",
            "-n",
            "-u",
            "1337",
            "--enable-ipv6",
            "false",
            "-b",
            "80;rm",
        ],
        &[],
    )
    .output()
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(r#"--istio-inbound-ports (-b): "80;rm" is not a port list"#),
        "{stderr}"
    );
}
