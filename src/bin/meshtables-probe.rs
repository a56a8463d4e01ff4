//! meshtables-probe: the traffic probe the tests (and the container e2e) use to see where
//! packets actually go.
//!
//! - `serve NAME [--tcp P,..] [--udp P,..] [--transparent] [--mark M] [--as UID:GID]`: listens
//!   on every port (dual-stack `[::]`), prints `ready` once listening, and answers each TCP
//!   connection and UDP datagram with one line:
//!   `name=NAME port=LISTEN_PORT peer=IP:PORT local=IP:PORT orig=IP:PORT`, where `orig` is the
//!   original destination from SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST (TCP; `-` for UDP).
//!   `--transparent` sets IP_TRANSPARENT (TPROXY); `--mark` sets SO_MARK on every socket (a
//!   stand-in ztunnel: its sockets carry 0x539); sockets are made before dropping to `--as`,
//!   so the proxy can run as uid 1337 like Envoy.
//! - `tcp HOST PORT [--as UID:GID] [--timeout MS] [--mark M] [--from IP [--transparent]]` /
//!   `udp HOST PORT ...`: sends one request as that user (from that source address, which
//!   `--transparent` lets be another host's, as ztunnel connects to a pod's app as the
//!   client) and prints the answer line; exit 0 with an answer, 1 without.
//! - `pause`: sleeps forever (the pod's namespace holder in the container e2e).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, SockaddrIn6, setsockopt, sockopt};

fn die(msg: &str) -> ! {
    eprintln!("meshtables-probe: {msg}");
    std::process::exit(2)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn ports(v: Option<String>) -> Vec<u16> {
    v.map(|s| {
        s.split(',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or_else(|_| die("bad port")))
            .collect()
    })
    .unwrap_or_default()
}

/// setgid/setuid to `UID:GID` (no supplementary groups).
fn drop_to(spec: Option<String>) {
    let Some(spec) = spec else { return };
    let (u, g) = spec.split_once(':').unwrap_or((&spec, &spec));
    let (u, g): (u32, u32) = (
        u.parse().unwrap_or_else(|_| die("bad uid")),
        g.parse().unwrap_or_else(|_| die("bad gid")),
    );
    nix::unistd::setgroups(&[]).unwrap_or_else(|e| die(&format!("setgroups: {e}")));
    nix::unistd::setgid(g.into()).unwrap_or_else(|e| die(&format!("setgid: {e}")));
    nix::unistd::setuid(u.into()).unwrap_or_else(|e| die(&format!("setuid: {e}")));
}

/// `--mark M`: decimal or `0x` hex.
fn mark(args: &[String]) -> Option<u32> {
    flag(args, "--mark").map(|m| {
        match m.strip_prefix("0x") {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => m.parse().ok(),
        }
        .unwrap_or_else(|| die("bad mark"))
    })
}

/// SO_MARK on `fd`, when asked.
fn set_mark<F: std::os::fd::AsFd>(fd: &F, m: Option<u32>) {
    if let Some(m) = m {
        setsockopt(fd, sockopt::Mark, &m).unwrap_or_else(|e| die(&format!("SO_MARK: {e}")));
    }
}

fn any(port: u16) -> SockaddrIn6 {
    SockaddrIn6::from(std::net::SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        port,
        0,
        0,
    ))
}

fn tcp_listener(port: u16, transparent: bool, m: Option<u32>) -> TcpListener {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet6,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap_or_else(|e| die(&format!("socket: {e}")));
    setsockopt(&fd, sockopt::ReuseAddr, &true).ok();
    setsockopt(&fd, sockopt::Ipv6V6Only, &false).ok();
    if transparent {
        setsockopt(&fd, sockopt::IpTransparent, &true)
            .unwrap_or_else(|e| die(&format!("IP_TRANSPARENT: {e}")));
    }
    set_mark(&fd, m);
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any(port))
        .unwrap_or_else(|e| die(&format!("bind tcp {port}: {e}")));
    let backlog = socket::Backlog::new(64).unwrap_or_else(|e| die(&format!("backlog: {e}")));
    socket::listen(&fd, backlog).unwrap_or_else(|e| die(&format!("listen: {e}")));
    TcpListener::from(fd)
}

fn udp_socket(port: u16, m: Option<u32>) -> UdpSocket {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap_or_else(|e| die(&format!("socket: {e}")));
    setsockopt(&fd, sockopt::ReuseAddr, &true).ok();
    setsockopt(&fd, sockopt::Ipv6V6Only, &false).ok();
    set_mark(&fd, m);
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any(port))
        .unwrap_or_else(|e| die(&format!("bind udp {port}: {e}")));
    UdpSocket::from(fd)
}

/// `::ffff:a.b.c.d` → `a.b.c.d`, so answers read the same for both families.
fn plain(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn original_dst(s: &TcpStream) -> String {
    if let Ok(a) = socket::getsockopt(s, sockopt::OriginalDst) {
        let a = SocketAddr::from(std::net::SocketAddrV4::new(
            u32::from_be(a.sin_addr.s_addr).into(),
            u16::from_be(a.sin_port),
        ));
        return a.to_string();
    }
    if let Ok(a) = socket::getsockopt(s, sockopt::Ip6tOriginalDst) {
        let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
        return plain(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port))).to_string();
    }
    "-".into()
}

