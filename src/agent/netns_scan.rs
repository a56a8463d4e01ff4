//! Finding the network namespace of a pod that is already running (issue #23): the agent
//! restarted, or the pod was labelled ambient after it started, so no CNI ADD handed us its
//! namespace. As upstream's node agent does (istio-cni `cni/pkg/nodeagent/podcgroupns_linux.go`),
//! every process under the proc root is a candidate: its `cgroup` file names the pod (the
//! kubelet puts each container in a cgroup whose path carries `pod<UID>`), and its
//! `ns/net` is the namespace it runs in. A cgroup ties a process to a pod, not to a
//! namespace: a process of one pod can be inside another pod's namespace (`nsenter`, a
//! debugging tool), which is how upstream once enrolled the wrong namespace (Istio #61211).
//! So a namespace is accepted only if one of its interfaces carries one of the pod's IPs,
//! checked from inside it.
//!
//! The node's own namespace is never a candidate (a host-network pod's processes are in it,
//! and enrolling it would redirect the node): as upstream, the namespace of PID 1 under the
//! proc root; and also this process's own (`/proc/self/ns/net`), the rule `netns::refuse_own`
//! applies to a CNI ADD. The agent runs with the host's network, so the two are the same
//! namespace on a node; with a fake proc root (tests) or a misdeployed agent, each still
//! keeps the scan off a namespace that is not a pod's.
//!
//! Where we differ from upstream, on purpose: upstream scans once for all pods and, when two
//! namespaces of one pod both hold its IPs, keeps the oldest process's; we scan for one pod
//! and refuse to guess (`ScanError::Ambiguous`). A pod without IPs is an error here (upstream
//! silently defers it to the next scan): the caller decides when to retry.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::host::{Host, System, read_bounded};
use crate::netns;

/// The most entries read from the proc root: far above the processes of any node (a node with
/// 110 pods runs a few thousand), far below a scan that would stall the agent.
pub const MAX_PROC_ENTRIES: usize = 1 << 18;

/// The largest `cgroup` file read: a v1 host with a dozen hierarchies writes about 2 KiB.
pub const MAX_CGROUP_FILE: u64 = 64 << 10;

/// The most distinct namespaces the processes of one pod may be in before the scan gives up:
/// a pod has one; each candidate costs a thread entering it.
pub const MAX_NAMESPACES: usize = 16;

/// A namespace's identity: the device and inode of its nsfs file. Two paths (`/proc/PID/ns/net`,
/// a bind mount under `/var/run/netns`) name the same namespace when these are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NetnsId {
    pub dev: u64,
    pub ino: u64,
}

impl NetnsId {
    fn of(meta: &std::fs::Metadata) -> NetnsId {
        NetnsId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

impl fmt::Display for NetnsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "net:[{}] (dev {})", self.ino, self.dev)
    }
}

/// The pod's namespace: open (`O_RDONLY | O_CLOEXEC`), so it stays this namespace whatever
/// happens to the process it was found through.
#[derive(Debug)]
pub struct Found {
    pub netns: OwnedFd,
    pub id: NetnsId,
    /// The process it was found through (the first one in the pod's namespace).
    pub pid: u32,
}

/// A namespace a process of the pod was in, and why it was not the pod's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub pid: u32,
    /// `None` when the namespace could not be opened.
    pub id: Option<NetnsId>,
    /// What was wrong: it holds none of the IPs, or it could not be opened or entered.
    pub why: String,
}

