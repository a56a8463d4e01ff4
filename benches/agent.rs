//! The node agent's enrolment benchmark (root): what the agent adds to a pod's CNI ADD.
//!
//! A namespace plays the node. Inside it run the fake API server of the tests
//! (`tests/support/kubeapi.rs`) and `meshtables cni-install --ambient-enabled` (netlink), and
//! a stand-in ztunnel acks every request at once. Each round creates two fresh pod namespaces
//! and times, from spawn to exit, the plugin's ADD as the runtime runs it:
//!
//! - for an ambient pod: the plugin reads the pod, hands it to the agent, and the agent reads
//!   it again, writes the in-pod rules, gets ztunnel's ack, adds the probe-set member and
//!   patches the annotation twice (`pending`, `enabled`);
//! - for a pod of a plain namespace: the plugin reads the pod and its namespace and leaves it
//!   alone.
//!
//! The difference of the medians is what ambient enrolment adds to an ADD. For reference it
//! also times `meshtables ambient apply --network-namespace` of the same rules as a process of
//! its own. Run: `cargo bench --bench agent` (`-- --rounds N`, default 21).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark: a failed unwrap ends the run"
)]

#[path = "../tests/support/apiserver.rs"]
mod apiserver;
#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::kubeapi::Api;
use support::netns::Netns;
use support::ztunnel::{Got, Ztunnel};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn pod(ns: &str, name: &str, uid: &str) -> Value {
    json!({"kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": {}, "annotations": {}},
        "spec": {"nodeName": "node-1", "serviceAccountName": "sa",
            "containers": [{"name": "app", "image": "app:1"}]},
        "status": {"phase": "Pending"}})
}

/// Set in the child that times the drift pass's /proc index in a PID namespace of its own.
const INDEX_CHILD: &str = "MESHTABLES_BENCH_INDEX_CHILD";

/// How many processes the index is timed over: a node with 110 pods runs a few thousand.
const INDEX_PROCESSES: usize = 2000;

