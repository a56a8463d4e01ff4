//! `meshtables cni-install` over temporary directories, run as the process a DaemonSet runs,
//! with its readiness probe `meshtables cni-ready` run as the kubelet runs it (an exec of the
//! same binary with the same settings). Each case is a trial of its own:
//!
//! - insertion into the shapes of Istio's installer testdata (`cni/pkg/install/testdata`): a
//!   list, a list already holding us, a single `.conf`, invalid JSON, `[]` and `{}`;
//! - a primary that writes its file 300 times (by rename, and in place as Go's `os.WriteFile`
//!   does) ends with its last write plus our entry; a briefly empty file keeps the entry; a
//!   new lexically earlier network takes the entry from the old one; a conversion never
//!   overwrites a file; a link is written through and stays a link;
//! - after a SIGKILL, the next installer (other settings) still uninstalls byte for byte, and
//!   the killed one's temporary files go;
//! - two installers on a node (an upgrade): the newer owns the chain, the older stands by and
//!   does not uninstall; a bounded number of writes;
//! - readiness is true only while the chain, the binary and the kubeconfig are whole;
//! - bad settings exit 2 and name the flag or variable.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]
#![cfg(feature = "kubernetes")]

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::trials::{NOTHING, Trials, root};

const SECOND: Duration = Duration::from_secs(1);

/// A list whose bridge plugin holds a value nested `d` arrays deep.
fn deep_list(d: usize) -> String {
    format!(
        r#"{{"cniVersion": "0.4.0", "name": "deep", "plugins": [{{"type": "bridge", "x": {}{}}}]}}"#,
        "[".repeat(d),
        "]".repeat(d)
    )
}

/// A node's directories for one test: `net` (the configuration directory, also the host's
/// path), `bin`, `sa` (the service account, with a real CA so the plugin's STATUS passes).
struct Node {
    dir: PathBuf,
    logs: std::cell::Cell<u32>,
}

impl Node {
    fn new(tag: &str) -> Node {
        let dir = std::env::temp_dir().join(format!("mt-install-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for d in ["net", "bin", "sa"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(dir.join("sa/token"), "token-one").unwrap();
        std::fs::write(dir.join("sa/ca.crt"), ca_pem()).unwrap();
        Node {
            dir,
            logs: std::cell::Cell::new(0),
        }
    }

    fn net(&self, name: &str) -> PathBuf {
        self.dir.join("net").join(name)
    }

    fn args(&self, extra: &[&str]) -> Vec<String> {
        let d = self.dir.display();
        let mut a: Vec<String> = [
            "--cni-bin-dir",
            &format!("{d}/bin"),
            "--cni-conf-dir",
            &format!("{d}/net"),
            "--host-cni-conf-dir",
            &format!("{d}/net"),
            "--service-account-dir",
            &format!("{d}/sa"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    }

    /// Starts an installer with `extra` settings; its stderr goes to a file of its own.
    fn start(&self, extra: &[&str]) -> Installer {
        self.start_env(extra, &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")])
    }

    fn start_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Installer {
        let n = self.logs.get();
        self.logs.set(n + 1);
        let log = self.dir.join(format!("installer-{n}.log"));
        let mut args = vec!["cni-install".to_string()];
        args.extend(self.args(extra));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let child = support::command(&args, env)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Installer {
            child: Some(child),
            log,
            traced: None,
        }
    }

    /// The readiness probe with `extra` settings: exit status and what it printed.
    fn ready(&self, extra: &[&str]) -> (i32, String) {
        let mut args = vec!["cni-ready".to_string()];
        args.extend(self.args(extra));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = support::command(&args, &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")])
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    fn is_ready(&self, extra: &[&str]) -> bool {
        self.ready(extra).0 == 0
    }

    /// The readiness probe with `extra` settings and environment `env`.
    fn ready_env(&self, extra: &[&str], env: &[(&str, &str)]) -> (i32, String) {
        let mut args = vec!["cni-ready".to_string()];
        args.extend(self.args(extra));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut all_env = vec![("KUBERNETES_SERVICE_HOST", "10.96.0.1")];
        all_env.extend_from_slice(env);
        let o = support::command(&args, &all_env).output().unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr),
        )
    }

    /// Starts an installer under `strace -qq -o TRACE STRACE_ARGS` (to hold it at a chosen
    /// syscall: `-e inject=...:delay_enter=...`); signals go to the installer, not to strace.
    /// Returns it and the trace file (strace writes a syscall's line when it is entered).
    fn start_traced(&self, strace: &[&str], extra: &[&str]) -> (Installer, PathBuf) {
        let n = self.logs.get();
        self.logs.set(n + 1);
        let log = self.dir.join(format!("installer-{n}.log"));
        let trace = self.dir.join(format!("installer-{n}.strace"));
        let mut c = std::process::Command::new("strace");
        c.arg("-qq").arg("-o").arg(&trace).args(strace);
        c.arg(support::bin())
            .arg("cni-install")
            .args(self.args(extra));
        support::clear_our_env(&mut c);
        c.env("KUBERNETES_SERVICE_HOST", "10.96.0.1");
        let child = c
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        // strace's child that runs the installer (strace forks others first, to probe ptrace).
        let children = format!("/proc/{0}/task/{0}/children", child.id());
        let bin = support::bin();
        let is_installer = |pid: &i32| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0).next() == Some(bin.as_os_str().as_encoded_bytes())
            })
        };
        let mut traced = None;
        let t = Instant::now();
        while traced.is_none() && t.elapsed() < 5 * SECOND {
            traced = std::fs::read_to_string(&children)
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|c| c.parse::<i32>().ok())
                .find(is_installer)
                .map(nix::unistd::Pid::from_raw);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(traced.is_some(), "strace started no installer");
        (
            Installer {
                child: Some(child),
                log,
                traced,
            },
            trace,
        )
    }

    /// Writes `LIST` as the primary, starts the installer and waits until the list holds us.
    fn installed_on_a_list(&self, extra: &[&str]) -> Installer {
        std::fs::write(self.net("10-dbnet.conflist"), LIST).unwrap();
        let i = self.start(extra);
        assert!(
            self.until(5 * SECOND, || self.holds_us("10-dbnet.conflist"))
                .is_some(),
            "{}",
            i.log()
        );
        i
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

    /// Whether the file's chain ends with exactly one entry of ours.
    fn holds_us(&self, name: &str) -> bool {
        std::fs::read(self.net(name)).is_ok_and(|b| ends_with_us(&b))
    }

    /// Whether the file holds any entry of ours, anywhere in its chain.
    fn holds_any(&self, name: &str) -> bool {
        std::fs::read(self.net(name)).is_ok_and(|b| {
            serde_json::from_slice::<Value>(&b).is_ok_and(|v| {
                v["plugins"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|p| p["type"] == "meshtables-cni"))
            })
        })
    }

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

    /// Everything in the configuration directory.
    fn listing(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("net"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
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

/// A CA certificate the plugin's kubeconfig loader accepts.
fn ca_pem() -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&key).unwrap().pem()
}

fn ends_with_us(bytes: &[u8]) -> bool {
    serde_json::from_slice::<Value>(bytes).is_ok_and(|v| {
        v["plugins"].as_array().is_some_and(|l| {
            l.iter().filter(|p| p["type"] == "meshtables-cni").count() == 1
                && l.last().is_some_and(|p| p["type"] == "meshtables-cni")
        })
    })
}

/// A chain without our entry (to compare what the primary wrote with what is there).
fn without_us(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(l) = v["plugins"].as_array_mut() {
        l.retain(|p| p["type"] != "meshtables-cni");
    }
    v
}

struct Installer {
    child: Option<Child>,
    log: PathBuf,
    /// The installer itself when `child` is strace running it (signals go to it).
    traced: Option<nix::unistd::Pid>,
}

impl Installer {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let pid = self
                .traced
                .unwrap_or(nix::unistd::Pid::from_raw(c.id() as i32));
            let _ = nix::sys::signal::kill(pid, sig);
        }
    }

    /// SIGTERM, then the exit status and the log.
    fn stop(&mut self) -> (i32, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.child.take().unwrap().wait().unwrap();
        (status.code().unwrap_or(-1), self.log())
    }