fn list<T: fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_seen(seen: &[Seen]) -> String {
    seen.iter()
        .map(|s| match s.id {
            Some(id) => format!("pid {} in {id}: {}", s.pid, s.why),
            None => format!("pid {}: {}", s.pid, s.why),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// Why no namespace was found for the pod.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("pod {pod_uid}: no pod IPs to check a namespace against (the pod has none yet)")]
    NoPodIps { pod_uid: String },
    #[error("cannot read {path}: {source}")]
    Proc {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot read the node's network namespace at {path} (needed to skip host-network processes): {source}"
    )]
    HostNamespace {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: more than {cap} entries; not scanning further")]
    TooManyEntries { path: PathBuf, cap: usize },
    #[error("pod {pod_uid}: no process under {proc_root} is in the pod's cgroup")]
    NoProcess { pod_uid: String, proc_root: PathBuf },
    #[error(
        "pod {pod_uid}: its processes (pid {}) are in the node's network namespace (a host-network pod); not a pod namespace",
        list(pids)
    )]
    HostNetwork { pod_uid: String, pids: Vec<u32> },
    #[error(
        "pod {pod_uid}: no network namespace of its processes holds any of its IPs ({}): {}",
        list(ips),
        list_seen(seen)
    )]
    NoneHoldsIps {
        pod_uid: String,
        ips: Vec<IpAddr>,
        seen: Vec<Seen>,
    },
    #[error(
        "pod {pod_uid}: {} network namespaces of its processes hold its IPs ({}): {}; refusing to pick one",
        holding.len(),
        list(ips),
        holding.iter().map(|(pid, id)| format!("pid {pid} in {id}")).collect::<Vec<_>>().join(", ")
    )]
    Ambiguous {
        pod_uid: String,
        ips: Vec<IpAddr>,
        holding: Vec<(u32, NetnsId)>,
    },
    #[error(
        "pod {pod_uid}: its processes are in more than {cap} network namespaces; not entering them all"
    )]
    TooManyNamespaces { pod_uid: String, cap: usize },
}

// ---- The cgroup file ------------------------------------------------------------------------
//
// Upstream (taken from SPIRE) matches each cgroup path against two regular expressions and
// keeps a path that exactly one of them matches. We match the same language by hand (no regex
// engine in the binary); each function below says which expression it is. `P` is an ASCII
// punctuation character (POSIX `[[:punct:]]`), `N` any other character, `UID` is
// `pod` + 8 hex, P?, 4 hex, P?, 4 hex, P?, 4 hex, P?, 12 hex.

fn punct(b: u8) -> bool {
    b.is_ascii_punctuation()
}

/// The end of the `UID` digits starting at `i` (just after `pod`). Deterministic: a separator
/// is taken when present, since hex digits and punctuation are disjoint.
fn uid_end(b: &[u8], mut i: usize) -> Option<usize> {
    for (n, len) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if n > 0 && b.get(i).copied().is_some_and(punct) {
            i += 1;
        }
        let digits = b.get(i..i.checked_add(len)?)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        i += len;
    }
    Some(i)
}

/// Upstream's first expression: `P pod(UID) P (N+ P)* (N+)$`: the pod UID anywhere after a
/// punctuation character, then segments separated by single punctuation characters, the last
/// one (the container ID) ending the path. The leftmost `pod` for which the rest matches wins.
fn kubepods_match(path: &str) -> Option<(&str, &str)> {
    let b = path.as_bytes();
    let last_punct = b.iter().rposition(|c| punct(*c))?;
    // The last pair of adjacent punctuation characters: the segments after the UID must come
    // after it.
    let last_pair = b.windows(2).rposition(|w| punct(w[0]) && punct(w[1]));
    let container = path.get(last_punct + 1..)?;
    if container.is_empty() {
        return None;
    }
    for i in 0..b.len() {
        if !punct(b[i]) || !b.get(i + 1..).is_some_and(|r| r.starts_with(b"pod")) {
            continue;
        }
        let start = i + 4;
        let Some(end) = uid_end(b, start) else {
            continue;
        };
        // After the UID: P, then N...: no two punctuation characters in a row from here on.
        let tail_ok = b.get(end).copied().is_some_and(punct)
            && b.get(end + 1).is_some_and(|c| !punct(*c))
            && last_pair.is_none_or(|j| j < end);
        if tail_ok {
            return Some((path.get(start..end)?, container));
        }
    }
    None
}

/// Upstream's second expression, for CRI-O under KubeEdge, whose cgroups carry no pod UID:
/// `(UID P)? ([N]* /*)* crio P (N+)$`, refused when the optional group (`mustnotmatch`)
/// takes part in the leftmost match. Returns the container ID of an accepted match.
fn crio_match(path: &str) -> Option<&str> {
    let b = path.as_bytes();
    let last_punct = b.iter().rposition(|c| punct(*c))?;
    let container = path.get(last_punct + 1..)?;
    if container.is_empty() || !b.get(..last_punct)?.ends_with(b"crio") {
        return None;
    }
    let crio = last_punct - 4;
    // The leftmost start without the group: the run of non-punctuation and '/' before `crio`.
    let plain = b
        .get(..crio)?
        .iter()
        .rposition(|c| punct(*c) && *c != b'/')
        .map_or(0, |j| j + 1);
    // At any start up to that one the group is tried first (a greedy `?`): a UID whose rest up
    // to `crio` is non-punctuation and '/' makes the leftmost match one with the group.
    for p in 0..=plain {
        if !b.get(p..).is_some_and(|r| r.starts_with(b"pod")) {
            continue;
        }
        let Some(end) = uid_end(b, p + 3) else {
            continue;
        };
        if b.get(end).copied().is_some_and(punct) && end < crio && end + 1 >= plain {
            return None;
        }
    }
    Some(container)
}

