//! The kubelet's uid, found as upstream finds it (`kubeletuid_linux.go`): the first process
//! in /proc whose `comm` is `kubelet` or `kubelite` with "kubelet" in an argument, or `k3s`,
//! in that order of preference per process; its real uid. Every read is bounded, and a process
//! that exits while it is read is skipped.

use std::io::Read;
use std::path::Path;

use crate::values::Uid;

/// The most of a `/proc/PID` file read (a command line longer than this is cut, which can
/// only hide a "kubelet" argument past it).
const CAP: u64 = 64 * 1024;

/// Process names that host a kubelet, and whether an argument must say "kubelet" too.
const KUBELETS: [(&str, bool); 3] = [("kubelet", true), ("kubelite", true), ("k3s", false)];

fn read(path: &Path) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(CAP)
        .read_to_end(&mut out)
        .ok()?;
    Some(out)
}

/// The real uid of `/proc/PID/status` (`Uid:` real effective saved fs).
fn real_uid(status: &[u8]) -> Option<Uid> {
    let text = std::str::from_utf8(status).ok()?;
    let line = text.lines().find_map(|l| l.strip_prefix("Uid:"))?;
    line.split_whitespace().next()?.parse().ok().map(Uid)
}

/// Whether the process in `dir` hosts a kubelet.
fn is_kubelet(dir: &Path) -> bool {
    let Some(comm) = read(&dir.join("comm")) else {
        return false;
    };
    let comm = String::from_utf8_lossy(&comm);
    let comm = comm.trim_end_matches('\n');
    KUBELETS.iter().any(|(name, need_arg)| {
        comm == *name
            && (!need_arg
                || read(&dir.join("cmdline")).is_some_and(|c| {
                    c.split(|b| *b == 0).any(|a| {
                        String::from_utf8_lossy(a)
                            .to_lowercase()
                            .contains("kubelet")
                    })
                }))
    })
}

/// The kubelet's uid under `proc` (normally `/proc`).
pub fn find(proc: &Path) -> Option<Uid> {
    let mut pids: Vec<u32> = std::fs::read_dir(proc)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids.into_iter().find_map(|pid| {
        let dir = proc.join(pid.to_string());
        if !is_kubelet(&dir) {
            return None;
        }
        real_uid(&read(&dir.join("status"))?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn process(root: &Path, pid: u32, comm: &str, args: &[&str], uid: u32) {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("comm"), format!("{comm}\n")).unwrap();
        std::fs::write(d.join("cmdline"), args.join("\0")).unwrap();
        std::fs::write(
            d.join("status"),
            format!("Name:\t{comm}\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n"),
        )
        .unwrap();
    }

    #[test]
    fn finds_kubelet_kubelite_and_k3s_as_upstream() {
        let root = std::env::temp_dir().join(format!("mt-kubelet-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("self")).unwrap();
        assert_eq!(find(&root), None);
        // A process named kubelet without the word in its arguments is not taken.
        process(&root, 10, "kubelet", &["/bin/sleep", "1"], 5);
        assert_eq!(find(&root), None);
        process(&root, 20, "k3s", &["k3s", "agent"], 7);
        assert_eq!(find(&root), Some(Uid(7)));
        process(
            &root,
            15,
            "kubelite",
            &["kubelite", "--kubelet-args-file=/k"],
            9,
        );
        assert_eq!(find(&root), Some(Uid(9)));
        process(&root, 12, "kubelet", &["/usr/bin/kubelet", "--config=x"], 0);
        assert_eq!(find(&root), Some(Uid(0)));
        let _ = std::fs::remove_dir_all(&root);
    }
}