    /// SIGKILL (the end of a grace period, an OOM kill).
    fn kill(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGKILL);
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // A traced installer is reaped by init once strace is gone: wait until it is, so that
        // the next installer finds it dead.
        if let Some(pid) = self.traced.take() {
            let t = Instant::now();
            while Path::new(&format!("/proc/{pid}")).exists() && t.elapsed() < 5 * SECOND {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Whether the process has exited (it is then reaped).
    fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// The exit status of an installer that stops on its own (bad settings).
    fn exits(&mut self) -> (i32, String) {
        let status = self.child.take().unwrap().wait().unwrap();
        (status.code().unwrap_or(-1), self.log())
    }
}

impl Drop for Installer {
    fn drop(&mut self) {
        self.kill();
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

fn json_of(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `LIST` as the primary's `n`th write (a field that changes every time).
fn list_version(n: usize) -> String {
    LIST.replace("\"500\"", &format!("\"{}\"", 1000 + n))
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
        n.net("meshtables-cni-kubeconfig").display().to_string()
    );
    assert!(n.dir.join("bin/meshtables-cni").exists());
    let kc = std::fs::read_to_string(n.net("meshtables-cni-kubeconfig")).unwrap();
    assert!(
        kc.contains("https://10.96.0.1:443") && kc.contains("token-one"),
        "{kc}"
    );
    assert!(
        n.until(5 * SECOND, || n.is_ready(&["--native-nftables"]))
            .is_some(),
        "{:?}",
        n.ready(&["--native-nftables"])
    );
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
    let converted = || n.holds_us("10-dbnet.conflist") && !n.net("10-dbnet.conf").exists();
    assert!(n.until(5 * SECOND, converted).is_some(), "{}", i.log());
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
        let said = || i.log().contains(name);
        assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
        let (code, why) = n.ready(&[]);
        assert!(code == 1 && why.contains(name), "{why}");
        assert_eq!(std::fs::read_to_string(n.net(name)).unwrap(), content);
        let (_, err) = i.stop();
        assert!(err.contains("not ready"), "{err}");
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
    assert!(
        n.until(5 * SECOND, || second.log().contains("ready"))
            .is_some()
    );
    assert!(n.is_ready(&[]), "{:?}", n.ready(&[]));
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

/// How the primary plugin writes its file.
#[derive(Clone, Copy)]
enum Writes {
    /// A temporary file renamed over it (atomic).
    Rename,
    /// Truncate and write (Go's `os.WriteFile`).
    InPlace,
}

fn primary_write(path: &Path, content: &str, how: Writes) {
    match how {
        Writes::Rename => {
            let tmp = path.with_extension("primary-tmp");
            std::fs::write(&tmp, content).unwrap();
            std::fs::rename(&tmp, path).unwrap();
        }
        Writes::InPlace => std::fs::write(path, content).unwrap(),
    }
}

/// The primary writes its file 300 times while the installer runs (with pauses of 0-3 ms,
/// so the installer's writes interleave with them); at the end the file is the primary's
/// last write with our entry last, every time.
fn the_primarys_last_write_wins(how: Writes) -> impl FnOnce() {
    move || {
        let n = Node::new(match how {
            Writes::Rename => "lastwrite-rename",
            Writes::InPlace => "lastwrite-inplace",
        });
        let mut i = n.installed_on_a_list(&[]);
        let path = n.net("10-dbnet.conflist");
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for k in 0..300 {
            primary_write(&path, &list_version(k), how);
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            std::thread::sleep(Duration::from_micros(rng % 3000));
        }
        let last: Value = serde_json::from_str(&list_version(299)).unwrap();
        let settled = || {
            std::fs::read(&path).is_ok_and(|b| {
                ends_with_us(&b)
                    && serde_json::from_slice::<Value>(&b).is_ok_and(|v| without_us(&v) == last)
            })
        };
        assert!(
            n.until(5 * SECOND, settled).is_some(),
            "{}\n{}",
            std::fs::read_to_string(&path).unwrap(),
            i.log()
        );
        let (code, err) = i.stop();
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            json_of(&path),
            last,
            "uninstall keeps the primary's last write"
        );
    }
}

/// A primary that truncates its file and writes it again leaves it empty for a moment: the
/// entry stays in that file, not in the next network the installer could find.
fn a_briefly_empty_file_keeps_the_entry() {
    let n = Node::new("empty");
    let mut i = n.installed_on_a_list(&[]);
    std::fs::write(n.net("20-other.conflist"), LIST.replace("dbnet", "other")).unwrap();
    std::fs::write(n.net("10-dbnet.conflist"), "").unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !n.holds_us("20-other.conflist"),
        "the entry moved to the next file while the first was being rewritten"
    );
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    assert!(
        n.until(5 * SECOND, || n.holds_us("10-dbnet.conflist"))
            .is_some()
    );
    assert!(!n.holds_us("20-other.conflist"));
    assert_eq!(i.stop().0, 0);
}

/// A CNI migration: a new primary's file sorts before the old one. The entry moves to it and
/// leaves the old file, and uninstall leaves both as their writers wrote them.
fn an_earlier_primary_takes_the_entry_from_the_old_one() {
    let n = Node::new("migration");
    let mut i = n.installed_on_a_list(&[]);
    let newer = LIST.replace("dbnet", "cilium");
    std::fs::write(n.net("05-cilium.conflist"), &newer).unwrap();
    let moved = || n.holds_us("05-cilium.conflist") && !n.holds_us("10-dbnet.conflist");
    assert!(n.until(5 * SECOND, moved).is_some(), "{}", i.log());
    let old = json_of(&n.net("10-dbnet.conflist"));
    assert!(
        old["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["type"] != "meshtables-cni")
    );
    assert_eq!(i.stop().0, 0);
    assert_eq!(
        std::fs::read_to_string(n.net("05-cilium.conflist")).unwrap(),
        newer
    );
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        LIST
    );
}

/// Converting `10-dbnet.conf` would replace an existing `10-dbnet.conflist` that is not our
/// conversion: not ready, naming both, and neither file touched.
fn a_conversion_never_overwrites_a_file() {
    let n = Node::new("noclobber");
    std::fs::write(n.net("10-dbnet.conf"), CONF).unwrap();
    let other = LIST.replace("dbnet", "older");
    std::fs::write(n.net("10-dbnet.conflist"), &other).unwrap();
    let mut i = n.start(&[]);
    let said = || i.log().contains("would replace 10-dbnet.conflist");
    assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
    let (code, why) = n.ready(&[]);
    assert!(code == 1 && why.contains("10-dbnet.conf"), "{why}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conf")).unwrap(),
        CONF
    );
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        other
    );
    assert_eq!(i.stop().0, 0);
}

/// The primary's file is a link into a subdirectory: the write goes through the link, the
/// link stays, and uninstall restores the target.
fn a_symlinked_conflist_is_written_through() {
    let n = Node::new("symlink");
    std::fs::create_dir_all(n.net("calico")).unwrap();
    std::fs::write(n.net("calico/10-calico.conflist"), LIST).unwrap();
    std::os::unix::fs::symlink("calico/10-calico.conflist", n.net("10-calico.conflist")).unwrap();
    let mut i = n.start(&[]);
    let through = || n.holds_us("calico/10-calico.conflist");
    assert!(n.until(5 * SECOND, through).is_some(), "{}", i.log());
    let meta = std::fs::symlink_metadata(n.net("10-calico.conflist")).unwrap();
    assert!(meta.file_type().is_symlink(), "the link became a copy");
    assert_eq!(i.stop().0, 0);
    assert_eq!(
        std::fs::read_to_string(n.net("calico/10-calico.conflist")).unwrap(),
        LIST
    );
    assert!(
        std::fs::symlink_metadata(n.net("10-calico.conflist"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
}

/// A link whose target the installer cannot see (outside the mounted directory) makes it
/// not ready, naming the target, rather than writing a file of its own there.
fn a_link_out_of_sight_is_not_ready() {
    let n = Node::new("outlink");
    let host_dir = "/etc/cni/net.d";
    std::os::unix::fs::symlink(
        "/opt/calico/10-calico.conflist",
        n.net("10-calico.conflist"),
    )
    .unwrap();
    let mut i = n.start(&["--host-cni-conf-dir", host_dir]);
    let said = || i.log().contains("/opt/calico/10-calico.conflist");
    assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
    let (code, log) = i.stop();
    assert_eq!(code, 0, "{log}");
    let link = std::fs::read_link(n.net("10-calico.conflist")).unwrap();
    assert_eq!(
        link,
        Path::new("/opt/calico/10-calico.conflist"),
        "the link was replaced"
    );
    assert!(!log.contains("last in the chain"), "{log}");
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
            "{:?} {}",
            n.runtime_reads(),
            i.log()
        );
        assert_eq!(i.stop().0, 0);
        assert_eq!(n.runtime_reads(), [name]);
    }
}

/// A plugin binary removed from under the installer is back within a second.
fn a_removed_binary_is_put_back() {
    let n = Node::new("binary");
    let _i = n.installed_on_a_list(&[]);
    let bin = n.dir.join("bin/meshtables-cni");
    std::fs::remove_file(&bin).unwrap();
    let took = n.until(5 * SECOND, || bin.exists());
    assert!(took.is_some_and(|t| t < SECOND), "{took:?}");
}

/// After a SIGKILL (no uninstall), the next installer, with other settings, takes over the
/// entry, and its uninstall brings the file back byte for byte: the backup never held an
/// entry of ours, and no chain calls a binary that is gone.
fn after_a_sigkill_the_next_installer_restores_byte_for_byte() {
    let n = Node::new("sigkill");
    let mut first = n.installed_on_a_list(&[]);
    first.kill();
    let mut second = n.start(&["--native-nftables"]);
    let replaced = || {
        std::fs::read(n.net("10-dbnet.conflist"))
            .is_ok_and(|b| String::from_utf8_lossy(&b).contains("native-nftables"))
    };
    assert!(n.until(5 * SECOND, replaced).is_some(), "{}", second.log());
    for name in n.listing() {
        if name.ends_with(".meshtables-cni-backup") {
            let b = std::fs::read_to_string(n.net(&name)).unwrap();
            assert!(
                !b.contains("meshtables-cni\""),
                "a backup holds our entry: {b}"
            );
        }
    }
    let (code, err) = second.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        LIST
    );
    assert!(!n.dir.join("bin/meshtables-cni").exists());
}

