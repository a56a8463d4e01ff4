//! The plugin binary the installer image ships (`target/installer-rootfs/meshtables`, made by
//! `.ci/image-rootfs --installer`; `cni-install` copies it onto every node as
//! `meshtables-cni`) depends on nothing of the node: it is static (no program interpreter, no
//! needed library), and in an empty chroot holding only itself, `/proc` and `/dev` (so no
//! loader, no libc, no /etc) it answers a runtime's VERSION and programs a pod's network
//! namespace with native nftables. Needs root and the installer's root filesystem; ignored
//! with the reason without them, failed under CI=true.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};
use support::netns::Netns;
use support::trials::{Needs, Trials, root};

/// The installer image's binary.
fn installer_binary() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/installer-rootfs/meshtables")
}

fn installer_prepared() -> Option<String> {
    (!installer_binary().exists()).then(|| {
        "needs .ci/image-rootfs --installer first (the installer image's root filesystem)".into()
    })
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `readelf` and `ldd` agree that the binary needs nothing to be loaded.
fn installer_binary_is_static() {
    let bin = installer_binary();
    let headers = Command::new("readelf")
        .args(["-lW"])
        .arg(&bin)
        .output()
        .unwrap();
    assert!(headers.status.success(), "readelf -l: {}", text(&headers));
    let headers = text(&headers);
    assert!(
        headers.contains("LOAD") && !headers.contains("INTERP"),
        "a program interpreter (PT_INTERP): the binary is dynamic\n{headers}"
    );
    let dynamic = text(
        &Command::new("readelf")
            .arg("-dW")
            .arg(&bin)
            .output()
            .unwrap(),
    );
    assert!(
        !dynamic.contains("(NEEDED)"),
        "needed shared libraries (DT_NEEDED):\n{dynamic}"
    );
    // glibc's ldd: "not a dynamic executable" for a static binary, "statically linked" for a
    // static PIE (what rustc's crt-static makes on x86_64).
    let ldd = text(&Command::new("ldd").arg(&bin).output().unwrap());
    assert!(
        ldd.contains("not a dynamic executable") || ldd.contains("statically linked"),
        "ldd lists libraries:\n{ldd}"
    );
    println!("{}: {}", bin.display(), ldd.trim());
}

/// An empty directory holding only the binary, as `meshtables-cni`.
struct Chroot {
    dir: PathBuf,
}

impl Chroot {
    fn new() -> Chroot {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "meshtables-chroot-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(installer_binary(), dir.join("meshtables-cni")).unwrap();
        Chroot { dir }
    }

    /// Runs the plugin inside the chroot as a runtime runs it (`CNI_*` variables, the
    /// configuration on stdin), in a private mount namespace where `/proc` and `/dev` are
    /// mounted and, when given, the namespace `netns` is bind-mounted at `/netns/pod`. The
    /// mounts go with the namespace when the command exits.
    fn invoke(&self, command: &str, netns: Option<&Netns>, conf: &str) -> Output {
        let r = support::sh_quote(&self.dir.display().to_string());
        let mut script = format!(
            "mount --make-rprivate / && mkdir -p {r}/proc {r}/dev && mount -t proc proc {r}/proc && mount --rbind /dev {r}/dev"
        );
        if let Some(ns) = netns {
            script.push_str(&format!(
                " && mkdir -p {r}/netns && touch {r}/netns/pod && mount --bind {} {r}/netns/pod",
                support::sh_quote(&ns.path())
            ));
        }
        script.push_str(&format!(" && exec chroot {r} /meshtables-cni"));
        let mut c = Command::new("unshare");
        c.args(["-m", "sh", "-c", &script])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", "0123456789abcdef")
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if netns.is_some() {
            c.env("CNI_NETNS", "/netns/pod");
        }
        let mut child = c.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(conf.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn answers_version_in_an_empty_chroot() {
    let chroot = Chroot::new();
    let o = chroot.invoke("VERSION", None, r#"{"cniVersion":"1.1.0"}"#);
    assert!(o.status.success(), "VERSION: {}", text(&o));
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("VERSION printed no JSON ({e}): {}", text(&o)));
    assert_eq!(v["cniVersion"], "1.1.0", "{v}");
    let supported = v["supportedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        supported.iter().any(|s| s == "1.1.0") && supported.iter().any(|s| s == "0.4.0"),
        "{v}"
    );
    println!("VERSION in an empty chroot: {v}");
}

fn programs_a_pod_with_native_nftables_in_an_empty_chroot() {
    let chroot = Chroot::new();
    let pod = Netns::new("static");
    let prev = json!({
        "cniVersion": "1.1.0",
        "interfaces": [{"name": "eth0", "mac": "02:42:ac:11:00:05", "sandbox": "/netns/pod"}],
        "ips": [
            {"address": "10.244.1.5/24", "gateway": "10.244.1.1", "interface": 0},
            {"address": "fd00:244::5/64", "interface": 0}
        ],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dns": {"nameservers": ["10.96.0.10"]}
    });
    let conf = json!({
        "cniVersion": "1.1.0",
        "name": "k8s-pod-network",
        "type": "meshtables-cni",
        "native-nftables": true,
        "istio-inbound-ports": "*",
        "istio-service-cidr": "*",
        "istio-local-exclude-ports": "15090,15021,15020",
        "prevResult": prev,
    });
    let o = chroot.invoke("ADD", Some(&pod), &conf.to_string());
    assert!(o.status.success(), "ADD: {}", text(&o));
    let result: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("ADD printed no JSON ({e}): {}", text(&o)));
    assert_eq!(result, prev, "ADD must pass prevResult on");
    // Read from outside, with the node's nft.
    let live = pod.run("nft", &["list", "ruleset"]);
    let live = String::from_utf8_lossy(&live.stdout);
    for want in [
        "table inet istio-proxy-nat",
        "redirect to :15001",
        "redirect to :15006",
        "ip6 saddr ::6",
    ] {
        assert!(
            live.contains(want),
            "no '{want}' in the pod's ruleset:\n{live}"
        );
    }
    println!(
        "ADD in an empty chroot programmed the pod: {} lines of nft list ruleset",
        live.lines().count()
    );
}

fn main() {
    const NEEDS: Needs = root(&["unshare", "chroot", "mount", "ip", "nft"]);
    const ELF_TOOLS: Needs = Needs {
        root: false,
        programs: &["readelf", "ldd"],
        shared: false,
    };
    let mut t = Trials::new();
    t.add_if(
        "installer_binary_is_static",
        ELF_TOOLS,
        installer_prepared,
        installer_binary_is_static,
    );
    t.add_if(
        "answers_version_in_an_empty_chroot",
        NEEDS,
        installer_prepared,
        answers_version_in_an_empty_chroot,
    );
    t.add_if(
        "programs_a_pod_with_native_nftables_in_an_empty_chroot",
        NEEDS,
        installer_prepared,
        programs_a_pod_with_native_nftables_in_an_empty_chroot,
    );
    t.declare(3, &[]);
    t.run()
}