/// A cgroup path's pod UID as written (empty for CRI-O's UID-less shape) and container ID,
/// when exactly one of upstream's expressions matches it.
fn path_match(path: &str) -> Option<(&str, &str)> {
    let path = path.strip_suffix(".scope").unwrap_or(path);
    match (kubepods_match(path), crio_match(path)) {
        (Some(m), None) => Some(m),
        (None, Some(container)) => Some(("", container)),
        _ => None,
    }
}

/// The UID as Kubernetes writes it: systemd's cgroup driver escapes its dashes as
/// underscores (`kubepods-besteffort-pod863b91d4_4b68_...slice`). As upstream, every
/// character Go's `unicode.IsPunct` calls punctuation becomes a dash; the ASCII symbols it
/// does not (`$+<=>^`|~`) are left, which no UID has, so `pod_uid_from_cgroup` refuses them.
/// No dashes are added: a static pod's UID is 32 hex digits without any.
fn canonical_uid(uid: &str) -> String {
    uid.chars()
        .map(|c| {
            if c.is_ascii_punctuation() && !"$+<=>^`|~".contains(c) {
                '-'
            } else {
                c
            }
        })
        .collect()
}

/// The pod UID a process's `/proc/PID/cgroup` names, in Kubernetes' form, or `None`: not a
/// pod's process, a CRI-O shape that carries no UID, or a file upstream refuses (a line
/// without two colons, or lines naming two containers or two pods).
///
/// Every line is `hierarchy:controllers:path` (cgroup v1 has one per hierarchy, v2 a single
/// `0::path`); the paths upstream recognises include the cgroupfs driver's
/// `/kubepods/burstable/pod<UID>/<container>`, systemd's
/// `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID_>.slice/cri-containerd-<container>.scope`
/// (also `docker-` and `crio-`), the same nested under a node container's cgroup (kind:
/// `/system.slice/docker-<id>.scope/kubelet.slice/...`) and relative to a cgroup namespace
/// (`/../../pod<UID>/<container>`).
pub fn pod_uid_from_cgroup(cgroup_file_text: &str) -> Option<String> {
    let mut found: Option<(String, &str)> = None;
    for line in cgroup_file_text.lines() {
        // Go's line scanner drops a lone trailing '\r' too.
        let line = line.strip_suffix('\r').unwrap_or(line);
        let mut fields = line.splitn(3, ':');
        let (Some(_), Some(_), Some(path)) = (fields.next(), fields.next(), fields.next()) else {
            return None;
        };
        let Some((uid, container)) = path_match(path) else {
            continue;
        };
        let uid = canonical_uid(uid);
        match &found {
            None => found = Some((uid, container)),
            Some((u, c)) if *u == uid && *c == container => {}
            Some(_) => return None,
        }
    }
    let (uid, _) = found?;
    let kubernetes_form =
        !uid.is_empty() && uid.bytes().all(|c| c.is_ascii_hexdigit() || c == b'-');
    kubernetes_form.then_some(uid)
}

// ---- The scan -------------------------------------------------------------------------------