/// A killed installer's temporary files (its id no longer alive) are removed by the next one;
/// uninstall leaves nothing of ours in the directory (no lock file either).
fn a_killed_installers_temporary_files_are_removed() {
    let n = Node::new("leftovers");
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    let stale = n.net(".10-dbnet.conflist.meshtables-tmp-12345-0");
    std::fs::write(&stale, "half a file").unwrap();
    let stale_bin = n.dir.join("bin/.meshtables-cni.meshtables-tmp-12345-1");
    std::fs::write(&stale_bin, "half a binary").unwrap();
    let mut i = n.start(&[]);
    let gone = || !stale.exists() && !stale_bin.exists();
    assert!(n.until(5 * SECOND, gone).is_some(), "{}", i.log());
    assert_eq!(i.stop().0, 0);
    let left: Vec<String> = n
        .listing()
        .into_iter()
        .filter(|f| !f.ends_with(".log"))
        .collect();
    assert_eq!(left, ["10-dbnet.conflist"]);
}

/// A chain whose version the plugin cannot serve is refused: not ready, one message naming
/// the file and the version, the file untouched.
fn an_unserved_version_is_refused(version: &'static str) -> impl FnOnce() {
    move || {
        let n = Node::new(&format!("version-{}", version.replace('.', "-")));
        let list = LIST.replace("0.4.0", version);
        std::fs::write(n.net("10-dbnet.conflist"), &list).unwrap();
        let mut i = n.start(&[]);
        let said = || i.log().contains(&format!("cniVersion \"{version}\""));
        assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
        let (code, why) = n.ready(&[]);
        assert!(code == 1 && why.contains("10-dbnet.conflist"), "{why}");
        assert_eq!(
            std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
            list
        );
        let (_, log) = i.stop();
        let lines = log.lines().filter(|l| l.contains("cniVersion")).count();
        assert_eq!(lines, 1, "one message, not one per pass: {log}");
    }
}

/// Calico's and flannel's stock chains say 0.3.1: the plugin serves it, so the installer
/// puts us in and is ready.
fn a_0_3_1_chain_gets_the_entry() {
    let n = Node::new("version-031");
    let calico = r#"{"name": "k8s-pod-network", "cniVersion": "0.3.1", "plugins": [
      {"type": "calico", "log_level": "info", "datastore_type": "kubernetes",
       "ipam": {"type": "calico-ipam"}, "policy": {"type": "k8s"},
       "kubernetes": {"kubeconfig": "/etc/cni/net.d/calico-kubeconfig"}},
      {"type": "portmap", "snat": true, "capabilities": {"portMappings": true}},
      {"type": "bandwidth", "capabilities": {"bandwidth": true}}]}"#;
    std::fs::write(n.net("10-calico.conflist"), calico).unwrap();
    let _i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("10-calico.conflist"))
            .is_some()
    );
    assert!(
        n.until(5 * SECOND, || n.is_ready(&[])).is_some(),
        "{:?}",
        n.ready(&[])
    );
    assert_eq!(json_of(&n.net("10-calico.conflist"))["cniVersion"], "0.3.1");
}

/// The installer and the runtime agree on which file is the network. `first` sorts before
/// `LIST` (in `20-second.conflist`): when the runtime loads `first`, the entry goes there;
/// when it does not, the entry goes in the second file. `first` is never rewritten into a
/// form the runtime would judge differently.
fn the_runtime_and_the_installer_agree(
    first: &'static [u8],
    runtime_loads_it: bool,
) -> impl FnOnce() {
    move || {
        let n = Node::new(&format!(
            "view-{:x}",
            first.len() ^ first.first().map_or(0, |b| *b as usize)
        ));
        std::fs::write(n.net("10-first.conflist"), first).unwrap();
        std::fs::write(n.net("20-second.conflist"), LIST).unwrap();
        let mut i = n.start(&[]);
        let (here, there) = if runtime_loads_it {
            ("10-first.conflist", "20-second.conflist")
        } else {
            ("20-second.conflist", "10-first.conflist")
        };
        assert!(
            n.until(5 * SECOND, || n.holds_us(here)).is_some(),
            "{}",
            i.log()
        );
        assert!(!n.holds_us(there));
        if !runtime_loads_it {
            assert_eq!(std::fs::read(n.net("10-first.conflist")).unwrap(), first);
        }
        assert_eq!(i.stop().0, 0);
    }
}

/// A file the runtime loads but the installer will not rewrite (nested deeper than it
/// rewrites), or cannot judge (the two libcni versions disagree, a FIFO): not ready, saying
/// why, and the entry goes nowhere else (the runtime would use this file).
fn not_ready_where_the_installer_cannot_match(
    tag: &'static str,
    make: fn(&Path),
    says: &'static str,
) -> impl FnOnce() {
    move || {
        let n = Node::new(&format!("cannot-{tag}"));
        make(&n.net("10-first.conflist"));
        std::fs::write(n.net("20-second.conflist"), LIST).unwrap();
        let mut i = n.start(&[]);
        let said = || i.log().contains(says);
        assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
        let (code, why) = n.ready(&[]);
        assert!(code == 1 && why.contains(says), "{why}");
        assert!(
            !n.holds_us("20-second.conflist"),
            "the entry went where the runtime does not look"
        );
        assert_eq!(i.stop().0, 0);
    }
}

/// Readiness follows the live state: the chain, the binary and the kubeconfig.
fn readiness_follows_the_chain_the_binary_and_the_kubeconfig() {
    let n = Node::new("readiness");
    let i = n.installed_on_a_list(&[]);
    assert!(
        n.until(5 * SECOND, || n.is_ready(&[])).is_some(),
        "{:?}",
        n.ready(&[])
    );
    // Another installer's settings are not ours: not ready for them.
    let (code, why) = n.ready(&["--compact"]);
    assert!(code == 1 && why.contains("does not end with"), "{why}");
    // The installer repairs what goes missing; readiness is back once it has.
    std::fs::remove_file(n.net("meshtables-cni-kubeconfig")).unwrap();
    let back = || n.net("meshtables-cni-kubeconfig").exists() && n.is_ready(&[]);
    let took = n.until(5 * SECOND, back);
    assert!(
        took.is_some_and(|t| t < 2 * SECOND),
        "{took:?} {:?}",
        n.ready(&[])
    );
    // A file of that name that is not a kubeconfig this installer wrote is someone else's:
    // reported, never overwritten; not ready until it is gone.
    std::fs::write(n.net("meshtables-cni-kubeconfig"), "{}").unwrap();
    let said = || i.log().contains("is not a kubeconfig this installer wrote");
    assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
    assert!(!n.is_ready(&[]));
    assert_eq!(
        std::fs::read_to_string(n.net("meshtables-cni-kubeconfig")).unwrap(),
        "{}"
    );
    std::fs::remove_file(n.net("meshtables-cni-kubeconfig")).unwrap();
    assert!(n.until(5 * SECOND, || n.is_ready(&[])).is_some());
}

fn readiness_is_false_without_the_binary() {
    let n = Node::new("readiness-bin");
    let _i = n.installed_on_a_list(&["--uninstall=false"]);
    drop(_i);
    std::fs::remove_file(n.dir.join("bin/meshtables-cni")).unwrap();
    let (code, why) = n.ready(&["--uninstall=false"]);
    assert!(code == 1 && why.contains("meshtables-cni"), "{why}");
}

fn waits_for_the_primary_file() {
    let n = Node::new("wait");
    let mut i = n.start(&[]);
    let said = || i.log().contains("no network configuration yet");
    assert!(n.until(5 * SECOND, said).is_some(), "{}", i.log());
    assert!(!n.is_ready(&[]));
    std::fs::write(n.net("20-late.conflist"), LIST).unwrap();
    let took = n.until(5 * SECOND, || n.holds_us("20-late.conflist"));
    assert!(took.is_some_and(|t| t < SECOND), "{took:?}");
    assert_eq!(i.stop().0, 0);
    assert_eq!(
        std::fs::read_to_string(n.net("20-late.conflist")).unwrap(),
        LIST
    );
}

