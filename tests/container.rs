//! Container end-to-end: the init image (built exactly as the README says, from
//! `.ci/image-rootfs`) in a pod made of real containers sharing one network namespace, as
//! Kubernetes does: a pause container owns the namespace; the init container runs Istio's
//! injected args with `--cap-drop ALL --cap-add NET_ADMIN` as root; a proxy runs as uid 1337;
//! an app as uid 1000. Test images are FROM scratch with the static probe. Starts dockerd if
//! it is not running; removes its containers and images. Needs root, docker and the image's
//! root filesystem; ignored with the reason without them, failed under CI=true.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

mod support;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::trials::{Trials, root};

fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .expect("docker runs")
}

fn ok(args: &[&str]) -> String {
    let o = docker(args);
    assert!(
        o.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Removes what the test created, even when it fails; stops dockerd if the test started it.
struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    dockerd: Option<std::process::Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for c in &self.containers {
            let _ = docker(&["rm", "-f", c]);
        }
        for i in &self.images {
            let _ = docker(&["rmi", "-f", i]);
        }
        if let Some(d) = &mut self.dockerd {
            // SIGTERM: dockerd removes its pid file and socket, so the next trial can start one.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(20) {
                if let Ok(Some(_)) = d.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = d.kill();
            let _ = d.wait();
        }
    }
}

impl Cleanup {
    /// Nothing to clean yet, and a dockerd running (started, and stopped at the end, if
    /// none was).
    fn with_dockerd() -> Cleanup {
        let mut c = Cleanup {
            containers: vec![],
            images: vec![],
            dockerd: None,
        };
        ensure_dockerd(&mut c);
        c
    }
}

fn ensure_dockerd(cleanup: &mut Cleanup) -> bool {
    if docker(&["info"]).status.success() {
        return true;
    }
    let log =
        std::fs::File::create(std::env::temp_dir().join("meshtables-e2e-dockerd.log")).unwrap();
    let child = Command::new("dockerd")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("dockerd starts");
    cleanup.dockerd = Some(child);
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(60) {
        if docker(&["info"]).status.success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("dockerd did not come up within 60s");
}

/// `nft list ruleset` without counter values (they restart when a rerun replaces the tables).
fn strip_counters(s: &str) -> String {
    let mut out = Vec::new();
    let mut words = s.split_whitespace();
    while let Some(w) = words.next() {
        if w == "packets" || w == "bytes" {
            words.next();
            continue;
        }
        out.push(w);
    }
    out.join(" ")
}

/// The image's root filesystem and the static probe, which `.ci/image-rootfs --with-probe`
/// prepares (CI runs it before the tests).
fn images_prepared() -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let rootfs = root.join("target/image-rootfs/meshtables");
    let probe = root.join("target/probe-rootfs/meshtables-probe");
    (!rootfs.exists() || !probe.exists())
        .then(|| "needs .ci/image-rootfs --with-probe first (the image's root filesystem)".into())
}

