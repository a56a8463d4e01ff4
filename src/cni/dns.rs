//! Host names without NSS: the CNI plugin runs on the node, and meshtables never loads NSS
//! modules (LDAP, OS Login). An IP literal is used as it is, else `/etc/hosts`, else A/AAAA
//! queries over UDP to the servers in `/etc/resolv.conf`. istio-cni's kubeconfig names the API
//! server by IP (`KUBERNETES_SERVICE_HOST`), so this is the fallback, not the common path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::time::Duration;

/// A name that could not be resolved, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {host}: {why}")]
pub struct ResolveError {
    pub host: String,
    pub why: String,
}

/// Addresses for `host`: an IP literal, `/etc/hosts`, then DNS over UDP.
pub fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let hosts = crate::host::read_small("/etc/hosts").unwrap_or_default();
    let found = hosts_lookup(&hosts, host);
    if !found.is_empty() {
        return Ok(found
            .into_iter()
            .map(|ip| SocketAddr::new(ip, port))
            .collect());
    }
    let resolv = crate::host::read_small("/etc/resolv.conf").unwrap_or_default();
    let servers = crate::host::resolv_conf_servers(&resolv);
    if servers.is_empty() {
        return Err(ResolveError {
            host: host.into(),
            why: "not in /etc/hosts and no nameserver in /etc/resolv.conf".into(),
        });
    }
    let mut why = String::new();
    for server in servers.iter().take(3) {
        let mut ips = Vec::new();
        for qtype in [1u16, 28] {
            match dns_query(*server, host, qtype) {
                Ok(found) => ips.extend(found),
                Err(e) => why = format!("{server}: {e}"),
            }
        }
        if !ips.is_empty() {
            return Ok(ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect());
        }
    }
    Err(ResolveError {
        host: host.into(),
        why: if why.is_empty() {
            "no A or AAAA record".into()
        } else {
            why
        },
    })
}

/// Addresses of `name` in hosts-format `text`.
pub fn hosts_lookup(text: &str, name: &str) -> Vec<IpAddr> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let ip: IpAddr = f.next()?.parse().ok()?;
            f.any(|n| n.eq_ignore_ascii_case(name)).then_some(ip)
        })
        .collect()
}

/// One recursive-desired query of `qtype` (1 = A, 28 = AAAA) for `name`.
fn dns_query(server: IpAddr, name: &str, qtype: u16) -> io::Result<Vec<IpAddr>> {
    let id = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        & 0xffff) as u16;
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; one question
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(io::Error::other("not a host name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    let any: IpAddr = if server.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let bind = SocketAddr::new(any, 0);
    let sock = UdpSocket::bind(bind)?;
    sock.set_read_timeout(Some(Duration::from_secs(2)))?;
    sock.connect(SocketAddr::new(server, 53))?;
    sock.send(&q)?;
    let mut buf = [0u8; 1500];
    let n = sock.recv(&mut buf)?;
    parse_answers(&buf[..n], id, qtype).ok_or_else(|| io::Error::other("malformed DNS answer"))
}

/// The A/AAAA records of a DNS response (CNAMEs the server followed come along in it).
fn parse_answers(m: &[u8], id: u16, qtype: u16) -> Option<Vec<IpAddr>> {
    let u16_at = |i: usize| Some(u16::from_be_bytes([*m.get(i)?, *m.get(i + 1)?]));
    if u16_at(0)? != id || m.get(3)? & 0x0f != 0 {
        return (u16_at(0)? == id).then(Vec::new);
    }
    let (qd, an) = (u16_at(4)?, u16_at(6)?);
    let skip_name = |mut i: usize| -> Option<usize> {
        loop {
            let len = *m.get(i)? as usize;
            if len == 0 {
                return Some(i + 1);
            }
            if len & 0xc0 == 0xc0 {
                return Some(i + 2);
            }
            i += len + 1;
        }
    };
    let mut i = 12;
    for _ in 0..qd {
        i = skip_name(i)? + 4;
    }
    let mut out = Vec::new();
    for _ in 0..an {
        i = skip_name(i)?;
        let (rtype, rdlen) = (u16_at(i)?, u16_at(i + 8)? as usize);
        let data = m.get(i + 10..i + 10 + rdlen)?;
        match (rtype, qtype, rdlen) {
            (1, 1, 4) => out.push(IpAddr::from(<[u8; 4]>::try_from(data).ok()?)),
            (28, 28, 16) => out.push(IpAddr::from(<[u8; 16]>::try_from(data).ok()?)),
            _ => {}
        }
        i += 10 + rdlen;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_file() {
        let text = "127.0.0.1 localhost\n10.96.0.1  kubernetes kubernetes.default # api\n::1 ip6-localhost\n";
        assert_eq!(
            hosts_lookup(text, "kubernetes.default"),
            ["10.96.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(text, "api").is_empty());
    }

    #[test]
    fn dns_answers() {
        // Response to id 0x1234 for "a.b" A: one CNAME-less answer 10.0.0.7 (name by pointer).
        let mut m = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
        m.extend_from_slice(&[1, b'a', 1, b'b', 0, 0, 1, 0, 1]);
        m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 7]);
        assert_eq!(
            parse_answers(&m, 0x1234, 1).unwrap(),
            ["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        assert!(parse_answers(&m, 0x9999, 1).is_none());
    }
}