fn uninstall_restores_byte_for_byte_and_leaves_no_file() {
    let n = Node::new("uninstall");
    let mut i = n.installed_on_a_list(&[]);
    let (code, err) = i.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        LIST
    );
    assert!(!n.dir.join("bin/meshtables-cni").exists());
    let left: Vec<String> = n
        .listing()
        .into_iter()
        .filter(|f| !f.ends_with(".log"))
        .collect();
    assert_eq!(
        left,
        ["10-dbnet.conflist"],
        "a lock, backup or kubeconfig stayed"
    );
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

/// SIGTERM is handled within a second, uninstall included.
fn sigterm_is_handled_within_a_second() {
    let n = Node::new("sigterm");
    let mut i = n.installed_on_a_list(&[]);
    let t = Instant::now();
    let (code, err) = i.stop();
    assert!(code == 0 && t.elapsed() < SECOND, "{:?} {err}", t.elapsed());
}

/// A full filesystem: writes fail, and the installer retries once a second with one log line
/// per change of state, not a busy loop.
fn a_full_directory_backs_off() {
    let n = Node::new("full");
    let net = n.dir.join("net");
    assert!(
        std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64k", "tmpfs"])
            .arg(&net)
            .status()
            .unwrap()
            .success()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(net.clone());
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    // Fill the filesystem to the last block.
    let mut filler = std::fs::File::create(n.net("filler")).unwrap();
    let block = vec![0u8; 4096];
    while std::io::Write::write_all(&mut filler, &block).is_ok() {}
    drop(filler);
    let mut i = n.start(&[]);
    assert!(
        n.until(10 * SECOND, || i.log().contains("No space left"))
            .is_some(),
        "{}",
        i.log()
    );
    // Then three seconds of the failing state: one try a second, one line per change.
    std::thread::sleep(3 * SECOND);
    let (_, log) = i.stop();
    let lines = log.lines().count();
    assert!(
        log.contains("No space left") && lines < 20,
        "{lines} lines:\n{log}"
    );
}

fn bad_settings_exit_2_naming_the_flag(
    tag: &'static str,
    args: &'static [&'static str],
    env: &'static [(&'static str, &'static str)],
    names: &'static str,
) -> impl FnOnce() {
    move || {
        let n = Node::new(&format!("bad-{tag}"));
        let mut all_env = vec![("KUBERNETES_SERVICE_HOST", "10.96.0.1")];
        all_env.extend_from_slice(env);
        let (code, err) = n.start_env(args, &all_env).exits();
        assert_eq!(code, 2, "{err}");
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

/// `AMBIENT_ENABLEMENT_SELECTOR` (YAML, as istio-cni's configmap renders its chart's
/// `ambient.enablementSelectors`) goes into the ambient plugin entry as
/// `kubernetes.enablement-selectors` in upstream's JSON shape, and the plugin's own parser reads
/// the same selectors back from that entry.
fn the_enablement_selectors_are_written_into_the_plugin_entry() {
    let yaml = "- podSelector:\n    matchLabels: {mesh: \"yes\"}\n- namespaceSelector:\n    matchExpressions:\n    - {key: team, operator: In, values: [a, b]}\n";
    let mut flags = meshtables::flags::Flags::default();
    flags.set(&meshtables::flags::install::AMBIENT_ENABLED.spec, "true");
    flags.set(&meshtables::flags::install::NODE_NAME.spec, "node-a");
    let env: std::collections::HashMap<String, String> = [
        ("AMBIENT_ENABLEMENT_SELECTOR", yaml),
        ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
    ]
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .into();
    let s = meshtables::install::settings(&flags, &env).unwrap();
    let e = meshtables::install::entry(&s).unwrap();
    let written = &e["kubernetes"]["enablement-selectors"];
    assert_eq!(
        written,
        &json!([
            {"podSelector": {"matchLabels": {"mesh": "yes"}}, "namespaceSelector": {}},
            {"podSelector": {}, "namespaceSelector": {"matchExpressions": [
                {"key": "team", "operator": "In", "values": ["a", "b"]}]}}
        ])
    );
    let mut conf = Value::Object(e.clone());
    conf["cniVersion"] = "1.0.0".into();
    let parsed = meshtables::cni::conf::parse(&serde_json::to_vec(&conf).unwrap()).unwrap();
    let k = parsed.kubernetes.expect("a kubernetes section");
    assert_eq!(
        k.enablement_selectors,
        meshtables::selector::EnablementSelectors::from_yaml(yaml).unwrap()
    );
}

/// An `istio-cni` entry in the chain (a migration from Istio's CNI) is reported: both
/// plugins would program every pod.
fn an_istio_cni_entry_is_reported() {
    let n = Node::new("istiocni");
    let mut v: Value = serde_json::from_str(LIST).unwrap();
    v["plugins"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "istio-cni", "kubernetes": {}}));
    std::fs::write(n.net("10-dbnet.conflist"), v.to_string()).unwrap();
    let mut i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("10-dbnet.conflist"))
            .is_some()
    );
    let (_, log) = i.stop();
    let warnings = log.lines().filter(|l| l.contains("istio-cni")).count();
    assert!(
        warnings == 1 && log.contains("remove Istio's CNI plugin"),
        "{log}"
    );
}

/// The DaemonSet's environment is the installer's settings, its readiness probe is
/// `cni-ready`, and its rollout runs the new pod beside the old one (maxSurge) on Linux
/// nodes, tolerating istiod's node-readiness taint with the label istiod looks for.
fn the_daemonset_runs_the_installer_as_designed() {
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
    let spec = &ds["spec"]["template"]["spec"];
    let container = &spec["containers"][0];
    let known: Vec<&str> = meshtables::flags::install::INSTALL
        .iter()
        .flat_map(|s| s.envs.iter().copied())
        .collect();
    for e in container["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            known.contains(&name) || name == "KUBERNETES_SERVICE_HOST",
            "{name} is not an installer setting ({known:?})"
        );
    }
    assert_eq!(container["args"][0], "cni-install");
    assert_eq!(
        container["readinessProbe"]["exec"]["command"],
        json!(["/meshtables", "cni-ready"])
    );
    assert!(container["ports"].is_null(), "no port on the node");
    let rolling = &ds["spec"]["updateStrategy"]["rollingUpdate"];
    assert_eq!(
        (&rolling["maxSurge"], &rolling["maxUnavailable"]),
        (&json!(1), &json!(0))
    );
    assert_eq!(spec["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(
        ds["spec"]["template"]["metadata"]["labels"]["k8s-app"],
        "istio-cni-node"
    );
    let tolerates_all = spec["tolerations"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["operator"] == "Exists" && t["key"].is_null());
    assert!(tolerates_all, "the node-readiness taint must be tolerated");
}

/// `LOG_LEVEL=warn` silences the installer's info lines.
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

/// A rolling upgrade (maxSurge): the new installer starts beside the old one and owns the
/// chain; the old one stands by and, at SIGTERM, leaves the plugin installed. The last one to
/// stop uninstalls.
fn an_upgrade_hands_over_and_leaves_the_plugin_installed() {
    let n = Node::new("upgrade");
    let mut old = n.installed_on_a_list(&[]);
    let mut new = n.start(&["--native-nftables"]);
    let took_over = || n.is_ready(&["--native-nftables"]) && old.log().contains("standing by");
    assert!(
        n.until(5 * SECOND, took_over).is_some(),
        "{}\n{}",
        old.log(),
        new.log()
    );
    let (code, err) = old.stop();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("another installer runs on this node"), "{err}");
    assert!(n.is_ready(&["--native-nftables"]));
    let (code, err) = new.stop();
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read_to_string(n.net("10-dbnet.conflist")).unwrap(),
        LIST
    );
    assert!(!n.dir.join("bin/meshtables-cni").exists());
}

/// Two installers with different settings for 10 s while the primary rewrites its file every
/// second: the newer one's entry is there at the end, and the chain was written a bounded
/// number of times (one handover, one repair per primary write), never a fight.
fn two_installers_with_different_settings_never_fight() {
    let n = Node::new("fight");
    let mut old = n.installed_on_a_list(&["--compact"]);
    let mut new = n.start(&["--native-nftables"]);
    let path = n.net("10-dbnet.conflist");
    for k in 0..10 {
        std::thread::sleep(SECOND);
        primary_write(&path, &list_version(k), Writes::Rename);
    }
    let settled = || n.is_ready(&["--native-nftables"]);
    assert!(n.until(5 * SECOND, settled).is_some(), "{}", new.log());
    let writes = |log: &str| {
        log.lines()
            .filter(|l| l.contains("last in the chain"))
            .count()
    };
    let (o, nw) = (writes(&old.log()), writes(&new.log()));
    assert_eq!(
        o,
        1,
        "the older installer wrote after the newer started:\n{}",
        old.log()
    );
    assert!(
        nw <= 12,
        "{nw} writes by the newer installer:\n{}",
        new.log()
    );
    println!("writes in 10 s: older {o} (its install), newer {nw} (handover + repairs)");
    assert_eq!(old.stop().0, 0);
    assert_eq!(new.stop().0, 0);
}

// Trials found by attacking the installer as a node would (branch break-install). Each fails
// on 12014ab; its comment says what the claim is and what 12014ab does instead.

