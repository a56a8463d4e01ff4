//! nf_tables expressions as `nft` builds them, one builder each (load a meta key, compare,
//! load payload, mask, an immediate, a verdict, ...), each attribute by libc's name for the
//! kernel constant where libc has one. Scheme- and plan-agnostic: the lowering of a plan
//! (`backend::netlink::lower`) and the guard compose them.

use libc::c_int;
use netlink_packet_netfilter::nftables::{
    Bitwise, Cmp, DataAttribute, Immediate, Meta, MetaKey, Operator, Payload, Register, Verdict,
    VerdictAttribute,
};

use super::wire::{Expr, NFTA_CT_DREG, NFTA_CT_KEY, NFTA_CT_SREG, attr, be32};

/// Lowering errors.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    /// Config resolves every owner-group name before a backend runs; a name here is a bug.
    #[error("group {0:?} (in an owner-group rule) was not resolved to a gid")]
    UnresolvedGroup(String),
    /// A match only xtables has (`-m owner --socket-exists`); a scheme's nft walk never sends
    /// one, so one here is a bug.
    #[error("{0} has no nftables form")]
    XtablesOnly(&'static str),
}

pub fn meta_load(key: MetaKey) -> Expr {
    Expr {
        name: "meta",
        attrs: vec![
            attr(&Meta::Key(key)),
            attr(&Meta::DestinationRegister(Register::Reg1)),
        ],
    }
}

pub fn meta_set(key: MetaKey) -> Expr {
    Expr {
        name: "meta",
        attrs: vec![
            attr(&Meta::Key(key)),
            attr(&Meta::SourceRegister(Register::Reg1)),
        ],
    }
}

pub fn ct_load(key: c_int) -> Expr {
    Expr {
        name: "ct",
        attrs: vec![
            be32(NFTA_CT_KEY, key as u32),
            be32(NFTA_CT_DREG, libc::NFT_REG_1 as u32),
        ],
    }
}

pub fn ct_set(key: c_int) -> Expr {
    Expr {
        name: "ct",
        attrs: vec![
            be32(NFTA_CT_KEY, key as u32),
            be32(NFTA_CT_SREG, libc::NFT_REG_1 as u32),
        ],
    }
}

pub fn cmp(negate: bool, data: Vec<u8>) -> Expr {
    let op = if negate {
        Operator::NotEqual
    } else {
        Operator::Equal
    };
    Expr {
        name: "cmp",
        attrs: vec![
            attr(&Cmp::SourceRegister(Register::Reg1)),
            attr(&Cmp::Op(op)),
            attr(&Cmp::Data(DataAttribute::Value(data))),
        ],
    }
}

/// `base` is `NFT_PAYLOAD_NETWORK_HEADER` or `NFT_PAYLOAD_TRANSPORT_HEADER`.
pub fn payload(base: c_int, offset: u32, len: u32) -> Expr {
    Expr {
        name: "payload",
        attrs: vec![
            attr(&Payload::DestinationRegister(Register::Reg1)),
            attr(&Payload::Base(base as u32)),
            attr(&Payload::Offset(offset)),
            attr(&Payload::Len(len)),
        ],
    }
}

pub fn bitwise(mask: Vec<u8>) -> Expr {
    let xor = vec![0; mask.len()];
    bitwise_xor(mask, xor)
}

/// `reg = (reg & mask) ^ xor`: how `nft` compiles `x & a | b` (mask `a & ~b`, xor `b`).
pub fn bitwise_xor(mask: Vec<u8>, xor: Vec<u8>) -> Expr {
    let len = mask.len();
    Expr {
        name: "bitwise",
        attrs: vec![
            attr(&Bitwise::SourceRegister(Register::Reg1)),
            attr(&Bitwise::DestinationRegister(Register::Reg1)),
            attr(&Bitwise::Length(len as u32)),
            attr(&Bitwise::Mask(DataAttribute::Value(mask))),
            attr(&Bitwise::Xor(DataAttribute::Value(xor))),
        ],
    }
}

pub fn immediate(data: Vec<u8>) -> Expr {
    Expr {
        name: "immediate",
        attrs: vec![
            attr(&Immediate::DestinationRegister(Register::Reg1)),
            attr(&Immediate::Data(DataAttribute::Value(data))),
        ],
    }
}

/// A verdict (`NF_ACCEPT`, `NF_DROP`, `NFT_RETURN`, or `NFT_JUMP` to `chain`).
pub fn verdict(code: c_int, chain: Option<&str>) -> Expr {
    let mut v = vec![VerdictAttribute::Code(Verdict::from(code as u32))];
    v.extend(chain.map(|c| VerdictAttribute::Chain(c.into())));
    Expr {
        name: "immediate",
        attrs: vec![
            attr(&Immediate::DestinationRegister(Register::Verdict)),
            attr(&Immediate::Data(DataAttribute::Verdict(v))),
        ],
    }
}

pub fn counter() -> Expr {
    Expr {
        name: "counter",
        attrs: vec![],
    }
}

/// The bytes an interface name match compares: the name NUL-padded to IFNAMSIZ, or for a
/// name ending in `+` (iptables' wildcard: every interface whose name starts with the rest)
/// only the prefix, as nft compiles `iifname "eth*"` and iptables-nft `-i eth+`.
pub fn ifname(name: &str) -> Vec<u8> {
    if let Some(prefix) = name.strip_suffix('+') {
        return prefix.as_bytes().to_vec();
    }
    let mut b = vec![0u8; 16];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b
}
