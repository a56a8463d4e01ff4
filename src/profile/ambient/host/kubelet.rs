//! The kubelet's uid, found as upstream finds it (`kubeletuid_linux.go`): the first process
//! in /proc whose `comm` is `kubelet` or `kubelite` with "kubelet" in an argument, or `k3s`,
//! in that order of preference per process; its real uid. Every read is bounded, and a process
//! that exits while it is read is skipped. Unlike upstream, which takes the first, every such
//! process must have the same uid: any user can start a process named `kubelet` with
//! "kubelet" in its arguments, and the uid found is the one whose TCP to ambient pods is
//! SNATed to the probe address, which the pods let in uncaptured.

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

/// Why no uid was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotFound {
    /// No kubelet, kubelite or k3s process.
    None,
    /// Such processes with different uids, as `(pid, uid)`, in pid order.
    Ambiguous(Vec<(u32, Uid)>),
}

/// The kubelet's uid under `proc` (normally `/proc`): the one uid of every kubelet process.
pub fn find(proc: &Path) -> Result<Uid, NotFound> {
    let mut pids: Vec<u32> = std::fs::read_dir(proc)
        .map_err(|_| NotFound::None)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let found: Vec<(u32, Uid)> = pids
        .into_iter()
        .filter_map(|pid| {
            let dir = proc.join(pid.to_string());
            if !is_kubelet(&dir) {
                return None;
            }
            Some((pid, real_uid(&read(&dir.join("status"))?)?))
        })
        .collect();
    match found.first() {
        None => Err(NotFound::None),
        Some((_, uid)) if found.iter().all(|(_, u)| u == uid) => Ok(*uid),
        Some(_) => Err(NotFound::Ambiguous(found)),
    }
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
        assert_eq!(find(&root), Err(NotFound::None));
        // A process named kubelet without the word in its arguments is not taken.
        process(&root, 10, "kubelet", &["/bin/sleep", "1"], 5);
        assert_eq!(find(&root), Err(NotFound::None));
        process(&root, 20, "k3s", &["k3s", "agent"], 7);
        assert_eq!(find(&root), Ok(Uid(7)));
        process(&root, 21, "k3s", &["k3s", "agent"], 7);
        assert_eq!(find(&root), Ok(Uid(7)), "several, one uid");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        process(
            &root,
            15,
            "kubelite",
            &["kubelite", "--kubelet-args-file=/k"],
            9,
        );
        assert_eq!(find(&root), Ok(Uid(9)));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn kubelets_of_different_uids_are_ambiguous() {
        // Anyone can start a `kubelet --kubelet` of their own; upstream takes the first.
        let root = std::env::temp_dir().join(format!("mt-kubelet2-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        process(&root, 12, "kubelet", &["/usr/bin/kubelet", "--config=x"], 0);
        process(&root, 40, "kubelet", &["./kubelet", "--kubelet"], 1000);
        assert_eq!(
            find(&root),
            Err(NotFound::Ambiguous(vec![(12, Uid(0)), (40, Uid(1000))]))
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