/// The drift pass's one look at /proc (`netns_scan::index`), timed in a PID namespace of
/// this child's own (its PID 1 readable, as the node's is to the agent) over
/// `INDEX_PROCESSES` processes (none a pod's: each costs the cgroup read and parse).
fn index_child() {
    let mut sleepers: Vec<std::process::Child> = (0..INDEX_PROCESSES)
        .map(|_| {
            std::process::Command::new("sleep")
                .arg("600")
                .spawn()
                .unwrap()
        })
        .collect();
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        meshtables::agent::netns_scan::index(std::path::Path::new("/proc")).unwrap();
        times.push(t.elapsed());
    }
    for s in &mut sleepers {
        let _ = s.kill();
        let _ = s.wait();
    }
    println!(
        "  drift pass's /proc index: {} over {INDEX_PROCESSES} processes (median of 5)",
        ms(median(times))
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !nix::unistd::geteuid().is_root() {
        println!("agent bench: needs root (network namespaces, netfilter); skipped");
        return;
    }
    if std::env::var_os(INDEX_CHILD).is_some() {
        return index_child();
    }
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(21);
    let node = Netns::new("bench-node");
    let api = Api::start(&node.path(), apiserver::tls_server(), apiserver::TOKEN);
    api.add_namespace("mesh", json!({"istio.io/dataplane-mode": "ambient"}));
    api.add_namespace("plain", json!({}));
    let dir = tempfile::tempdir().unwrap();
    for d in ["net", "bin", "sa", "run", "ztunnel"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::write(dir.path().join("sa/token"), apiserver::TOKEN).unwrap();
    std::fs::write(dir.path().join("sa/ca.crt"), &api.ca_pem).unwrap();
    std::fs::write(
        dir.path().join("net/10-test.conflist"),
        r#"{"cniVersion": "1.0.0", "name": "test", "plugins": [{"type": "ptp"}]}"#,
    )
    .unwrap();
    // The node's nft probe rule keys on the kubelet's uid: a process named kubelet.
    let kubelet_bin = dir.path().join("kubelet");
    std::fs::copy("/bin/sleep", &kubelet_bin).unwrap();
    let mut kubelet = Command::new(&kubelet_bin).arg("3600").spawn().unwrap();
    let d = dir.path().display().to_string();
    let zds = dir.path().join("ztunnel/ztunnel.sock");
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &node.name])
        .arg(support::bin())
        .args(["cni-install", "--ambient-enabled", "--node-name", "node-1"])
        .args(["--cni-bin-dir", &format!("{d}/bin")])
        .args(["--cni-conf-dir", &format!("{d}/net")])
        .args(["--host-cni-conf-dir", &format!("{d}/net")])
        .args(["--service-account-dir", &format!("{d}/sa")])
        .args(["--cni-agent-run-dir", &format!("{d}/run")])
        .args(["--ztunnel-uds-address", &zds.display().to_string()])
        .args(["--log-level", "warn"]);
    support::clear_our_env(&mut c);
    c.env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", api.port.to_string())
        .env("NATIVE_NFTABLES", "true")
        .env("AMBIENT_DNS_CAPTURE", "true")
        .stdout(Stdio::null());
    let mut installer = c.spawn().unwrap();
    let conflist = dir.path().join("net/10-test.conflist");
    let start = Instant::now();
    while !std::fs::read_to_string(&conflist).is_ok_and(|t| t.contains("ambient-agent"))
        || !dir.path().join("run/agent.sock").exists()
        || !zds.exists()
    {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the agent did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The stand-in ztunnel: acks everything, at once.
    let z = Ztunnel::ready(&zds);
    std::thread::spawn(move || {
        while let Got::Request(_, fd) = z.recv() {
            if let Some(fd) = fd {
                let _ = nix::unistd::close(fd);
            }
            z.ack("");
        }
    });
    let entry = {
        let list: Value =
            serde_json::from_str(&std::fs::read_to_string(&conflist).unwrap()).unwrap();
        let mut e = list["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["type"] == "meshtables-cni")
            .cloned()
            .unwrap();
        e["cniVersion"] = json!("1.0.0");
        e["name"] = json!("test");
        e["prevResult"] = json!({"cniVersion": "1.0.0",
            "interfaces": [{"name": "eth0", "sandbox": "/x"}],
            "ips": [{"address": "10.244.1.5/24", "interface": 0}]});
        e.to_string()
    };
    let plugin = |command: &str, ns: &str, name: &str, netns: &str| -> Duration {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &node.name])
            .arg(dir.path().join("bin/meshtables-cni"));
        support::clear_our_env(&mut c);
        c.env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "c0ffee")
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", "eth0")
            .env(
                "CNI_ARGS",
                format!("K8S_POD_NAMESPACE={ns};K8S_POD_NAME={name}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let t = Instant::now();
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(entry.as_bytes())
            .unwrap();
        let o = child.wait_with_output().unwrap();
        let took = t.elapsed();
        assert!(
            o.status.success(),
            "{command} {ns}/{name}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        took
    };
    let (mut ambient, mut plain, mut rules) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let uid = |n: usize| format!("00000000-0000-4000-8000-{:06}{:06}", round, n);
        let (a, p, r) = (
            Netns::new("bench-amb"),
            Netns::new("bench-plain"),
            Netns::new("bench-rules"),
        );
        let name = format!("p{round}");
        let mut amb_pod = pod("mesh", &name, &uid(1));
        amb_pod["metadata"]["labels"]["istio.io/dataplane-mode"] = json!("ambient");
        api.add_pod(amb_pod);
        api.add_pod(pod("plain", &name, &uid(2)));
        // Interleaved, the order alternating, so both see the same machine.
        if round % 2 == 0 {
            ambient.push(plugin("ADD", "mesh", &name, &a.path()));
            plain.push(plugin("ADD", "plain", &name, &p.path()));
        } else {
            plain.push(plugin("ADD", "plain", &name, &p.path()));
            ambient.push(plugin("ADD", "mesh", &name, &a.path()));
        }
        let mut c = support::command(
            &[
                "ambient",
                "apply",
                "--network-namespace",
                &r.path(),
                "--native-nftables",
            ],
            &[("AMBIENT_DNS_CAPTURE", "true")],
        );
        let t = Instant::now();
        let o = c.output().unwrap();
        rules.push(t.elapsed());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        plugin("DEL", "mesh", &name, &a.path());
    }
    let (am, pm, rm) = (median(ambient), median(plain), median(rules));
    println!("node agent enrolment ({rounds} rounds, medians, whole plugin processes):");
    println!(
        "  ADD of a pod of a plain namespace (read pod and namespace, leave it): {}",
        ms(pm)
    );
    println!(
        "  ADD of an ambient pod (agent: rules, ztunnel ack, probe set, 2 patches): {}",
        ms(am)
    );
    println!(
        "  added by ambient enrolment: {} (`meshtables ambient apply` of the same rules as its own process: {})",
        ms(am.saturating_sub(pm)),
        ms(rm)
    );
    // The drift pass's per-pod work, in-process as the agent runs it (`ambient check` through
    // the engine, in the pod's namespace): one pass over 200 pods with their rules in.
    let pods: Vec<Netns> = (0..200).map(|_| Netns::new("bench-drift")).collect();
    for p in &pods {
        let o = support::command(
            &[
                "ambient",
                "apply",
                "--network-namespace",
                &p.path(),
                "--native-nftables",
            ],
            &[("AMBIENT_DNS_CAPTURE", "true")],
        )
        .output()
        .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let env: std::collections::HashMap<String, String> = [
        ("AMBIENT_DNS_CAPTURE".to_string(), "true".to_string()),
        ("NATIVE_NFTABLES".to_string(), "true".to_string()),
    ]
    .into();
    let mut passes = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        for p in &pods {
            let mut flags = meshtables::flags::Flags::default();
            flags.set(
                &meshtables::profile::ambient::flags::NETWORK_NAMESPACE.spec,
                p.path(),
            );
            // As the agent's pass runs it: quiet unless something is wrong.
            meshtables::logging::quieter(meshtables::logging::Level::Warn, || {
                meshtables::run::execute(
                    &meshtables::profile::ambient::Ambient,
                    &flags,
                    meshtables::options::Subcommand::Check,
                    &env,
                    &meshtables::host::System,
                    &mut Vec::new(),
                )
            })
            .unwrap();
        }
        passes.push(t.elapsed());
    }
    let pass = median(passes);
    println!(
        "  drift check, in-process: {} for 200 pods ({} per pod; median of 5 passes)",
        ms(pass),
        ms(pass / 200)
    );
    drop(pods);
    let o = std::process::Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(std::env::current_exe().unwrap())
        .env(INDEX_CHILD, "1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    print!("{}", String::from_utf8_lossy(&o.stdout));
    let _ = installer.kill();
    let _ = installer.wait();
    let _ = kubelet.kill();
    let _ = kubelet.wait();
}
