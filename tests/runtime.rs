//! The CNI plugin under a real container runtime: podman with its CNI backend runs a conflist
//! of the reference `bridge` plugin (with `host-local` IPAM; and `portmap`, as flannel and
//! Calico ship it, in their 0.3.1 chain) followed by `meshtables-cni`, for
//! containers made from a busybox root filesystem (nothing is pulled). Every test runs podman
//! inside a network namespace of its own (`unshare -n`), with its own podman storage, CNI
//! configuration and IPAM directories, so tests are hermetic and run in parallel.
//!
//! What a runtime does that a driver might not: on a failed ADD it runs DEL for the whole
//! chain with the same configuration, and the chain stops at the first plugin that fails, so a
//! DEL that fails on a setting leaks the pod's address in `host-local`.
//! Root; ignored with the reason without it, failed under CI=true.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::trials::{Needs, Trials, root};

const NEEDS: Needs = root(&[
    "podman",
    "unshare",
    "nsenter",
    "busybox",
    "nft",
    "iptables-nft-save",
    "iptables-legacy-save",
]);

/// The reference plugins the runtime chains before ours.
fn cni_plugins() -> Option<String> {
    ["bridge", "host-local", "loopback", "portmap"]
        .iter()
        .find(|p| !Path::new("/usr/lib/cni").join(p).exists())
        .map(|p| format!("needs /usr/lib/cni/{p} (containernetworking-plugins)"))
}

/// A scratch directory for one test's podman: storage, CNI configuration and plugin
/// directories, IPAM leases, and a busybox root filesystem for its containers.
struct Node {
    dir: PathBuf,
}

impl Node {
    fn new(tag: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("mt-podman-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["netd", "bin", "root", "run", "ipam", "rootfs/bin"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        let busybox = support::which("busybox").unwrap();
        std::fs::copy(&busybox, dir.join("rootfs/bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "true"] {
            std::os::unix::fs::symlink("busybox", dir.join("rootfs/bin").join(applet)).unwrap();
        }
        for p in ["bridge", "host-local", "loopback", "portmap"] {
            let _ = std::os::unix::fs::symlink(
                Path::new("/usr/lib/cni").join(p),
                dir.join("bin").join(p),
            );
        }
        std::os::unix::fs::symlink(support::bin(), dir.join("bin/meshtables-cni")).unwrap();
        std::fs::write(
            dir.join("containers.conf"),
            format!(
                "[network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{0}/bin\"]\nnetwork_config_dir = \"{0}/netd\"\n",
                dir.display()
            ),
        )
        .unwrap();
        Node { dir }
    }

    /// Writes the conflist of network `mtnet`: bridge + host-local, then meshtables-cni with
    /// Istio's settings and `ours` (JSON members, e.g. `"native-nftables": true`).
    fn conflist(&self, ours: &str) -> String {
        self.conflist_of("1.0.0", "", ours)
    }

    /// The conflist of `mtnet` in CNI `version`, with `between` (plugin entries, each
    /// followed by a comma) between the bridge and meshtables-cni.
    fn conflist_of(&self, version: &str, between: &str, ours: &str) -> String {
        let extra = if ours.is_empty() {
            String::new()
        } else {
            format!(", {ours}")
        };
        format!(
            r#"cat > {dir}/netd/mtnet.conflist <<'CONF'
{{"cniVersion": "{version}", "name": "mtnet", "plugins": [
  {{"type": "bridge", "bridge": "mtbr0", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "dataDir": "{dir}/ipam", "ranges": [[{{"subnet": "10.99.0.0/24"}}]],
             "routes": [{{"dst": "0.0.0.0/0"}}]}}}},
  {between}
  {{"type": "meshtables-cni", "istio-inbound-ports": "*", "istio-service-cidr": "*",
    "istio-local-exclude-ports": "15090,15021,15020"{extra}}}
]}}
CONF"#,
            dir = self.dir.display()
        )
    }

