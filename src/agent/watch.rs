//! The agent's view of this node's pods, from the API server: a list at start (before
//! ztunnel gets its first snapshot, so a restarted agent names every running pod and
//! ztunnel drops none), then a watch of the node's pods and one of namespaces, with resource
//! versions, bookmarks, a relist when the version expired (410) and backoff on errors.
//!
//! Each pod seen is synced with the one decision (`eligible`): an ambient pod that is
//! running and has addresses but is not enrolled here (the agent restarted, or it was
//! labelled later) is enrolled, its namespace found by the /proc scan (`netns_scan`, which
//! checks that the namespace holds one of the pod's addresses); an enrolled pod that is no
//! longer ambient is removed (rules, probe set, ztunnel, annotation); a deleted or finished
//! pod is let go. A namespace whose labels change re-syncs its pods.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::eligible::{self, Verdict};
use super::enrol::{Agent, Held, Removal};
use super::netns_scan;
use crate::cni::kube::{Client, KubeError, WatchEnd, WatchEvent};
use crate::cni::pod::{Namespace, Pod};
use crate::logging;

/// How long one watch request lasts before the server closes it and we re-watch.
const WATCH_SECONDS: u32 = 300;
/// Backoff after an error: doubling from the first, up to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(500), Duration::from_secs(30));

/// What the watches have seen.
#[derive(Default)]
struct Cache {
    pods: BTreeMap<String, Pod>,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
}

