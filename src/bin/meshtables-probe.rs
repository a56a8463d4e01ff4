//! meshtables-probe: the traffic probe the tests (and the container e2e) use to see where
//! packets actually go.
//!
//! - `serve NAME [--tcp P,..] [--udp P,..] [--transparent] [--as UID:GID]`: listens on every
//!   port (dual-stack `[::]`), prints `ready` once listening, and answers each TCP connection
//!   and UDP datagram with one line:
//!   `name=NAME port=LISTEN_PORT peer=IP:PORT local=IP:PORT orig=IP:PORT`, where `orig` is the
//!   original destination from SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST (TCP; `-` for UDP).
//!   `--transparent` sets IP_TRANSPARENT (TPROXY); sockets are made before dropping to
//!   `--as`, so the proxy can run as uid 1337 like Envoy.
//! - `tcp HOST PORT [--as UID:GID] [--timeout MS]` / `udp HOST PORT ...`: sends one request as
//!   that user and prints the answer line; exit 0 with an answer, 1 without.
//! - `pause`: sleeps forever (the pod's namespace holder in the container e2e).

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
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

fn any(port: u16) -> SockaddrIn6 {
    SockaddrIn6::from(std::net::SocketAddrV6::new(
        Ipv6Addr::UNSPECIFIED,
        port,
        0,
        0,
    ))
}

fn tcp_listener(port: u16, transparent: bool) -> TcpListener {
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
    socket::bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &any(port))
        .unwrap_or_else(|e| die(&format!("bind tcp {port}: {e}")));
    let backlog = socket::Backlog::new(64).unwrap_or_else(|e| die(&format!("backlog: {e}")));
    socket::listen(&fd, backlog).unwrap_or_else(|e| die(&format!("listen: {e}")));
    TcpListener::from(fd)
}

fn udp_socket(port: u16) -> UdpSocket {
    let fd: OwnedFd = socket::socket(
        AddressFamily::Inet6,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap_or_else(|e| die(&format!("socket: {e}")));
    setsockopt(&fd, sockopt::ReuseAddr, &true).ok();
    setsockopt(&fd, sockopt::Ipv6V6Only, &false).ok();
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
    let tcp: Vec<(u16, TcpListener)> = ports(flag(args, "--tcp"))
        .into_iter()
        .map(|p| (p, tcp_listener(p, transparent)))
        .collect();
    let udp: Vec<(u16, UdpSocket)> = ports(flag(args, "--udp"))
        .into_iter()
        .map(|p| (p, udp_socket(p)))
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

fn client(args: &[String], udp: bool) {
    let to = target(args);
    let timeout = Duration::from_millis(
        flag(args, "--timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(2000),
    );
    drop_to(flag(args, "--as"));
    let answer = if udp {
        let any: IpAddr = if to.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let bind = SocketAddr::new(any, 0);
        let u = UdpSocket::bind(bind).unwrap_or_else(|e| die(&format!("bind: {e}")));
        u.set_read_timeout(Some(timeout)).ok();
        u.send_to(b"q", to).ok();
        let mut buf = [0u8; 512];
        u.recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    } else {
        TcpStream::connect_timeout(&to, timeout).ok().and_then(|s| {
            s.set_read_timeout(Some(timeout)).ok();
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
            "usage: meshtables-probe serve NAME [--tcp P,..] [--udp P,..] [--transparent] [--as UID:GID] | tcp|udp IP PORT [--as UID:GID] [--timeout MS]",
        ),
    }
}
