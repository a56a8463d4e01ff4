//! Enrolment: what the agent does for an ambient pod, in istio-cni's order
//! (`meshDataplane.AddPodToMesh`): the in-pod rules, ztunnel's ack over ZDS, the pod's
//! addresses in the node's probe set, and last the `ambient.istio.io/redirection: enabled`
//! annotation through pods/status (istiod sends HBONE only to pods marked so). When ztunnel
//! does not ack, the rules are in but the pod is not proxied: it is annotated `pending` (a
//! removal must still undo the rules) and the ADD fails, so the runtime retries and no pod
//! runs redirected to nothing unnoticed. Removal runs the other way (`RemovePodFromMesh`):
//! probe set first, ztunnel's Del, then the annotation.
//!
//! The rules are written by the same engine as `meshtables ambient apply` (the ambient
//! profile, its flag table and env names, the pod's annotations as its pod flags), into the
//! namespace behind the one fd the agent opened: the fd ztunnel gets is the namespace that
//! was programmed, whatever happens to the runtime's path meanwhile.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::eligible::{self, ENABLED, PENDING, REDIRECTION, Scope, Verdict};
use super::events::{Handler, PodEvent, Request};
use super::netns_scan;
use super::server::{ZdsError, ZdsServer};
use super::zds::WorkloadInfo;
use crate::cni::kube::{Client, KubeError};
use crate::cni::pod::Pod;
use crate::flags::Flags;
use crate::logging;
use crate::options::Subcommand;
use crate::profile::ambient::Ambient;
use crate::profile::ambient::flags as ambient;
use crate::profile::ambient::host::flags as host;
use crate::profile::ambient::host::members::{self, MemberVerb};
use crate::run;
use crate::values::{NamespaceName, PodName};

/// A pod the agent enrolled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enrolled {
    pub uid: String,
    pub ips: Vec<IpAddr>,
    /// The namespace's identity (device, inode) when it was enrolled.
    pub netns: (u64, u64),
}

/// What the agent holds for an enrolled pod: its namespace open (the drift check runs in
/// exactly that one), and the flags its rules were written with.
struct Member {
    enrolled: Enrolled,
    netns: Arc<File>,
    flags: Flags,
    /// When it was enrolled, on the agent's enrolment clock (`Agent::clock`).
    seq: u64,
    /// The sandbox (`CNI_CONTAINERID`) its ADD named; empty when the scan found it.
    sandbox: String,
    /// The last sandbox an ADD named that this enrolment replaced (empty: none): a DEL of it
    /// is another sandbox's even when the scan found the enrolled one (the namespace drift),
    /// whose id is not known.
    superseded: String,
}

/// A pod namespace's lock, taken (`hold`) before the node's one-at-a-time lock and held
/// through the runs in that namespace (`run::Waits::held`). Any of the pod's own processes
/// can hold that lock (an abstract socket there): waiting for it inside `one_at_a_time`
/// held up every enrolment of the node by a second per try, and a pod changing often (its
/// owner patching it) made that most of the time.
pub(crate) struct Held {
    /// The namespace's identity (device, inode): a run elsewhere waits as usual.
    netns: (u64, u64),
    _lock: crate::lock::NetnsLock,
}

/// Takes the lock of the namespace `netns` (waiting as `run::Waits::agent` says).
pub(crate) fn hold(netns: &File) -> Result<Held, String> {
    let id = netns
        .metadata()
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| format!("its network namespace: {e}"))?;
    let wait = run::Waits::agent().lock.unwrap_or(crate::lock::WAIT);
    crate::lock::acquire_in(netns, &fd_path(netns), wait)
        .map(|lock| Held {
            netns: id,
            _lock: lock,
        })
        .map_err(|e| e.to_string())
}

/// How a run in the namespace at `netns` waits: not at all when `held` is its lock.
fn waits_for(held: Option<&Held>, netns: &Path) -> run::Waits {
    let here = std::fs::metadata(netns).ok().map(|m| (m.dev(), m.ino()));
    match held {
        Some(h) if here == Some(h.netns) => run::Waits::held(),
        _ => run::Waits::agent(),
    }
}

/// Counters for the metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub enrolments: u64,
    pub removals: u64,
    pub api_errors: u64,
}

/// Why a pod leaves the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Removal {
    /// Deleted (DEL, or the API says so): its rules go with its namespace.
    Deleted,
    /// It stays but is no longer ambient (unlabelled, or its namespace was): rules out,
    /// annotation removed.
    Unlabelled,
}

/// What a drift pass found missing and put back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Repairs {
    /// The node's probe rules or sets (a firewalld reload, `nft flush ruleset`).
    pub host: u64,
    /// A pod's in-pod rules or routes.
    pub pod_rules: u64,
    /// A pod whose sandbox was re-created under it, enrolled again in its new namespace.
    pub namespaces: u64,
    /// A sidecar pod's interception rules, missing (it started without the plugin).
    pub sidecars: u64,
    /// Checks that could not run or repairs that failed (logged).
    pub failed: u64,
}