/// Log lines saying the installer wrote our entry into a chain.
fn chain_writes(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("last in the chain"))
        .count()
}

/// The primary's file under two names the runtime reads: `10-calico.conflist`, a link to
/// `calico.conflist` beside it (a versioned file and its stable name). It is one file: the
/// entry goes in once and stays. (12014ab puts it in through one name, takes it out through
/// the other, and again, about 25 times a second; the chain holds us half the time.)
fn two_names_of_one_file_are_one_network() {
    let n = Node::new("alias");
    std::fs::write(n.net("calico.conflist"), LIST).unwrap();
    std::os::unix::fs::symlink("calico.conflist", n.net("10-calico.conflist")).unwrap();
    let i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("calico.conflist"))
            .is_some(),
        "{}",
        i.log()
    );
    let fight = n.until(2 * SECOND, || chain_writes(&i.log()) > 2);
    assert!(
        fight.is_none(),
        "the chain was rewritten {} times in {fight:?}:\n{}",
        chain_writes(&i.log()),
        i.log()
    );
    assert!(n.holds_us("calico.conflist") && n.is_ready(&[]));
}

/// libcni reads JSON with Go's encoding/json, which takes bytes that are not UTF-8 in a string
/// (a Latin-1 `é`) as U+FFFD: the file is the runtime's network (podman 4.3, CNI backend, lists
/// it). The installer must not put the entry in the next file and say ready while the runtime
/// uses this one without it.
fn a_network_that_is_not_utf8_is_still_the_runtimes() {
    let n = Node::new("latin1");
    let mut bytes = LIST.replace("\"dbnet\"", "\"caf\u{1}\"").into_bytes();
    for b in bytes.iter_mut().filter(|b| **b == 1) {
        *b = 0xe9;
    }
    assert!(std::str::from_utf8(&bytes).is_err());
    std::fs::write(n.net("10-latin1.conflist"), &bytes).unwrap();
    std::fs::write(n.net("20-dbnet.conflist"), LIST).unwrap();
    let i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || i.log().contains("ready")).is_some(),
        "{}",
        i.log()
    );
    let (code, why) = n.ready(&[]);
    assert!(
        !n.holds_us("20-dbnet.conflist") && (code != 0 || why.contains("10-latin1")),
        "the entry went to 20-dbnet.conflist, which the runtime does not use ({code}: {why}):\n{}",
        i.log()
    );
}

/// The primary's file is a link into `calico/`, itself a link to an absolute path: the host
/// resolves that path on the host, the installer (another mount namespace, the directory
/// mounted elsewhere) in its own. Not ready, naming it, as for a file link out of sight; never
/// a write into whatever the installer's view has at that path.
fn a_link_through_a_directory_out_of_sight_is_not_ready() {
    let n = Node::new("dirlink");
    let outside = n.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("10-calico.conflist"), LIST).unwrap();
    std::os::unix::fs::symlink(&outside, n.net("calico")).unwrap();
    std::os::unix::fs::symlink("calico/10-calico.conflist", n.net("10-calico.conflist")).unwrap();
    let mut i = n.start(&["--host-cni-conf-dir", "/etc/cni/net.d"]);
    assert!(
        n.until(5 * SECOND, || i.log().contains("ready")).is_some(),
        "{}",
        i.log()
    );
    let (_, log) = i.stop();
    assert_eq!(
        std::fs::read_to_string(outside.join("10-calico.conflist")).unwrap(),
        LIST,
        "written through a link out of the directory:\n{log}"
    );
    assert!(log.contains("not ready"), "{log}");
}

/// The plugin binary loses its execute permission (a chmod, a restore from a backup): the
/// runtime cannot run it. It is put back within a second, as a removed one is. (12014ab
/// compares bytes only, and skips a file whose inode, size and mtime are unchanged.)
fn a_binary_without_execute_permission_is_repaired() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new("noexec");
    let i = n.installed_on_a_list(&[]);
    let bin = n.dir.join("bin/meshtables-cni");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let executable =
        || std::fs::metadata(&bin).is_ok_and(|m| m.permissions().mode() & 0o111 == 0o111);
    let took = n.until(5 * SECOND, executable);
    assert!(
        took.is_some_and(|t| t < 2 * SECOND),
        "{took:?}\n{}",
        i.log()
    );
}

/// A binary the runtime cannot execute is not a whole installation: not ready (12014ab compares
/// its bytes only, and says ready).
fn readiness_is_false_for_a_binary_without_execute_permission() {
    use std::os::unix::fs::PermissionsExt;
    let n = Node::new("readiness-noexec");
    let i = n.installed_on_a_list(&["--uninstall=false"]);
    drop(i);
    let bin = n.dir.join("bin/meshtables-cni");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (code, why) = n.ready(&["--uninstall=false"]);
    assert!(code == 1 && why.contains("meshtables-cni"), "{why}");
}

/// An installer that a newer one displaced (an upgrade's new pod, OOM-killed while it copied
/// the binary) left its temporary files after this one's last sweep; this one is the last
/// installer and stops. Nothing of ours stays: 12014ab sweeps every tenth pass, never at
/// uninstall, and leaves them (a binary's is the binary's size).
fn uninstall_removes_temporary_files_a_killed_installer_left_meanwhile() {
    let n = Node::new("late-leftovers");
    let mut i = n.installed_on_a_list(&[]);
    assert!(n.until(5 * SECOND, || n.is_ready(&[])).is_some());
    std::fs::write(
        n.net(".10-dbnet.conflist.meshtables-tmp-12345-7"),
        "half a file",
    )
    .unwrap();
    std::fs::write(
        n.dir.join("bin/.meshtables-cni.meshtables-tmp-12345-6"),
        "half a binary",
    )
    .unwrap();
    assert_eq!(i.stop().0, 0);
    let left: Vec<String> = n
        .listing()
        .into_iter()
        .filter(|f| !f.ends_with(".log"))
        .collect();
    assert_eq!(left, ["10-dbnet.conflist"]);
    let bin: Vec<_> = std::fs::read_dir(n.dir.join("bin")).unwrap().collect();
    assert!(bin.is_empty(), "{bin:?}");
}

/// The previous version (72b6312) holds `.meshtables-cni-installers.lock` shared while it
/// runs, and at SIGTERM uninstalls only if it can take that lock exclusively. In an upgrade
/// from it, the new installer runs beside it (maxSurge) and the old pod is stopped once the
/// new one is ready: the new one must hold that lock too, or the old one takes the entry out
/// and removes the binary under it (measured with the 72b6312 binary: both gone for 150 ms,
/// until the new installer put them back; pods started then are not intercepted).
fn the_previous_version_sees_the_new_installer() {
    use nix::fcntl::{Flock, FlockArg};
    let n = Node::new("legacy-lock");
    // The old installer, as 72b6312 opens and locks the file at start.
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(n.net(".meshtables-cni-installers.lock"))
        .unwrap();
    let old = Flock::lock(file, FlockArg::LockShared)
        .map_err(|(_, e)| e)
        .unwrap();
    let new = n.installed_on_a_list(&[]);
    // Its SIGTERM: "alone" if the exclusive lock is free.
    let alone = old.relock(FlockArg::LockExclusiveNonblock).is_ok();
    assert!(
        !alone,
        "the previous version would uninstall under the running new installer:\n{}",
        new.log()
    );
}

/// The previous version leaves `.meshtables-cni-installers.lock` in the directory; the last
/// installer to stop leaves nothing of ours.
fn uninstall_removes_the_previous_versions_lock_file() {
    let n = Node::new("legacy-lock-file");
    std::fs::write(n.net(".meshtables-cni-installers.lock"), "").unwrap();
    let mut i = n.installed_on_a_list(&[]);
    assert_eq!(i.stop().0, 0);
    let left: Vec<String> = n
        .listing()
        .into_iter()
        .filter(|f| !f.ends_with(".log"))
        .collect();
    assert_eq!(left, ["10-dbnet.conflist"]);
}

/// A writer keeps putting back the file as it was installed, our entry included (a
/// configuration manager that took its snapshot then) while the installer stops. Uninstall
/// cannot take the entry out for good; it must then keep the binary the chain names (and say
/// so), never leave a chain whose plugin is gone: every pod's ADD would fail. (12014ab gives up
/// after ten tries, or reads the file in the instant it is empty, and removes the binary.)
fn uninstall_never_leaves_a_chain_naming_a_missing_binary() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let n = Node::new("manager");
    let mut i = n.installed_on_a_list(&[]);
    let path = n.net("10-dbnet.conflist");
    let installed = std::fs::read(&path).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let done = done.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                let tmp = path.with_extension("manager-tmp");
                std::fs::write(&tmp, &installed).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let (code, log) = i.stop();
    done.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let bin = n.dir.join("bin/meshtables-cni");
    assert!(
        !n.holds_any("10-dbnet.conflist") || bin.exists(),
        "the chain names meshtables-cni, whose binary uninstall removed (exit {code}):\n{log}"
    );
}

