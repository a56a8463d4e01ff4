//! The CNI plugin, run exactly as a container runtime runs it: the binary under the name
//! `meshtables-cni`, `CNI_*` variables, the network configuration on stdin, a real namespace
//! from `ip netns add`, and the caller in a namespace of its own so that "not in the caller's"
//! can be asserted. Also `meshtables apply|check|clean --network-namespace` from outside, for
//! both backends, and per-pod settings read from a fake Kubernetes API server over HTTPS.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

#[cfg(feature = "kubernetes")]
#[path = "support/apiserver.rs"]
mod apiserver;
mod support;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use support::bin;
use support::netns::Netns;
use support::trials::{NOTHING, Needs, Trials, root};

/// The binary under the name a runtime finds the plugin by.
fn plugin() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshtables-cni-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("meshtables-cni");
    // Tests of this process create it concurrently: the first one wins, the others find it.
    match std::os::unix::fs::symlink(bin(), &link) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("{link:?}: {e}"),
        _ => link,
    }
}

/// One invocation: (exit status, stdout JSON or Null, stderr).
struct Reply {
    status: i32,
    json: Value,
    stderr: String,
}

impl Reply {
    fn code(&self) -> Option<u64> {
        self.json.get("code").and_then(Value::as_u64)
    }
    fn details(&self) -> &str {
        self.json
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Runs the plugin as a runtime would, from inside `caller` when given.
fn invoke(
    command: &str,
    netns: Option<&str>,
    conf: &str,
    caller: Option<&Netns>,
    args: &str,
) -> Reply {
    let path = std::env::var("PATH").unwrap_or_default();
    invoke_in(command, netns, conf, caller, args, &path)
}

/// `invoke` with `PATH` as the runtime's.
fn invoke_with_path(command: &str, netns: Option<&str>, conf: &str, path: &str) -> Reply {
    invoke_in(command, netns, conf, None, "", path)
}

fn invoke_in(
    command: &str,
    netns: Option<&str>,
    conf: &str,
    caller: Option<&Netns>,
    args: &str,
    path: &str,
) -> Reply {
    let mut c = match caller {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", &ns.name]).arg(plugin());
            c
        }
        None => Command::new(plugin()),
    };
    c.env_clear()
        .env("PATH", path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", "0123456789abcdef")
        .env("CNI_IFNAME", "eth0")
        .env("CNI_PATH", "/opt/cni/bin")
        .env("CNI_ARGS", args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(n) = netns {
        c.env("CNI_NETNS", n);
    }
    let mut child = c.spawn().unwrap();
    // A plugin that refuses an oversized configuration may stop reading before the end.
    let _ = child.stdin.take().unwrap().write_all(conf.as_bytes());
    let o = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    Reply {
        status: o.status.code().unwrap_or(-1),
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

fn prev_result(ns: &Netns) -> Value {
    prev_result_at(&ns.path())
}

/// A dual-stack prevResult whose interface is in namespace `netns`.
fn prev_result_at(netns: &str) -> Value {
    json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "02:42:ac:11:00:05", "sandbox": netns}],
        "ips": [
            {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0},
            {"address": "fd00:244::5/64", "interface": 0}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.96.0.10"]}
    })
}

/// A network configuration as a runtime passes it (list-level name and version filled in).
fn conf(extra: Value, prev: Option<Value>) -> String {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "type": "meshtables-cni",
        "istio-inbound-ports": "*",
        "istio-service-cidr": "*",
        "istio-local-exclude-ports": "15090,15021,15020",
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    if let Some(p) = prev {
        c["prevResult"] = p;
    }
    c.to_string()
}

const NEEDS: Needs = root(&[
    "ip",
    "nft",
    "iptables-nft-save",
    "iptables-legacy-save",
    "setpriv",
]);

/// Backends: (name, extra config, whether the rules show in `nft list ruleset`, a command
/// that removes some of our rules by hand).
const BACKENDS: &[(&str, &str, &[&str])] = &[
    (
        "nftables",
        r#"{"native-nftables": true}"#,
        &[
            "nft",
            "flush",
            "chain",
            "inet",
            "istio-proxy-nat",
            "istio-output",
        ],
    ),
    (
        "iptables-nft",
        r#"{"force-iptables-binary": "nft"}"#,
        &["iptables-nft", "-t", "nat", "-F", "ISTIO_OUTPUT"],
    ),
    (
        "iptables-legacy",
        r#"{"force-iptables-binary": "legacy"}"#,
        &["iptables-legacy", "-t", "nat", "-F", "ISTIO_OUTPUT"],
    ),
];

fn ours(netfilter: &str) -> bool {
    netfilter.contains("istio-proxy-") || netfilter.contains("ISTIO_")
}

fn add_check_del_as_a_runtime_runs_them() {
    for (backend, extra, tamper) in BACKENDS {
        let pod = Netns::new("pod");
        let caller = Netns::new("caller");
        let caller_before = caller.netfilter();
        let prev = prev_result(&pod);
        let c = conf(serde_json::from_str(extra).unwrap(), Some(prev.clone()));

        let add = invoke("ADD", Some(&pod.path()), &c, Some(&caller), "");
        assert_eq!(add.status, 0, "{backend} ADD: {} {}", add.json, add.stderr);
        // The result is prevResult, passed through unchanged.
        assert_eq!(add.json, prev, "{backend}: ADD must pass prevResult on");
        let live = pod.netfilter();
        assert!(
            ours(&live),
            "{backend}: no rules in the pod namespace:\n{live}"
        );
        // Dual-stack from prevResult: IPv6 rules too.
        assert!(
            live.contains("::6") || live.contains("ip6 saddr ::6"),
            "{backend}: no IPv6 rules:\n{live}"
        );
        assert_eq!(
            caller.netfilter(),
            caller_before,
            "{backend}: the caller's namespace changed"
        );

        let check = invoke("CHECK", Some(&pod.path()), &c, Some(&caller), "");
        assert_eq!(check.status, 0, "{backend} CHECK after ADD: {}", check.json);
        let o = pod.run(tamper[0], &tamper[1..]);
        assert!(
            o.status.success(),
            "{backend}: tamper: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let check = invoke("CHECK", Some(&pod.path()), &c, Some(&caller), "");
        assert_eq!(
            check.status, 1,
            "{backend}: CHECK must fail after rules are removed by hand"
        );
        assert_eq!(check.code(), Some(101), "{backend}: {}", check.json);
        assert!(
            check.details().contains("istio-output") || check.details().contains("ISTIO_OUTPUT"),
            "{}",
            check.json
        );

        for n in 1..=2 {
            let del = invoke("DEL", Some(&pod.path()), &c, Some(&caller), "");
            assert_eq!(
                del.status, 0,
                "{backend} DEL #{n}: {} {}",
                del.json, del.stderr
            );
            assert!(del.json.is_null(), "DEL prints nothing");
        }
        let after = pod.netfilter();
        assert!(!ours(&after), "{backend}: DEL left rules:\n{after}");
        pod.delete();
        let del = invoke("DEL", Some(&pod.path()), &c, Some(&caller), "");
        assert_eq!(
            del.status, 0,
            "{backend} DEL after the namespace is gone: {}",
            del.json
        );
        let del = invoke("DEL", None, &c, Some(&caller), "");
        assert_eq!(
            del.status, 0,
            "{backend} DEL without CNI_NETNS: {}",
            del.json
        );
        assert_eq!(
            caller.netfilter(),
            caller_before,
            "{backend}: the caller's namespace changed"
        );
        println!(
            "{backend}: ADD programs the pod namespace only and passes prevResult on; CHECK passes, then fails after tampering; DEL twice, DEL after deletion, DEL without CNI_NETNS: ok"
        );
    }
}

/// (what, command, CNI_NETNS, configuration, expected code, text the details must contain)
type BadInput<'a> = (&'a str, &'a str, Option<&'a str>, String, u64, &'a str);

/// What a runtime can get wrong, with `netns` as the pod's namespace: each refused before the
/// namespace is entered, with the spec's code and details that name the input.
fn bad_inputs(netns: &str) -> Vec<BadInput<'_>> {
    let prev = || Some(prev_result_at(netns));
    vec![
        (
            "undecodable JSON",
            "ADD",
            Some(netns),
            "{\"cniVersion\": \"1.1.0\",".into(),
            6,
            "not JSON",
        ),
        (
            "a configuration over 16 MiB",
            "ADD",
            Some(netns),
            " ".repeat((16 << 20) + 1),
            6,
            "larger than",
        ),
        (
            "a bad port",
            "ADD",
            Some(netns),
            conf(json!({"istio-inbound-ports": "80;rm"}), prev()),
            7,
            "istio-inbound-ports",
        ),
        (
            "a bad mode",
            "ADD",
            Some(netns),
            conf(json!({"istio-inbound-interception-mode": "tproxy"}), prev()),
            7,
            "istio-inbound-interception-mode",
        ),
        (
            "a misspelt flag",
            "ADD",
            Some(netns),
            conf(json!({"istio-inbound-port": "80"}), prev()),
            2,
            "istio-inbound-port",
        ),
        (
            "a flag with no place here",
            "ADD",
            Some(netns),
            conf(json!({"network-namespace": "/x"}), prev()),
            2,
            "network-namespace",
        ),
        (
            "a list of objects",
            "ADD",
            Some(netns),
            conf(json!({"istio-service-cidr": [{"a": 1}]}), prev()),
            7,
            "istio-service-cidr",
        ),
        (
            "no prevResult",
            "ADD",
            Some(netns),
            conf(json!({}), None),
            7,
            "prevResult",
        ),
        (
            "a version before chains",
            "ADD",
            Some(netns),
            conf(json!({"cniVersion": "0.2.0"}), prev()),
            1,
            "0.2.0",
        ),
        (
            "DNS from the host's resolv.conf",
            "ADD",
            Some(netns),
            conf(json!({"redirect-dns": true}), prev()),
            7,
            "dns-servers",
        ),
        (
            "no CNI_NETNS",
            "ADD",
            None,
            conf(json!({}), prev()),
            4,
            "CNI_NETNS",
        ),
        (
            "an unknown command",
            "FROB",
            Some(netns),
            conf(json!({}), prev()),
            4,
            "FROB",
        ),
        (
            "a namespace that does not exist",
            "ADD",
            Some("/var/run/netns/mtcni-none"),
            conf(json!({}), prev()),
            3,
            "mtcni-none",
        ),
    ]
}

/// A refused invocation: exit status 1, the spec's error JSON with `code`, a message, details
/// naming `names`, and the configuration's version.
fn answers_with_the_spec_code(what: &str, r: &Reply, code: u64, names: &str) {
    assert_eq!(r.status, 1, "{what}: exit status; {}", r.json);
    assert_eq!(r.code(), Some(code), "{what}: {}", r.json);
    assert!(
        r.details().contains(names),
        "{what}: details must name {names:?}: {}",
        r.json
    );
    assert!(
        r.json["msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: {}",
        r.json
    );
    assert!(r.json["cniVersion"].is_string(), "{what}: {}", r.json);
}

/// One bad input, with a `CNI_NETNS` that is no namespace at all: it is refused before the
/// plugin looks at the namespace, so no root is needed.
fn bad_input_is_refused(what: &str) {
    let cases = bad_inputs("/nonexistent/meshtables-cni-netns");
    let (what, command, netns, config, code, names) = cases
        .iter()
        .find(|c| c.0 == what)
        .expect("a case of bad_inputs");
    let r = invoke(command, *netns, config, None, "");
    answers_with_the_spec_code(what, &r, *code, names);
}

/// Every bad input against a real pod namespace: the same answers, and the namespace's
/// netfilter is exactly as before.
fn rejected_adds_change_nothing() {
    let pod = Netns::new("bad");
    let p = pod.path();
    let before = pod.netfilter();
    let cases = bad_inputs(&p);
    for (what, command, netns, config, code, names) in &cases {
        let r = invoke(command, *netns, config, None, "");
        answers_with_the_spec_code(what, &r, *code, names);
    }
    assert_eq!(
        pod.netfilter(),
        before,
        "a rejected ADD must change nothing"
    );
    println!(
        "{} bad inputs answered with the spec's codes, nothing changed",
        cases.len()
    );
}

/// STATUS with its configuration as it is (native nftables: no binaries needed): ready.
fn status_is_ready() {
    let s = invoke(
        "STATUS",
        None,
        &conf(json!({"native-nftables": true}), None),
        None,
        "",
    );
    assert_eq!(s.status, 0, "STATUS: {} {}", s.json, s.stderr);
    assert!(s.json.is_null(), "STATUS prints nothing: {}", s.json);
}

/// STATUS when the kubeconfig it names cannot be read: not available (50), naming it.
fn status_without_its_kubeconfig_is_not_available() {
    let s = invoke(
        "STATUS",
        None,
        &conf(
            json!({"kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"}}),
            None,
        ),
        None,
        "",
    );
    answers_with_the_spec_code("STATUS", &s, 50, "/nonexistent/kubeconfig");
}

/// STATUS of an iptables configuration with no iptables-restore on PATH: not available (50).
fn status_without_iptables_restore_is_not_available() {
    let empty = std::env::temp_dir().join(format!("meshtables-cni-nopath-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let s = invoke_with_path(
        "STATUS",
        None,
        &conf(json!({}), None),
        &empty.display().to_string(),
    );
    answers_with_the_spec_code("STATUS", &s, 50, "iptables-restore");
}

/// GC: nothing of ours outlives a pod's namespace, so there is nothing to collect.
fn gc_collects_nothing_and_prints_nothing() {
    let mut gc = json!({"cni.dev/valid-attachments": [{"containerID": "abc", "ifname": "eth0"}]});
    gc["native-nftables"] = json!(true);
    let g = invoke("GC", None, &conf(gc, None), None, "");
    assert_eq!(g.status, 0, "GC: {}", g.json);
    assert!(g.json.is_null(), "GC prints nothing");
}

/// A dual-stack prevResult in the shape of `version`, as bridge + host-local print it: before
/// 1.0.0 every IP names its family and the result always has `dns`.
fn prev_result_in(version: &str, ns: &Netns) -> Value {
    let before_1 = version.starts_with("0.");
    let ip = |family: &str, address: &str, gateway: &str| {
        let mut ip = json!({"interface": 2, "address": address, "gateway": gateway});
        if before_1 {
            ip["version"] = family.into();
        }
        ip
    };
    json!({
        "cniVersion": version,
        "interfaces": [
            {"name": "cni0", "mac": "0a:58:0a:f4:01:01"},
            {"name": "veth0a1b2c3d", "mac": "5e:9f:1c:7d:2a:11"},
            {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": ns.path()}
        ],
        "ips": [
            ip("4", "10.244.1.5/24", "10.244.1.1"),
            ip("6", "fd00:244::5/64", "fd00:244::1")
        ],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
        "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
    })
}

/// Whether every IP of a printed result carries a family (`"version"`), or none does.
fn ip_versions(result: &Value) -> Option<bool> {
    let ips = result["ips"].as_array()?;
    let with: Vec<bool> = ips.iter().map(|ip| ip.get("version").is_some()).collect();
    if with.iter().all(|w| *w) {
        Some(true)
    } else if with.iter().all(|w| !*w) {
        Some(false)
    } else {
        None
    }
}

/// ADD in a chain of `version` with a dual-stack prevResult of that version's shape: the
/// rules are installed, both families (IPv6 seen in the prevResult's addresses), and the
/// result is the prevResult, printed in that version. CHECK passes where the version allows
/// it; DEL removes everything.
fn add_in_a_chain_of(version: &str) {
    let pod = Netns::new("ver");
    let prev = prev_result_in(version, &pod);
    let c = conf(
        json!({"cniVersion": version, "native-nftables": true}),
        Some(prev.clone()),
    );
    let add = invoke("ADD", Some(&pod.path()), &c, None, "");
    assert_eq!(add.status, 0, "{version} ADD: {} {}", add.json, add.stderr);
    assert_eq!(add.json["cniVersion"], version, "{}", add.json);
    assert_eq!(
        add.json, prev,
        "{version}: the result is prevResult, in its version"
    );
    assert_eq!(
        ip_versions(&add.json),
        Some(version.starts_with("0.")),
        "{version}: IPs name their family before 1.0.0 only: {}",
        add.json
    );
    let live = pod.netfilter();
    assert!(ours(&live), "{version}: no rules:\n{live}");
    assert!(
        live.contains("ip6 saddr ::6"),
        "{version}: no IPv6 rules from a dual-stack prevResult:\n{live}"
    );
    if version != "0.3.0" && version != "0.3.1" {
        let check = invoke("CHECK", Some(&pod.path()), &c, None, "");
        assert_eq!(check.status, 0, "{version} CHECK: {}", check.json);
    }
    let del = invoke("DEL", Some(&pod.path()), &c, None, "");
    assert_eq!(del.status, 0, "{version} DEL: {}", del.json);
    assert!(!ours(&pod.netfilter()), "{version}: DEL left rules");
}

/// A prevResult in another version than the chain's (a primary plugin that prints its own):
/// read in its shape, printed in the configuration's, as libcni converts results.
fn a_prev_result_of_another_version_is_printed_in_the_chains(
    conf_version: &str,
    prev_version: &str,
) {
    let pod = Netns::new("conv");
    let prev = prev_result_in(prev_version, &pod);
    let c = conf(
        json!({"cniVersion": conf_version, "native-nftables": true}),
        Some(prev.clone()),
    );
    let add = invoke("ADD", Some(&pod.path()), &c, None, "");
    assert_eq!(add.status, 0, "ADD: {} {}", add.json, add.stderr);
    let mut want = prev_result_in(conf_version, &pod);
    want["cniVersion"] = conf_version.into();
    assert_eq!(add.json, want, "{prev_version} printed as {conf_version}");
    assert!(pod.netfilter().contains("ip6 saddr ::6"), "no IPv6 rules");
}

fn a_1_1_0_prev_result_in_a_0_3_1_chain() {
    a_prev_result_of_another_version_is_printed_in_the_chains("0.3.1", "1.1.0");
}

fn a_0_3_1_prev_result_in_a_1_1_0_chain() {
    a_prev_result_of_another_version_is_printed_in_the_chains("1.1.0", "0.3.1");
}

/// `command` in a configuration of `version`, which does not allow it: code 1 with skel's
/// message ("config version does not allow CHECK"), the namespace untouched.
fn refused_in(command: &str, version: &str, first: &str) {
    let pod = Netns::new("gate");
    let before = pod.netfilter();
    let c = conf(
        json!({"cniVersion": version, "native-nftables": true}),
        Some(prev_result_in(version, &pod)),
    );
    let r = invoke(command, Some(&pod.path()), &c, None, "");
    assert_eq!(
        r.status, 1,
        "{command} in {version}: {} {}",
        r.json, r.stderr
    );
    assert_eq!(r.code(), Some(1), "{command} in {version}: {}", r.json);
    assert_eq!(
        r.json["msg"],
        format!("config version does not allow {command}"),
        "{}",
        r.json
    );
    assert!(
        r.details().contains(version) && r.details().contains(first),
        "{}",
        r.json
    );
    assert_eq!(r.json["cniVersion"], version, "{}", r.json);
    assert_eq!(pod.netfilter(), before, "{command} changed the namespace");
}

/// VERSION lists every version of `SUPPORTED_VERSIONS` (the list the installer reads), its
/// own `cniVersion` the newest, as skel writes it.
fn version_lists_every_supported_version() {
    let v = invoke("VERSION", None, r#"{"cniVersion":"0.3.1"}"#, None, "");
    assert_eq!(v.status, 0, "{} {}", v.json, v.stderr);
    assert_eq!(
        v.json,
        json!({"cniVersion": "1.1.0", "supportedVersions": ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]})
    );
    assert_eq!(
        v.json["supportedVersions"],
        json!(meshtables::cni::conf::SUPPORTED_VERSIONS)
    );
}

/// A configuration in a version the plugin does not speak: every command but DEL and
/// VERSION refuses it with code 1, naming the version, and changes nothing.
fn an_unsupported_version_is_refused(version: &str) {
    let pod = Netns::new("unsup");
    let before = pod.netfilter();
    let c = conf(json!({"cniVersion": version}), Some(prev_result(&pod)));
    for command in ["ADD", "CHECK", "STATUS", "GC"] {
        let r = invoke(command, Some(&pod.path()), &c, None, "");
        assert_eq!(r.status, 1, "{command} {version}: {}", r.json);
        assert_eq!(r.code(), Some(1), "{command} {version}: {}", r.json);
        assert!(r.details().contains(version), "{command}: {}", r.json);
    }
    assert_eq!(
        pod.netfilter(),
        before,
        "a refused version changed the namespace"
    );
}

/// One trial per version, per refused command and version, per unsupported version.
macro_rules! version_trials {
    (
        add: [$($add:ident = $v:literal;)*]
        refused: [$($refused:ident = $cmd:literal in $rv:literal from $first:literal;)*]
        unsupported: [$($unsup:ident = $uv:literal;)*]
    ) => {
        $(fn $add() { add_in_a_chain_of($v) })*
        $(fn $refused() { refused_in($cmd, $rv, $first) })*
        $(fn $unsup() { an_unsupported_version_is_refused($uv) })*
        const VERSION_TRIALS: &[(&str, fn())] = &[
            $((stringify!($add), $add),)*
            $((stringify!($refused), $refused),)*
            $((stringify!($unsup), $unsup),)*
        ];
    };
}

version_trials! {
    add: [
        add_in_a_0_3_0_chain = "0.3.0";
        add_in_a_0_3_1_chain = "0.3.1";
        add_in_a_0_4_0_chain = "0.4.0";
        add_in_a_1_0_0_chain = "1.0.0";
        add_in_a_1_1_0_chain = "1.1.0";
    ]
    refused: [
        check_refused_in_0_3_0 = "CHECK" in "0.3.0" from "0.4.0";
        check_refused_in_0_3_1 = "CHECK" in "0.3.1" from "0.4.0";
        status_refused_in_0_3_1 = "STATUS" in "0.3.1" from "1.1.0";
        status_refused_in_0_4_0 = "STATUS" in "0.4.0" from "1.1.0";
        status_refused_in_1_0_0 = "STATUS" in "1.0.0" from "1.1.0";
        gc_refused_in_0_3_1 = "GC" in "0.3.1" from "1.1.0";
        gc_refused_in_0_4_0 = "GC" in "0.4.0" from "1.1.0";
        gc_refused_in_1_0_0 = "GC" in "1.0.0" from "1.1.0";
    ]
    unsupported: [
        version_0_2_0_is_refused = "0.2.0";
        version_2_0_0_is_refused = "2.0.0";
    ]
}

/// An injected pod as the sidecar injector leaves it.
#[cfg(feature = "kubernetes")]
fn injected_pod(ns: &str, name: &str, annotations: Value) -> Value {
    let mut ann = json!({"sidecar.istio.io/status": "{\"initContainers\":[\"istio-validation\"],\"containers\":[\"istio-proxy\"]}"});
    for (k, v) in annotations.as_object().unwrap() {
        ann[k] = v.clone();
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "annotations": ann, "labels": {"app": name}},
        "spec": {
            "initContainers": [{"name": "istio-validation", "image": "proxyv2"}],
            "containers": [
                {"name": "app", "image": "app"},
                {"name": "istio-proxy", "image": "proxyv2", "args": ["proxy", "sidecar"],
                 "securityContext": {"runAsUser": 1337, "runAsGroup": 1337},
                 "env": [{"name": "ISTIO_META_DNS_CAPTURE", "value": "true"}]}
            ]
        }
    })
}

#[cfg(feature = "kubernetes")]
fn pod_settings_come_from_the_api_server() {
    let api = apiserver::ApiServer::start();
    api.add_pod(injected_pod(
        "shop",
        "cart",
        json!({
            "traffic.sidecar.istio.io/includeInboundPorts": "8080",
            "traffic.sidecar.istio.io/excludeOutboundIPRanges": "10.96.0.0/12",
        }),
    ));
    let mut plain = injected_pod("shop", "batch", json!({}));
    plain["metadata"]["annotations"] = json!({});
    api.add_pod(plain);
    api.add_pod(injected_pod("kube-system", "coredns", json!({})));
    api.add_pod(injected_pod(
        "shop",
        "typo",
        json!({"traffic.sidecar.istio.io/includeInboundPorts": "80,http"}),
    ));
    let dir = std::env::temp_dir().join(format!("meshtables-kube-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let k8s = json!({"native-nftables": true, "kubernetes": {"kubeconfig": kubeconfig, "exclude-namespaces": ["kube-system"]}});
    let args = |ns: &str, name: &str| {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name};K8S_POD_INFRA_CONTAINER_ID=0123"
        )
    };

    // The injected pod: its annotation narrows inbound capture to 8080, its exclusion is
    // there, DNS capture comes from the proxy's env.
    let pod = Netns::new("cart");
    let c = conf(k8s.clone(), Some(prev_result(&pod)));
    let r = invoke("ADD", Some(&pod.path()), &c, None, &args("shop", "cart"));
    assert_eq!(r.status, 0, "{} {}", r.json, r.stderr);
    // `nft list` prints counter values; the rules are compared without them.
    let live = String::from_utf8_lossy(&pod.run("nft", &["list", "ruleset"]).stdout)
        .replace(" packets 0 bytes 0", "");
    for want in [
        "tcp dport 8080 counter jump istio-in-redirect",
        "ip daddr 10.96.0.0/12 counter return",
        "udp dport 53 counter redirect to :15053",
    ] {
        assert!(live.contains(want), "missing {want:?} in:\n{live}");
    }
    assert!(
        !live.contains("tcp dport 15090 counter return"),
        "with a port list, -d does not apply:\n{live}"
    );
    let r = invoke("CHECK", Some(&pod.path()), &c, None, &args("shop", "cart"));
    assert_eq!(r.status, 0, "CHECK: {}", r.json);

    // Left alone: no status annotation; an excluded namespace; not a Kubernetes pod.
    for (ns, name, cni_args) in [
        ("shop", "batch", args("shop", "batch")),
        ("kube-system", "coredns", args("kube-system", "coredns")),
        ("", "", String::new()),
    ] {
        let other = Netns::new("alone");
        let c = conf(k8s.clone(), Some(prev_result(&other)));
        let r = invoke("ADD", Some(&other.path()), &c, None, &cni_args);
        assert_eq!(r.status, 0, "{ns}/{name}: {}", r.json);
        assert_eq!(
            r.json,
            prev_result(&other),
            "{ns}/{name}: prevResult passes through"
        );
        assert!(!ours(&other.netfilter()), "{ns}/{name} must be left alone");
        let r = invoke("CHECK", Some(&other.path()), &c, None, &cni_args);
        assert_eq!(
            r.status, 0,
            "{ns}/{name}: CHECK of a pod left alone: {}",
            r.json
        );
    }

    // A bad annotation is named; a pod the API server does not know; no API server.
    let other = Netns::new("typo");
    let c = conf(k8s.clone(), Some(prev_result(&other)));
    let r = invoke("ADD", Some(&other.path()), &c, None, &args("shop", "typo"));
    assert_eq!(r.code(), Some(7), "{}", r.json);
    assert!(
        r.details()
            .contains("traffic.sidecar.istio.io/includeInboundPorts"),
        "{}",
        r.json
    );
    let r = invoke("ADD", Some(&other.path()), &c, None, &args("shop", "ghost"));
    assert_eq!(r.code(), Some(100), "{}", r.json);
    assert!(r.details().contains("shop/ghost"), "{}", r.json);
    let dead = dir.join("dead-kubeconfig");
    let text = std::fs::read_to_string(&kubeconfig)
        .unwrap()
        .replace(&api.port.to_string(), "1");
    std::fs::write(&dead, text).unwrap();
    let c = conf(
        json!({"kubernetes": {"kubeconfig": dead}}),
        Some(prev_result(&other)),
    );
    let r = invoke("ADD", Some(&other.path()), &c, None, &args("shop", "cart"));
    assert_eq!(
        r.code(),
        Some(11),
        "an unreachable API server means try again later: {}",
        r.json
    );
    assert!(!ours(&other.netfilter()));
    println!(
        "API server: injected pod programmed from its annotations and proxy env; uninjected pod, excluded namespace and non-pod left alone; bad annotation named (7); unknown pod (100); unreachable API server (11); {} requests served",
        api.requests.load(std::sync::atomic::Ordering::SeqCst)
    );
}

fn apply_check_clean_with_network_namespace_from_outside() {
    let injected = support::INJECTED;
    for (backend, extra) in [
        ("nftables", &["--native-nftables"][..]),
        ("iptables-nft", &["--force-iptables-binary", "nft"][..]),
        (
            "iptables-legacy",
            &["--force-iptables-binary", "legacy"][..],
        ),
    ] {
        let pod = Netns::new("target");
        let caller = Netns::new("host");
        let before = caller.netfilter();
        let target = pod.path();
        let run = |sub: &str, more: &[&str]| {
            let mut args: Vec<&str> = vec![sub];
            args.extend(&injected[1..]);
            args.extend(extra);
            args.extend(["--network-namespace", target.as_str()]);
            args.extend(more);
            support::clear_our_env(&mut Command::new("ip"))
                .args(["netns", "exec", &caller.name])
                .arg(bin())
                .args(&args)
                .output()
                .unwrap()
        };
        let o = run("check", &[]);
        assert_eq!(o.status.code(), Some(1), "{backend}: check before apply");
        let o = run("apply", &[]);
        assert!(
            o.status.success(),
            "{backend}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            ours(&pod.netfilter()),
            "{backend}: nothing in the target namespace"
        );
        assert_eq!(
            caller.netfilter(),
            before,
            "{backend}: the caller's namespace changed"
        );
        let o = run("check", &[]);
        assert!(
            o.status.success(),
            "{backend}: check: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // Validation inside the namespace, as the proxy uid (with the capability to enter it).
        let mut args: Vec<&str> = vec!["apply"];
        args.extend(&injected[1..]);
        args.extend(extra);
        args.extend([
            "--network-namespace",
            &target,
            "--skip-rule-apply",
            "--run-validation",
            "--probe-timeout",
            "3s",
        ]);
        let o = support::clear_our_env(&mut Command::new("setpriv"))
            .args([
                "--reuid",
                "1337",
                "--regid",
                "1337",
                "--clear-groups",
                "--inh-caps",
                "+sys_admin",
                "--ambient-caps",
                "+sys_admin",
            ])
            .arg(bin())
            .args(&args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{backend}: validation in the namespace: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = run("clean", &[]);
        assert!(
            o.status.success(),
            "{backend}: clean: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(!ours(&pod.netfilter()), "{backend}: clean left rules");
        assert_eq!(
            caller.netfilter(),
            before,
            "{backend}: the caller's namespace changed"
        );
        println!(
            "{backend}: apply, check, --run-validation and clean work inside --network-namespace; the caller's namespace is untouched"
        );
    }
    // A namespace that does not exist is an error that names it.
    let o = support::clear_our_env(&mut Command::new(bin()))
        .args([
            "apply",
            "-u",
            "1337",
            "--native-nftables",
            "--network-namespace",
            "/var/run/netns/mtcni-missing",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("/var/run/netns/mtcni-missing"));
}

/// ADD with `config` (iptables-nft unless it says otherwise), then DEL with `del_config`: DEL
/// exits 0 with nothing on stdout, and nothing of ours is left in the namespace.
fn del_removes_everything(tag: &str, config: Value, del_config: &str) {
    let pod = Netns::new(tag);
    let before = pod.netfilter();
    let add = invoke(
        "ADD",
        Some(&pod.path()),
        &conf(config, Some(prev_result(&pod))),
        None,
        "",
    );
    assert_eq!(add.status, 0, "{tag}: ADD: {} {}", add.json, add.stderr);
    assert!(ours(&pod.netfilter()), "{tag}: ADD installed nothing");
    let del = invoke("DEL", Some(&pod.path()), del_config, None, "");
    assert_eq!(del.status, 0, "{tag}: DEL: {} {}", del.json, del.stderr);
    assert!(
        del.json.is_null(),
        "{tag}: DEL prints nothing: {}",
        del.json
    );
    let after = pod.netfilter();
    assert!(!ours(&after), "{tag}: DEL left rules of ours:\n{after}");
    // Not a single rule is left in any variant (iptables-nft keeps the empty tables and base
    // chains it created, as it does for every user: they hold nothing and are not ours).
    let rules = |s: &str| s.lines().filter(|l| l.starts_with("-A ")).count();
    assert_eq!(rules(&after), rules(&before), "{tag}: rules left:\n{after}");
    for (cmd, args) in [
        ("ip", &["-4", "rule", "show", "table", "133"][..]),
        ("ip", &["-6", "rule", "show", "table", "133"][..]),
        ("ip", &["-4", "route", "show", "table", "133"][..]),
        ("ip", &["-6", "route", "show", "table", "133"][..]),
    ] {
        let o = pod.run(cmd, args);
        assert!(
            o.stdout.is_empty(),
            "{tag}: {args:?} left: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
    let lo = pod.run("ip", &["-6", "addr", "show", "dev", "lo"]);
    assert!(
        !String::from_utf8_lossy(&lo.stdout).contains("::6/128"),
        "{tag}: ::6 left on lo"
    );
}

/// The configurations ADD refuses (each tested to be refused): DEL with them still removes
/// everything of ours, so the runtime goes on to release the pod's address.
macro_rules! del_with_a_config_add_refuses {
    ($($name:ident: $bad:expr, $add_code:expr;)*) => {$(
        fn $name() {
            let bad: String = $bad;
            let pod = Netns::new("refused");
            let add = invoke("ADD", Some(&pod.path()), &bad, None, "K8S_POD_NAMESPACE=shop;K8S_POD_NAME=app");
            assert_eq!(add.code(), Some($add_code), "ADD must refuse it: {}", add.json);
            del_removes_everything(
                stringify!($name),
                json!({"force-iptables-binary": "nft", "istio-inbound-interception-mode": "TPROXY", "enable-ipv6": "true"}),
                &bad,
            );
        }
    )*};
}

fn with_prev(extra: Value) -> String {
    let mut v: Value = serde_json::from_str(&conf(extra, None)).unwrap();
    v["prevResult"] = json!({"cniVersion": "1.1.0", "ips": [{"address": "10.244.1.5/24"}]});
    v.to_string()
}

del_with_a_config_add_refuses! {
    del_with_a_bad_port: with_prev(json!({"istio-inbound-ports": "abc"})), 7;
    del_with_a_bad_mode: with_prev(json!({"istio-inbound-interception-mode": "tproxy"})), 7;
    del_with_an_unknown_key: with_prev(json!({"istio-inbound-port": "80"})), 2;
    del_with_a_flag_that_has_no_place: with_prev(json!({"network-namespace": "/x"})), 2;
    del_with_a_list_of_objects: with_prev(json!({"istio-service-cidr": [{"a": 1}]})), 7;
    del_with_an_old_version: with_prev(json!({"cniVersion": "0.2.0"})), 1;
    del_with_a_bad_mark: with_prev(json!({"istio-inbound-tproxy-mark": "0"})), 7;
    del_with_an_unreadable_kubeconfig: with_prev(json!({"kubernetes": {"kubeconfig": "/nonexistent/kubeconfig"}})), 7;
    del_with_undecodable_json: "{\"cniVersion\": \"1.1.0\",".to_string(), 6;
}

fn del_with_native_nftables_removes_iptables_nft_rules() {
    del_removes_everything(
        "xnft",
        json!({"force-iptables-binary": "nft", "istio-inbound-interception-mode": "TPROXY"}),
        &conf(json!({"native-nftables": true}), None),
    );
}

fn del_with_native_nftables_removes_iptables_legacy_rules() {
    del_removes_everything(
        "xlegacy",
        json!({"force-iptables-binary": "legacy", "enable-ipv6": "true"}),
        &conf(json!({"native-nftables": true}), None),
    );
}

fn del_with_iptables_settings_removes_nftables_tables() {
    del_removes_everything(
        "xnative",
        json!({"native-nftables": true, "istio-inbound-interception-mode": "TPROXY"}),
        &conf(json!({"force-iptables-binary": "legacy"}), None),
    );
}

fn del_of_a_namespace_that_is_gone_or_unnamed_succeeds() {
    let unknown = conf(
        json!({"no-such-key": 1, "istio-inbound-ports": "abc"}),
        None,
    );
    for (what, netns) in [
        (
            "a missing namespace",
            Some("/var/run/netns/mtcni-never-existed"),
        ),
        ("no CNI_NETNS", None),
    ] {
        let r = invoke("DEL", netns, &unknown, None, "");
        assert_eq!(r.status, 0, "{what}: {} {}", r.json, r.stderr);
        assert!(r.json.is_null(), "{what}: {}", r.json);
    }
    // A namespace deleted between two DELs, with bad CNI_ARGS DEL does not read.
    let pod = Netns::new("gone");
    let path = pod.path();
    for round in 0..2 {
        let r = invoke("DEL", Some(&path), &unknown, None, "K8S_POD_NAME");
        assert_eq!(r.status, 0, "DEL {round}: {} {}", r.json, r.stderr);
    }
    pod.delete();
    let r = invoke("DEL", Some(&path), &unknown, None, "");
    assert_eq!(
        r.status, 0,
        "DEL after ip netns del: {} {}",
        r.json, r.stderr
    );
}

fn group_names_are_refused_in_cni_mode() {
    let pod = Netns::new("groups");
    let before = pod.netfilter();
    for key in ["outbound-owner-groups", "outbound-owner-groups-exclude"] {
        let c = conf(
            json!({key: "1000,root", "native-nftables": true}),
            Some(prev_result(&pod)),
        );
        let r = invoke("ADD", Some(&pod.path()), &c, None, "");
        assert_eq!(r.code(), Some(7), "{key}: {}", r.json);
        assert!(
            r.details().contains(key) && r.details().contains("numeric"),
            "{}",
            r.json
        );
    }
    assert_eq!(pod.netfilter(), before, "nothing changed");
}

/// ADD, CHECK and DEL with `CNI_NETNS` naming the plugin's own namespace (the node's, on a
/// real node): refused with code 4 (invalid environment), the namespace left as it was. The
/// plugin runs inside a throwaway "node" namespace, so nothing real is at stake.
fn the_plugins_own_namespace_is_refused() {
    let node = Netns::new("node");
    let before = node.netfilter();
    let own = "/proc/self/ns/net";
    for cmd in ["ADD", "CHECK", "DEL"] {
        let prev = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "sandbox": own}],
            "ips": [{"address": "10.244.1.5/24", "interface": 0}]
        });
        let r = invoke(
            cmd,
            Some(own),
            &conf(json!({}), Some(prev)),
            Some(&node),
            "",
        );
        assert_eq!(r.code(), Some(4), "{cmd}: {} {}", r.json, r.stderr);
        assert!(
            r.details().contains("own network namespace"),
            "{cmd}: {}",
            r.details()
        );
    }
    assert_eq!(
        node.netfilter(),
        before,
        "the plugin's own namespace changed"
    );
}

/// A `CNI_NETNS` that is a FIFO, a regular file or a directory: refused at once with code 4,
/// never blocking on the open.
fn a_cni_netns_that_is_not_a_namespace_is_refused() {
    let dir = std::env::temp_dir().join(format!("meshtables-fifo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("netns-fifo");
    let _ = std::fs::remove_file(&fifo);
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let file = dir.join("netns-file");
    std::fs::write(&file, "not a namespace").unwrap();
    for path in [&fifo, &file, &dir] {
        let p = path.display().to_string();
        let prev = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "sandbox": p}],
            "ips": [{"address": "10.244.1.5/24", "interface": 0}]
        });
        let started = std::time::Instant::now();
        let r = invoke("ADD", Some(&p), &conf(json!({}), Some(prev)), None, "");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{p}: blocked"
        );
        assert_eq!(r.code(), Some(4), "{p}: {} {}", r.json, r.stderr);
        assert!(
            r.details().contains("not a namespace file"),
            "{p}: {}",
            r.details()
        );
    }
}

/// A `CNI_NETNS` that is a namespace file of another type, or a /proc file that is no
/// namespace: refused by ADD and DEL with code 4 (not 3, "does not exist"), as a FIFO is.
fn a_cni_netns_of_another_type_is_refused(path: &str) {
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "sandbox": path}],
        "ips": [{"address": "10.244.1.5/24", "interface": 0}]
    });
    let caller = Netns::new("nstype");
    let before = caller.netfilter();
    for cmd in ["ADD", "DEL"] {
        let r = invoke(
            cmd,
            Some(path),
            &conf(json!({}), Some(prev.clone())),
            Some(&caller),
            "",
        );
        assert_eq!(r.status, 1, "{cmd} {path}: {} {}", r.json, r.stderr);
        assert_eq!(r.code(), Some(4), "{cmd} {path}: {} {}", r.json, r.stderr);
        assert!(
            r.details().contains(path) && r.details().contains("not a network namespace"),
            "{cmd} {path}: {}",
            r.details()
        );
    }
    assert_eq!(caller.netfilter(), before, "the caller's namespace changed");
}