/// The agent: its ZDS server, its API client, what it enrolled.
pub struct Agent {
    pub zds: ZdsServer,
    kube: Client,
    scope: Scope,
    /// The environment the ambient engine resolves its settings from (the DaemonSet's:
    /// AMBIENT_DNS_CAPTURE, AMBIENT_IPV6, NATIVE_NFTABLES...).
    env: HashMap<String, String>,
    /// Enrolled pods by `namespace/name`.
    pods: Mutex<BTreeMap<String, Member>>,
    /// Pods ztunnel is told to keep (`keep`), by `namespace/name`: their uids.
    kept: Mutex<BTreeMap<String, String>>,
    /// Repairs since start, by cause.
    repaired: Mutex<Repairs>,
    /// Enrolments and removals one at a time (the plugin's ADDs, the watch's changes), so a
    /// pod is never enrolled twice at once or removed while it is being enrolled.
    pub(crate) one_at_a_time: Mutex<()>,
    /// Set once the start-up reconcile is done: until then a ping (readiness) says so.
    ready: std::sync::atomic::AtomicBool,
    /// The drift pass could not index /proc (said once until it can again).
    namespaces_unchecked: std::sync::atomic::AtomicBool,
    counts: Mutex<Counts>,
    /// Counts enrolments: a list of the API taken at one reading knows nothing of a pod
    /// enrolled after it, so it must not remove or change that pod.
    clock: std::sync::atomic::AtomicU64,
}

/// How long the agent keeps asking for a pod the plugin has just seen: its cache of the API
/// may lag (istio-cni retries 10 × 10 ms); ours asks the server, so a blip is what is left.
const POD_RETRIES: [Duration; 2] = [Duration::from_millis(100), Duration::from_millis(300)];

