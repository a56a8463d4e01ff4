//! One netlink transport for nfnetlink (nftables) and rtnetlink (policy routing): a socket
//! bound to the kernel, sequence numbers, requests answered by an ACK, dumps read to their
//! end, and batches sent in one `sendmsg` whose replies are read back without blocking.
//! Messages are parsed with `netlink-packet-core` (headers, error replies, attributes); the
//! callers build the requests (`wire`'s nf_tables batches, `netlink-packet-route` messages).

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use netlink_packet_core::{
    ErrorBuffer, NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR, NetlinkBuffer,
};
use netlink_sys::{Socket, SocketAddr, protocols};
use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, sockopt};

/// A reply the kernel sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A message of a dump (header included), or any message that is not an ACK or error.
    Data(Vec<u8>),
    /// The end of a dump.
    Done { seq: u32 },
    /// An ACK (`errno` 0 → `None`) or an error for the request with sequence number `seq`.
    Status { seq: u32, errno: Option<Errno> },
}

/// A netlink socket connected to the kernel.
pub struct Transport {
    sock: Socket,
    seq: u32,
}

impl Transport {
    /// For nf_tables. `ENOPROTOOPT`/`EPROTONOSUPPORT` mean no nfnetlink at all.
    pub fn netfilter() -> io::Result<Transport> {
        Transport::open(protocols::NETLINK_NETFILTER)
    }

    /// For routes, rules and addresses.
    pub fn route() -> io::Result<Transport> {
        Transport::open(protocols::NETLINK_ROUTE)
    }

