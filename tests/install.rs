//! `meshtables cni-install` over temporary directories, run as the process a DaemonSet runs
//! (no root: it writes files and serves a port). Each case is a trial of its own:
//!
//! - insertion into the shapes of Istio's installer testdata (`cni/pkg/install/testdata`): a
//!   list, a list already holding us, a single `.conf`, invalid JSON, `[]` and `{}`, compared
//!   with what Istio's goldens hold where the behaviour is the same (the primary's plugins
//!   unchanged, ours last; a `.conf` keeps its name and version here, Istio renames it);
//! - a rerun changes nothing; a primary that rewrites its file gets the entry back within 1 s;
//!   the installer waits for a primary file that does not exist yet; a rotated token rewrites
//!   the kubeconfig; readiness answers 200 only while the chain holds the plugin;
//! - on SIGTERM the file comes back byte for byte (a converted `.conf` too), or, if the
//!   primary rewrote it meanwhile, loses only our entry; the binary and kubeconfig go;
//! - bad settings exit 2 and name the flag.
#![cfg(feature = "kubernetes")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::trials::{NOTHING, Trials};

/// A node's directories for one installer.
struct Node {
    dir: PathBuf,
    port: u16,
}

impl Node {
    fn new(tag: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("mt-install-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["net", "bin", "sa"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("sa/token"), "token-one").unwrap();
        std::fs::write(
            dir.join("sa/ca.crt"),
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        // A free port for the readiness endpoint.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        Node { dir, port }
    }

    fn net(&self, name: &str) -> PathBuf {
        self.dir.join("net").join(name)
    }

    /// Starts the installer with `extra` settings.
    fn start(&self, extra: &[&str]) -> Installer {
        self.start_on(self.port, extra)
    }

    /// Writes `LIST` as the primary, starts the installer and waits until the list holds us.
    fn installed_on_a_list(&self, extra: &[&str]) -> Installer {
        std::fs::write(self.net("10-dbnet.conflist"), LIST).unwrap();
        let i = self.start(extra);
        assert!(
            self.until(5 * SECOND, || self.holds_us("10-dbnet.conflist"))
                .is_some()
        );
        i
    }

    /// A second installer on the same node (an upgrade's new pod), with its own port.
    fn start_second(&self, extra: &[&str]) -> Installer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        self.start_on(port, extra)
    }

    fn start_on(&self, port: u16, extra: &[&str]) -> Installer {
        let d = self.dir.display();
        let child = support::command(
            &[
                &[
                    "cni-install",
                    "--cni-bin-dir",
                    &format!("{d}/bin"),
                    "--cni-conf-dir",
                    &format!("{d}/net"),
                    "--host-cni-conf-dir",
                    "/etc/cni/net.d",
                    "--service-account-dir",
                    &format!("{d}/sa"),
                    "--readiness-port",
                    &port.to_string(),
                ][..],
                extra,
            ]
            .concat(),
            &[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
        Installer {
            child: Some(child),
            port,
        }
    }

    /// Waits up to `limit` for `cond`; returns how long it took.
    fn until(&self, limit: Duration, cond: impl Fn() -> bool) -> Option<Duration> {
        let t = Instant::now();
        while t.elapsed() < limit {
            if cond() {
                return Some(t.elapsed());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    fn holds_us(&self, name: &str) -> bool {
        std::fs::read(self.net(name)).is_ok_and(|b| {
            serde_json::from_slice::<Value>(&b).is_ok_and(|v| {
                v["plugins"].as_array().is_some_and(|l| {
                    l.iter().filter(|p| p["type"] == "meshtables-cni").count() == 1
                })
            })
        })
    }
}

impl Node {
    /// The files of the configuration directory a runtime loads as networks: libcni's rule
    /// is the extension alone, dot files included.
    fn runtime_reads(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| {
                [".conf", ".conflist", ".json"]
                    .iter()
                    .any(|x| n.ends_with(x))
            })
            .collect();
        names.sort();
        names
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Installer {
    child: Option<Child>,
    port: u16,
}

impl Installer {
    /// The readiness endpoint's status code (0: no answer).
    fn readiness(&self) -> u16 {
        use std::io::{Read, Write};
        let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return 0;
        };
        let _ = c.set_read_timeout(Some(Duration::from_secs(3)));
        let _ = c.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut s = String::new();
        let _ = c.read_to_string(&mut s);
        s.split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }

    /// SIGTERM, then the exit status and stderr.
    fn stop(&mut self) -> (i32, String) {
        let child = self.child.take().unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let o = child.wait_with_output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const LIST: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "dbnet",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "args": {"labels": {"appVersion": "1.0"}},
     "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1"},
     "dns": {"nameservers": ["10.1.0.1"]}},
    {"type": "tuning", "sysctl": {"net.core.somaxconn": "500"}}
  ]
}
"#;

const CONF: &str = r#"{
  "cniVersion": "0.4.0",
  "name": "dbnet",
  "type": "bridge",
  "bridge": "cni0",
  "ipam": {"type": "host-local", "subnet": "10.1.0.0/16", "gateway": "10.1.0.1"},
  "dns": {"nameservers": [ "10.1.0.1" ]}
}
"#;

const SECOND: Duration = Duration::from_secs(1);

fn json_of(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn list_gets_us_last_as_istio_puts_istio_cni() {
    let n = Node::new("list");
    let mut i = n.installed_on_a_list(&["--native-nftables"]);
    let v = json_of(&n.net("10-dbnet.conflist"));
    let orig: Value = serde_json::from_str(LIST).unwrap();
    // Istio's list.conflist.golden: the primary's plugins unchanged, the list's name and
    // version unchanged, the mesh plugin appended.
    assert_eq!(v["plugins"][0], orig["plugins"][0]);
    assert_eq!(v["plugins"][1], orig["plugins"][1]);
    assert_eq!(
        (&v["name"], &v["cniVersion"]),
        (&orig["name"], &orig["cniVersion"])
    );
    let ours = &v["plugins"][2];
    assert_eq!(ours["type"], "meshtables-cni");
    assert_eq!(ours["native-nftables"], true);
    assert_eq!(
        ours["kubernetes"]["kubeconfig"],
        "/etc/cni/net.d/meshtables-cni-kubeconfig"
    );
    assert!(n.dir.join("bin/meshtables-cni").exists());
    let kc = std::fs::read_to_string(n.net("meshtables-cni-kubeconfig")).unwrap();
    assert!(
        kc.contains("https://10.96.0.1:443") && kc.contains("token-one"),
        "{kc}"
    );
    assert_eq!(i.readiness(), 200);
    let (code, err) = i.stop();
    assert_eq!(code, 0, "{err}");
}

fn a_list_already_holding_us_gets_one_entry_with_the_new_settings() {
    let n = Node::new("holding");
    let mut v: Value = serde_json::from_str(LIST).unwrap();
    v["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "meshtables-cni", "compact": true, "name": "old"}));
    std::fs::write(
        n.net("10-dbnet.conflist"),
        serde_json::to_vec_pretty(&v).unwrap(),
    )
    .unwrap();
    let _i = n.start(&["--kubernetes=false"]);
    let ok = n.until(5 * SECOND, || {
        let v = json_of(&n.net("10-dbnet.conflist"));
        v["plugins"][2] == json!({"type": "meshtables-cni", "name": "meshtables-cni"})
    });
    assert!(
        ok.is_some(),
        "{}",
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap()
    );
    assert!(n.holds_us("10-dbnet.conflist"));
}

fn a_conf_becomes_a_conflist_and_comes_back_byte_for_byte() {
    let n = Node::new("conf");
    std::fs::write(n.net("10-dbnet.conf"), CONF).unwrap();
    let mut i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("10-dbnet.conflist"))
            .is_some()
    );
    assert!(
        !n.net("10-dbnet.conf").exists(),
        "the .conf must go once the .conflist holds it"
    );
    let v = json_of(&n.net("10-dbnet.conflist"));
    // Istio's bridge.conf.golden holds the bridge plugin as here; it renames the network
    // (k8s-pod-network) and sets version 0.3.1, which we do not.
    let mut bridge: Value = serde_json::from_str(CONF).unwrap();
    let obj = bridge.as_object_mut().unwrap();
    obj.remove("cniVersion");
    obj.remove("name");
    assert_eq!(v["plugins"][0], bridge);
    assert_eq!(
        (v["name"].as_str(), v["cniVersion"].as_str()),
        (Some("dbnet"), Some("0.4.0"))
    );
    let (code, err) = i.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conf")).unwrap(),
        CONF
    );
    assert!(!n.net("10-dbnet.conflist").exists());
}

fn invalid_files_are_never_touched(name: &'static str, content: &'static str) -> impl FnOnce() {
    move || {
        let n = Node::new(&format!("invalid-{}", name.replace('.', "-")));
        std::fs::write(n.net(name), content).unwrap();
        let mut i = n.start(&[]);
        std::thread::sleep(Duration::from_millis(1500));
        // Under a loaded test run the endpoint may not be up yet: wait for an answer.
        n.until(5 * SECOND, || i.readiness() != 0);
        assert_eq!(i.readiness(), 503, "not ready without a usable primary");
        assert_eq!(std::fs::read_to_string(n.net(name)).unwrap(), content);
        let (_, err) = i.stop();
        assert!(
            err.contains(name) && err.contains("not touching it"),
            "{err}"
        );
    }
}

fn a_rerun_changes_nothing() {
    let n = Node::new("rerun");
    let mut first = n.installed_on_a_list(&["--uninstall=false"]);
    assert_eq!(first.stop().0, 0);
    let conf = std::fs::read(n.net("10-dbnet.conflist")).unwrap();
    let bin = std::fs::metadata(n.dir.join("bin/meshtables-cni"))
        .unwrap()
        .modified()
        .unwrap();
    let mut second = n.start(&[]);
    assert!(n.until(5 * SECOND, || second.readiness() == 200).is_some());
    assert_eq!(
        std::fs::read(n.net("10-dbnet.conflist")).unwrap(),
        conf,
        "rewritten"
    );
    let bin_after = std::fs::metadata(n.dir.join("bin/meshtables-cni"))
        .unwrap()
        .modified()
        .unwrap();
    assert_eq!(bin, bin_after, "the identical binary was copied again");
    assert_eq!(second.stop().0, 0);
}

fn a_rewrite_by_the_primary_is_repaired_within_a_second() {
    let n = Node::new("repair");
    let mut i = n.installed_on_a_list(&[]);
    let mut worst = Duration::ZERO;
    for round in 0..5 {
        // What Calico does: write its own file again, without us.
        std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
        let took = n.until(5 * SECOND, || n.holds_us("10-dbnet.conflist"));
        let took = took.unwrap_or_else(|| panic!("round {round}: not repaired"));
        worst = worst.max(took);
    }
    assert!(worst < SECOND, "repair took {worst:?}");
    println!("repaired 5 rewrites, the slowest after {worst:?}");
    // A rewrite that keeps us (another field changed) leaves us in place, and uninstall then
    // takes only our entry out.
    let mut v = json_of(&n.net("10-dbnet.conflist"));
    v["plugins"][1]["sysctl"]["net.core.somaxconn"] = json!("1000");
    std::fs::write(n.net("10-dbnet.conflist"), serde_json::to_vec(&v).unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (code, err) = i.stop();
    assert_eq!(code, 0, "{err}");
    let after = json_of(&n.net("10-dbnet.conflist"));
    assert_eq!(
        after["plugins"].as_array().map(Vec::len),
        Some(2),
        "{after}"
    );
    assert_eq!(after["plugins"][1]["sysctl"]["net.core.somaxconn"], "1000");
}

/// While installed, the runtime finds one network, ours in its chain: no backup or
/// temporary file of ours carries an extension a runtime loads (podman took a dot-file
/// backup as the network before this was tested).
fn the_runtime_loads_only_the_chained_file(
    name: &'static str,
    content: &'static str,
) -> impl FnOnce() {
    move || {
        let n = Node::new(&format!("loads-{}", name.replace('.', "-")));
        std::fs::write(n.net(name), content).unwrap();
        let mut i = n.start(&[]);
        // A converted `.conf` goes once its `.conflist` is written (the runtime reads the
        // `.conf` until then), so "one file" is a state reached, not an instant.
        let one_chained_file =
            || n.holds_us("10-dbnet.conflist") && n.runtime_reads() == ["10-dbnet.conflist"];
        assert!(
            n.until(5 * SECOND, one_chained_file).is_some(),
            "{:?}",
            n.runtime_reads()
        );
        // After a repair too: the primary writes its file again, as it first wrote it.
        std::fs::write(n.net(name), content).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            n.until(5 * SECOND, one_chained_file).is_some(),
            "{:?}",
            n.runtime_reads()
        );
        assert_eq!(i.stop().0, 0);
        assert_eq!(n.runtime_reads(), [name]);
    }
}

fn waits_for_the_primary_file() {
    let n = Node::new("wait");
    let mut i = n.start(&[]);
    std::thread::sleep(Duration::from_millis(500));
    // Under a loaded test run the endpoint may not be up yet: wait for an answer.
    n.until(5 * SECOND, || i.readiness() != 0);
    assert_eq!(i.readiness(), 503);
    std::fs::write(n.net("20-late.conflist"), LIST).unwrap();
    let took = n.until(5 * SECOND, || n.holds_us("20-late.conflist"));
    assert!(took.is_some_and(|t| t < SECOND), "{took:?}");
    assert!(n.until(2 * SECOND, || i.readiness() == 200).is_some());
    assert_eq!(i.stop().0, 0);
    assert_eq!(
        std::fs::read_to_string(n.net("20-late.conflist")).unwrap(),
        LIST
    );
}

fn uninstall_restores_byte_for_byte_and_removes_its_files() {
    let n = Node::new("uninstall");
    let mut i = n.installed_on_a_list(&[]);
    let (code, err) = i.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        LIST
    );
    assert!(!n.dir.join("bin/meshtables-cni").exists());
    assert!(!n.net("meshtables-cni-kubeconfig").exists());
}

fn a_rotated_token_rewrites_the_kubeconfig() {
    let n = Node::new("token");
    let _i = n.installed_on_a_list(&[]);
    // Projected volumes swap a symlinked directory; a rewrite of the file is the same event.
    std::fs::write(n.dir.join("sa/token"), "token-two").unwrap();
    let took = n.until(5 * SECOND, || {
        std::fs::read_to_string(n.net("meshtables-cni-kubeconfig"))
            .is_ok_and(|k| k.contains("token-two"))
    });
    assert!(took.is_some_and(|t| t < SECOND), "{took:?}");
}

fn bad_settings_exit_2_naming_the_flag(
    tag: &'static str,
    args: &'static [&'static str],
    names: &'static str,
) -> impl FnOnce() {
    move || {
        // A directory per trial: they run in parallel.
        let n = Node::new(&format!("bad-{tag}"));
        let mut i = n.start(args);
        let child = i.child.take().unwrap();
        let o = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(err.contains(names), "{err}");
        assert!(
            std::fs::read_dir(n.dir.join("bin"))
                .unwrap()
                .next()
                .is_none(),
            "installed anyway"
        );
    }
}