/// How long an ADD may wait for the enrolments ahead of it: the plugin's 10 s
/// (`cni::ambient::ADD_TIMEOUT`) less ztunnel's ack deadline (5 s) and the API calls around
/// it.
const QUEUE_BUDGET: Duration = Duration::from_secs(3);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Agent {
    pub fn new(zds: ZdsServer, kube: Client, scope: Scope, env: HashMap<String, String>) -> Agent {
        Agent {
            zds,
            kube,
            scope,
            env,
            pods: Mutex::new(BTreeMap::new()),
            kept: Mutex::new(BTreeMap::new()),
            repaired: Mutex::new(Repairs::default()),
            one_at_a_time: Mutex::new(()),
            ready: std::sync::atomic::AtomicBool::new(false),
            namespaces_unchecked: std::sync::atomic::AtomicBool::new(false),
            counts: Mutex::new(Counts::default()),
            clock: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The enrolment clock now: read before a list of the API is asked for, it tells which
    /// pods the list cannot know about (`enrolled_after`).
    pub(crate) fn clock(&self) -> u64 {
        self.clock.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Whether pod `id` was enrolled at or after `clock` (by an ADD while a list was in
    /// flight): what that list says of it is older than the enrolment.
    pub(crate) fn enrolled_after(&self, id: &str, clock: u64) -> bool {
        lock(&self.pods).get(id).is_some_and(|m| m.seq >= clock)
    }

    /// Which namespaces are left alone, and Istio's.
    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// The start-up reconcile is done: readiness may say yes.
    pub fn set_ready(&self) {
        self.ready.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The pods enrolled now, by `namespace/name`.
    pub fn enrolled(&self) -> BTreeMap<String, Enrolled> {
        lock(&self.pods)
            .iter()
            .map(|(k, m)| (k.clone(), m.enrolled.clone()))
            .collect()
    }

    /// Enrolments, removals and API errors since start.
    pub fn counts(&self) -> Counts {
        *lock(&self.counts)
    }

    /// A request to the API server failed (the watches count theirs here too).
    pub fn api_error(&self) {
        lock(&self.counts).api_errors += 1;
    }

    /// A sidecar pod was repaired (`repair`).
    pub fn sidecar_repaired(&self) {
        lock(&self.repaired).sidecars += 1;
    }

    /// Repairs since start.
    pub fn repaired(&self) -> Repairs {
        *lock(&self.repaired)
    }

    /// One drift pass: the node's rules (put back, with every enrolled pod's probe-set
    /// members, when they are gone) and each enrolled pod's rules, checked in the namespace
    /// the agent holds open (one netlink dump each) and put back when they differ.
    pub fn check_drift(
        &self,
        proc_root: &Path,
        index: Result<&netns_scan::Index, &netns_scan::ScanError>,
    ) -> Repairs {
        let mut found = Repairs::default();
        if logging::quieter(logging::Level::Warn, || {
            host_rules(&self.env, Subcommand::Check)
        })
        .is_err()
        {
            match host_rules(&self.env, Subcommand::Apply) {
                Ok(()) => {
                    found.host += 1;
                    logging::warn("drift: the node's probe rules were gone or changed; put back");
                    let members: Vec<Enrolled> = self.enrolled().into_values().collect();
                    for e in members {
                        if let Err(err) = self.probe_set(MemberVerb::Add, &e.uid, &e.ips) {
                            found.failed += 1;
                            logging::warn(&format!(
                                "drift: pod {}'s probe-set member: {err}",
                                e.uid
                            ));
                        }
                    }
                }
                Err(e) => {
                    found.failed += 1;
                    logging::warn(&format!("drift: the node's probe rules: {e}"));
                }
            }
        }
        self.check_namespaces(proc_root, index, &mut found);
        let members: Vec<(String, Arc<File>, Flags, u64)> = lock(&self.pods)
            .iter()
            .map(|(id, m)| (id.clone(), m.netns.clone(), m.flags.clone(), m.seq))
            .collect();
        for (id, netns, flags, seq) in members {
            let by_fd = fd_path(&netns);
            // A process in the pod's namespace (any of the pod's own: the lock is an abstract
            // socket there) may hold its lock: it is taken here, outside `one_at_a_time`, and
            // held through the check and the repair, so neither waits inside it.
            let held = match hold(&netns) {
                Ok(h) => h,
                Err(e) => {
                    found.failed += 1;
                    logging::warn(&format!(
                        "drift: pod {id} not checked: {e}; its rules are left as they are"
                    ));
                    continue;
                }
            };
            match self.check_rules(&flags, &by_fd, Some(&held)) {
                Ok(()) => continue,
                Err(e) if lock_busy(&e) => {
                    found.failed += 1;
                    logging::warn(&format!(
                        "drift: pod {id} not checked: {e}; its rules are left as they are"
                    ));
                    continue;
                }
                Err(_) => {}
            }
            // The repair is an enrolment's write: one at a time with them, and only while
            // the pod is still the one enrolled when the pass began. A pod unlabelled during
            // the pass has had its rules cleaned; putting them back would redirect it to a
            // ztunnel that let it go, with no annotation saying so.
            let _one = lock(&self.one_at_a_time);
            if lock(&self.pods).get(&id).map(|m| m.seq) != Some(seq) {
                logging::debug(&format!(
                    "drift: pod {id} left (or was enrolled again) during the pass; not repaired"
                ));
                continue;
            }
            match self.run_rules(&flags, &by_fd, Subcommand::Apply, Some(&held)) {
                Ok(()) => {
                    found.pod_rules += 1;
                    logging::warn(&format!(
                        "drift: pod {id}'s rules were gone or changed; put back"
                    ));
                }
                Err(e) => {
                    found.failed += 1;
                    logging::warn(&format!("drift: pod {id}'s rules: {e}"));
                }
            }
        }
        let mut total = lock(&self.repaired);
        total.host += found.host;
        total.pod_rules += found.pod_rules;
        total.namespaces += found.namespaces;
        total.failed += found.failed;
        found
    }

    /// The drift pass's namespace identity check: an enrolled pod whose processes are all in
    /// another namespace than the one it was enrolled in (its sandbox was re-created while
    /// no ADD reached the agent) is enrolled again in the new one, found and checked as the
    /// start-up scan does (its cgroup, one of its addresses): rules there, ztunnel's Add
    /// with the new namespace. One pass over /proc for all pods; a pod whose processes are
    /// not seen at all is left alone (nothing says where it went).
    fn check_namespaces(
        &self,
        proc_root: &Path,
        index: Result<&netns_scan::Index, &netns_scan::ScanError>,
        found: &mut Repairs,
    ) {
        let index = match index {
            Ok(index) => {
                if self.namespaces_unchecked.swap(false, Ordering::SeqCst) {
                    logging::info("drift: pods' namespaces are checked again");
                }
                index
            }
            Err(e) => {
                found.failed += 1;
                // Once per change, not once per pass: the cause (a /proc without the node's
                // PID 1, say) lasts.
                if !self.namespaces_unchecked.swap(true, Ordering::SeqCst) {
                    logging::warn(&format!(
                        "drift: pods' namespaces not checked: {e} (said once until it changes)"
                    ));
                }
                return;
            }
        };
        let moved: Vec<(String, Enrolled, u64)> = lock(&self.pods)
            .iter()
            .filter(|(_, m)| {
                let now = index.namespaces(&m.enrolled.uid);
                !now.is_empty() && !now.iter().any(|n| (n.dev, n.ino) == m.enrolled.netns)
            })
            .map(|(id, m)| (id.clone(), m.enrolled.clone(), m.seq))
            .collect();
        for (id, e, seq) in moved {
            match self.re_enrol(proc_root, index, &id, &e, seq) {
                Ok(true) => {
                    found.namespaces += 1;
                    logging::warn(&format!(
                        "drift: pod {id}'s processes are in another network namespace than the one it was enrolled in (its sandbox was re-created); enrolled again there"
                    ));
                }
                Ok(false) => {}
                Err(err) => {
                    found.failed += 1;
                    logging::warn(&format!("drift: pod {id}'s new namespace: {err}"));
                }
            }
        }
    }

    /// `check_namespaces` for one pod: whether it was enrolled again.
    fn re_enrol(
        &self,
        proc_root: &Path,
        index: &netns_scan::Index,
        id: &str,
        e: &Enrolled,
        seq: u64,
    ) -> Result<bool, String> {
        let (ns, name) = id
            .split_once('/')
            .and_then(|(ns, n)| Some((NamespaceName::parse(ns).ok()?, PodName::parse(n).ok()?)))
            .ok_or_else(|| format!("{id:?} is not namespace/name"))?;
        let pod = self.pod(&ns, &name)?;
        if pod.metadata.uid != e.uid {
            return Ok(false);
        }
        // The pod's addresses now: a re-created sandbox gets its address from the primary
        // plugin anew (host-local hands out the next one), and no namespace holds the
        // enrolled ones any more. Until the API shows any, the enrolled ones are all there is.
        let ips = match pod_ips(&pod) {
            now if now.is_empty() => e.ips.clone(),
            now => now,
        };
        let now = index
            .find(proc_root, &e.uid, &ips)
            .map_err(|err| err.to_string())?;
        if (now.id.dev, now.id.ino) == e.netns {
            return Ok(false);
        }
        // The new namespace's lock first, then the node's queue (`hold`).
        let netns = File::from(now.netns);
        let held = hold(&netns)?;
        let _one = lock(&self.one_at_a_time);
        // Left, or enrolled again (an ADD of the new sandbox) while we looked: theirs stands.
        if lock(&self.pods).get(id).map(|m| m.seq) != Some(seq) {
            return Ok(false);
        }
        self.enrol_in(&pod, netns, ips, true, "", Some(&held))?;
        Ok(true)
    }

    fn pod(&self, ns: &NamespaceName, name: &PodName) -> Result<Pod, String> {
        let mut waits = POD_RETRIES.iter();
        loop {
            match self.kube.pod(ns, name) {
                Ok(p) => return Ok(p),
                Err(KubeError::Unavailable { .. }) if waits.len() > 0 => {
                    if let Some(w) = waits.next() {
                        std::thread::sleep(*w);
                    }
                }
                Err(e) => {
                    self.api_error();
                    return Err(e.to_string());
                }
            }
        }
    }

    /// Whether `pod` is ambient, reading its namespace only when its labels do not decide.
    fn verdict(&self, pod: &Pod) -> Result<Verdict, String> {
        let labels = if eligible::decided_without_namespace(pod, &self.scope) {
            BTreeMap::new()
        } else {
            let ns = NamespaceName::parse(&pod.metadata.namespace)
                .map_err(|p| format!("pod namespace {:?} {p}", pod.metadata.namespace))?;
            self.kube
                .namespace(&ns)
                .map_err(|e| {
                    self.api_error();
                    e.to_string()
                })?
                .metadata
                .labels
        };
        Ok(eligible::verdict(pod, &labels, &self.scope))
    }

    /// ADD of an ambient pod, from the plugin.
    pub fn add(&self, ev: &PodEvent) -> Result<(), String> {
        let asked = std::time::Instant::now();
        let (ns, name) = names(ev)?;
        let id = format!("{ns}/{name}");
        let pod = self.pod(&ns, &name)?;
        if let Verdict::Not(why) = self.verdict(&pod)? {
            return Err(format!("pod {id} is not ambient: {why}"));
        }
        // One open: the rules go into this fd's namespace and ztunnel gets the same fd. It is
        // `netns::open`'s (non-blocking: a FIFO named here must not hold this thread, one of
        // MAX_CLIENTS, forever; and checked to be a namespace), and the node's own is refused
        // under the runtime's name for it.
        let shown = Path::new(&ev.netns);
        let netns = crate::netns::open(shown)
            .and_then(|f| crate::netns::refuse_own_file(&f, shown).map(|()| f))
            .map_err(|e| format!("pod {id}: {e}"))?;
        let ips = if ev.ips.is_empty() {
            pod_ips(&pod)
        } else {
            ev.ips.clone()
        };
        // The scan's rule for the ADD's namespace too: it must hold one of the pod's
        // addresses. A runtime naming another pod's namespace would otherwise have ztunnel
        // run this pod's proxy, with this pod's identity, inside the other pod.
        match super::netns_scan::holds_any_of(&netns, shown, &ips) {
            Ok(true) => {}
            Ok(false) if ips.is_empty() => {
                return Err(format!(
                    "pod {id}: no addresses (neither the primary plugin's result nor the pod's status has any) to check its network namespace {} against",
                    ev.netns
                ));
            }
            Ok(false) => {
                return Err(format!(
                    "pod {id}: its network namespace {} holds none of the pod's addresses {} (another pod's namespace?); refused",
                    ev.netns,
                    list(&ips)
                ));
            }
            Err(e) => {
                return Err(format!(
                    "pod {id}: reading the addresses in {}: {e}",
                    ev.netns
                ));
            }
        }
        // The namespace's lock before the node's queue (`Held`): nothing is written without it.
        let held = hold(&netns).map_err(|e| format!("pod {id}: {e}; nothing was done"))?;
        let _one = lock(&self.one_at_a_time);
        // Queued behind other enrolments (a ztunnel slow to ack) for longer than the plugin
        // leaves room for: enrolling now would finish after the plugin gave up, and mark
        // `enabled` a pod whose ADD the runtime saw fail. Nothing is written; it retries.
        let waited = asked.elapsed();
        if waited > QUEUE_BUDGET {
            return Err(format!(
                "pod {id}: waited {waited:?} behind other enrolments (ztunnel slow to ack?); nothing was done, since the plugin gives up after {:?}; try again",
                crate::cni::ambient::ADD_TIMEOUT
            ));
        }
        self.enrol_in(&pod, netns, ips, true, &ev.container_id, Some(&held))
    }

    /// Enrols `pod`, whose namespace is `netns`: rules, ztunnel, probe set, `enabled`. The
    /// pod is remembered even when ztunnel does not ack (its rules are in; it is marked
    /// `pending`), so a DEL or a removal undoes it, and ztunnel's next snapshot carries it.
    /// With `need_ack` false (the start-up reconcile, before ztunnel may connect) no ztunnel
    /// connected is no failure: the pod goes in the first snapshot. `held`: the namespace's
    /// lock, taken before `one_at_a_time` (`hold`).
    pub(crate) fn enrol_in(
        &self,
        pod: &Pod,
        netns: File,
        ips: Vec<IpAddr>,
        need_ack: bool,
        sandbox: &str,
        held: Option<&Held>,
    ) -> Result<(), String> {
        let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
        let (ns, name) = (
            NamespaceName::parse(&pod.metadata.namespace)
                .map_err(|p| format!("pod {id}: namespace {p}"))?,
            PodName::parse(&pod.metadata.name).map_err(|p| format!("pod {id}: name {p}"))?,
        );
        let uid = pod.metadata.uid.clone();
        // Checked before anything is written: the probe set (last) takes nothing else, and
        // ztunnel would have been handed the pod by then.
        match host::pod_uid(&uid) {
            Ok(Some(_)) => {}
            Ok(None) => return Err(format!("pod {id}: the API server gave no metadata.uid")),
            Err(p) => {
                return Err(format!(
                    "pod {id}: the API server's metadata.uid {uid:?} {p}; nothing was done"
                ));
            }
        }
        let identity = netns
            .metadata()
            .map(|m| (m.dev(), m.ino()))
            .map_err(|e| format!("pod {id}: its network namespace: {e}"))?;
        let by_fd = fd_path(&netns);
        crate::netns::refuse_own_file(&netns, &by_fd).map_err(|e| format!("pod {id}: {e}"))?;
        let flags = rule_flags(pod);
        self.run_rules(&flags, &by_fd, Subcommand::Apply, held)
            .map_err(|e| format!("pod {id}: the in-pod rules: {e}"))?;
        let info = WorkloadInfo {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            service_account: pod.spec.service_account_name.clone(),
        };
        // Rules in, not yet acked: `pending` tells whoever comes next (this agent after a
        // crash, a removal) that the pod has rules to undo. A pod already `enabled` (a new
        // sandbox, the start-up reconcile) keeps it: istiod would stop sending it HBONE.
        if eligible::redirection(pod) != Some(ENABLED) {
            self.annotate(&ns, &name, Some(PENDING))
                .map_err(|e| format!("pod {id}: rules in; marking it {PENDING}: {e}"))?;
        }
        let acked = match self.zds.add(&uid, info, netns.as_fd()) {
            Err(ZdsError::NoZtunnel) if !need_ack => Ok(()),
            other => other,
        };
        // A kept pod found at last: its Add replaced the keep (the same uid), or it is a new
        // pod of the name and the kept one goes.
        if let Some(old) = lock(&self.kept).remove(&id).filter(|old| *old != uid)
            && let Err(e) = self.zds.del(&old)
        {
            logging::warn(&format!(
                "pod {id}: ztunnel's Del of the kept pod {old}: {e}"
            ));
        }
        let mut pods = lock(&self.pods);
        let superseded = pods
            .get(&id)
            .map(|old| {
                if !old.sandbox.is_empty() && old.sandbox != sandbox {
                    old.sandbox.clone()
                } else {
                    old.superseded.clone()
                }
            })
            .unwrap_or_default();
        let replaced = pods.insert(
            id.clone(),
            Member {
                enrolled: Enrolled {
                    uid: uid.clone(),
                    ips: ips.clone(),
                    netns: identity,
                },
                netns: Arc::new(netns),
                flags,
                seq: self.clock.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                sandbox: sandbox.to_string(),
                superseded,
            },
        );
        drop(pods);
        // An earlier sandbox of the pod (its DEL not seen, or still to come, which
        // `other_sandbox` then ignores): what it had and this one has not goes, or its
        // addresses would stay in the probe set (skipping ztunnel for whichever pod gets them
        // next) and, for an earlier pod of the name, its proxy in ztunnel.
        if let Some(old) = replaced {
            let stale: Vec<IpAddr> = old
                .enrolled
                .ips
                .iter()
                .filter(|ip| !ips.contains(ip))
                .copied()
                .collect();
            if let Err(e) = self.probe_set(MemberVerb::Remove, &old.enrolled.uid, &stale) {
                logging::warn(&format!(
                    "pod {id}: the earlier sandbox's probe-set members {}: {e}",
                    list(&stale)
                ));
            }
            if old.enrolled.uid != uid
                && let Err(e) = self.zds.del(&old.enrolled.uid)
            {
                logging::warn(&format!(
                    "pod {id}: ztunnel's Del of the earlier pod {}: {e}",
                    old.enrolled.uid
                ));
            }
        }
        if let Err(e) = acked {
            let why = match e {
                ZdsError::NoZtunnel => {
                    "no ztunnel is connected (it gets the pod when it connects)".to_string()
                }
                e => e.to_string(),
            };
            return Err(format!(
                "pod {id}: rules in (marked {PENDING}), but ztunnel did not take it: {why}"
            ));
        }
        self.probe_set(MemberVerb::Add, &uid, &ips)
            .map_err(|e| format!("pod {id}: the node's probe set: {e}"))?;
        self.annotate(&ns, &name, Some(ENABLED))
            .map_err(|e| format!("pod {id}: marking it {ENABLED}: {e}"))?;
        lock(&self.counts).enrolments += 1;
        logging::info(&format!(
            "pod {id} ({uid}) enrolled: rules in, ztunnel acked, probe set has {}, {REDIRECTION}={ENABLED}",
            list(&ips)
        ));
        Ok(())
    }

    /// DEL from the plugin: ztunnel lets the pod go, its addresses leave the probe set. The
    /// rules go with the namespace; the pod is being deleted, so no annotation is written.
    /// Every step is tried; the failures are reported together.
    pub fn del(&self, ev: &PodEvent) -> Result<(), String> {
        let (ns, name) = names(ev)?;
        let id = format!("{ns}/{name}");
        let _one = lock(&self.one_at_a_time);
        // A DEL names the pod, but is of one sandbox: a runtime cleaning up an earlier one
        // (a failed attempt, a garbage-collected sandbox) must not take the enrolled one out
        // of the mesh, whose rules would stay, redirecting to a ztunnel that let it go.
        if let Some(why) = self.other_sandbox(&id, ev) {
            logging::info(&format!("DEL of pod {id}: {why}; it stays enrolled"));
            return Ok(());
        }
        self.remove(&id, Removal::Deleted, None)
    }

    /// Why the DEL `ev` is of another sandbox than pod `id`'s enrolled one, if it is: another
    /// `CNI_CONTAINERID` than its ADD's, or a namespace that still exists and is not the one
    /// the agent holds.
    fn other_sandbox(&self, id: &str, ev: &PodEvent) -> Option<String> {
        let pods = lock(&self.pods);
        let m = pods.get(id)?;
        if !m.sandbox.is_empty() && !ev.container_id.is_empty() && m.sandbox != ev.container_id {
            return Some(format!(
                "sandbox {} is not the enrolled one ({})",
                ev.container_id, m.sandbox
            ));
        }
        if !m.superseded.is_empty() && m.superseded == ev.container_id {
            return Some(format!(
                "sandbox {} is the one the enrolled sandbox replaced",
                ev.container_id
            ));
        }
        if ev.netns.is_empty() {
            return None;
        }
        let there = crate::netns::open(Path::new(&ev.netns))
            .ok()?
            .metadata()
            .ok()
            .map(|md| (md.dev(), md.ino()))?;
        (there != m.enrolled.netns).then(|| {
            format!(
                "its namespace {} is not the enrolled one (another sandbox's)",
                ev.netns
            )
        })
    }

    /// A pod marked `enabled` at start whose namespace the start-up scan could not find (a
    /// sandbox being re-created, a pod whose processes are gone while its proxy still serves
    /// in-flight connections): as istio-cni's snapshot does for a pod it knows but cannot
    /// open, ztunnel is told to `keep` it (ztunnel drops every workload a snapshot does not
    /// name, and would cut a pod that may still be fine). It stays kept until it is enrolled
    /// (an ADD, or a later scan finds it: then ztunnel gets its Add) or goes (`forget_kept`:
    /// a Del).
    pub(crate) fn keep(&self, pod: &Pod) -> Result<(), String> {
        let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
        let uid = &pod.metadata.uid;
        if uid.is_empty() {
            return Err(format!("pod {id}: the API server gave no metadata.uid"));
        }
        let info = WorkloadInfo {
            name: pod.metadata.name.clone(),
            namespace: pod.metadata.namespace.clone(),
            service_account: pod.spec.service_account_name.clone(),
        };
        self.zds
            .keep(uid, info)
            .map_err(|e| format!("pod {id}: keeping it in ztunnel's snapshot: {e}"))?;
        let earlier = lock(&self.kept).insert(id.clone(), uid.clone());
        if let Some(old) = earlier.filter(|old| old != uid)
            && let Err(e) = self.zds.del(&old)
        {
            logging::warn(&format!(
                "pod {id}: ztunnel's Del of the earlier pod {old}: {e}"
            ));
        }
        logging::info(&format!(
            "pod {id} is marked {ENABLED} but its network namespace was not found: ztunnel is told to keep it until it is found or goes"
        ));
        Ok(())
    }

    /// A kept pod (`keep`) that went, or is no longer ambient: ztunnel's Del. Nothing for a
    /// pod that is not kept, or (`only`) is kept as another uid (a newer pod of the name).
    pub(crate) fn forget_kept(&self, id: &str, only: Option<&str>) {
        let uid = {
            let mut kept = lock(&self.kept);
            match kept.get(id) {
                Some(u) if only.is_none_or(|o| o == u) => kept.remove(id),
                _ => None,
            }
        };
        let Some(uid) = uid else {
            return;
        };
        match self.zds.del(&uid) {
            Ok(()) => logging::info(&format!("pod {id} ({uid}): no longer kept in ztunnel")),
            Err(e) => logging::warn(&format!(
                "pod {id} ({uid}): ztunnel's Del of a kept pod: {e}"
            )),
        }
    }

    /// Pod `id`, kept as another uid than `uid` (the pod of its name now): ztunnel's Del of
    /// the kept one, which is gone.
    pub(crate) fn forget_kept_unless(&self, id: &str, uid: &str) {
        let other = lock(&self.kept).get(id).filter(|k| *k != uid).cloned();
        if let Some(old) = other {
            self.forget_kept(id, Some(&old));
        }
    }

    /// The pods kept in ztunnel's snapshot (`keep`), by `namespace/name`.
    pub(crate) fn kept(&self) -> Vec<String> {
        lock(&self.kept).keys().cloned().collect()
    }

    /// The namespace the agent holds for pod `id`, if it is enrolled.
    pub(crate) fn enrolled_netns(&self, id: &str) -> Option<Arc<File>> {
        lock(&self.pods).get(id).map(|m| m.netns.clone())
    }

    /// Whether pod `id` (`namespace/name`) is enrolled here, and as which uid.
    pub(crate) fn enrolled_uid(&self, id: &str) -> Option<String> {
        lock(&self.pods).get(id).map(|m| m.enrolled.uid.clone())
    }

    /// A pod marked as redirected (`pending` or `enabled`) that this agent does not hold and
    /// that is no longer ambient (unlabelled while no agent ran): its rules are taken out of
    /// the namespace found at `netns` (if any), its probe-set members by its UID, and its
    /// annotation removed.
    pub(crate) fn unenrol_stranded(
        &self,
        pod: &Pod,
        netns: Option<File>,
        held: Option<&Held>,
    ) -> Result<(), String> {
        let id = format!("{}/{}", pod.metadata.namespace, pod.metadata.name);
        let mut failures = Vec::new();
        let ips = pod_ips(pod);
        if let Err(e) = self.probe_set(MemberVerb::Remove, &pod.metadata.uid, &ips) {
            failures.push(format!("the probe set: {e}"));
        }
        if let Some(ns) = &netns
            && let Err(e) = self.run_rules(&rule_flags(pod), &fd_path(ns), Subcommand::Clean, held)
        {
            failures.push(format!("the in-pod rules: {e}"));
        }
        if failures.is_empty() {
            let ns = NamespaceName::parse(&pod.metadata.namespace)
                .map_err(|p| format!("pod {id}: namespace {p}"))?;
            let name =
                PodName::parse(&pod.metadata.name).map_err(|p| format!("pod {id}: name {p}"))?;
            self.annotate(&ns, &name, None)
                .map_err(|e| format!("pod {id}: removing {REDIRECTION}: {e}"))?;
            logging::info(&format!(
                "pod {id} is no longer ambient: its rules and {REDIRECTION} removed"
            ));
            Ok(())
        } else {
            Err(format!("pod {id}: {}", failures.join("; ")))
        }
    }

    /// Takes pod `id` out of the mesh (istio-cni's `RemovePodFromMesh`): its probe-set
    /// members first, then ztunnel's Del; a pod that stays (unlabelled) also loses its rules
    /// (in the namespace the agent holds) and then its annotation. Every step is tried; the
    /// failures are reported together. `held`: the namespace's lock, for an unlabelled pod's
    /// clean (`hold`).
    pub(crate) fn remove(&self, id: &str, how: Removal, held: Option<&Held>) -> Result<(), String> {
        self.forget_kept(id, None);
        let Some(m) = lock(&self.pods).remove(id) else {
            logging::debug(&format!("pod {id}: not enrolled here"));
            return Ok(());
        };
        let e = &m.enrolled;
        let mut failures = Vec::new();
        if let Err(err) = self.probe_set(MemberVerb::Remove, &e.uid, &e.ips) {
            failures.push(format!("the probe set: {err}"));
        }
        if let Err(err) = self.zds.del(&e.uid) {
            failures.push(format!("ztunnel: {err}"));
        }
        if how == Removal::Unlabelled {
            if let Err(err) = self.run_rules(&m.flags, &fd_path(&m.netns), Subcommand::Clean, held)
            {
                failures.push(format!("the in-pod rules: {err}"));
            }
            let names = id.split_once('/').and_then(|(ns, n)| {
                Some((NamespaceName::parse(ns).ok()?, PodName::parse(n).ok()?))
            });
            match names {
                Some((ns, name)) if failures.is_empty() => {
                    if let Err(err) = self.annotate(&ns, &name, None) {
                        failures.push(format!("removing {REDIRECTION}: {err}"));
                    }
                }
                _ => {}
            }
        }
        if failures.is_empty() {
            lock(&self.counts).removals += 1;
            logging::info(&format!("pod {id} ({}) removed from the mesh", e.uid));
            Ok(())
        } else {
            Err(format!("removing pod {id}: {}", failures.join("; ")))
        }
    }

    /// `run_rules`' check, with its error kept typed (a held lock is told apart).
    fn check_rules(
        &self,
        flags: &Flags,
        netns: &Path,
        held: Option<&Held>,
    ) -> Result<(), crate::run::RunError> {
        let mut flags = flags.clone();
        flags.set(
            &ambient::NETWORK_NAMESPACE.spec,
            netns.display().to_string(),
        );
        // A check that finds the rules in place says so at info: once per pod per pass is
        // noise, so only what is wrong (warn) comes out of it.
        logging::quieter(logging::Level::Warn, || {
            run::execute_with(
                &Ambient,
                &flags,
                Subcommand::Check,
                &self.env,
                &crate::host::System,
                &mut Vec::new(),
                waits_for(held, netns),
            )
        })
    }

    /// The in-pod rules (`flags`), through the ambient engine, inside the namespace at
    /// `netns`: applied, or cleaned. `held`: the namespace's lock, if the caller took it.
    fn run_rules(
        &self,
        flags: &Flags,
        netns: &Path,
        sub: Subcommand,
        held: Option<&Held>,
    ) -> Result<(), String> {
        let mut flags = flags.clone();
        flags.set(
            &ambient::NETWORK_NAMESPACE.spec,
            netns.display().to_string(),
        );
        run::execute_with(
            &Ambient,
            &flags,
            sub,
            &self.env,
            &crate::host::System,
            &mut Vec::new(),
            waits_for(held, netns),
        )
        .map_err(|e| e.to_string())
    }

    fn probe_set(&self, verb: MemberVerb, uid: &str, ips: &[IpAddr]) -> Result<(), String> {
        if ips.is_empty() {
            return Ok(());
        }
        let mut flags = Flags::default();
        flags.set(&host::POD_UID.spec, uid);
        flags.set(&host::POD_IPS.spec, list(ips));
        let m = members::resolve(verb, &flags, &self.env).map_err(|e| e.to_string())?;
        members::run(&m, &flags, &self.env, &mut Vec::new()).map_err(|e| e.to_string())
    }

    /// Sets (or with `None` removes) the pod's redirection annotation through pods/status.
    fn annotate(
        &self,
        ns: &NamespaceName,
        name: &PodName,
        value: Option<&str>,
    ) -> Result<(), String> {
        let patch = serde_json::json!({"metadata": {"annotations": {REDIRECTION: value}}});
        match self.kube.patch_pod_status(ns, name, &patch) {
            Ok(()) => Ok(()),
            // Unenrolling a pod that is gone: nothing left to mark.
            Err(crate::cni::kube::PatchError::Kube(KubeError::NotFound(_))) if value.is_none() => {
                Ok(())
            }
            Err(e) => {
                self.api_error();
                Err(e.to_string())
            }
        }
    }
}

impl Handler for Agent {
    fn handle(&self, req: Request) -> Result<(), String> {
        let ready = self.ready.load(std::sync::atomic::Ordering::SeqCst);
        let outcome = match &req {
            // Before the start-up reconcile ztunnel has no snapshot and cannot ack, and the
            // reconcile's list (older than the pod) would take it out again: the ADD is
            // refused before anything is written, and the runtime retries.
            Request::Add(ev) if !ready => Err(format!(
                "pod {}/{}: the node agent is starting (the node's pods are not reconciled yet); nothing was done, try again",
                ev.namespace, ev.name
            )),
            Request::Add(ev) => self.add(ev),
            Request::Del(ev) => self.del(ev),
            Request::Ping(_) if ready => Ok(()),
            Request::Ping(_) => Err(
                "starting: the node's pods are not reconciled yet (the API server is being listed)"
                    .into(),
            ),
        };
        if let Err(e) = &outcome {
            logging::warn(e);
        }
        outcome
    }
}

/// The ambient flags of a pod: its annotations as the table's pod flags, and `--reconcile`:
/// a retried ADD finds its own rules (identical: nothing to do) or an earlier version's,
/// which the agent owns and replaces, as upstream's agent does.
fn rule_flags(pod: &Pod) -> Flags {
    let mut flags = Flags::default();
    for spec in ambient::ALL {
        if let Some(key) = ambient::annotation_of(spec)
            && let Some(value) = pod.metadata.annotations.get(key)
        {
            flags.set(spec, value.clone());
        }
    }
    flags.set(&ambient::RECONCILE.spec, "true");
    flags
}

/// Whether a run failed because another holder kept the namespace's lock for the whole wait.
fn lock_busy(e: &crate::run::RunError) -> bool {
    matches!(e, crate::run::RunError::Backend(crate::backend::BackendError::Failed(b))
        if matches!(b.downcast_ref::<crate::lock::LockError>(), Some(crate::lock::LockError::Busy(_))))
}

/// The path of an open namespace, through this process's fd table.
fn fd_path(netns: &File) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", netns.as_raw_fd()))
}

/// The node's probe rules, as `meshtables ambient host apply --reconcile` (or `check`)
/// handles them, in this (the node's) namespace.
pub fn host_rules(env: &HashMap<String, String>, sub: Subcommand) -> Result<(), String> {
    let mut flags = Flags::default();
    if sub == Subcommand::Apply {
        flags.set(&ambient::RECONCILE.spec, "true");
    }
    run::execute(
        &crate::profile::ambient::host::AmbientHost,
        &flags,
        sub,
        env,
        &crate::host::System,
        &mut Vec::new(),
    )
    .map_err(|e| e.to_string())
}

fn names(ev: &PodEvent) -> Result<(NamespaceName, PodName), String> {
    let ns = NamespaceName::parse(&ev.namespace)
        .map_err(|p| format!("pod namespace {:?} {p}", ev.namespace))?;
    let name = PodName::parse(&ev.name).map_err(|p| format!("pod name {:?} {p}", ev.name))?;
    Ok((ns, name))
}

/// The pod's addresses from its status (the runtime's are preferred: the API server has
/// none yet during the ADD).
fn pod_ips(pod: &Pod) -> Vec<IpAddr> {
    pod.status
        .pod_ips
        .iter()
        .filter_map(|p| p.ip.parse().ok())
        .collect()
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(",")
}