    fn open(protocol: isize) -> io::Result<Transport> {
        let mut sock = Socket::new(protocol)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Transport { sock, seq: 0 })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }

    /// The next sequence number for a request of ours.
    pub fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `bytes` (one message or a whole batch) in one `sendmsg`: a batch is one
    /// transaction only if it arrives whole, so the send buffer is grown to fit it.
    pub fn send(&self, bytes: &[u8]) -> io::Result<()> {
        const DEFAULT_SNDBUF: usize = 208 * 1024;
        if bytes.len() + 64 * 1024 > DEFAULT_SNDBUF {
            socket::setsockopt(&self.fd(), sockopt::SndBufForce, &(bytes.len() + 64 * 1024))?;
        }
        let sent = self.sock.send(bytes, 0)?;
        if sent != bytes.len() {
            return Err(io::Error::other(format!(
                "sent {sent} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    /// Makes room for `count` replies (one error per message, should everything fail).
    pub fn expect_replies(&self, count: usize) {
        let rcvbuf = (count * 1024).max(256 * 1024);
        // Best effort: without it a huge failing batch reports fewer errors, not wrong ones.
        let _ = socket::setsockopt(&self.fd(), sockopt::RcvBufForce, &rcvbuf);
    }

    /// Reads what the kernel has sent; `block` waits for at least one datagram.
    fn read(&self, block: bool) -> io::Result<Option<Vec<Reply>>> {
        let mut buf = vec![0u8; 64 * 1024];
        let flags = if block {
            MsgFlags::empty()
        } else {
            MsgFlags::MSG_DONTWAIT
        };
        match socket::recv(self.fd().as_raw_fd(), &mut buf, flags) {
            Ok(0) => Ok(None),
            Ok(n) => Ok(Some(parse(&buf[..n]))),
            Err(Errno::EAGAIN) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Every reply already queued, without waiting (after a batch: the kernel has processed
    /// it by the time `sendmsg` returns).
    pub fn queued_replies(&self) -> io::Result<Vec<Reply>> {
        let mut all = Vec::new();
        while let Some(batch) = self.read(false)? {
            all.extend(batch);
        }
        Ok(all)
    }

    /// Sends `request` (its header's type and payload filled in) with NLM_F_REQUEST and
    /// `flags` plus ACK, and waits for the kernel's verdict on it.
    pub fn acked(&mut self, mut request: Vec<u8>, flags: u16) -> io::Result<Result<(), Errno>> {
        let seq = self.stamp(&mut request, NLM_F_REQUEST | NLM_F_ACK | flags);
        self.send(&request)?;
        loop {
            for r in self.read(true)?.unwrap_or_default() {
                if let Reply::Status { seq: s, errno } = r
                    && s == seq
                {
                    return Ok(errno.map_or(Ok(()), Err));
                }
            }
        }
    }

    /// Sends `request` with NLM_F_REQUEST and ACK and returns the data messages the kernel
    /// answered with before its ACK (a GET of one object).
    pub fn get(&mut self, mut request: Vec<u8>) -> io::Result<Result<Vec<Vec<u8>>, Errno>> {
        let seq = self.stamp(&mut request, NLM_F_REQUEST | NLM_F_ACK);
        self.send(&request)?;
        let mut found = Vec::new();
        loop {
            for r in self.read(true)?.unwrap_or_default() {
                match r {
                    Reply::Status { seq: s, errno } if s == seq => {
                        return Ok(errno.map_or(Ok(found), Err));
                    }
                    Reply::Data(m) => found.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Sends a dump request and returns every message of the dump, in the kernel's order.
    pub fn dump(&mut self, mut request: Vec<u8>) -> io::Result<Result<Vec<Vec<u8>>, Errno>> {
        let seq = self.stamp(&mut request, NLM_F_REQUEST | NLM_F_DUMP);
        self.send(&request)?;
        let mut found = Vec::new();
        loop {
            for r in self.read(true)?.unwrap_or_default() {
                match r {
                    Reply::Done { seq: s } if s == seq => return Ok(Ok(found)),
                    Reply::Status {
                        seq: s,
                        errno: Some(e),
                    } if s == seq => return Ok(Err(e)),
                    Reply::Data(m) => found.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Gives `request` the next sequence number and `flags`; returns the number.
    fn stamp(&mut self, request: &mut [u8], flags: u16) -> u32 {
        let seq = self.next_seq();
        let mut hdr = NetlinkBuffer::new(request);
        hdr.set_sequence_number(seq);
        hdr.set_flags(flags);
        seq
    }
}

/// The messages in a datagram.
fn parse(mut buf: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    while let Ok(msg) = NetlinkBuffer::new_checked(buf) {
        let len = msg.length() as usize;
        let seq = msg.sequence_number();
        out.push(match msg.message_type() {
            NLMSG_DONE => Reply::Done { seq },
            NLMSG_ERROR => match ErrorBuffer::new_checked(msg.payload()) {
                Ok(e) => Reply::Status {
                    // The error message repeats the header of the request it answers.
                    seq: NetlinkBuffer::new_checked(e.payload())
                        .map(|h| h.sequence_number())
                        .unwrap_or(seq),
                    errno: e.code().map(|c| Errno::from_raw(-c.get())),
                },
                Err(_) => Reply::Data(buf[..len].to_vec()),
            },
            _ => Reply::Data(buf[..len].to_vec()),
        });
        let next = (len + 3) & !3;
        if len == 0 || next >= buf.len() {
            break;
        }
        buf = &buf[next..];
    }
    out
}

/// Rewrites NLM_F_ACK in every message of a batch: only the message with sequence number
/// `keep` asks for one. The kernel reports every error whether or not ACK is set; an ACK per
/// message only makes it build (and us read) one reply per rule. The last data message's ACK
/// confirms that the kernel processed the whole batch.
pub fn ack_only(wire: &mut [u8], keep: u32) {
    let mut off = 0;
    while off < wire.len() {
        let Ok(mut msg) = NetlinkBuffer::new_checked(&mut wire[off..]) else {
            break;
        };
        let len = msg.length() as usize;
        let flags = msg.flags();
        let flags = if msg.sequence_number() == keep {
            flags | NLM_F_ACK
        } else {
            flags & !NLM_F_ACK
        };
        msg.set_flags(flags);
        if len == 0 {
            break;
        }
        off += (len + 3) & !3;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message: 16-byte header, then `payload`.
    fn msg(kind: u16, flags: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = 16 + payload.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(payload);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn replies_are_parsed_with_the_sequence_of_the_request_they_answer() {
        let request = msg(0x0a00, 1, 7, &[]);
        let mut err = (-17i32).to_ne_bytes().to_vec();
        err.extend_from_slice(&request[..16]);
        let mut dgram = msg(NLMSG_ERROR, 0, 99, &err);
        dgram.extend(msg(NLMSG_DONE, 0, 8, &0u32.to_ne_bytes()));
        dgram.extend(msg(0x0a01, 2, 8, &[1, 0, 0, 0]));
        let r = parse(&dgram);
        assert_eq!(
            r[0],
            Reply::Status {
                seq: 7,
                errno: Some(Errno::EEXIST)
            }
        );
        assert_eq!(r[1], Reply::Done { seq: 8 });
        assert!(matches!(&r[2], Reply::Data(m) if m.len() == 20));
        assert!(
            parse(&[1, 2, 3]).is_empty(),
            "a short datagram is no message"
        );
    }

    #[test]
    fn only_the_kept_message_asks_for_an_ack() {
        let mut wire = msg(1, NLM_F_REQUEST | NLM_F_ACK, 1, &[0; 4]);
        wire.extend(msg(1, NLM_F_REQUEST, 2, &[0; 8]));
        ack_only(&mut wire, 2);
        let flags: Vec<u16> = parse(&wire)
            .iter()
            .map(|r| match r {
                Reply::Data(m) => NetlinkBuffer::new_checked(m.as_slice()).unwrap().flags(),
                _ => 0,
            })
            .collect();
        assert_eq!(flags, [NLM_F_REQUEST, NLM_F_REQUEST | NLM_F_ACK]);
    }
}