fn init_image_in_a_pod_of_containers() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let id = std::process::id();
    let mut c = Cleanup::with_dockerd();
    let init = format!("meshtables-e2e-init:{id}");
    let probe_img = format!("meshtables-e2e-probe:{id}");
    c.images.extend([init.clone(), probe_img.clone()]);

    // The product image, from the README's command (the rootfs is already prepared).
    ok(&["build", "-q", "-t", &init, root.to_str().unwrap()]);
    let size: u64 = ok(&["image", "inspect", "-f", "{{.Size}}", &init])
        .parse()
        .unwrap();
    println!("image size: {:.2} MB ({size} bytes)", size as f64 / 1e6);
    assert!(size <= 5_000_000, "image is {size} bytes, over 5 MB");

    let ctx = std::env::temp_dir().join(format!("meshtables-e2e-probe-{id}"));
    std::fs::create_dir_all(&ctx).unwrap();
    let probe = root.join("target/probe-rootfs/meshtables-probe");
    std::fs::copy(&probe, ctx.join("meshtables-probe")).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "FROM scratch\nCOPY meshtables-probe /\nENTRYPOINT [\"/meshtables-probe\"]\n",
    )
    .unwrap();
    ok(&["build", "-q", "-t", &probe_img, ctx.to_str().unwrap()]);
    std::fs::remove_dir_all(&ctx).ok();

    let name = |n: &str| format!("meshtables-e2e-{n}-{id}");
    let (world, pause, proxy) = (name("world"), name("pause"), name("proxy"));
    c.containers
        .extend([world.clone(), pause.clone(), proxy.clone()]);
    ok(&[
        "run", "-d", "--name", &world, &probe_img, "serve", "world", "--tcp", "80",
    ]);
    ok(&["run", "-d", "--name", &pause, &probe_img, "pause"]);
    let ip = |c: &str| ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", c]);
    let (world_ip, pod_ip) = (ip(&world), ip(&pause));
    let pod_net = format!("container:{pause}");
    let istio_args = support::INJECTED;
    let run_init = |caps: &[&str]| {
        let mut a = vec![
            "run",
            "--rm",
            "--network",
            &pod_net,
            "--user",
            "0",
            "--cap-drop",
            "ALL",
        ];
        a.extend(caps);
        a.push(&init);
        a.extend(istio_args);
        docker(&a)
    };
    let o = run_init(&["--cap-add", "NET_ADMIN"]);
    assert!(
        o.status.success(),
        "init container: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    println!("init container (Istio's args, cap-drop ALL + NET_ADMIN, root): exit 0");

    ok(&[
        "run",
        "-d",
        "--name",
        &proxy,
        "--network",
        &pod_net,
        "--user",
        "1337:1337",
        &probe_img,
        "serve",
        "proxy",
        "--tcp",
        "15001,15006",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let client = |net: Option<&str>, user: &str, to: &str, port: &str| {
        let mut a = vec!["run", "--rm", "--user", user];
        if let Some(n) = net {
            a.extend(["--network", n]);
        }
        a.extend([probe_img.as_str(), "tcp", to, port]);
        String::from_utf8_lossy(&docker(&a).stdout)
            .trim()
            .to_string()
    };

    let out = client(Some(&pod_net), "1000:1000", &world_ip, "80");
    assert!(
        out.starts_with("name=proxy port=15001 ") && out.ends_with(&format!("orig={world_ip}:80")),
        "app outbound: {out}"
    );
    println!(
        "app (uid 1000) -> {world_ip}:80 landed on the proxy's 15001, original destination kept: {out}"
    );
    let inbound = client(None, "0:0", &pod_ip, "8080");
    assert!(
        inbound.starts_with("name=proxy port=15006 ")
            && inbound.ends_with(&format!("orig={pod_ip}:8080")),
        "inbound: {inbound}"
    );
    println!("outside -> pod {pod_ip}:8080 landed on 15006: {inbound}");
    let own = client(Some(&pod_net), "1337:1337", &world_ip, "80");
    assert!(
        own.starts_with("name=world port=80 "),
        "proxy's own connection: {own}"
    );
    println!("proxy (uid 1337) -> {world_ip}:80 reached the world directly: {own}");

    let pid = ok(&["inspect", "-f", "{{.State.Pid}}", &pause]);
    let ruleset = || {
        let o = Command::new("nsenter")
            .args(["-t", &pid, "-n", "nft", "list", "ruleset"])
            .output()
            .unwrap();
        strip_counters(&String::from_utf8_lossy(&o.stdout))
    };
    let before = ruleset();
    assert!(before.contains("istio-proxy-nat"), "{before}");
    let o = run_init(&["--cap-add", "NET_ADMIN"]);
    assert!(
        o.status.success(),
        "rerun: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(before, ruleset(), "a rerun must leave the same rules");
    println!(
        "init container rerun (as kubelet does after a restart): exit 0, same rules (counters restart)"
    );

    let o = run_init(&[]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "without NET_ADMIN the init container must fail"
    );
    assert!(
        err.contains("CAP_NET_ADMIN") && err.contains("securityContext"),
        "{err}"
    );
    println!(
        "init container without NET_ADMIN: exit {:?}: {}",
        o.status.code(),
        err.trim().lines().last().unwrap_or("")
    );
}

/// The trials share one dockerd (started by the first that needs it): one at a time.
static DOCKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn installer_prepared() -> Option<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    (!root.join("target/installer-rootfs/meshtables").exists()).then(|| {
        "needs .ci/image-rootfs --installer first (the installer image's root filesystem)".into()
    })
}

/// The installer image as a DaemonSet runs it: built FROM scratch as the README says, started
/// with a node's CNI directories mounted (temporary ones), it copies the plugin and puts it
/// in the chain; `docker stop` (SIGTERM) takes everything back out, byte for byte.
fn installer_image_installs_and_uninstalls() {
    let _one = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let id = std::process::id();
    let mut c = Cleanup::with_dockerd();
    let image = format!("meshtables-cni-e2e:{id}");
    let dockerfile = root.join("Dockerfile.installer");
    ok(&[
        "build",
        "-q",
        "-f",
        dockerfile.to_str().unwrap(),
        "-t",
        &image,
        root.to_str().unwrap(),
    ]);
    c.images.push(image.clone());
    let size = ok(&["images", &image, "--format", "{{.Size}}"]);
    println!("installer image: {size}");
    let node = std::env::temp_dir().join(format!("mt-installer-image-{id}"));
    let _ = std::fs::remove_dir_all(&node);
    std::fs::create_dir_all(node.join("bin")).unwrap();
    std::fs::create_dir_all(node.join("net")).unwrap();
    let conf = "{\"cniVersion\": \"1.0.0\", \"name\": \"k8s-pod-network\", \"plugins\": [{\"type\": \"bridge\"}]}\n";
    let file = node.join("net/10-net.conflist");
    std::fs::write(&file, conf).unwrap();
    let name = format!("mt-installer-{id}");
    c.containers.push(name.clone());
    ok(&[
        "run",
        "-d",
        "--name",
        &name,
        "--network",
        "none",
        "-v",
        &format!("{}:/host/opt/cni/bin", node.join("bin").display()),
        "-v",
        &format!("{}:/host/etc/cni/net.d", node.join("net").display()),
        "-e",
        "MESHTABLES_CNI_KUBERNETES=false",
        "-e",
        "NATIVE_NFTABLES=true",
        &image,
    ]);
    let start = Instant::now();
    let installed = || {
        std::fs::read_to_string(&file).is_ok_and(|c| c.contains("meshtables-cni"))
            && node.join("bin/meshtables-cni").exists()
    };
    while !installed() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = || String::from_utf8_lossy(&docker(&["logs", &name]).stderr).into_owned();
    assert!(installed(), "not installed:\n{}", logs());
    ok(&["stop", "-t", "10", &name]);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), conf, "{}", logs());
    assert!(
        !node.join("bin/meshtables-cni").exists(),
        "the binary stayed"
    );
    let _ = std::fs::remove_dir_all(&node);
}

fn main() {
    let mut t = Trials::new();
    t.add_if(
        "init_image_in_a_pod_of_containers",
        root(&["docker", "dockerd"]),
        images_prepared,
        || {
            let _one = DOCKER.lock().unwrap_or_else(|e| e.into_inner());
            init_image_in_a_pod_of_containers()
        },
    );
    t.add_if(
        "installer_image_installs_and_uninstalls",
        root(&["docker", "dockerd"]),
        installer_prepared,
        installer_image_installs_and_uninstalls,
    );
    t.declare(2, &[]);
    t.run()
}