/// Every variable the DaemonSet sets is a setting of the installer (the table in
/// `flags::install`), and its readiness probe asks the port the installer serves.
fn the_daemonset_speaks_the_installers_settings() {
    use serde::Deserialize;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/meshtables-cni.yaml"
    ))
    .unwrap();
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .collect();
    let ds = docs
        .iter()
        .find(|d| d["kind"] == "DaemonSet")
        .expect("a DaemonSet");
    let container = &ds["spec"]["template"]["spec"]["containers"][0];
    let known: Vec<&str> = meshtables::flags::install::INSTALL
        .iter()
        .flat_map(|s| s.envs.iter().copied())
        .collect();
    let mut port = None;
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            known.contains(&name),
            "{name} is not an installer setting ({known:?})"
        );
        if name == "READINESS_PORT" {
            port = e["value"].as_str().map(str::to_string);
        }
    }
    let probe = container["readinessProbe"]["httpGet"]["port"].to_string();
    assert_eq!(port.as_deref(), Some(probe.as_str()));
    assert_eq!(container["args"][0], "cni-install");
}

/// `LOG_LEVEL=warn` silences the installer's info lines; a bad level exits 2 naming it.
fn the_log_level_is_a_setting() {
    let n = Node::new("loglevel");
    let mut quiet = n.installed_on_a_list(&["--log-level", "warn"]);
    let (code, err) = quiet.stop();
    assert_eq!((code, err.as_str()), (0, ""));
    let mut chatty = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("10-dbnet.conflist"))
            .is_some()
    );
    let (code, err) = chatty.stop();
    assert!(code == 0 && err.contains("last in the chain"), "{err}");
}