/// The node's pods, synced.
pub struct Watcher {
    agent: Weak<Agent>,
    kube: Client,
    node: String,
    proc_root: PathBuf,
    cache: Mutex<Cache>,
    /// What is done with a broken sidecar pod (`repair`), if anything, and its counts.
    repair: Option<super::repair::Action>,
    repairs: Arc<super::repair::Counts>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watcher {
    pub fn new(
        agent: &Arc<Agent>,
        kube: Client,
        node: String,
        proc_root: PathBuf,
        repair: Option<super::repair::Action>,
        repairs: Arc<super::repair::Counts>,
    ) -> Watcher {
        Watcher {
            agent: Arc::downgrade(agent),
            kube,
            node,
            proc_root,
            cache: Mutex::new(Cache::default()),
            repair,
            repairs,
        }
    }

    /// A sidecar pod that may have started while the plugin was not in the chain, as the
    /// repair mode says: in place, its rules checked and written when missing; otherwise, when
    /// broken, deleted or labelled.
    fn repair_sidecar(&self, agent: &Agent, pod: &Pod) {
        use super::repair::{Action, Done};
        let plugin = match &self.repair {
            None => return,
            Some(Action::InPlace(plugin)) => plugin,
            Some(action) => {
                if super::repair::broken(pod)
                    && let Done::Failed { api: true, .. } =
                        super::repair::act(&self.kube, action, pod, &self.repairs)
                {
                    agent.api_error();
                }
                return;
            }
        };
        if !super::repair::relies_on_the_plugin(pod) {
            return;
        }
        let ips = pod_ips(pod);
        match netns_scan::find(&self.proc_root, &pod.metadata.uid, &ips) {
            Ok(found) => {
                self.repair_in(agent, plugin, pod, found, &ips);
            }
            Err(e) => logging::debug(&format!(
                "sidecar pod {}: not checked, its namespace was not found: {e}",
                id(pod)
            )),
        }
    }

    /// The in-place repair of `pod` in its namespace `found`: whether it was repaired.
    fn repair_in(
        &self,
        agent: &Agent,
        plugin: &crate::cni::conf::NetConf,
        pod: &Pod,
        found: netns_scan::Found,
        ips: &[std::net::IpAddr],
    ) -> bool {
        let found = std::fs::File::from(found.netns);
        let path = PathBuf::from(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&found)
        ));
        match super::repair::repair(plugin, pod, &path, ips) {
            Ok(super::repair::Outcome::Repaired) => {
                agent.sidecar_repaired();
                true
            }
            Ok(_) => false,
            Err(e) => {
                logging::warn(&e);
                false
            }
        }
    }

    /// The drift pass for sidecar pods (the in-place repair mode only: the others act on a
    /// failed `istio-validation`, which a running pod has passed): every pod of this node
    /// whose interception rules are the plugin's (`repair::rules_are_the_plugins`), running
    /// or stuck before its containers, is checked in its namespace (found through `index`,
    /// the pass's one look at /proc) and its rules put back when they are gone, as the
    /// ambient pods' are. Returns how many were put back.
    pub fn check_sidecars(&self, agent: &Agent, index: &netns_scan::Index) -> u64 {
        let Some(super::repair::Action::InPlace(plugin)) = &self.repair else {
            return 0;
        };
        let pods: Vec<Pod> = lock(&self.cache)
            .pods
            .values()
            .filter(|p| super::repair::rules_are_the_plugins(p))
            .filter(|p| matches!(p.status.phase.as_str(), "Pending" | "Running"))
            .cloned()
            .collect();
        let mut repaired = 0;
        for pod in pods {
            let ips = pod_ips(&pod);
            // Not seen (no process, or its processes share the node's namespace): nothing
            // to check yet.
            let Ok(found) = index.find(&self.proc_root, &pod.metadata.uid, &ips) else {
                continue;
            };
            if logging::quieter(logging::Level::Warn, || {
                self.repair_in(agent, plugin, &pod, found, &ips)
            }) {
                repaired += 1;
                logging::warn(&format!(
                    "drift: sidecar pod {}'s interception rules were gone or changed; put back",
                    id(&pod)
                ));
            }
        }
        repaired
    }

    /// The drift pass for kept pods (`Agent::keep`): one whose processes the pass's look at
    /// /proc (`index`) now sees is synced as a change of it would be, so it is found (its
    /// cgroup, one of its addresses) and enrolled. Nothing else looks for it again unless the
    /// pod changes or an ADD comes, and a kept pod has no rules checked and no probe-set
    /// members.
    pub fn check_kept(&self, agent: &Agent, index: &netns_scan::Index) {
        let pods: Vec<Pod> = {
            let cache = lock(&self.cache);
            agent
                .kept()
                .iter()
                .filter_map(|id| cache.pods.get(id).cloned())
                .filter(|p| !index.namespaces(&p.metadata.uid).is_empty())
                .collect()
        };
        for p in &pods {
            self.sync(agent, p, false, u64::MAX);
        }
    }

    fn selector(&self) -> String {
        format!("spec.nodeName={}", self.node)
    }

    /// Lists namespaces and this node's pods and syncs every pod; returns the resource
    /// versions to watch from (pods, namespaces). `at_start`: before ztunnel's first snapshot
    /// (a pod enrolled then needs no ack: the snapshot carries it).
    pub fn reconcile(&self, at_start: bool) -> Result<(String, String), String> {
        // Read before the lists: a pod enrolled from now on (an ADD while they are in
        // flight) is newer than what they say, and left alone.
        let asked = self.agent.upgrade().map_or(0, |a| a.clock());
        let failed = |e: crate::cni::kube::KubeError| {
            if let Some(a) = self.agent.upgrade() {
                a.api_error();
            }
            e.to_string()
        };
        let (namespaces, ns_rv) = self.kube.list_namespaces().map_err(failed)?;
        let (pods, pod_rv) = self
            .kube
            .list_pods(&self.selector(), None)
            .map_err(failed)?;
        {
            let mut c = lock(&self.cache);
            c.namespaces = namespaces
                .into_iter()
                .map(|n| (n.metadata.name, n.metadata.labels))
                .collect();
            c.pods = pods.iter().map(|p| (id(p), p.clone())).collect();
        }
        let Some(agent) = self.agent.upgrade() else {
            return Ok((pod_rv, ns_rv));
        };
        // Enrolled pods the list no longer has were deleted while nobody watched.
        let listed: Vec<String> = pods.iter().map(id).collect();
        for gone in agent.enrolled().keys().filter(|k| !listed.contains(k)) {
            let _one = lock(&agent.one_at_a_time);
            if agent.enrolled_after(gone, asked) {
                continue;
            }
            if let Err(e) = agent.remove(gone, Removal::Deleted, None) {
                logging::warn(&e);
            }
        }
        // And kept pods (`Agent::keep`) the list no longer has, or has as another uid: a pod
        // deleted and created again under its name while no watch ran (a StatefulSet's
        // during a 410). The kept uid is gone from the API either way, and nothing else
        // would let it go until the new pod is enrolled, if ever.
        let one = lock(&agent.one_at_a_time);
        for gone in agent.kept().iter().filter(|k| !listed.contains(k)) {
            agent.forget_kept(gone, None);
        }
        for p in &pods {
            agent.forget_kept_unless(&id(p), &p.metadata.uid);
        }
        drop(one);
        for p in &pods {
            self.sync(&agent, p, at_start, asked);
        }
        Ok((pod_rv, ns_rv))
    }

    /// One pod, against the decision. `asked`: the enrolment clock when `pod` was read
    /// (`u64::MAX` for a watch event, which is current): a pod enrolled since is left alone.
    fn sync(&self, agent: &Agent, pod: &Pod, at_start: bool, asked: u64) {
        self.repair_sidecar(agent, pod);
        let pid = id(pod);
        let labels = lock(&self.cache)
            .namespaces
            .get(&pod.metadata.namespace)
            .cloned()
            .unwrap_or_default();
        let finished = pod.metadata.deletion_timestamp.is_some()
            || matches!(pod.status.phase.as_str(), "Succeeded" | "Failed");
        let ambient = eligible::verdict(pod, &labels, agent.scope()) == Verdict::Ambient;
        // News (a watch's, or the cache's) of another pod of the name than the enrolled one:
        // the API server says which of the two is the name's now, read before the lock (a
        // slow answer must not hold up the ADDs).
        let news = asked == u64::MAX;
        let weighed = agent.enrolled_uid(&pid);
        let current = (news && weighed.as_deref().is_some_and(|u| u != pod.metadata.uid))
            .then(|| self.current_uid(pod));
        let prepared = self.prepare(agent, pod, ambient && !finished, finished);
        let _one = lock(&agent.one_at_a_time);
        if agent.enrolled_after(&pid, asked) {
            return;
        }
        let here = agent.enrolled_uid(&pid);
        // Another pod of the same name (deleted and created again): the old one goes. But a
        // watch's news may be older than the enrolled pod: a pod recreated under its name
        // (a StatefulSet's) is enrolled by its ADD while the watch still brings the earlier
        // one's last events. Taking the enrolled pod out on those would leave it redirected
        // to a ztunnel that let it go, and marked `enabled`.
        if let Some(u) = here.as_deref().filter(|u| *u != pod.metadata.uid) {
            if news {
                match &current {
                    // Enrolled since the news was weighed (an ADD): newer than it.
                    _ if here != weighed => return,
                    // The enrolled one is the name's pod now: this news is old.
                    Some(Ok(Some(now))) if now == u => {
                        return logging::debug(&format!(
                            "pod {pid}: news of {} while {u}, the pod of the name now, is enrolled; old news, ignored",
                            pod.metadata.uid
                        ));
                    }
                    Some(Err(e)) => {
                        return logging::warn(&format!(
                            "pod {pid}: news of {} while {u} is enrolled, and which is the pod of the name now is unknown ({e}); left as it is",
                            pod.metadata.uid
                        ));
                    }
                    // The news' pod is the name's now, or none is: the enrolled one is gone.
                    Some(Ok(_)) | None => {}
                }
            }
            if let Err(e) = agent.remove(&pid, Removal::Deleted, None) {
                logging::warn(&e);
            }
        }
        let here = agent.enrolled_uid(&pid).is_some();
        logging::debug(&format!(
            "pod {pid}: ambient {ambient}, finished {finished}, enrolled here {here}, phase {:?}",
            pod.status.phase
        ));
        match (ambient && !finished, here, prepared) {
            (true, true, _) => {}
            (false, false, prepared) => {
                agent.forget_kept(&pid, None);
                if !finished && eligible::redirection(pod).is_some() {
                    let done = match prepared {
                        Prepared::Busy(e) => {
                            return logging::warn(&format!(
                                "pod {pid} is marked redirected and no longer ambient, but its rules cannot be taken out: {e} (one of its own processes holds it?); left as it is until it changes again"
                            ));
                        }
                        Prepared::Ready(Some(netns), held) => {
                            agent.unenrol_stranded(pod, Some(netns), Some(&held))
                        }
                        Prepared::NotFound(_) => agent.unenrol_stranded(pod, None, None),
                        _ => return self.unenrol_stranded(agent, pod),
                    };
                    if let Err(e) = done {
                        logging::warn(&e);
                    }
                }
            }
            (false, true, prepared) => {
                let (how, held) = match (finished, prepared) {
                    (true, _) => (Removal::Deleted, None),
                    // Its rules could not be taken out: it stays in the mesh whole (rules,
                    // ztunnel, annotation), not redirected to a ztunnel that let it go.
                    (false, Prepared::Busy(e)) => {
                        return logging::warn(&format!(
                            "pod {pid} is no longer ambient, but stays enrolled: {e} (one of its own processes holds it?); removed when it changes again"
                        ));
                    }
                    (false, Prepared::Ready(_, held)) => (Removal::Unlabelled, Some(held)),
                    (false, _) => (Removal::Unlabelled, None),
                };
                if let Err(e) = agent.remove(&pid, how, held.as_ref()) {
                    logging::warn(&e);
                }
            }
            (true, false, prepared) => self.enrol_running(agent, pod, at_start, prepared),
        }
    }

    /// What `sync` will run in the pod's namespace, found and its lock taken before the
    /// node's `one_at_a_time`: any of the pod's own processes can hold that lock, and waiting
    /// for it inside `one_at_a_time` held up every ADD of the node (a second per change of
    /// such a pod). `ambient`: it should be in the mesh; `finished`: it is going.
    fn prepare(&self, agent: &Agent, pod: &Pod, ambient: bool, finished: bool) -> Prepared {
        let pid = id(pod);
        let enrolled = agent.enrolled_uid(&pid);
        let same = enrolled.as_deref() == Some(pod.metadata.uid.as_str());
        let scan = || {
            let ips = pod_ips(pod);
            match netns_scan::find(&self.proc_root, &pod.metadata.uid, &ips) {
                Ok(found) => {
                    let netns = std::fs::File::from(found.netns);
                    match super::enrol::hold(&netns) {
                        Ok(held) => Prepared::Ready(Some(netns), held),
                        Err(e) => Prepared::Busy(e),
                    }
                }
                Err(e) => Prepared::NotFound(e.to_string()),
            }
        };
        if ambient && !same {
            if pod_ips(pod).is_empty() || pod.status.phase != "Running" {
                return Prepared::Nothing;
            }
            return scan();
        }
        if ambient || finished {
            return Prepared::Nothing;
        }
        if same {
            return match agent.enrolled_netns(&pid) {
                Some(netns) => match super::enrol::hold(&netns) {
                    Ok(held) => Prepared::Ready(None, held),
                    Err(e) => Prepared::Busy(e),
                },
                None => Prepared::Nothing,
            };
        }
        if enrolled.is_none() && eligible::redirection(pod).is_some() {
            return scan();
        }
        Prepared::Nothing
    }

    /// The uid of the pod that has `pod`'s name now, as the API server says (`None`: no pod
    /// has it).
    fn current_uid(&self, pod: &Pod) -> Result<Option<String>, String> {
        let ns = crate::values::NamespaceName::parse(&pod.metadata.namespace)
            .map_err(|p| format!("namespace {p}"))?;
        let name =
            crate::values::PodName::parse(&pod.metadata.name).map_err(|p| format!("name {p}"))?;
        match self.kube.pod(&ns, &name) {
            Ok(p) => Ok(Some(p.metadata.uid)),
            Err(KubeError::NotFound(_)) => Ok(None),
            Err(e) => {
                if let Some(a) = self.agent.upgrade() {
                    a.api_error();
                }
                Err(e.to_string())
            }
        }
    }

    /// Enrols a running pod found through /proc (by `prepare`, or now). A pod with no
    /// addresses yet is the plugin's ADD in progress (the API has no IPs until it returns):
    /// left to the ADD.
    fn enrol_running(&self, agent: &Agent, pod: &Pod, at_start: bool, prepared: Prepared) {
        let pid = id(pod);
        let ips = pod_ips(pod);
        // At start, a pod marked enabled and not found is kept in ztunnel's snapshot.
        let keep = |why: String| {
            logging::warn(&why);
            if at_start
                && eligible::redirection(pod) == Some(eligible::ENABLED)
                && let Err(e) = agent.keep(pod)
            {
                logging::warn(&e);
            }
        };
        if ips.is_empty() || pod.status.phase != "Running" {
            // After start this is an ADD in progress (the API has no addresses until it
            // returns): the ADD's to finish, nothing to say.
            if at_start && eligible::redirection(pod) == Some(eligible::ENABLED) {
                keep(format!(
                    "pod {pid} is marked {} but is {:?} with {} address(es): not scanned for",
                    eligible::ENABLED,
                    pod.status.phase,
                    ips.len()
                ));
            }
            return;
        }
        let found = match prepared {
            Prepared::Ready(Some(netns), held) => Ok((netns, Some(held))),
            Prepared::Busy(e) => {
                return logging::warn(&format!(
                    "pod {pid} is ambient and running but not enrolled: {e} (one of its own processes holds it?); tried again when it changes"
                ));
            }
            Prepared::NotFound(e) => Err(e),
            Prepared::Ready(None, _) | Prepared::Nothing => {
                netns_scan::find(&self.proc_root, &pod.metadata.uid, &ips)
                    .map(|f| (std::fs::File::from(f.netns), None))
                    .map_err(|e| e.to_string())
            }
        };
        match found {
            Ok((netns, held)) => {
                if let Err(e) = agent.enrol_in(pod, netns, ips, !at_start, "", held.as_ref()) {
                    logging::warn(&e);
                }
            }
            Err(e) => keep(format!(
                "pod {pid} is ambient and running but its network namespace was not found: {e}"
            )),
        }
    }

    /// A pod still marked redirected that nobody here holds and that is not ambient any more.
    fn unenrol_stranded(&self, agent: &Agent, pod: &Pod) {
        let ips: Vec<std::net::IpAddr> = pod
            .status
            .pod_ips
            .iter()
            .filter_map(|p| p.ip.parse().ok())
            .collect();
        let netns = netns_scan::find(&self.proc_root, &pod.metadata.uid, &ips)
            .ok()
            .map(|f| std::fs::File::from(f.netns));
        if let Err(e) = agent.unenrol_stranded(pod, netns, None) {
            logging::warn(&e);
        }
    }

    fn pod_event(&self, ev: WatchEvent<Pod>) {
        let Some(agent) = self.agent.upgrade() else {
            return;
        };
        match ev {
            WatchEvent::Added(p) | WatchEvent::Modified(p) => {
                lock(&self.cache).pods.insert(id(&p), p.clone());
                self.sync(&agent, &p, false, u64::MAX);
            }
            WatchEvent::Deleted(p) => {
                let pid = id(&p);
                lock(&self.cache).pods.remove(&pid);
                let _one = lock(&agent.one_at_a_time);
                agent.forget_kept(&pid, Some(&p.metadata.uid));
                if agent.enrolled_uid(&pid).as_deref() == Some(p.metadata.uid.as_str())
                    && let Err(e) = agent.remove(&pid, Removal::Deleted, None)
                {
                    logging::warn(&e);
                }
            }
        }
    }

    fn namespace_event(&self, ev: WatchEvent<Namespace>) {
        let Some(agent) = self.agent.upgrade() else {
            return;
        };
        let (name, labels) = match ev {
            WatchEvent::Added(n) | WatchEvent::Modified(n) => (n.metadata.name, n.metadata.labels),
            WatchEvent::Deleted(n) => (n.metadata.name, BTreeMap::new()),
        };
        let pods: Vec<Pod> = {
            let mut c = lock(&self.cache);
            if c.namespaces.get(&name) == Some(&labels) {
                return;
            }
            c.namespaces.insert(name.clone(), labels);
            c.pods
                .values()
                .filter(|p| p.metadata.namespace == name)
                .cloned()
                .collect()
        };
        for p in &pods {
            self.sync(&agent, p, false, u64::MAX);
        }
    }

    /// Watches pods until the agent is gone: re-watching from the last version when a watch
    /// ends, relisting when the version expired, backing off on errors.
    pub fn watch_pods(&self, mut rv: String) {
        let mut backoff = BACKOFF.0;
        while self.agent.strong_count() > 0 {
            let (started, mut events) = (Instant::now(), 0usize);
            let end = self
                .kube
                .watch_pods(&self.selector(), &rv, WATCH_SECONDS, &mut |ev| {
                    events += 1;
                    self.pod_event(ev);
                    ControlFlow::Continue(())
                });
            let short = very_short(&end, started, events);
            rv = match self.next(end, short, rv, &mut backoff, "pods") {
                Some(v) => v,
                None => match self.reconcile(false) {
                    Ok((pods, _)) => pods,
                    Err(e) => {
                        logging::warn(&format!("relisting pods: {e}"));
                        back_off(&mut backoff);
                        String::new()
                    }
                },
            };
        }
    }

    /// Watches namespaces until the agent is gone.
    pub fn watch_namespaces(&self, mut rv: String) {
        let mut backoff = BACKOFF.0;
        while self.agent.strong_count() > 0 {
            let (started, mut events) = (Instant::now(), 0usize);
            let end = self.kube.watch_namespaces(&rv, WATCH_SECONDS, &mut |ev| {
                events += 1;
                self.namespace_event(ev);
                ControlFlow::Continue(())
            });
            let short = very_short(&end, started, events);
            rv = match self.next(end, short, rv, &mut backoff, "namespaces") {
                Some(v) => v,
                None => match self.kube.list_namespaces() {
                    Ok((list, v)) => {
                        for n in list {
                            self.namespace_event(WatchEvent::Modified(n));
                        }
                        v
                    }
                    Err(e) => {
                        logging::warn(&format!("relisting namespaces: {e}"));
                        back_off(&mut backoff);
                        String::new()
                    }
                },
            };
        }
    }

    /// Where a watch goes on from: the version to re-watch from, or `None` to relist.
    /// `short`: the watch ended within a second with no event (`very_short`): backed off.
    fn next(
        &self,
        end: Result<WatchEnd, KubeError>,
        short: bool,
        rv: String,
        backoff: &mut Duration,
        what: &str,
    ) -> Option<String> {
        if short {
            logging::warn(&format!(
                "the watch of {what} ended at once with no event (a server or proxy closing watches?); watching again in {backoff:?}"
            ));
            back_off(backoff);
        }
        match end {
            Ok(WatchEnd::Closed { resource_version }) => {
                if !short {
                    *backoff = BACKOFF.0;
                }
                Some(resource_version)
            }
            Ok(WatchEnd::Broken {
                resource_version,
                problem,
            }) => {
                logging::debug(&format!(
                    "the watch of {what} broke ({problem}); watching again"
                ));
                Some(resource_version)
            }
            Ok(WatchEnd::Stopped { resource_version }) => Some(resource_version),
            Ok(WatchEnd::Expired) => {
                // Backed off as any error: a server answering 410 to every watch would
                // otherwise be relisted in a busy loop (hundreds of lists a second).
                logging::info(&format!(
                    "the watch of {what} expired (410); relisting in {backoff:?}"
                ));
                back_off(backoff);
                None
            }
            Err(e) => {
                if let Some(a) = self.agent.upgrade() {
                    a.api_error();
                }
                logging::warn(&format!("watching {what}: {e}"));
                back_off(backoff);
                if rv.is_empty() { None } else { Some(rv) }
            }
        }
    }
}

