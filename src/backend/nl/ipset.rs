//! ipsets over nfnetlink (subsystem `NFNL_SUBSYS_IPSET`), as the kernel's ip_set core and
//! the `ipset` tool speak it (linux/netfilter/ipset/ip_set.h; upstream's agent does the same
//! through its netlink library, not through the tool): create a `hash:ip` set with comments,
//! destroy one, list its members, add one (with `-exist`: an existing member's comment is
//! replaced) or delete one. No crate speaks this protocol in pure Rust, so the few attributes
//! are written here, over the shared transport. Set names are the caller's constants.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{NLA_F_NESTED, NLA_F_NET_BYTEORDER, NLM_F_EXCL, NetlinkBuffer};
use nix::errno::Errno;

use super::transport::Transport;

/// The protocol version this speaks (ipset 7), and the subsystem.
const IPSET_PROTOCOL: u8 = 7;
const NFNL_SUBSYS_IPSET: u16 = 6;

// Commands.
const CMD_CREATE: u16 = 2;
const CMD_DESTROY: u16 = 3;
const CMD_LIST: u16 = 7;
const CMD_ADD: u16 = 9;
const CMD_DEL: u16 = 10;

// Command-level attributes.
const ATTR_PROTOCOL: u16 = 1;
const ATTR_SETNAME: u16 = 2;
const ATTR_TYPENAME: u16 = 3;
const ATTR_REVISION: u16 = 4;
const ATTR_FAMILY: u16 = 5;
const ATTR_DATA: u16 = 7;
const ATTR_ADT: u16 = 8;
// Data attributes.
const ATTR_IP: u16 = 1;
const ATTR_CADT_FLAGS: u16 = 8;
const ATTR_COMMENT: u16 = 26;
const ATTR_IPADDR_IPV4: u16 = 1;
const ATTR_IPADDR_IPV6: u16 = 2;
/// `IPSET_FLAG_WITH_COMMENTS`: the set keeps a comment per member.
const FLAG_WITH_COMMENTS: u32 = 1 << 4;
/// hash:ip revision 4 (comments since 2, skbinfo 4): in every kernel upstream supports.
const HASH_IP_REVISION: u8 = 4;
/// The longest comment the kernel keeps (`IPSET_MAX_COMMENT_SIZE`).
pub const MAX_COMMENT: usize = 255;

/// Errors of ipset work.
#[derive(Debug, thiserror::Error)]
pub enum IpsetError {
    #[error("netlink: {context}: {source}")]
    Io {
        context: &'static str,
        source: io::Error,
    },
    #[error("the kernel refused `{what}`: {errno}{hint}")]
    Refused {
        what: String,
        errno: Errno,
        hint: &'static str,
    },
}

/// A TLV attribute, padded to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = 4 + value.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, body: &[u8]) {
    attr(out, kind | NLA_F_NESTED, body);
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn family_of(a: IpAddr) -> u8 {
    (if a.is_ipv4() {
        libc::NFPROTO_IPV4
    } else {
        libc::NFPROTO_IPV6
    }) as u8
}

/// One ipset request: netlink header (the transport stamps flags and sequence), nfgenmsg,
/// the protocol version, the set's name, then `body`.
fn request(cmd: u16, family: u8, set: &str, body: &[u8]) -> Vec<u8> {
    let mut payload = vec![family, 0 /* NFNETLINK_V0 */, 0, 0];
    attr(&mut payload, ATTR_PROTOCOL, &[IPSET_PROTOCOL]);
    attr(&mut payload, ATTR_SETNAME, &cstr(set));
    payload.extend_from_slice(body);
    let len = 16 + payload.len();
    let mut msg = vec![0u8; 16];
    {
        let mut h = NetlinkBuffer::new(&mut msg[..]);
        h.set_length(len as u32);
        h.set_message_type((NFNL_SUBSYS_IPSET << 8) | cmd);
    }
    msg.extend_from_slice(&payload);
    msg
}

/// `IPSET_ATTR_IP { IPADDR_IPV4|IPV6 }`.
fn ip_attr(out: &mut Vec<u8>, a: IpAddr) {
    let mut inner = Vec::new();
    match a {
        IpAddr::V4(v4) => attr(
            &mut inner,
            ATTR_IPADDR_IPV4 | NLA_F_NET_BYTEORDER,
            &v4.octets(),
        ),
        IpAddr::V6(v6) => attr(
            &mut inner,
            ATTR_IPADDR_IPV6 | NLA_F_NET_BYTEORDER,
            &v6.octets(),
        ),
    }
    nested(out, ATTR_IP, &inner);
}

