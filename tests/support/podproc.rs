//! A pod's process for tests that scan the real /proc (`agent::netns_scan`): a child inside a
//! namespace, in the cgroupfs driver's `kubepods/besteffort/pod<UID>/<ID>` group, and a way
//! to run a trial in a PID namespace of its own where the machine's /proc/1/ns/net is hidden
//! even from root (the scan skips the node's namespace by it).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::netns::Netns;

pub fn writable_hierarchy() -> Option<PathBuf> {
    [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/pids",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| {
        p.join("cgroup.procs").exists() && {
            let probe = p.join(format!("mt-probe-{}", std::process::id()));
            let ok = std::fs::create_dir(&probe).is_ok();
            let _ = std::fs::remove_dir(&probe);
            ok
        }
    })
}

/// Set in the child that runs the real-/proc trial in a PID namespace of its own.
pub const IN_PID_NS: &str = "MESHTABLES_TEST_SCAN_IN_PID_NS";

/// Runs the trial `name` again in a PID namespace of its own (`unshare -p -f --mount-proc`)
/// and returns true once it passed there; false in that child, which then runs the trial.
/// Its /proc shows only its own processes: trials that scan /proc for pods of the same UID
/// cannot see each other's, and its PID 1 is readable and in the node's network namespace,
/// as on a node (a sandbox may hide the machine's /proc/1/ns/net even from root).
pub fn in_a_pid_namespace(name: &str) -> bool {
    if std::env::var_os(IN_PID_NS).is_some() {
        return false;
    }
    let me = std::env::current_exe().unwrap();
    let o = Command::new("unshare")
        .args(["-p", "-f", "--mount-proc"])
        .arg(&me)
        .args([name, "--exact", "--test-threads", "1"])
        .env(IN_PID_NS, "1")
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("1 passed; 0 failed; 0 ignored"),
        "{name} in a PID namespace of its own: {out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    true
}

/// A child in `ns`, moved into the cgroupfs driver's `kubepods/besteffort/pod<UID>/<ID>`
/// group; the groups are removed and the child killed on drop.
pub struct PodProcess {
    pub child: Child,
    groups: Vec<PathBuf>,
}

impl Drop for PodProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for g in self.groups.iter().rev() {
            // A group empties once its last process is reaped: wait for that.
            let t = Instant::now();
            while std::fs::remove_dir(g).is_err() && t.elapsed() < Duration::from_secs(5) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

pub fn pod_process(ns: &Netns, uid: &str) -> PodProcess {
    let base = writable_hierarchy().unwrap();
    let mut groups = Vec::new();
    let mut g = base.clone();
    for part in [
        // Unique across test processes, also those that are PID 1 of a PID namespace.
        format!(
            "mt-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ),
        "kubepods".into(),
        "besteffort".into(),
        format!("pod{uid}"),
        format!("{:064x}", std::process::id()),
    ] {
        g = g.join(part);
        std::fs::create_dir(&g).unwrap();
        groups.push(g.clone());
    }
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "sleep", "60"])
        .spawn()
        .unwrap();
    let p = PodProcess { child, groups };
    std::fs::write(g.join("cgroup.procs"), p.child.id().to_string()).unwrap();
    // `ip netns exec` execs sleep once it has entered the namespace: wait for that.
    let t = Instant::now();
    let target = id_of(&ns.path());
    while id_of(&format!("/proc/{}/ns/net", p.child.id())) != target {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "child never entered the namespace"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    p
}

fn id_of(path: &str) -> (u64, u64) {
    std::fs::metadata(path)
        .map(|m| (m.dev(), m.ino()))
        .unwrap_or((0, 0))
}
