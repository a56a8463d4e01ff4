//! `--run-validation`: upstream's istio-validation probe (docs/upstream.md, "Validation"). Listeners on the
//! loopback address at the proxy and inbound ports; a client dials `127.0.0.6:<probe port>`
//! (or `[::6]`) from `127.0.0.1` once a second; the rules must redirect it (the client runs
//! as the proxy uid in the istio-validation container, so it matches the hairpin rule) to a
//! listener, which checks that the original destination port is the probe port. Failure
//! within `--probe-timeout` exits 126 with upstream's message.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};

use crate::options::Validation;

/// Upstream's message for a failed validation (exit status 126).
pub const FAILURE_MESSAGE: &str = "iptables validation failed; workload is not ready for Istio.\nWhen using Istio CNI, this can occur if a pod is scheduled before the node is ready.\n\nIf installed with 'cni.repair.deletePods=true', this pod should automatically be deleted and retry.\nOtherwise, this pod will need to be manually removed so that it is scheduled on a node with istio-cni running, allowing iptables rules to be established.\n";

#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    #[error("no listener available: {0}")]
    NoListener(String),
    #[error("validation timeout")]
    Timeout,
}

fn original_port(s: &TcpStream) -> Option<u16> {
    if let Ok(a) = getsockopt(s, sockopt::OriginalDst) {
        return Some(u16::from_be(a.sin_port));
    }
    getsockopt(s, sockopt::Ip6tOriginalDst)
        .ok()
        .map(|a| u16::from_be(a.sin6_port))
}

/// Runs the probe; `Ok` once a redirected connection with the probe port arrived.
pub fn run(cfg: &Validation) -> Result<(), ValidationError> {
    let v6 = cfg.ipv6;
    let (lo, src, dst): (IpAddr, IpAddr, IpAddr) = if v6 {
        (
            Ipv6Addr::LOCALHOST.into(),
            Ipv6Addr::LOCALHOST.into(),
            Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0, 6).into(),
        )
    } else {
        (
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::LOCALHOST.into(),
            Ipv4Addr::new(127, 0, 0, 6).into(),
        )
    };
    let probe = cfg.probe_port.get();
    let (tx, rx) = mpsc::channel::<()>();
    let mut bound = 0;
    let mut addrs = Vec::new();
    for port in [cfg.proxy_port.get(), cfg.inbound_capture_port.get()] {
        let addr = SocketAddr::new(lo, port);
        addrs.push(addr.to_string());
        let Ok(l) = TcpListener::bind(addr) else {
            continue;
        };
        let tx = tx.clone();
        let listener = std::thread::Builder::new().spawn(move || {
            for mut s in l.incoming().flatten() {
                let port = original_port(&s).unwrap_or(0);
                let _ = s.write_all(&port.to_be_bytes());
                if port == probe {
                    let _ = tx.send(());
                }
            }
        });
        // A thread that cannot be started (memory limits) is a listener that is not there.
        bound += usize::from(listener.is_ok());
    }
    if bound == 0 {
        return Err(ValidationError::NoListener(addrs.join(", ")));
    }
    let deadline = Instant::now() + cfg.timeout;
    loop {
        if let Some(left) = deadline.checked_duration_since(Instant::now()) {
            dial(
                src,
                SocketAddr::new(dst, probe),
                left.min(Duration::from_secs(1)),
            );
        }
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(()) => return Ok(()),
            Err(_) if Instant::now() >= deadline => return Err(ValidationError::Timeout),
            Err(_) => std::thread::sleep(
                Duration::from_millis(900).min(deadline.saturating_duration_since(Instant::now())),
            ),
        }
    }
}

/// One connection attempt from `src` (so the rules see upstream's source address).
fn dial(src: IpAddr, to: SocketAddr, timeout: Duration) {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrStorage, bind, socket};
    let family = if src.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let Ok(fd) = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None) else {
        return;
    };
    let local = SockaddrStorage::from(SocketAddr::new(src, 0));
    if bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &local).is_err() {
        return;
    }
    let sock = std::net::TcpStream::from(fd);
    let _ = sock.set_read_timeout(Some(timeout));
    let target = SockaddrStorage::from(to);
    if nix::sys::socket::connect(std::os::fd::AsRawFd::as_raw_fd(&sock), &target).is_ok() {
        let mut buf = [0u8; 2];
        let _ = (&sock).read(&mut buf);
    }
}