/// A rolling upgrade: the new installer runs before the old one stops; the old one, seeing
/// another installer on the node, leaves the plugin installed. The last one to stop
/// uninstalls.
fn an_upgrade_leaves_the_plugin_installed() {
    let n = Node::new("upgrade");
    let mut old = n.installed_on_a_list(&[]);
    let mut new = n.start_second(&[]);
    assert!(n.until(5 * SECOND, || new.readiness() == 200).is_some());
    let (code, err) = old.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("another installer runs on this node"), "{err}");
    assert!(n.holds_us("10-dbnet.conflist") && n.dir.join("bin/meshtables-cni").exists());
    let (code, err) = new.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        LIST
    );
    assert!(!n.dir.join("bin/meshtables-cni").exists());
}

/// A plugin binary removed from under the installer is back within a second.
fn a_removed_binary_is_put_back() {
    let n = Node::new("binary");
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    let _i = n.start(&[]);
    let bin = n.dir.join("bin/meshtables-cni");
    assert!(n.until(5 * SECOND, || bin.exists()).is_some());
    std::fs::remove_file(&bin).unwrap();
    let took = n.until(5 * SECOND, || bin.exists());
    assert!(took.is_some_and(|t| t < 2 * SECOND), "{took:?}");
}

fn main() {
    let mut t = Trials::new();
    t.add(
        "lifecycle::an_upgrade_leaves_the_plugin_installed",
        NOTHING,
        an_upgrade_leaves_the_plugin_installed,
    );
    t.add(
        "lifecycle::a_removed_binary_is_put_back",
        NOTHING,
        a_removed_binary_is_put_back,
    );
    t.add("settings::log_level", NOTHING, the_log_level_is_a_setting);
    t.add(
        "deploy::daemonset_env_are_settings",
        NOTHING,
        the_daemonset_speaks_the_installers_settings,
    );
    t.add(
        "istio_testdata::list_gets_us_last",
        NOTHING,
        list_gets_us_last_as_istio_puts_istio_cni,
    );
    t.add(
        "istio_testdata::list_with_us_gets_one_entry",
        NOTHING,
        a_list_already_holding_us_gets_one_entry_with_the_new_settings,
    );
    t.add(
        "istio_testdata::conf_becomes_conflist_and_comes_back",
        NOTHING,
        a_conf_becomes_a_conflist_and_comes_back_byte_for_byte,
    );
    for (name, file, content) in [
        (
            "invalid_json",
            "10-broken.conflist",
            "{\"plugins\": [ {\"type\": \"bridge\" ",
        ),
        ("invalid_arr", "10-invalid-arr.conflist", "[]"),
        ("invalid_map", "10-invalid-map.conflist", "{}"),
    ] {
        t.add(
            format!("istio_testdata::{name}_is_never_touched"),
            NOTHING,
            invalid_files_are_never_touched(file, content),
        );
    }
    for (tag, file, content) in [
        ("list", "10-dbnet.conflist", LIST),
        ("conf", "10-dbnet.conf", CONF),
    ] {
        t.add(
            format!("lifecycle::the_runtime_loads_one_network_from_a_{tag}"),
            NOTHING,
            the_runtime_loads_only_the_chained_file(file, content),
        );
    }
    t.add(
        "lifecycle::a_rerun_changes_nothing",
        NOTHING,
        a_rerun_changes_nothing,
    );
    t.add(
        "lifecycle::repair_within_a_second",
        NOTHING,
        a_rewrite_by_the_primary_is_repaired_within_a_second,
    );
    t.add(
        "lifecycle::waits_for_the_primary_file",
        NOTHING,
        waits_for_the_primary_file,
    );
    t.add(
        "lifecycle::uninstall_restores_byte_for_byte",
        NOTHING,
        uninstall_restores_byte_for_byte_and_removes_its_files,
    );
    t.add(
        "lifecycle::token_rotation",
        NOTHING,
        a_rotated_token_rewrites_the_kubeconfig,
    );
    for (name, args, names) in [
        (
            "relative_bin_dir",
            &["--cni-bin-dir", "opt/cni/bin"][..],
            "--cni-bin-dir",
        ),
        ("bad_log_level", &["--log-level", "loud"][..], "--log-level"),
        (
            "bad_namespace",
            &["--exclude-namespaces", "Kube_System"][..],
            "--exclude-namespaces",
        ),
        (
            "plugin_settings_not_json",
            &["--plugin-settings", "{nope"][..],
            "--plugin-settings",
        ),
        (
            "unknown_plugin_key",
            &["--plugin-settings", r#"{"istio-inbound-port": "80"}"#][..],
            "istio-inbound-port",
        ),
        (
            "bad_plugin_value",
            &["--plugin-settings", r#"{"istio-inbound-ports": "abc"}"#][..],
            "istio-inbound-ports",
        ),
    ] {
        t.add(
            format!("settings::{name}"),
            NOTHING,
            bad_settings_exit_2_naming_the_flag(name, args, names),
        );
    }
    t.run()
}