/// An ipset session: one nfnetlink socket.
pub struct Ipset {
    nl: Transport,
}

/// What a set is: its type, family (`NFPROTO_*`) and whether it keeps comments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Header {
    pub kind: String,
    pub family: u8,
    pub comments: bool,
}

impl Header {
    /// Whether this is what `create_hash_ip` makes.
    pub fn is_hash_ip(&self, v6: bool) -> bool {
        let family = (if v6 {
            libc::NFPROTO_IPV6
        } else {
            libc::NFPROTO_IPV4
        }) as u8;
        self.kind == "hash:ip" && self.family == family && self.comments
    }
}

fn text(v: &[u8]) -> String {
    let end = v.iter().position(|b| *b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

/// One member as listed: its address and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub addr: IpAddr,
    pub comment: Option<String>,
}

impl Ipset {
    pub fn open() -> Result<Ipset, IpsetError> {
        let nl = Transport::netfilter().map_err(|source| IpsetError::Io {
            context: "opening nfnetlink for ipset",
            source,
        })?;
        Ok(Ipset { nl })
    }

    fn acked(
        &mut self,
        what: String,
        msg: Vec<u8>,
        flags: u16,
        hint: &'static str,
    ) -> Result<(), IpsetError> {
        match self.nl.acked(msg, flags) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(errno)) => Err(IpsetError::Refused { what, errno, hint }),
            Err(source) => Err(IpsetError::Io {
                context: "ipset request",
                source,
            }),
        }
    }

    /// `ipset create NAME hash:ip family inet|inet6 comment -exist`: made if missing, kept if
    /// it exists with exactly these parameters; one of the name with other parameters (no
    /// comments, another type or family) is refused by the kernel and reported.
    pub fn create_hash_ip(&mut self, name: &str, v6: bool) -> Result<(), IpsetError> {
        let family = (if v6 {
            libc::NFPROTO_IPV6
        } else {
            libc::NFPROTO_IPV4
        }) as u8;
        let mut body = Vec::new();
        attr(&mut body, ATTR_TYPENAME, &cstr("hash:ip"));
        attr(&mut body, ATTR_REVISION, &[HASH_IP_REVISION]);
        attr(&mut body, ATTR_FAMILY, &[family]);
        let mut data = Vec::new();
        attr(
            &mut data,
            ATTR_CADT_FLAGS | NLA_F_NET_BYTEORDER,
            &FLAG_WITH_COMMENTS.to_be_bytes(),
        );
        nested(&mut body, ATTR_DATA, &data);
        let fam = if v6 { "inet6" } else { "inet" };
        self.acked(
            format!("ipset create {name} hash:ip family {fam} comment"),
            request(CMD_CREATE, family, name, &body),
            0,
            " (an ipset of this name with other parameters is not ours)",
        )
    }

    /// `ipset destroy NAME`; `Ok(false)` when there is none.
    pub fn destroy(&mut self, name: &str) -> Result<bool, IpsetError> {
        match self.acked(
            format!("ipset destroy {name}"),
            request(CMD_DESTROY, libc::NFPROTO_UNSPEC as u8, name, &[]),
            0,
            " (a rule still uses it)",
        ) {
            Ok(()) => Ok(true),
            Err(IpsetError::Refused {
                errno: Errno::ENOENT,
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// What set `name` is (`None`: no such set).
    pub fn header(&mut self, name: &str) -> Result<Option<Header>, IpsetError> {
        Ok(self.list(name)?.map(|(h, _)| h))
    }

    /// The members of `name` (`None`: no such set).
    pub fn members(&mut self, name: &str) -> Result<Option<Vec<Member>>, IpsetError> {
        Ok(self.list(name)?.map(|(_, m)| m))
    }

    /// `ipset list NAME`: its header and members (`None`: no such set).
    fn list(&mut self, name: &str) -> Result<Option<(Header, Vec<Member>)>, IpsetError> {
        let msg = request(CMD_LIST, libc::NFPROTO_UNSPEC as u8, name, &[]);
        let replies = match self.nl.dump(msg) {
            Ok(Ok(r)) => r,
            Ok(Err(Errno::ENOENT)) => return Ok(None),
            Ok(Err(errno)) => {
                return Err(IpsetError::Refused {
                    what: format!("ipset list {name}"),
                    errno,
                    hint: "",
                });
            }
            Err(source) => {
                return Err(IpsetError::Io {
                    context: "listing an ipset",
                    source,
                });
            }
        };
        let mut out = Vec::new();
        let mut header = Header::default();
        for r in &replies {
            // Past the netlink header and nfgenmsg: the command's attributes.
            let Some(attrs) = r.get(20..) else { continue };
            for (kind, value) in tlvs(attrs) {
                match kind {
                    ATTR_TYPENAME => header.kind = text(value),
                    ATTR_FAMILY => header.family = value.first().copied().unwrap_or(0),
                    ATTR_DATA => {
                        for (k, v) in tlvs(value) {
                            if k == ATTR_CADT_FLAGS && v.len() == 4 {
                                let flags = u32::from_be_bytes([v[0], v[1], v[2], v[3]]);
                                header.comments = flags & FLAG_WITH_COMMENTS != 0;
                            }
                        }
                    }
                    ATTR_ADT => {
                        for (_, entry) in tlvs(value) {
                            out.extend(member(entry));
                        }
                    }
                    _ => {}
                }
            }
        }
        Ok(Some((header, out)))
    }

    /// `ipset add NAME ADDR comment C -exist`: added, or its comment replaced.
    pub fn add(&mut self, name: &str, a: IpAddr, comment: &str) -> Result<(), IpsetError> {
        let mut data = Vec::new();
        ip_attr(&mut data, a);
        attr(&mut data, ATTR_COMMENT, &cstr(comment));
        let mut body = Vec::new();
        nested(&mut body, ATTR_DATA, &data);
        // Without NLM_F_EXCL the kernel's IPSET_FLAG_EXIST: an existing member is updated.
        self.acked(
            format!("ipset add {name} {a} comment \"{comment}\" -exist"),
            request(CMD_ADD, family_of(a), name, &body),
            0,
            "",
        )
    }

    /// `ipset del NAME ADDR`.
    pub fn del(&mut self, name: &str, a: IpAddr) -> Result<(), IpsetError> {
        let mut data = Vec::new();
        ip_attr(&mut data, a);
        let mut body = Vec::new();
        nested(&mut body, ATTR_DATA, &data);
        self.acked(
            format!("ipset del {name} {a}"),
            request(CMD_DEL, family_of(a), name, &body),
            NLM_F_EXCL,
            "",
        )
    }
}

/// The attributes in `buf`: kind (flags masked off) and value.
fn tlvs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([buf[0], buf[1]]));
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & !(NLA_F_NESTED | NLA_F_NET_BYTEORDER);
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((kind, &buf[4..len]));
        buf = buf.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    out
}

/// One listed member: `DATA { IP { IPADDR_* }, COMMENT }`.
fn member(entry: &[u8]) -> Option<Member> {
    let mut addr = None;
    let mut comment = None;
    for (kind, value) in tlvs(entry) {
        match kind {
            ATTR_IP => {
                for (k, v) in tlvs(value) {
                    addr = match (k, v.len()) {
                        (ATTR_IPADDR_IPV4, 4) => Some(IpAddr::from(<[u8; 4]>::try_from(v).ok()?)),
                        (ATTR_IPADDR_IPV6, 16) => Some(IpAddr::from(<[u8; 16]>::try_from(v).ok()?)),
                        _ => addr,
                    };
                }
            }
            ATTR_COMMENT => comment = Some(text(value)),
            _ => {}
        }
    }
    Some(Member {
        addr: addr?,
        comment,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_reads_back_as_written() {
        let mut data = Vec::new();
        ip_attr(&mut data, "10.0.0.5".parse().unwrap());
        attr(&mut data, ATTR_COMMENT, &cstr("uid"));
        let m = member(&data).unwrap();
        assert_eq!(m.addr, "10.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(m.comment.as_deref(), Some("uid"));
        let mut data = Vec::new();
        ip_attr(&mut data, "fd00::5".parse().unwrap());
        assert_eq!(member(&data).unwrap().comment, None);
    }
}
