//! A throwaway pod/world topology for traffic tests, built from `net`'s data: the "pod"
//! namespace has eth0 (10.244.1.5/24, fd00:244::5/64) on a veth to the "world" namespace
//! (10.244.1.1, fd00:244::1), which also holds "remote" addresses (10.96.0.10, 192.0.2.7,
//! 2001:db8::7) and, over a second veth (pod eth1 10.245.0.5/24, world 10.245.0.1),
//! 198.51.100.7.
//! Servers are `meshtables-probe serve` processes; everything is killed and both namespaces
//! deleted on drop, even when the test fails.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::net;

static NEXT: AtomicUsize = AtomicUsize::new(0);

pub fn probe_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshtables-probe"))
}

/// Where a connection or datagram ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub name: String,
    pub port: u16,
    pub peer: String,
    pub local: String,
    pub orig: String,
}

impl Answer {
    fn parse(line: &str) -> Option<Answer> {
        let get = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{k}=")))
                .map(str::to_string)
        };
        Some(Answer {
            name: get("name")?,
            port: get("port")?.parse().ok()?,
            peer: get("peer")?,
            local: get("local")?,
            orig: get("orig")?,
        })
    }
    /// `name:port`, the short form assertions compare.
    pub fn at(&self) -> String {
        format!("{}:{}", self.name, self.port)
    }
}

pub struct Topo {
    pub pod: String,
    pub world: String,
    children: Vec<Child>,
}

fn ip(args: &[&str]) {
    let o = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Topo {
    pub fn new() -> Topo {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}x{n}", std::process::id());
        let t = Topo {
            pod: format!("mtpod{id}"),
            world: format!("mtwld{id}"),
            children: Vec::new(),
        };
        let (p, w) = (t.pod.as_str(), t.world.as_str());
        ip(&["netns", "add", p]);
        ip(&["netns", "add", w]);
        // IPv6 addresses skip duplicate address detection: usable at once, no waiting.
        let add = |ns: &str, cidr: &str, dev: &str| {
            let mut a = vec!["-n", ns, "addr", "add", cidr, "dev", dev];
            if cidr.contains(':') {
                a.push("nodad");
            }
            ip(&a);
        };
        for l in &net::LINKS {
            let tmp_w = format!("t{}{n}", l.world_if);
            ip(&[
                "-n", p, "link", "add", l.pod_if, "type", "veth", "peer", "name", &tmp_w, "netns",
                w,
            ]);
            ip(&["-n", w, "link", "set", &tmp_w, "name", l.world_if]);
            l.pod.iter().for_each(|c| add(p, c, l.pod_if));
            l.world.iter().for_each(|c| add(w, c, l.world_if));
            ip(&["-n", p, "link", "set", l.pod_if, "up"]);
            ip(&["-n", w, "link", "set", l.world_if, "up"]);
        }
        for ns in [p, w] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        for a in net::REMOTES {
            let host = if a.contains(':') { "128" } else { "32" };
            add(w, &format!("{a}/{host}"), "lo");
        }
        for (to, via) in net::ROUTES {
            ip(&["-n", p, "route", "add", to, "via", via]);
        }
        t
    }

    fn exec(&self, ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        super::clear_our_env(&mut c);
        c
    }

    /// Starts `meshtables-probe serve ARGS` in `ns` and waits until it listens.
    pub fn serve(&mut self, ns: &str, args: &[&str]) {
        let mut child = self
            .exec(ns)
            .arg(probe_bin())
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("probe starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "probe serve {args:?} did not start");
        self.children.push(child);
    }

    /// The usual cast: the world answers on 80, 8080, 9090 and DNS; the pod runs the fake
    /// proxy (uid 1337) and an app.
    pub fn standard(&mut self, tproxy: bool) {
        let w = self.world.clone();
        let p = self.pod.clone();
        self.serve(&w, &["world", "--tcp", "53,80,8080,9090", "--udp", "53"]);
        let mut proxy = vec![
            "proxy",
            "--tcp",
            "15001,15006,15053",
            "--udp",
            "15053",
            "--as",
            "1337:1337",
        ];
        if tproxy {
            proxy.push("--transparent");
        }
        self.serve(&p, &proxy);
        self.serve(
            &p,
            &["app", "--tcp", "8080,9090,15090", "--as", "1000:1000"],
        );
    }

    fn client(&self, ns: &str, proto: &str, ip: &str, port: u16, user: &str) -> Option<Answer> {
        self.client_with(ns, proto, ip, port, &["--as", user])
    }

    /// A flow from `ns` with the probe's client options `opts` (`--as`, `--mark`, `--from`,
    /// `--transparent`).
    pub fn client_with(
        &self,
        ns: &str,
        proto: &str,
        ip: &str,
        port: u16,
        opts: &[&str],
    ) -> Option<Answer> {
        let o = self
            .exec(ns)
            .arg(probe_bin())
            .args([proto, ip, &port.to_string(), "--timeout", "1500"])
            .args(opts)
            .output()
            .unwrap();
        Answer::parse(&String::from_utf8_lossy(&o.stdout))
    }

    /// Adds `cidr` to the world's loopback (a source its clients can use, as the node's
    /// probe source).
    pub fn world_address(&self, cidr: &str) {
        ip(&["-n", &self.world, "addr", "add", cidr, "dev", "lo"]);
    }

    /// Runs `ip ARGS` in the pod.
    pub fn pod_ip(&self, args: &[&str]) {
        let mut a = vec!["-n", self.pod.as_str()];
        a.extend(args);
        ip(&a);
    }

    /// A TCP connection from the pod as `user` (`UID:GID`).
    pub fn out_tcp(&self, ip: &str, port: u16, user: &str) -> Option<Answer> {
        self.client(&self.pod, "tcp", ip, port, user)
    }
    pub fn out_udp(&self, ip: &str, port: u16, user: &str) -> Option<Answer> {
        self.client(&self.pod, "udp", ip, port, user)
    }
    /// A TCP connection from the world to the pod.
    pub fn in_tcp(&self, ip: &str, port: u16) -> Option<Answer> {
        self.client(&self.world, "tcp", ip, port, "0:0")
    }

    /// Runs meshtables in the pod; panics with its stderr if it fails.
    pub fn meshtables(&self, args: &[&str]) -> Output {
        let o = self
            .exec(&self.pod)
            .arg(super::bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "meshtables {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Runs meshtables in the world (the namespace that plays the node); panics with its
    /// stderr if it fails.
    pub fn meshtables_in_world(&self, args: &[&str]) -> Output {
        let o = self
            .exec(&self.world)
            .arg(super::bin())
            .args(args)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "meshtables {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        o
    }

    /// Runs meshtables in the pod as `uid:gid` without asserting success.
    pub fn meshtables_as(&self, user: &str, args: &[&str]) -> Output {
        let (u, g) = user.split_once(':').unwrap();
        self.exec(&self.pod)
            .args(["setpriv", "--reuid", u, "--regid", g, "--clear-groups"])
            .arg(super::bin())
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.pod, &self.world] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}