/// client-go's reflector's rule: a watch that ended (closed or broken) within a second with
/// no event is an error, and backed off as one. A server or proxy that ends every watch at
/// once was otherwise watched again in a busy loop (2343 requests in 3 s).
fn very_short(end: &Result<WatchEnd, KubeError>, started: Instant, events: usize) -> bool {
    matches!(end, Ok(WatchEnd::Closed { .. } | WatchEnd::Broken { .. }))
        && events == 0
        && started.elapsed() < Duration::from_secs(1)
}

/// Waits `backoff`, then doubles it (up to the cap) for the next failure.
fn back_off(backoff: &mut Duration) {
    std::thread::sleep(*backoff);
    *backoff = (*backoff * 2).min(BACKOFF.1);
}

/// What `sync` found of a pod's namespace before `one_at_a_time` (`Watcher::prepare`).
enum Prepared {
    /// Nothing to run there, or not looked for.
    Nothing,
    /// Its lock, held; with the namespace the scan found (`None`: the enrolled one's).
    Ready(Option<std::fs::File>, Held),
    /// Its lock is held by another, for the whole wait.
    Busy(String),
    /// The scan did not find it.
    NotFound(String),
}

/// The pod's addresses, from its status.
fn pod_ips(pod: &Pod) -> Vec<std::net::IpAddr> {
    pod.status
        .pod_ips
        .iter()
        .filter_map(|p| p.ip.parse().ok())
        .collect()
}

fn id(p: &Pod) -> String {
    format!("{}/{}", p.metadata.namespace, p.metadata.name)
}

/// The proc root the scan reads (the node's /proc: the DaemonSet runs with hostPID).
pub fn proc_root() -> &'static Path {
    Path::new("/proc")
}