    /// Runs `script` with `podman` as a shell function bound to this node, inside a network
    /// namespace of its own (lo up), and returns (stdout, stderr).
    fn run(&self, script: &str) -> (String, String) {
        let d = self.dir.display();
        let prelude = format!(
            "export CONTAINERS_CONF={d}/containers.conf
            ip link set lo up
            podman() {{ command podman --root {d}/root --runroot {d}/run \"$@\"; }}
            # run [OPTIONS...] -- COMMAND...: a container of the busybox root filesystem in mtnet
            run() {{ local o=(); while [ \"$1\" != -- ]; do o+=(\"$1\"); shift; done; shift
              podman run --ulimit nofile=1024:1024 --ulimit nproc=1024:1024 --network mtnet \"${{o[@]}}\" --rootfs {d}/rootfs \"$@\"; }}
            leases() {{ ls {d}/ipam/mtnet | grep -c '^10\\.' ; }}
            "
        );
        let o = Command::new("unshare")
            .args(["-n", "bash", "-c", &format!("{prelude}\n{script}")])
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let d = self.dir.display();
        let _ = Command::new("podman")
            .args([
                "--root",
                &format!("{d}/root"),
                "--runroot",
                &format!("{d}/run"),
                "rm",
                "-af",
                "-t",
                "0",
            ])
            .env("CONTAINERS_CONF", format!("{d}/containers.conf"))
            .output();
        let _ = Command::new("umount")
            .args(["-R", &format!("{d}/root"), &format!("{d}/run")])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A conflist whose meshtables entry ADD refuses: the container does not start, the runtime's
/// DEL with the same configuration succeeds through the whole chain, and host-local holds no
/// lease afterwards (before the fix, DEL failed with code 7 or 2 and the address leaked).
fn refused_add_releases_the_address(tag: &str, bad: &str, refusal: &str) {
    let node = Node::new(tag);
    let (out, err) = node.run(&format!(
        "{conf}
        for i in 1 2 3; do run --rm -- true && echo STARTED; done
        echo leases=$(leases)
        podman rm -af -t 0 >/dev/null && echo REMOVED",
        conf = node.conflist(bad)
    ));
    assert!(
        !out.contains("STARTED"),
        "{tag}: the container started\n{out}\n{err}"
    );
    assert!(
        err.contains(refusal),
        "{tag}: ADD's refusal must name {refusal:?}:\n{err}"
    );
    assert!(
        out.contains("leases=0"),
        "{tag}: addresses leaked after 3 refused ADDs:\n{out}\n{err}"
    );
    assert!(
        out.contains("REMOVED"),
        "{tag}: podman rm failed:\n{out}\n{err}"
    );
}

fn runtime_bad_port_add_fails_and_del_releases_the_address() {
    refused_add_releases_the_address(
        "port",
        r#""istio-inbound-ports": "abc""#,
        "istio-inbound-ports",
    );
}

fn runtime_unknown_key_add_fails_and_del_releases_the_address() {
    refused_add_releases_the_address("key", r#""istio-inbound-port": "80""#, "istio-inbound-port");
}

fn runtime_bad_kubeconfig_add_fails_and_del_releases_the_address() {
    refused_add_releases_the_address(
        "kube",
        r#""istio-inbound-interception-mode": "tproxy", "kubernetes": {"kubeconfig": "/nonexistent"}"#,
        "istio-inbound-interception-mode",
    );
}

/// ADD programs the container's namespace with `add_with`; the configuration is then
/// switched to `del_with` (a runtime reads the file again for DEL) and the container removed.
/// A process kept in the namespace lets us look after the runtime let go of it: nothing of
/// ours is left, and the address is released.
fn del_removes_what_add_installed(tag: &str, add_with: &str, del_with: &str, installed: &str) {
    let node = Node::new(tag);
    let (out, err) = node.run(&format!(
        "{add_conf}
        run -d --name c1 -- sleep 1000 >/dev/null || echo ADD-FAILED
        ns=$(podman inspect c1 --format '{{{{.NetworkSettings.SandboxKey}}}}')
        nsenter --net=$ns sleep 1000 & keeper=$!
        sleep 0.2
        state() {{ nsenter -t $keeper -n sh -c 'nft list ruleset; iptables-nft-save; ip6tables-nft-save; iptables-legacy-save; ip rule; ip -6 rule; ip route show table 133; ip -6 addr show dev lo'; }}
        state | grep -c '{installed}' | sed 's/^/installed=/'
        echo leases-before=$(leases)
        {del_conf}
        podman rm -f -t 0 c1 >/dev/null || echo DEL-FAILED
        state | grep -c -e ISTIO_ -e istio-proxy -e 'lookup 133' -e '::6/128' -e 'dev lo table 133' | sed 's/^/left=/'
        echo leases-after=$(leases)
        kill $keeper",
        add_conf = node.conflist(add_with),
        del_conf = node.conflist(del_with),
    ));
    assert!(!out.contains("FAILED"), "{tag}:\n{out}\n{err}");
    assert!(
        !out.contains("installed=0") && out.contains("installed="),
        "{tag}: ADD installed nothing:\n{out}\n{err}"
    );
    assert!(out.contains("leases-before=1"), "{tag}:\n{out}\n{err}");
    assert!(
        out.contains("left=0"),
        "{tag}: DEL left something of ours:\n{out}\n{err}"
    );
    assert!(
        out.contains("leases-after=0"),
        "{tag}: address not released:\n{out}\n{err}"
    );
}

fn runtime_del_with_native_nftables_removes_iptables_nft_tproxy_rules() {
    del_removes_what_add_installed(
        "xnft",
        r#""force-iptables-binary": "nft", "istio-inbound-interception-mode": "TPROXY""#,
        r#""native-nftables": true"#,
        "ISTIO_",
    );
}

fn runtime_del_with_native_nftables_removes_iptables_legacy_rules() {
    del_removes_what_add_installed(
        "xlegacy",
        r#""force-iptables-binary": "legacy""#,
        r#""native-nftables": true"#,
        "ISTIO_",
    );
}

fn runtime_native_nftables_add_and_del() {
    del_removes_what_add_installed(
        "native",
        r#""native-nftables": true, "istio-inbound-interception-mode": "TPROXY""#,
        r#""native-nftables": true, "istio-inbound-interception-mode": "TPROXY""#,
        "istio-proxy-",
    );
}

/// The bridge-only network a primary plugin writes before the installer adds us.
#[cfg(feature = "kubernetes")]
fn bridge_only(d: &Path) -> String {
    format!(
        r#"{{"cniVersion": "1.0.0", "name": "mtnet", "plugins": [
  {{"type": "bridge", "bridge": "mtbr0", "isGateway": true, "ipMasq": false,
    "ipam": {{"type": "host-local", "dataDir": "{}/ipam", "ranges": [[{{"subnet": "10.99.0.0/24"}}]],
             "routes": [{{"dst": "0.0.0.0/0"}}]}}}}
]}}
"#,
        d.display()
    )
}

/// A running `meshtables cni-install` over this node's directories, with `extra` settings;
/// killed if a failed assertion drops it (it would hold the test's pipes).
#[cfg(feature = "kubernetes")]
struct Installer(std::process::Child);

#[cfg(feature = "kubernetes")]
impl Installer {
    fn start(d: &Path, extra: &[&str]) -> Installer {
        let bin = format!("{}/bin", d.display());
        let netd = format!("{}/netd", d.display());
        let mut args = vec![
            "cni-install",
            "--cni-bin-dir",
            &bin,
            "--cni-conf-dir",
            &netd,
            "--kubernetes=false",
            "--native-nftables",
            "--plugin-settings",
            r#"{"istio-inbound-ports": "*", "istio-service-cidr": "*", "istio-local-exclude-ports": "15090,15021,15020"}"#,
        ];
        args.extend_from_slice(extra);
        let child = support::command(&args, &[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Installer(child)
    }

    /// SIGTERM; whether it exited 0.
    fn stop(&mut self) -> bool {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        self.0.wait().unwrap().success()
    }
}

#[cfg(feature = "kubernetes")]
impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits up to 10 s for `cond`.
fn wait_for(cond: &dyn Fn() -> bool) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < std::time::Duration::from_secs(10) && !cond() {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    cond()
}

/// Starts container `name` in `mtnet` and returns whether its namespace holds our nftables
/// tables, with what podman said and the chain (for a failure's message).
fn intercepted(node: &Node, conf: &Path, name: &str) -> (bool, String) {
    let (out, err) = node.run(&format!(
        "run -d --name {name} -- sleep 1000 >/dev/null || echo START-FAILED
        ns=$(podman inspect {name} --format '{{{{.NetworkSettings.SandboxKey}}}}')
        echo tables=$(nsenter --net=$ns nft list tables | grep -c istio-proxy)
        podman rm -f -t 0 {name} >/dev/null || echo RM-FAILED"
    ));
    assert!(!out.contains("FAILED"), "{name}:\n{out}\n{err}");
    let why = format!(
        "{out}\n{err}\n{}",
        std::fs::read_to_string(conf).unwrap_or_default()
    );
    (!out.contains("tables=0"), why)
}

/// The chain flannel and Calico ship, in their stock version: `"cniVersion": "0.3.1"`, the
/// primary (bridge + host-local here), `portmap` with its capability (the container publishes
/// a port, so portmap programs it and passes the result on in 0.3.1's shape), then
/// meshtables-cni. The container starts, its namespace holds our tables, and removing it
/// releases its address. (Before 0.3.x was served, ADD answered code 1 and podman dropped
/// the network: no container started.)
fn runtime_0_3_1_chain_with_portmap_starts_an_intercepted_container() {
    let node = Node::new("v031");
    let portmap = r#"{"type": "portmap", "capabilities": {"portMappings": true}},"#;
    let (out, err) = node.run(&format!(
        "{conf}
        run -d --name c1 -p 18080:80 -- sleep 1000 >/dev/null || echo START-FAILED
        ns=$(podman inspect c1 --format '{{{{.NetworkSettings.SandboxKey}}}}')
        echo tables=$(nsenter --net=$ns nft list tables | grep -c istio-proxy)
        nsenter --net=$ns ip -4 -o addr show dev eth0 | grep -q 'inet 10.99.0.' && echo ADDRESSED
        iptables-save -t nat | grep -q 'dport 18080' && echo PORTMAPPED
        echo leases-before=$(leases)
        podman rm -f -t 0 c1 >/dev/null || echo RM-FAILED
        echo leases-after=$(leases)",
        conf = node.conflist_of("0.3.1", portmap, r#""native-nftables": true"#),
    ));
    assert!(!out.contains("FAILED"), "{out}\n{err}");
    assert!(
        out.contains("tables=") && !out.contains("tables=0"),
        "no tables of ours in the container's namespace:\n{out}\n{err}"
    );
    assert!(
        out.contains("ADDRESSED"),
        "the bridge gave no address:\n{out}\n{err}"
    );
    assert!(
        out.contains("PORTMAPPED"),
        "portmap did not run:\n{out}\n{err}"
    );
    assert!(out.contains("leases-before=1"), "{out}\n{err}");
    assert!(
        out.contains("leases-after=0"),
        "address not released:\n{out}\n{err}"
    );
}

/// `meshtables cni-install` against this runtime's real configuration and plugin
/// directories: the network starts as the bridge alone and without our binary; the installer
/// copies the binary and puts the plugin in the chain, and a container started then is
/// intercepted; the configuration is rewritten without us (as a primary plugin does) and the
/// next container is intercepted again; after SIGTERM the file is as it was and the next
/// container is not intercepted.
#[cfg(feature = "kubernetes")]
fn runtime_installer_puts_the_plugin_in_the_chain() {
    let node = Node::new("installer");
    let d = node.dir.clone();
    std::fs::remove_file(d.join("bin/meshtables-cni")).unwrap();
    let conf = d.join("netd/mtnet.conflist");
    std::fs::write(&conf, bridge_only(&d)).unwrap();
    let mut installer = Installer::start(&d, &[]);
    let holds_us = || std::fs::read_to_string(&conf).is_ok_and(|c| c.contains("meshtables-cni"));
    assert!(
        wait_for(&holds_us),
        "the installer did not put the plugin in the chain"
    );
    assert!(
        d.join("bin/meshtables-cni").exists(),
        "the binary was not installed"
    );
    let (yes, why) = intercepted(&node, &conf, "c1");
    assert!(
        yes,
        "a container started after install is not intercepted:\n{why}"
    );
    // The primary rewrites its file without us.
    std::fs::write(&conf, bridge_only(&d)).unwrap();
    assert!(wait_for(&holds_us), "not repaired after the rewrite");
    let (yes, why) = intercepted(&node, &conf, "c2");
    assert!(
        yes,
        "after the repair, a new container is not intercepted:\n{why}"
    );
    assert!(installer.stop(), "the installer's uninstall failed");
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), bridge_only(&d));
    assert!(!d.join("bin/meshtables-cni").exists());
    let (yes, why) = intercepted(&node, &conf, "c3");
    assert!(
        !yes,
        "after uninstall, a new container is still intercepted:\n{why}"
    );
}

/// Calico's and flannel's stock chains say 0.3.1: the installer puts its entry into such a
/// chain (bridge + host-local + portmap here) and the containers podman starts are
/// intercepted.
#[cfg(feature = "kubernetes")]
fn runtime_installer_in_a_0_3_1_chain() {
    let node = Node::new("installer-031");
    let d = node.dir.clone();
    std::fs::remove_file(d.join("bin/meshtables-cni")).unwrap();
    let _ = std::os::unix::fs::symlink("/usr/lib/cni/portmap", d.join("bin/portmap"));
    let conf = d.join("netd/mtnet.conflist");
    let stock = bridge_only(&d)
        .replace("\"cniVersion\": \"1.0.0\"", "\"cniVersion\": \"0.3.1\"")
        .replace(
            "\n]}",
            ",\n  {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}\n]}",
        );
    std::fs::write(&conf, &stock).unwrap();
    let mut installer = Installer::start(&d, &[]);
    let holds_us = || std::fs::read_to_string(&conf).is_ok_and(|c| c.contains("meshtables-cni"));
    assert!(
        wait_for(&holds_us),
        "the installer did not take the 0.3.1 chain"
    );
    let chain = std::fs::read_to_string(&conf).unwrap();
    assert!(
        chain.contains("\"0.3.1\"") && chain.contains("portmap"),
        "{chain}"
    );
    for name in ["c1", "c2"] {
        let (yes, why) = intercepted(&node, &conf, name);
        assert!(yes, "{name} in a 0.3.1 chain is not intercepted:\n{why}");
    }
    assert!(installer.stop());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), stock);
}

/// An upgrade as the DaemonSet rolls it (maxSurge): a second installer with other settings
/// starts beside the first, takes the chain over, then the first gets SIGTERM. Containers
/// started before, during and after are all intercepted; the first installer leaves the plugin
/// installed, and the last one's uninstall restores the file.
#[cfg(feature = "kubernetes")]
fn runtime_upgrade_keeps_every_container_intercepted() {
    let node = Node::new("upgrade");
    let d = node.dir.clone();
    std::fs::remove_file(d.join("bin/meshtables-cni")).unwrap();
    let conf = d.join("netd/mtnet.conflist");
    std::fs::write(&conf, bridge_only(&d)).unwrap();
    let mut old = Installer::start(&d, &[]);
    let holds = |s: &str| std::fs::read_to_string(&conf).is_ok_and(|c| c.contains(s));
    assert!(wait_for(&|| holds("meshtables-cni")), "not installed");
    let mut seen = Vec::new();
    let mut check = |name: &str| {
        let (yes, why) = intercepted(&node, &conf, name);
        assert!(
            yes,
            "{name} started unintercepted during the upgrade:\n{why}"
        );
        seen.push(name.to_string());
    };
    check("before");
    let mut new = Installer::start(&d, &["--compact"]);
    check("both-running");
    assert!(
        wait_for(&|| holds("\"compact\"")),
        "the newer installer did not take over"
    );
    check("handed-over");
    assert!(old.stop(), "the older installer failed at SIGTERM");
    assert!(
        holds("meshtables-cni"),
        "the older installer uninstalled during an upgrade"
    );
    check("after-old-stopped");
    check("after-old-stopped-2");
    assert!(new.stop());
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), bridge_only(&d));
    println!(
        "{} containers started across the upgrade, all intercepted",
        seen.len()
    );
}

fn main() {
    let mut t = Trials::new();
    #[cfg(feature = "kubernetes")]
    t.add_if(
        "runtime_installer_puts_the_plugin_in_the_chain",
        NEEDS,
        cni_plugins,
        runtime_installer_puts_the_plugin_in_the_chain,
    );
    #[cfg(feature = "kubernetes")]
    t.add_if(
        "runtime_installer_in_a_0_3_1_chain",
        NEEDS,
        cni_plugins,
        runtime_installer_in_a_0_3_1_chain,
    );
    #[cfg(feature = "kubernetes")]
    t.add_if(
        "runtime_upgrade_keeps_every_container_intercepted",
        NEEDS,
        cni_plugins,
        runtime_upgrade_keeps_every_container_intercepted,
    );
    let tests: &[(&str, fn())] = &[
        (
            "runtime_bad_port_add_fails_and_del_releases_the_address",
            runtime_bad_port_add_fails_and_del_releases_the_address,
        ),
        (
            "runtime_unknown_key_add_fails_and_del_releases_the_address",
            runtime_unknown_key_add_fails_and_del_releases_the_address,
        ),
        (
            "runtime_bad_kubeconfig_add_fails_and_del_releases_the_address",
            runtime_bad_kubeconfig_add_fails_and_del_releases_the_address,
        ),
        (
            "runtime_del_with_native_nftables_removes_iptables_nft_tproxy_rules",
            runtime_del_with_native_nftables_removes_iptables_nft_tproxy_rules,
        ),
        (
            "runtime_del_with_native_nftables_removes_iptables_legacy_rules",
            runtime_del_with_native_nftables_removes_iptables_legacy_rules,
        ),
        (
            "runtime_native_nftables_add_and_del",
            runtime_native_nftables_add_and_del,
        ),
        (
            "runtime_0_3_1_chain_with_portmap_starts_an_intercepted_container",
            runtime_0_3_1_chain_with_portmap_starts_an_intercepted_container,
        ),
    ];
    for (name, f) in tests {
        t.add_if(*name, NEEDS, cni_plugins, *f);
    }
    // Three of them need the Kubernetes client (the `kubernetes` feature).
    t.declare(if cfg!(feature = "kubernetes") { 10 } else { 7 }, &[]);
    t.run()
}