/// A primary that opened its `.conf` before the installer converted it, and rewrites it in
/// place without truncating first (write, then ftruncate: never an empty file). Its write
/// reaches the `.conf` the conversion removed, just after: that is the primary's newest, and
/// the chain takes it, as it does for a list replaced under such a writer. (12014ab watches
/// replaced lists, not removed `.conf` files: the write is lost, in the chain and at uninstall.)
fn a_late_write_into_a_converted_conf_is_kept() {
    use std::os::unix::fs::FileExt;
    let n = Node::new("conf-late");
    let conf = n.net("10-dbnet.conf");
    std::fs::write(&conf, CONF).unwrap();
    let held = std::fs::OpenOptions::new().write(true).open(&conf).unwrap();
    let mut i = n.start(&[]);
    let converted = || n.holds_us("10-dbnet.conflist") && !conf.exists();
    assert!(n.until(5 * SECOND, converted).is_some(), "{}", i.log());
    let newer = CONF.replace("cni0", "cni1");
    held.write_all_at(newer.as_bytes(), 0).unwrap();
    held.set_len(newer.len() as u64).unwrap();
    drop(held);
    let list = n.net("10-dbnet.conflist");
    let kept = || {
        std::fs::read(&list).is_ok_and(|b| {
            serde_json::from_slice::<Value>(&b).is_ok_and(|v| v["plugins"][0]["bridge"] == "cni1")
        })
    };
    assert!(
        n.until(5 * SECOND, kept).is_some(),
        "the primary's write after the conversion was lost:\n{}\n{}",
        std::fs::read_to_string(&list).unwrap_or_default(),
        i.log()
    );
    assert_eq!(i.stop().0, 0);
    assert_eq!(std::fs::read_to_string(&conf).unwrap(), newer);
}

/// `kubectl delete` during an upgrade's surge: both installers on the node get SIGTERM at
/// once. The last one to stop uninstalls; 12014ab's each looks whether the other is alive,
/// and when both look before either is gone, both leave everything installed and nothing ever
/// uninstalls (measured without strace: 6 times in 8). strace makes every `write` wait 0.3 s
/// (a loaded node's scheduling: the installer logs a line on SIGTERM, looks, and logs another
/// before it lets go), so both look before either is gone.
fn two_installers_stopped_together_still_uninstall() {
    let n = Node::new("together");
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    let slow_writes = ["-e", "trace=write", "-e", "inject=write:delay_enter=300000"];
    let (mut older, _) = n.start_traced(&slow_writes, &[]);
    assert!(
        n.until(10 * SECOND, || n.holds_us("10-dbnet.conflist"))
            .is_some(),
        "{}",
        older.log()
    );
    let (mut newer, _) = n.start_traced(&slow_writes, &[]);
    // Each log line is two writes: a line ends, and its writer is back in its loop, at the newline.
    let said = |i: &Installer, what: &str| {
        let log = i.log();
        log.contains(what) && log.ends_with('\n')
    };
    let both_up = || said(&older, "standing by") && said(&newer, "ready");
    assert!(
        n.until(10 * SECOND, both_up).is_some(),
        "{}\n{}",
        older.log(),
        newer.log()
    );
    older.signal(nix::sys::signal::Signal::SIGTERM);
    newer.signal(nix::sys::signal::Signal::SIGTERM);
    let (a, la) = older.exits();
    let (b, lb) = newer.exits();
    assert!(
        !n.holds_any("10-dbnet.conflist") && !n.dir.join("bin/meshtables-cni").exists(),
        "both stopped ({a}, {b}) and the plugin stays installed:\n{la}\n{lb}"
    );
}

/// strace holds the installer at its first exchange (the compare before it passed); the primary
/// renames its newer version in then, so the exchange displaces it; the installer is SIGKILLed
/// as it was about to put it back. The primary's newer write is then only in the killed
/// installer's temporary file: the next installer must put it in place (with our entry), not
/// sweep it away as a leftover.
fn a_sigkill_before_a_displaced_write_is_put_back_loses_nothing() {
    let n = Node::new("displaced");
    let path = n.net("10-dbnet.conflist");
    std::fs::write(&path, list_version(1)).unwrap();
    let (mut i, trace) = n.start_traced(
        &[
            "-e",
            "trace=renameat2",
            "-e",
            "inject=renameat2:delay_enter=500000:when=1..2",
        ],
        &[],
    );
    let entered = |k: usize| {
        std::fs::read_to_string(&trace).is_ok_and(|t| t.matches("renameat2(").count() >= k)
    };
    assert!(n.until(10 * SECOND, || entered(1)).is_some(), "{}", i.log());
    primary_write(&path, &list_version(2), Writes::Rename);
    assert!(
        n.until(10 * SECOND, || entered(2)).is_some(),
        "{}\n{}",
        i.log(),
        std::fs::read_to_string(&trace).unwrap_or_default()
    );
    i.kill();
    let last: Value = serde_json::from_str(&list_version(2)).unwrap();
    let next = n.start(&[]);
    let kept = || {
        std::fs::read(&path).is_ok_and(|b| {
            ends_with_us(&b)
                && serde_json::from_slice::<Value>(&b).is_ok_and(|v| without_us(&v) == last)
        })
    };
    assert!(
        n.until(5 * SECOND, kept).is_some(),
        "the primary's last write is lost: {:?}\n{}\n{}",
        n.listing(),
        std::fs::read_to_string(&path).unwrap_or_default(),
        next.log()
    );
}

/// The primary's file is a link it swaps (a new version written beside the old, then the link
/// renamed over): the entry follows the link, and the old target, no longer the chain, keeps no
/// entry of ours, while the installer runs and after uninstall. (12014ab leaves it there: a
/// primary that swaps back, as A/B writers do, brings back a chain naming a plugin that
/// uninstall removed.)
fn a_link_swapped_away_leaves_no_entry_in_the_old_target() {
    let n = Node::new("swap");
    std::fs::create_dir_all(n.net("calico")).unwrap();
    std::fs::write(n.net("calico/a.conflist"), LIST).unwrap();
    std::os::unix::fs::symlink("calico/a.conflist", n.net("10-calico.conflist")).unwrap();
    let mut i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("calico/a.conflist"))
            .is_some(),
        "{}",
        i.log()
    );
    std::fs::write(n.net("calico/b.conflist"), list_version(2)).unwrap();
    std::os::unix::fs::symlink("calico/b.conflist", n.net(".10-calico.link")).unwrap();
    std::fs::rename(n.net(".10-calico.link"), n.net("10-calico.conflist")).unwrap();
    assert!(
        n.until(5 * SECOND, || n.holds_us("calico/b.conflist"))
            .is_some(),
        "{}",
        i.log()
    );
    let old_clean = || !n.holds_any("calico/a.conflist");
    let cleaned = n.until(5 * SECOND, old_clean);
    let (code, log) = i.stop();
    assert!(
        cleaned.is_some() && old_clean(),
        "the old target keeps our entry (exit {code}):\n{}\n{log}",
        std::fs::read_to_string(n.net("calico/a.conflist")).unwrap()
    );
}

/// The memory limit of the installer's container in deploy/ (`resources.limits.memory`).
fn manifest_memory_limit() -> u64 {
    use serde::Deserialize;
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/meshtables-cni.yaml"
    ))
    .unwrap();
    let ds = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap())
        .find(|d| d["kind"] == "DaemonSet")
        .unwrap();
    let limit = ds["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"]
        .as_str()
        .unwrap()
        .to_string();
    let (num, unit) = limit.split_at(limit.find(|c: char| !c.is_ascii_digit()).unwrap());
    let unit = match unit {
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        other => panic!("unit {other}"),
    };
    num.parse::<u64>().unwrap() * unit
}

/// The DaemonSet gives the installer 64 MiB of memory, and 12014ab reads every configuration
/// file whole (up to 64 MiB each, all of them at once, every second; 20 files of 60 MiB: 1.2 GB
/// resident, cni-ready 3.5 s): a file half the limit, before the network, must be refused
/// unread (not ready, "larger than"), not read by a process the limit then kills.
fn a_file_of_half_the_memory_limit_is_not_read_whole() {
    let limit = manifest_memory_limit();
    let n = Node::new("huge");
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    let big = std::fs::File::create(n.net("05-big.conflist")).unwrap();
    big.set_len(limit / 2).unwrap();
    drop(big);
    let i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || i.log().contains("ready")).is_some(),
        "{}",
        i.log()
    );
    let log = i.log();
    assert!(
        log.contains("05-big.conflist") && log.contains("larger than"),
        "a {} MiB file was read whole by an installer limited to {} MiB:\n{log}",
        (limit / 2) >> 20,
        limit >> 20
    );
}