fn a_mount_namespace_as_cni_netns_is_refused() {
    a_cni_netns_of_another_type_is_refused("/proc/self/ns/mnt");
}

fn a_user_namespace_as_cni_netns_is_refused() {
    a_cni_netns_of_another_type_is_refused("/proc/self/ns/user");
}

fn a_proc_file_as_cni_netns_is_refused() {
    a_cni_netns_of_another_type_is_refused("/proc/self/status");
}

/// `K8S_POD_NAMESPACE`/`K8S_POD_NAME` values the API server cannot hold: ADD answers code 4
/// naming the variable and the value, before any request (the fake API server counts none),
/// and programs nothing. Before, the plugin asked, got nothing useful, and answered 11: the
/// runtime retried forever.
#[cfg(feature = "kubernetes")]
fn a_pod_name_the_api_cannot_hold_is_refused(var: &str, value: &str) {
    let api = apiserver::ApiServer::start();
    let dir = std::env::temp_dir().join(format!(
        "meshtables-podname-{}-{var}-{}",
        std::process::id(),
        value.len()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = api.kubeconfig(&dir);
    let pod = Netns::new("podname");
    let before = pod.netfilter();
    let c = conf(
        json!({"native-nftables": true, "kubernetes": {"kubeconfig": kubeconfig}}),
        Some(prev_result(&pod)),
    );
    let (ns, name) = match var {
        "K8S_POD_NAMESPACE" => (value, "cart"),
        _ => ("shop", value),
    };
    let args = format!("IgnoreUnknown=1;K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}");
    let r = invoke("ADD", Some(&pod.path()), &c, None, &args);
    assert_eq!(r.status, 1, "{} {}", r.json, r.stderr);
    assert_eq!(r.code(), Some(4), "{} {}", r.json, r.stderr);
    assert!(
        r.details().contains(var) && r.details().contains(&format!("{value:?}")),
        "the details must name {var} and {value:?}: {}",
        r.details()
    );
    assert_eq!(
        api.requests.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "a request was made"
    );
    assert_eq!(
        pod.netfilter(),
        before,
        "a refused ADD changed the namespace"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One trial per name the API server cannot hold.
#[cfg(feature = "kubernetes")]
macro_rules! bad_pod_names {
    ($($name:ident: $var:literal = $value:expr;)*) => {
        $(fn $name() {
            let value: String = $value;
            a_pod_name_the_api_cannot_hold_is_refused($var, &value);
        })*
        const BAD_POD_NAMES: &[(&str, fn())] = &[$((stringify!($name), $name)),*];
    };
}

#[cfg(feature = "kubernetes")]
bad_pod_names! {
    pod_name_with_uppercase_is_refused: "K8S_POD_NAME" = "Cart".into();
    pod_name_with_a_slash_is_refused: "K8S_POD_NAME" = "cart/../../secrets".into();
    pod_name_dot_dot_is_refused: "K8S_POD_NAME" = "..".into();
    pod_name_over_253_is_refused: "K8S_POD_NAME" = "a".repeat(254);
    namespace_with_uppercase_is_refused: "K8S_POD_NAMESPACE" = "Shop".into();
    namespace_with_a_slash_is_refused: "K8S_POD_NAMESPACE" = "shop/pods".into();
    namespace_dot_dot_is_refused: "K8S_POD_NAMESPACE" = "..".into();
    namespace_with_a_dot_is_refused: "K8S_POD_NAMESPACE" = "shop.prod".into();
    namespace_over_63_is_refused: "K8S_POD_NAMESPACE" = "a".repeat(64);
}

fn main() {
    let mut t = Trials::new();
    let tests: &[(&str, fn())] = &[
        (
            "add_check_del_as_a_runtime_runs_them",
            add_check_del_as_a_runtime_runs_them,
        ),
        ("rejected_adds_change_nothing", rejected_adds_change_nothing),
        (
            "apply_check_clean_with_network_namespace_from_outside",
            apply_check_clean_with_network_namespace_from_outside,
        ),
        (
            "del_with_native_nftables_removes_iptables_nft_rules",
            del_with_native_nftables_removes_iptables_nft_rules,
        ),
        (
            "del_with_native_nftables_removes_iptables_legacy_rules",
            del_with_native_nftables_removes_iptables_legacy_rules,
        ),
        (
            "del_with_iptables_settings_removes_nftables_tables",
            del_with_iptables_settings_removes_nftables_tables,
        ),
        (
            "del_of_a_namespace_that_is_gone_or_unnamed_succeeds",
            del_of_a_namespace_that_is_gone_or_unnamed_succeeds,
        ),
        (
            "group_names_are_refused_in_cni_mode",
            group_names_are_refused_in_cni_mode,
        ),
        ("del_with_a_bad_port", del_with_a_bad_port),
        ("del_with_a_bad_mode", del_with_a_bad_mode),
        ("del_with_an_unknown_key", del_with_an_unknown_key),
        (
            "del_with_a_flag_that_has_no_place",
            del_with_a_flag_that_has_no_place,
        ),
        ("del_with_a_list_of_objects", del_with_a_list_of_objects),
        ("del_with_an_old_version", del_with_an_old_version),
        ("del_with_a_bad_mark", del_with_a_bad_mark),
        (
            "del_with_an_unreadable_kubeconfig",
            del_with_an_unreadable_kubeconfig,
        ),
        ("del_with_undecodable_json", del_with_undecodable_json),
        (
            "the_plugins_own_namespace_is_refused",
            the_plugins_own_namespace_is_refused,
        ),
        (
            "a_cni_netns_that_is_not_a_namespace_is_refused",
            a_cni_netns_that_is_not_a_namespace_is_refused,
        ),
        (
            "a_mount_namespace_as_cni_netns_is_refused",
            a_mount_namespace_as_cni_netns_is_refused,
        ),
        (
            "a_user_namespace_as_cni_netns_is_refused",
            a_user_namespace_as_cni_netns_is_refused,
        ),
        (
            "a_proc_file_as_cni_netns_is_refused",
            a_proc_file_as_cni_netns_is_refused,
        ),
        (
            "a_1_1_0_prev_result_in_a_0_3_1_chain",
            a_1_1_0_prev_result_in_a_0_3_1_chain,
        ),
        (
            "a_0_3_1_prev_result_in_a_1_1_0_chain",
            a_0_3_1_prev_result_in_a_1_1_0_chain,
        ),
    ];
    for (name, f) in tests {
        t.add(*name, NEEDS, *f);
    }
    // The protocol's answers that need no namespace: no root.
    let semantics: &[(&str, fn())] = &[
        (
            "version_lists_every_supported_version",
            version_lists_every_supported_version,
        ),
        ("status::is_ready", status_is_ready),
        (
            "status::without_its_kubeconfig_is_not_available",
            status_without_its_kubeconfig_is_not_available,
        ),
        (
            "status::without_iptables_restore_is_not_available",
            status_without_iptables_restore_is_not_available,
        ),
        (
            "gc::collects_nothing_and_prints_nothing",
            gc_collects_nothing_and_prints_nothing,
        ),
    ];
    for (name, f) in semantics {
        t.add(*name, NOTHING, *f);
    }
    for (what, ..) in bad_inputs("/nonexistent/meshtables-cni-netns") {
        let what = what.to_string();
        t.add(
            format!("bad_input::{}", what.replace(' ', "_")),
            NOTHING,
            move || bad_input_is_refused(&what),
        );
    }
    for (name, f) in VERSION_TRIALS {
        t.add(*name, NEEDS, *f);
    }
    #[cfg(feature = "kubernetes")]
    for (name, f) in BAD_POD_NAMES {
        t.add(*name, NEEDS, *f);
    }
    #[cfg(feature = "kubernetes")]
    t.add(
        "pod_settings_come_from_the_api_server",
        NEEDS,
        pod_settings_come_from_the_api_server,
    );
    // Root: 24 tests, 15 version trials, and with the Kubernetes client 9 bad pod names and
    // the API server's settings; no root: VERSION, STATUS ×3, GC and 13 bad inputs.
    let root_trials = 24
        + 15
        + if cfg!(feature = "kubernetes") {
            9 + 1
        } else {
            0
        };
    t.declare(
        root_trials + 5 + 13,
        &[("status", 3), ("gc", 1), ("bad_input", 13)],
    );
    t.run()
}