/// A PID that exited while we looked at it: its files are gone (ENOENT) or its task is
/// (ESRCH). Skipped, not an error.
fn vanished(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

fn namespace_id(path: &Path) -> Result<NetnsId, ScanError> {
    std::fs::metadata(path)
        .map(|m| NetnsId::of(&m))
        .map_err(|source| ScanError::HostNamespace {
            path: path.to_path_buf(),
            source,
        })
}

/// A namespace one of the pod's processes is in.
struct Candidate {
    pid: u32,
    id: NetnsId,
    path: PathBuf,
    file: File,
}

/// Opens a PID's namespace; `Ok(None)` when the PID vanished.
fn open_namespace(path: &Path) -> Result<Option<(File, NetnsId)>, String> {
    let file = match netns::open(path) {
        Ok(f) => f,
        Err(netns::NetnsError::Open { source, .. }) if vanished(&source) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    // `netns::open` opens without blocking (a FIFO in a proc root must not hang the scan);
    // the fd handed on is plain O_RDONLY | O_CLOEXEC.
    nix::fcntl::fcntl(
        &file,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some((file, NetnsId::of(&meta))))
}

/// Whether an interface in the namespace carries one of `ips`, read from inside it.
/// Addresses compare in canonical form, so an IPv4-mapped IPv6 address is its IPv4 one.
fn holds_any(c: &Candidate, ips: &[IpAddr]) -> Result<bool, String> {
    holds_any_of(&c.file, &c.path, ips)
}

/// `holds_any` for a namespace open as `file` (named `path` in errors): the same rule for a
/// CNI ADD's namespace, so a runtime naming another pod's namespace is refused too.
pub fn holds_any_of(file: &File, path: &Path, ips: &[IpAddr]) -> Result<bool, String> {
    let addrs = netns::run_in_file(file, path, || System.interface_addrs())
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    Ok(addrs
        .iter()
        .any(|a| ips.iter().any(|ip| ip.to_canonical() == a.to_canonical())))
}

/// The node's namespaces, never a pod's: PID 1's under the proc root, and this process's own.
fn node_namespaces(proc_root: &Path) -> Result<BTreeSet<NetnsId>, ScanError> {
    Ok([
        namespace_id(&proc_root.join("1/ns/net"))?,
        namespace_id(Path::new("/proc/self/ns/net"))?,
    ]
    .into())
}

/// The walk `find` and `index` share: every process under the proc root whose cgroup names a
/// pod, as `(pid, its /proc directory, the pod UID)`, at most `MAX_PROC_ENTRIES` entries.
/// A process is a directory named by digits only (u32's parser would take "+1"); one that is
/// unreadable or gone is not one we can tie to a pod, and is skipped.
fn pod_processes(
    proc_root: &Path,
    mut each: impl FnMut(u32, PathBuf, String) -> Result<(), ScanError>,
) -> Result<(), ScanError> {
    let proc_err = |source| ScanError::Proc {
        path: proc_root.to_path_buf(),
        source,
    };
    for (n, entry) in std::fs::read_dir(proc_root).map_err(proc_err)?.enumerate() {
        if n >= MAX_PROC_ENTRIES {
            return Err(ScanError::TooManyEntries {
                path: proc_root.to_path_buf(),
                cap: MAX_PROC_ENTRIES,
            });
        }
        let entry = entry.map_err(proc_err)?;
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let dir = entry.path();
        let Ok(cgroup) = read_bounded(&dir.join("cgroup"), MAX_CGROUP_FILE) else {
            continue;
        };
        if let Some(uid) = pod_uid_from_cgroup(&String::from_utf8_lossy(&cgroup)) {
            each(pid, dir, uid)?;
        }
    }
    Ok(())
}

/// One pass over the proc root (`index`): for each pod UID a process's cgroup names, the
/// namespaces its processes are in (the node's left out), each with one process in it.
#[derive(Debug, Default)]
pub struct Index {
    pods: BTreeMap<String, Vec<(NetnsId, u32)>>,
}

/// Builds the `Index`: what the drift pass compares every pod with, one pass for all pods
/// (a pass per pod would read every process's cgroup once per pod). Nothing is opened or
/// entered; a process that vanishes or cannot be read is skipped, as in `find`.
pub fn index(proc_root: &Path) -> Result<Index, ScanError> {
    let node = node_namespaces(proc_root)?;
    let mut index = Index::default();
    pod_processes(proc_root, |pid, dir, uid| {
        let Ok(meta) = std::fs::metadata(dir.join("ns/net")) else {
            return Ok(());
        };
        let id = NetnsId::of(&meta);
        if node.contains(&id) {
            return Ok(());
        }
        let seen = index.pods.entry(uid).or_default();
        if seen.len() < MAX_NAMESPACES && !seen.iter().any(|(s, _)| *s == id) {
            seen.push((id, pid));
        }
        Ok(())
    })?;
    Ok(index)
}

impl Index {
    /// The namespaces the processes of pod `pod_uid` were in (none: no process seen).
    pub fn namespaces(&self, pod_uid: &str) -> Vec<NetnsId> {
        self.pods
            .get(pod_uid)
            .map(|v| v.iter().map(|(id, _)| *id).collect())
            .unwrap_or_default()
    }

    /// `find` over the index: the one namespace of the pod's processes that holds one of its
    /// IPs, opened through the process it was seen with (and still that namespace).
    pub fn find(
        &self,
        proc_root: &Path,
        pod_uid: &str,
        pod_ips: &[IpAddr],
    ) -> Result<Found, ScanError> {
        if pod_ips.is_empty() {
            return Err(ScanError::NoPodIps {
                pod_uid: pod_uid.into(),
            });
        }
        let Some(seen) = self.pods.get(pod_uid).filter(|v| !v.is_empty()) else {
            return Err(ScanError::NoProcess {
                pod_uid: pod_uid.into(),
                proc_root: proc_root.to_path_buf(),
            });
        };
        let mut holding = Vec::new();
        let mut notes = Vec::new();
        for &(id, pid) in seen {
            let path = proc_root.join(pid.to_string()).join("ns/net");
            match open_namespace(&path) {
                Ok(Some((file, now))) if now == id => {
                    let c = Candidate {
                        pid,
                        id,
                        path,
                        file,
                    };
                    match holds_any(&c, pod_ips) {
                        Ok(true) => holding.push(c),
                        Ok(false) => notes.push(Seen {
                            pid,
                            id: Some(id),
                            why: "holds none of the IPs".into(),
                        }),
                        Err(why) => notes.push(Seen {
                            pid,
                            id: Some(id),
                            why,
                        }),
                    }
                }
                Ok(_) => notes.push(Seen {
                    pid,
                    id: Some(id),
                    why: "the process left it since the scan".into(),
                }),
                Err(why) => notes.push(Seen { pid, id: None, why }),
            }
        }
        if holding.len() > 1 {
            return Err(ScanError::Ambiguous {
                pod_uid: pod_uid.into(),
                ips: pod_ips.to_vec(),
                holding: holding.iter().map(|c| (c.pid, c.id)).collect(),
            });
        }
        match holding.pop() {
            Some(c) => Ok(Found {
                netns: c.file.into(),
                id: c.id,
                pid: c.pid,
            }),
            None => Err(ScanError::NoneHoldsIps {
                pod_uid: pod_uid.into(),
                ips: pod_ips.to_vec(),
                seen: notes,
            }),
        }
    }
}

/// The network namespace of the running pod `pod_uid`: the one namespace, among those its
/// processes under `proc_root` (the node's `/proc`) are in, that holds one of `pod_ips`.
pub fn find(proc_root: &Path, pod_uid: &str, pod_ips: &[IpAddr]) -> Result<Found, ScanError> {
    if pod_ips.is_empty() {
        return Err(ScanError::NoPodIps {
            pod_uid: pod_uid.into(),
        });
    }
    let node = node_namespaces(proc_root)?;
    let mut pod_pids = 0usize;
    let mut host_pids = Vec::new();
    let mut unusable = Vec::new();
    let mut candidates: Vec<Candidate> = Vec::new();
    pod_processes(proc_root, |pid, dir, uid| {
        if uid != pod_uid {
            return Ok(());
        }
        let path = dir.join("ns/net");
        let (file, id) = match open_namespace(&path) {
            Ok(Some(opened)) => opened,
            // Gone between its cgroup and its namespace: as if it had never been listed.
            Ok(None) => return Ok(()),
            Err(why) => {
                pod_pids += 1;
                unusable.push(Seen { pid, id: None, why });
                return Ok(());
            }
        };
        pod_pids += 1;
        if node.contains(&id) {
            host_pids.push(pid);
            return Ok(());
        }
        if candidates.iter().any(|c| c.id == id) {
            return Ok(());
        }
        if candidates.len() == MAX_NAMESPACES {
            return Err(ScanError::TooManyNamespaces {
                pod_uid: pod_uid.into(),
                cap: MAX_NAMESPACES,
            });
        }
        candidates.push(Candidate {
            pid,
            id,
            path,
            file,
        });
        Ok(())
    })?;
    if pod_pids == 0 {
        return Err(ScanError::NoProcess {
            pod_uid: pod_uid.into(),
            proc_root: proc_root.to_path_buf(),
        });
    }
    if candidates.is_empty() && unusable.is_empty() {
        return Err(ScanError::HostNetwork {
            pod_uid: pod_uid.into(),
            pids: host_pids,
        });
    }
    let mut holding = Vec::new();
    let mut seen = unusable;
    for c in candidates {
        match holds_any(&c, pod_ips) {
            Ok(true) => holding.push(c),
            Ok(false) => seen.push(Seen {
                pid: c.pid,
                id: Some(c.id),
                why: "holds none of the IPs".into(),
            }),
            Err(why) => seen.push(Seen {
                pid: c.pid,
                id: Some(c.id),
                why,
            }),
        }
    }
    if holding.len() > 1 {
        return Err(ScanError::Ambiguous {
            pod_uid: pod_uid.into(),
            ips: pod_ips.to_vec(),
            holding: holding.iter().map(|c| (c.pid, c.id)).collect(),
        });
    }
    match holding.pop() {
        Some(c) => Ok(Found {
            netns: c.file.into(),
            id: c.id,
            pid: c.pid,
        }),
        None => Err(ScanError::NoneHoldsIps {
            pod_uid: pod_uid.into(),
            ips: pod_ips.to_vec(),
            seen,
        }),
    }
}

#[cfg(test)]
mod tests {
    //! The cgroup shapes upstream's tests and testdata cover (cgroupfs and systemd drivers,
    //! containerd, CRI-O, Docker, kind's nesting, cgroup namespaces), written anew.

    use super::pod_uid_from_cgroup as uid;

    const POD: &str = "5f0c2a61-93be-4d7e-8a10-3c4b2e9d7f01";
    const POD_SYSTEMD: &str = "5f0c2a61_93be_4d7e_8a10_3c4b2e9d7f01";
    const CTR: &str = "0d3b7c1e9a5f42b68c0e7d1a3f5b9c2e4a6d8f0b1c3e5a7d9f2b4c6e8a0d2f41";
    const CTR2: &str = "a1f3e5c7b9d0214365879abcdef0123456789abcdef0123456789abcdef01234";

    #[test]
    fn cgroup_v1_cgroupfs_driver_every_hierarchy() {
        let path = format!("/kubepods/burstable/pod{POD}/{CTR}");
        let text = format!(
            "12:pids:{path}\n11:memory:{path}\n10:cpu,cpuacct:{path}\n1:name=systemd:{path}\n0::/\n"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cgroup_v1_one_hierarchy_names_the_pod_the_others_root() {
        let text = format!("3:cpuset:/\n2:pids:/kubepods/besteffort/pod{POD}/{CTR}\n1:cpu:/\n");
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cgroup_v2_systemd_driver_containerd() {
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SYSTEMD}.slice/cri-containerd-{CTR}.scope\n"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cgroup_v2_guaranteed_pod_has_no_qos_slice() {
        let text = format!(
            "0::/kubepods.slice/kubepods-pod{POD_SYSTEMD}.slice/cri-containerd-{CTR}.scope\n"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn kind_node_nests_kubelet_slices_under_a_docker_scope() {
        let text = format!(
            "0::/system.slice/docker-{CTR2}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{POD_SYSTEMD}.slice/cri-containerd-{CTR}.scope"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn systemd_driver_docker() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/docker-{CTR}.scope"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn docker_in_docker_cgroupfs() {
        let text = format!("4:memory:/docker/{CTR2}/kubepods/besteffort/pod{POD}/{CTR}");
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn runc_cgroups_path_with_colons() {
        let text = format!("0::/kubepods-besteffort-pod{POD_SYSTEMD}.slice:cri-containerd:{CTR}");
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn relative_to_a_cgroup_namespace() {
        let text = format!("0::/../../pod{POD}/{CTR}");
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cri_o_systemd_driver() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/crio-{CTR}.scope"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cri_o_conmon() {
        let text = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD_SYSTEMD}.slice/crio-conmon-{CTR}.scope"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cri_o_cgroupfs_driver() {
        let text = format!("0::/kubepods/burstable/pod{POD}/crio-{CTR}");
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn cri_o_without_a_pod_uid_names_no_pod() {
        // KubeEdge's CRI-O shape: a container, but no pod to match it with.
        assert_eq!(uid(&format!("0::/../crio-{CTR}.scope")), None);
    }

    #[test]
    fn a_process_in_the_pod_slice_itself() {
        // Upstream's expression takes the slice's last segment for the container ID.
        let text = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_SYSTEMD}.slice"
        );
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn static_pod_uid_without_dashes_stays_as_written() {
        // The kubelet makes a static pod's UID from a hash: 32 hex digits, no dashes.
        let text = format!("0::/kubepods/besteffort/pod0123456789abcdef0123456789abcdef/{CTR}");
        assert_eq!(
            uid(&text).as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
    }

    #[test]
    fn undashed_uid_under_cri_o_matches_both_expressions_and_names_no_pod() {
        // Upstream refuses a path both of its expressions match; so do we.
        let text =
            format!("0::/kubepods/besteffort/pod0123456789abcdef0123456789abcdef/crio-{CTR}");
        assert_eq!(uid(&text), None);
    }

    #[test]
    fn crlf_line_endings() {
        let text = format!("1:pids:/kubepods/pod{POD}/{CTR}\r\n0::/\r\n");
        assert_eq!(uid(&text).as_deref(), Some(POD));
    }

    #[test]
    fn host_process_names_no_pod() {
        assert_eq!(uid("0::/system.slice/containerd.service\n"), None);
    }

    #[test]
    fn user_session_names_no_pod() {
        assert_eq!(uid("0::/user.slice/user-0.slice/session-3.scope\n"), None);
    }

    #[test]
    fn root_cgroup_names_no_pod() {
        assert_eq!(uid("0::/\n"), None);
    }

    #[test]
    fn empty_file_names_no_pod() {
        assert_eq!(uid(""), None);
    }

    #[test]
    fn a_line_without_two_colons_refuses_the_file() {
        let text = format!("1:pids:/kubepods/pod{POD}/{CTR}\n2-memory-/\n");
        assert_eq!(uid(&text), None);
    }

    #[test]
    fn an_empty_line_in_the_middle_refuses_the_file() {
        let text = format!("1:pids:/kubepods/pod{POD}/{CTR}\n\n0::/\n");
        assert_eq!(uid(&text), None);
    }

    #[test]
    fn two_container_ids_name_no_pod() {
        let text = format!(
            "2:pids:/kubepods/pod{POD}/{CTR}\n1:memory:/kubepods/besteffort/pod{POD}/{CTR2}\n"
        );
        assert_eq!(uid(&text), None);
    }

    #[test]
    fn two_pod_uids_name_no_pod() {
        let other = "77777777-93be-4d7e-8a10-3c4b2e9d7f01";
        let text =
            format!("2:pids:/kubepods/pod{POD}/{CTR}\n1:memory:/kubepods/pod{other}/{CTR}\n");
        assert_eq!(uid(&text), None);
    }

    #[test]
    fn the_container_id_must_end_the_path() {
        assert_eq!(uid(&format!("0::/kubepods/pod{POD}/{CTR}/")), None);
        assert_eq!(uid(&format!("0::/kubepods/pod{POD}//{CTR}")), None);
    }

    #[test]
    fn a_short_uid_is_no_uid() {
        assert_eq!(
            uid(&format!(
                "0::/kubepods/pod5f0c2a61-93be-4d7e-8a10-3c4b2e9d7f/{CTR}"
            )),
            None
        );
    }

    #[test]
    fn a_separator_no_uid_has_is_refused() {
        // `$` is ASCII punctuation to the expression but not to Go's unicode.IsPunct, so
        // upstream would keep it in the "UID", which no pod has.
        let text = format!("0::/kubepods/pod5f0c2a61$93be-4d7e-8a10-3c4b2e9d7f01/{CTR}");
        assert_eq!(uid(&text), None);
    }

    #[test]
    fn any_text_parses_without_panic() {
        let pieces = [
            "pod",
            POD,
            POD_SYSTEMD,
            "/",
            ":",
            "-",
            ".",
            "crio",
            "crio-",
            ".scope",
            "é",
            "\r",
            "\n",
            "0::",
            "_",
            "//",
            "",
        ];
        // Every sequence of three pieces, three times over: short, and dense in the corners.
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    let s = format!("0::{a}{b}{c}{a}{b}{c}");
                    let _ = uid(&s);
                    let half: String = s.chars().take(s.chars().count() / 2).collect();
                    let _ = uid(&half);
                }
            }
        }
    }
}