/// The kubeconfig's name is a setting; a file of that name that the installer did not write
/// (istio-cni's own, still on the node during a migration, with Istio's
/// `KUBECONFIG_FILENAME` copied) is a conflict to report, never a file to overwrite, nor to
/// remove at uninstall.
fn a_kubeconfig_name_taken_by_another_file_is_not_overwritten() {
    let n = Node::new("kubeconfig-name");
    let theirs = "# Kubeconfig file for Istio CNI plugin.\napiVersion: v1\nkind: Config\nusers:\n- name: istio-cni\n  user:\n    token: theirs\n";
    let path = n.net("ZZZ-istio-cni-kubeconfig");
    std::fs::write(&path, theirs).unwrap();
    std::fs::write(n.net("10-dbnet.conflist"), LIST).unwrap();
    let mut i = n.start(&["--kubeconfig-name", "ZZZ-istio-cni-kubeconfig"]);
    assert!(
        n.until(5 * SECOND, || i.log().contains("ready")).is_some(),
        "{}",
        i.log()
    );
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        theirs,
        "{}",
        i.log()
    );
    let (_, log) = i.stop();
    assert_eq!(
        std::fs::read_to_string(&path).ok().as_deref(),
        Some(theirs),
        "{log}"
    );
}

/// In iptables mode (`--native-nftables=false`, the flag's default) the plugin's STATUS wants
/// iptables-restore in PATH. The runtime runs the plugin on the host, which has it (this
/// machine); cni-ready runs in the installer's container, whose image (FROM scratch) has
/// nothing in PATH. Readiness must not depend on the container's PATH: 12014ab's is false
/// forever there, so the DaemonSet never becomes ready (nor does istiod untaint the node).
fn readiness_in_iptables_mode_does_not_depend_on_the_installers_path() {
    let n = Node::new("iptables-mode");
    let _i = n.installed_on_a_list(&[]);
    assert!(
        n.until(5 * SECOND, || n.is_ready(&[])).is_some(),
        "{:?}",
        n.ready(&[])
    );
    let empty = n.dir.join("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let (code, why) = n.ready_env(&[], &[("PATH", empty.to_str().unwrap())]);
    assert_eq!(code, 0, "{why}");
}

/// The host's configuration directory is removed and made again (`rm -rf /etc/cni/net.d`, the
/// primary writes its file again). The installer's pod mounts the directory (a bind mount, as
/// the kubelet mounts a hostPath), so its view is the removed directory: it must see that and
/// exit, for the kubelet to restart it on the new one, or reach the new one. 12014ab waits
/// forever, "waiting for the primary plugin's file", while the runtime uses a chain without us.
fn an_installer_whose_directory_was_replaced_does_not_wait_forever() {
    let n = Node::new("replaced");
    let host = n.dir.join("host-net");
    std::fs::create_dir_all(&host).unwrap();
    let mounted = n.dir.join("net");
    assert!(
        std::process::Command::new("mount")
            .arg("--bind")
            .arg(&host)
            .arg(&mounted)
            .status()
            .unwrap()
            .success()
    );
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(mounted.clone());
    std::fs::write(host.join("10-dbnet.conflist"), LIST).unwrap();
    let mut i = n.start(&[]);
    assert!(
        n.until(5 * SECOND, || n.holds_us("10-dbnet.conflist"))
            .is_some(),
        "{}",
        i.log()
    );
    std::fs::remove_dir_all(&host).unwrap();
    std::fs::create_dir_all(&host).unwrap();
    std::fs::write(host.join("10-dbnet.conflist"), LIST).unwrap();
    let in_host = || std::fs::read(host.join("10-dbnet.conflist")).is_ok_and(|b| ends_with_us(&b));
    let t = Instant::now();
    let mut exited = false;
    while t.elapsed() < 5 * SECOND && !exited && !in_host() {
        exited = i.has_exited();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        exited || in_host(),
        "the installer still waits in the removed directory:\n{}",
        i.log()
    );
}

fn main() {
    let mut t = Trials::new();
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
        "lifecycle::uninstall_restores_byte_for_byte_and_leaves_no_file",
        NOTHING,
        uninstall_restores_byte_for_byte_and_leaves_no_file,
    );
    t.add(
        "lifecycle::token_rotation",
        NOTHING,
        a_rotated_token_rewrites_the_kubeconfig,
    );
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
        "lifecycle::a_removed_binary_is_put_back",
        NOTHING,
        a_removed_binary_is_put_back,
    );
    t.add(
        "lifecycle::sigterm_within_a_second",
        NOTHING,
        sigterm_is_handled_within_a_second,
    );
    t.add(
        "writes::the_primarys_last_write_wins_300_renames",
        NOTHING,
        the_primarys_last_write_wins(Writes::Rename),
    );
    t.add(
        "writes::the_primarys_last_write_wins_300_in_place",
        NOTHING,
        the_primarys_last_write_wins(Writes::InPlace),
    );
    t.add(
        "writes::a_briefly_empty_file_keeps_the_entry",
        NOTHING,
        a_briefly_empty_file_keeps_the_entry,
    );
    t.add(
        "writes::an_earlier_primary_takes_the_entry",
        NOTHING,
        an_earlier_primary_takes_the_entry_from_the_old_one,
    );
    t.add(
        "writes::a_conversion_never_overwrites_a_file",
        NOTHING,
        a_conversion_never_overwrites_a_file,
    );
    t.add(
        "writes::a_symlinked_conflist_is_written_through",
        NOTHING,
        a_symlinked_conflist_is_written_through,
    );
    t.add(
        "writes::a_link_out_of_sight_is_not_ready",
        NOTHING,
        a_link_out_of_sight_is_not_ready,
    );
    t.add(
        "writes::a_full_directory_backs_off",
        root(&["mount", "umount"]),
        a_full_directory_backs_off,
    );
    t.add(
        "crash::after_sigkill_the_next_installer_restores_byte_for_byte",
        NOTHING,
        after_a_sigkill_the_next_installer_restores_byte_for_byte,
    );
    t.add(
        "crash::temporary_files_of_a_killed_installer_are_removed",
        NOTHING,
        a_killed_installers_temporary_files_are_removed,
    );
    for v in ["0.2.0", "2.0.0"] {
        t.add(
            format!(
                "versions::an_unserved_{}_chain_is_refused",
                v.replace('.', "_")
            ),
            NOTHING,
            an_unserved_version_is_refused(v),
        );
    }
    t.add(
        "versions::a_0_3_1_chain_gets_the_entry",
        NOTHING,
        a_0_3_1_chain_gets_the_entry,
    );
    let agree: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "a_non_utf8_byte_loads",
            b"{\"cniVersion\": \"0.4.0\", \"name\": \"n\xff\", \"plugins\": [{\"type\": \"bridge\"}]}".to_vec(),
            true,
        ),
        (
            "a_list_without_name_does_not_load",
            br#"{"cniVersion": "0.4.0", "plugins": [{"type": "bridge"}]}"#.to_vec(),
            false,
        ),
        (
            "a_plugin_without_type_does_not_load",
            br#"{"cniVersion": "0.4.0", "name": "n", "plugins": [{"bridge": "cni0"}]}"#.to_vec(),
            false,
        ),
        (
            "a_number_out_of_range_does_not_load",
            br#"{"cniVersion": "0.4.0", "name": "n", "plugins": [{"type": "bridge", "mtu": 1e400}]}"#.to_vec(),
            false,
        ),
        (
            "a_type_matched_case_insensitively_loads",
            br#"{"cniVersion": "0.4.0", "name": "n", "plugins": [{"TYPE": "bridge"}]}"#.to_vec(),
            true,
        ),
    ];
    for (name, bytes, loads) in agree {
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        t.add(
            format!("view::{name}"),
            NOTHING,
            the_runtime_and_the_installer_agree(bytes, loads),
        );
    }
    /// A trial's tag, how it makes the first file, and what the installer says of it.
    type Cannot = (&'static str, fn(&Path), &'static str);
    let cannot: &[Cannot] = &[
        (
            "deep_nesting",
            |p| std::fs::write(p, deep_list(200)).unwrap(),
            "levels deep",
        ),
        (
            "a_string_disable_check",
            |p| {
                std::fs::write(p, r#"{"cniVersion": "0.4.0", "name": "n", "disableCheck": "true", "plugins": [{"type": "bridge"}]}"#).unwrap()
            },
            "libcni",
        ),
        (
            "a_file_over_1_mib",
            |p| {
                let pad = "x".repeat(2 << 20);
                let big = format!(
                    r#"{{"cniVersion": "0.4.0", "name": "big", "plugins": [{{"type": "bridge", "pad": "{pad}"}}]}}"#
                );
                std::fs::write(p, big).unwrap()
            },
            "larger than",
        ),
        (
            "a_fifo",
            |p| nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap(),
            "not a regular file",
        ),
    ];
    for &(tag, make, says) in cannot {
        t.add(
            format!("view::not_ready_on_{tag}"),
            NOTHING,
            not_ready_where_the_installer_cannot_match(tag, make, says),
        );
    }
    t.add(
        "readiness::follows_the_chain_the_binary_and_the_kubeconfig",
        NOTHING,
        readiness_follows_the_chain_the_binary_and_the_kubeconfig,
    );
    t.add(
        "readiness::false_without_the_binary",
        NOTHING,
        readiness_is_false_without_the_binary,
    );
    t.add(
        "upgrade::the_newer_installer_takes_over",
        NOTHING,
        an_upgrade_hands_over_and_leaves_the_plugin_installed,
    );
    t.add(
        "upgrade::two_installers_with_different_settings_never_fight",
        NOTHING,
        two_installers_with_different_settings_never_fight,
    );
    t.add(
        "istio::an_istio_cni_entry_is_reported",
        NOTHING,
        an_istio_cni_entry_is_reported,
    );
    t.add("settings::log_level", NOTHING, the_log_level_is_a_setting);
    t.add(
        "entry::the_enablement_selectors_are_written_into_the_plugin_entry",
        NOTHING,
        the_enablement_selectors_are_written_into_the_plugin_entry,
    );
    t.add(
        "deploy::daemonset_runs_the_installer_as_designed",
        NOTHING,
        the_daemonset_runs_the_installer_as_designed,
    );
    type Bad = (
        &'static str,
        &'static [&'static str],
        &'static [(&'static str, &'static str)],
        &'static str,
    );
    let bad: &[Bad] = &[
        (
            "relative_bin_dir",
            &["--cni-bin-dir", "opt/cni/bin"],
            &[],
            "--cni-bin-dir",
        ),
        (
            "bad_log_level",
            &["--log-level", "loud"],
            &[],
            "--log-level",
        ),
        (
            "bad_namespace",
            &["--exclude-namespaces", "Kube_System"],
            &[],
            "--exclude-namespaces",
        ),
        (
            "enablement_selector_unquoted_yes",
            &[],
            &[(
                "AMBIENT_ENABLEMENT_SELECTOR",
                "- podSelector: {matchLabels: {mesh: yes}}",
            )],
            "AMBIENT_ENABLEMENT_SELECTOR",
        ),
        (
            "enablement_selector_bad_operator",
            &[
                "--ambient-enablement-selector",
                "- podSelector: {matchExpressions: [{key: a, operator: Maybe}]}",
            ],
            &[],
            "--ambient-enablement-selector",
        ),
        (
            "plugin_settings_not_json",
            &["--plugin-settings", "{nope"],
            &[],
            "--plugin-settings",
        ),
        (
            "unknown_plugin_key",
            &["--plugin-settings", r#"{"istio-inbound-port": "80"}"#],
            &[],
            "istio-inbound-port",
        ),
        (
            "bad_plugin_value",
            &["--plugin-settings", r#"{"istio-inbound-ports": "abc"}"#],
            &[],
            "istio-inbound-ports",
        ),
        (
            "plugin_settings_set_type",
            &[],
            &[("PLUGIN_SETTINGS", r#"{"type": "bridge"}"#)],
            "PLUGIN_SETTINGS",
        ),
        (
            "plugin_settings_set_name",
            &["--plugin-settings", r#"{"name": "x"}"#],
            &[],
            "--plugin-settings",
        ),
        (
            "plugin_settings_set_cni_version",
            &["--plugin-settings", r#"{"cniVersion": "0.4.0"}"#],
            &[],
            "cniVersion",
        ),
        (
            "plugin_settings_set_kubernetes",
            &["--plugin-settings", r#"{"kubernetes": {}}"#],
            &[],
            "kubernetes",
        ),
        (
            "conf_name_with_a_path",
            &["--cni-conf-name", "../x.conflist"],
            &[],
            "--cni-conf-name",
        ),
        (
            "conf_name_without_a_config_extension",
            &["--cni-conf-name", "10-net"],
            &[],
            "--cni-conf-name",
        ),
        (
            "kubeconfig_name_the_runtime_loads",
            &["--kubeconfig-name", "meshtables.conf"],
            &[],
            "--kubeconfig-name",
        ),
        (
            "kubernetes_service_host_not_a_host",
            &[],
            &[("KUBERNETES_SERVICE_HOST", "10.96.0.1/x")],
            "KUBERNETES_SERVICE_HOST",
        ),
        (
            "kubernetes_service_port_not_a_port",
            &[],
            &[("KUBERNETES_SERVICE_PORT", "https")],
            "KUBERNETES_SERVICE_PORT",
        ),
    ];
    for &(name, args, env, names) in bad {
        t.add(
            format!("settings::{name}"),
            NOTHING,
            bad_settings_exit_2_naming_the_flag(name, args, env, names),
        );
    }
    let strace = support::trials::Needs {
        root: false,
        programs: &["strace"],
        shared: false,
    };
    for (name, file, content) in [
        (
            "a_list_without_a_name",
            "10-noname.conflist",
            r#"{"cniVersion": "0.4.0", "plugins": [{"type": "bridge"}]}"#,
        ),
        (
            "a_plugin_without_a_type",
            "10-notype.conflist",
            r#"{"cniVersion": "0.4.0", "name": "dbnet", "plugins": [{"type": "bridge"}, {"capabilities": {"portMappings": true}}]}"#,
        ),
        ("a_list_in_a_conf_file", "10-dbnet.conf", LIST),
        (
            "a_single_plugin_in_a_conflist_file",
            "10-single.conflist",
            r#"{"cniVersion": "0.4.0", "name": "dbnet", "type": "bridge", "bridge": "cni0"}"#,
        ),
    ] {
        t.add(
            format!("libcni::{name}_is_never_touched"),
            NOTHING,
            invalid_files_are_never_touched(file, content),
        );
    }
    t.add(
        "libcni::a_network_that_is_not_utf8_is_still_the_runtimes",
        NOTHING,
        a_network_that_is_not_utf8_is_still_the_runtimes,
    );
    t.add(
        "writes::two_names_of_one_file_are_one_network",
        NOTHING,
        two_names_of_one_file_are_one_network,
    );
    t.add(
        "writes::a_link_through_a_directory_out_of_sight_is_not_ready",
        NOTHING,
        a_link_through_a_directory_out_of_sight_is_not_ready,
    );
    t.add(
        "writes::a_link_swapped_away_leaves_no_entry_in_the_old_target",
        NOTHING,
        a_link_swapped_away_leaves_no_entry_in_the_old_target,
    );
    t.add(
        "writes::a_late_write_into_a_converted_conf_is_kept",
        NOTHING,
        a_late_write_into_a_converted_conf_is_kept,
    );
    t.add(
        "lifecycle::a_binary_without_execute_permission_is_repaired",
        NOTHING,
        a_binary_without_execute_permission_is_repaired,
    );
    t.add(
        "lifecycle::uninstall_never_leaves_a_chain_naming_a_missing_binary",
        NOTHING,
        uninstall_never_leaves_a_chain_naming_a_missing_binary,
    );
    t.add(
        "lifecycle::an_installer_whose_directory_was_replaced_does_not_wait_forever",
        root(&["mount", "umount"]),
        an_installer_whose_directory_was_replaced_does_not_wait_forever,
    );
    t.add(
        "readiness::false_for_a_binary_without_execute_permission",
        NOTHING,
        readiness_is_false_for_a_binary_without_execute_permission,
    );
    t.add(
        "readiness::iptables_mode_does_not_depend_on_the_installers_path",
        support::trials::Needs {
            root: false,
            programs: &["iptables-restore"],
            shared: false,
        },
        readiness_in_iptables_mode_does_not_depend_on_the_installers_path,
    );
    t.add(
        "crash::uninstall_removes_temporary_files_a_killed_installer_left_meanwhile",
        NOTHING,
        uninstall_removes_temporary_files_a_killed_installer_left_meanwhile,
    );
    t.add(
        "crash::a_sigkill_before_a_displaced_write_is_put_back_loses_nothing",
        strace,
        a_sigkill_before_a_displaced_write_is_put_back_loses_nothing,
    );
    t.add(
        "upgrade::the_previous_version_sees_the_new_installer",
        NOTHING,
        the_previous_version_sees_the_new_installer,
    );
    t.add(
        "upgrade::uninstall_removes_the_previous_versions_lock_file",
        NOTHING,
        uninstall_removes_the_previous_versions_lock_file,
    );
    t.add(
        "upgrade::two_installers_stopped_together_still_uninstall",
        strace,
        two_installers_stopped_together_still_uninstall,
    );
    t.add(
        "bounds::a_file_of_half_the_memory_limit_is_not_read_whole",
        NOTHING,
        a_file_of_half_the_memory_limit_is_not_read_whole,
    );
    t.add(
        "ownership::a_kubeconfig_name_taken_by_another_file_is_not_overwritten",
        NOTHING,
        a_kubeconfig_name_taken_by_another_file_is_not_overwritten,
    );
    t.declare(
        83,
        &[
            ("istio_testdata", 6),
            ("lifecycle", 12),
            ("writes", 12),
            ("settings", 18),
            ("entry", 1),
            ("view", 9),
            ("upgrade", 5),
            ("libcni", 5),
            ("crash", 4),
            ("readiness", 4),
            ("versions", 3),
        ],
    );
    t.run()
}