fn serve(args: &[String]) {
    let name = args
        .first()
        .cloned()
        .unwrap_or_else(|| die("serve needs a NAME"));
    let transparent = args.iter().any(|a| a == "--transparent");
    let m = mark(args);
    let tcp: Vec<(u16, TcpListener)> = ports(flag(args, "--tcp"))
        .into_iter()
        .map(|p| (p, tcp_listener(p, transparent, m)))
        .collect();
    let udp: Vec<(u16, UdpSocket)> = ports(flag(args, "--udp"))
        .into_iter()
        .map(|p| (p, udp_socket(p, m)))
        .collect();
    drop_to(flag(args, "--as"));
    println!("ready");
    std::io::stdout().flush().ok();
    let mut threads = Vec::new();
    for (port, l) in tcp {
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let line = format!(
                    "name={name} port={port} peer={} local={} orig={}\n",
                    s.peer_addr()
                        .map(plain)
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    s.local_addr()
                        .map(plain)
                        .map(|a| a.to_string())
                        .unwrap_or_default(),
                    original_dst(&s)
                );
                let mut s = s;
                let _ = s.write_all(line.as_bytes());
            }
        }));
    }
    for (port, u) in udp {
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((_, from)) = u.recv_from(&mut buf) {
                let local = u
                    .local_addr()
                    .map(plain)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let line = format!(
                    "name={name} port={port} peer={} local={local} orig=-\n",
                    plain(from)
                );
                let _ = u.send_to(line.as_bytes(), from);
            }
        }));
    }
    for t in threads {
        let _ = t.join();
    }
}

fn target(args: &[String]) -> SocketAddr {
    let host: IpAddr = args
        .first()
        .and_then(|h| h.parse().ok())
        .unwrap_or_else(|| die("need an IP"));
    let port: u16 = args
        .get(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| die("need a port"));
    SocketAddr::new(host, port)
}

/// A client socket for `to`: marked, bound to `from` (transparently, when asked), with
/// `timeout` for connect and reads.
fn client_socket(
    to: SocketAddr,
    kind: SockType,
    from: Option<IpAddr>,
    transparent: bool,
    m: Option<u32>,
    timeout: Duration,
) -> OwnedFd {
    let family = if to.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd: OwnedFd = socket::socket(family, kind, SockFlag::SOCK_CLOEXEC, None)
        .unwrap_or_else(|e| die(&format!("socket: {e}")));
    set_mark(&fd, m);
    if transparent {
        setsockopt(&fd, sockopt::IpTransparent, &true)
            .unwrap_or_else(|e| die(&format!("IP_TRANSPARENT: {e}")));
    }
    let tv =
        nix::sys::time::TimeVal::new(timeout.as_secs() as i64, i64::from(timeout.subsec_micros()));
    setsockopt(&fd, sockopt::SendTimeout, &tv).ok();
    setsockopt(&fd, sockopt::ReceiveTimeout, &tv).ok();
    if let Some(from) = from {
        let a = socket::SockaddrStorage::from(SocketAddr::new(from, 0));
        socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &a)
            .unwrap_or_else(|e| die(&format!("bind {from}: {e}")));
    }
    fd
}

fn client(args: &[String], udp: bool) {
    let to = target(args);
    let timeout = Duration::from_millis(
        flag(args, "--timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(2000),
    );
    let from: Option<IpAddr> =
        flag(args, "--from").map(|f| f.parse().unwrap_or_else(|_| die("bad --from")));
    let transparent = args.iter().any(|a| a == "--transparent");
    let m = mark(args);
    let kind = if udp {
        SockType::Datagram
    } else {
        SockType::Stream
    };
    // A socket is owned by the uid that makes it (owner matches test that): made after
    // dropping to `--as`, unless a mark or a transparent bind needs the privilege first.
    let privileged = m.is_some() || transparent;
    let user = flag(args, "--as");
    if !privileged {
        drop_to(user.clone());
    }
    let fd = client_socket(to, kind, from, transparent, m, timeout);
    if privileged {
        drop_to(user);
    }
    let dst = socket::SockaddrStorage::from(to);
    let answer = if udp {
        let u = UdpSocket::from(fd);
        u.send_to(b"q", to).ok();
        let mut buf = [0u8; 512];
        u.recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    } else {
        socket::connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &dst)
            .ok()
            .and_then(|()| {
                let s = TcpStream::from(fd);
                let mut line = String::new();
                BufReader::new(s)
                    .read_line(&mut line)
                    .ok()
                    .filter(|n| *n > 0)
                    .map(|_| line)
            })
    };
    match answer {
        Some(a) => print!("{}", if a.ends_with('\n') { a } else { a + "\n" }),
        None => {
            println!("none");
            std::process::exit(1)
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("tcp") => client(&args[1..], false),
        Some("udp") => client(&args[1..], true),
        // A pause container for the container e2e: holds the pod's network namespace.
        Some("pause") => loop {
            std::thread::sleep(Duration::from_secs(3600))
        },
        _ => die(
            "usage: meshtables-probe serve NAME [--tcp P,..] [--udp P,..] [--transparent] [--mark M] [--as UID:GID] | tcp|udp IP PORT [--as UID:GID] [--timeout MS] [--mark M] [--from IP [--transparent]]",
        ),
    }
}
