//! FFI: nftables expressions as `nftnl::expr::Expression` impls, set attributes nftnl does not
//! expose, and parsing the kernel's rule and chain dumps with libnftnl (for `check`). The only
//! module with `unsafe`.
//!
//! One generic expression type carries an expression name and its attributes, so every
//! statement meshtables emits (payload, cmp, meta, ct, bitwise, immediate, counter, lookup with
//! inversion, redir, tproxy, ct zone set, ...) is spelled out attribute by attribute in
//! `lower.rs`, exactly as `nft` encodes it. The FFI calls below only copy those attributes
//! into a freshly allocated `nftnl_expr`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;

use nftnl::Rule;
use nftnl::expr::Expression;
use nftnl::nftnl_sys as sys;
use nftnl::set::Set;

/// One attribute value of an expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    U32(u32),
    /// Raw bytes (cmp/immediate/bitwise data).
    Data(Vec<u8>),
    Str(CString),
}

/// An nftables expression: its kind name (`payload`, `cmp`, ...) and attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub name: &'static CStr,
    pub attrs: Vec<(u32, Attr)>,
}

impl Expression for Expr {
    fn to_expr(&self, _rule: &Rule) -> NonNull<sys::nftnl_expr> {
        // SAFETY: `name` is a NUL-terminated static string naming an expression type;
        // nftnl_expr_alloc copies nothing from it beyond the call and returns an owned
        // allocation or NULL (checked below).
        let raw = unsafe { sys::nftnl_expr_alloc(self.name.as_ptr()) };
        let expr = NonNull::new(raw).expect("nftnl_expr_alloc: out of memory");
        for (key, value) in &self.attrs {
            let key = *key as u16;
            match value {
                // SAFETY: `expr` is a valid expression just allocated and exclusively ours;
                // setting a u32 attribute copies the value.
                Attr::U32(v) => unsafe { sys::nftnl_expr_set_u32(expr.as_ptr(), key, *v) },
                // SAFETY: the pointer and length describe `bytes`, which outlives the call;
                // nftnl_expr_set copies the data into the expression.
                Attr::Data(bytes) => unsafe {
                    sys::nftnl_expr_set(
                        expr.as_ptr(),
                        key,
                        bytes.as_ptr().cast::<c_void>(),
                        bytes.len() as u32,
                    );
                },
                // SAFETY: `s` is a valid NUL-terminated string that outlives the call;
                // nftnl_expr_set_str duplicates it.
                Attr::Str(s) => unsafe {
                    sys::nftnl_expr_set_str(expr.as_ptr(), key, s.as_ptr());
                },
            }
        }
        // Ownership passes to the caller (`Rule::add_expr` hands it to the rule).
        expr
    }
}

/// Sets an anonymous set's user data (as `nft` records it), its declared size and its flags
/// (interval sets). `nftnl::set::Set` exposes none of them.
pub fn set_extras<K>(set: &Set<'_, K>, userdata: &[u8], size: u32, flags: u32) {
    let s = set.as_ptr().as_ptr();
    // SAFETY: `s` is the live set owned by `set` (borrowed for this call); a u32 attribute is
    // copied by value.
    unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_FLAGS as u16, flags) };
    // SAFETY: `s` is the live set owned by `set` (borrowed for this call); the data pointer and
    // length describe `userdata`, which nftnl copies.
    unsafe {
        sys::nftnl_set_set_data(
            s,
            sys::NFTNL_SET_USERDATA as u16,
            userdata.as_ptr().cast::<c_void>(),
            userdata.len() as u32,
        );
    }
    // SAFETY: as above; a u32 attribute is copied by value.
    unsafe { sys::nftnl_set_set_u32(s, sys::NFTNL_SET_DESC_SIZE as u16, size) };
}

/// Appends the netlink message libnftnl writes for `obj` (header with sequence number
/// `seq`, then payload) to `buf`.
pub fn put(buf: &mut Vec<u8>, obj: &impl nftnl::NlMsg, seq: u32, ty: nftnl::MsgType) {
    let max = nftnl::nft_nlmsg_maxsize() as usize;
    let start = buf.len();
    buf.reserve(max);
    // SAFETY: `reserve` guarantees `max` writable bytes after `start`, the most libnftnl
    // writes for one message (the bound `NlMsg::write` requires). The write initializes the
    // message's `nlmsg_len` bytes; only those become part of the vector.
    let len = unsafe {
        let at = buf.as_mut_ptr().add(start);
        obj.write(at.cast::<c_void>(), seq, ty);
        let len = std::ptr::read_unaligned(at.cast::<u32>()) as usize;
        let len = len.min(max);
        buf.set_len(start + len);
        len
    };
    // Messages follow each other at 4-byte boundaries.
    buf.resize(start + ((len + 3) & !3), 0);
}

/// A copy of one netlink message, 4-byte aligned as `nlmsghdr` requires.
fn aligned(msg: &[u8]) -> Vec<u32> {
    let mut words = vec![0u32; msg.len().div_ceil(4)];
    for (w, chunk) in words.iter_mut().zip(msg.chunks(4)) {
        let mut b = [0u8; 4];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u32::from_ne_bytes(b);
    }
    words
}

/// Reads a string attribute through `get`, which returns a pointer owned by the object.
fn owned_str(ptr: *const std::ffi::c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: libnftnl returned a non-NULL pointer to a NUL-terminated string owned by the
    // object it was read from, which the caller keeps alive for this call; we copy it out.
    Some(
        unsafe { CStr::from_ptr(ptr) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// A rule the kernel reported in a `GETRULE` dump, parsed by libnftnl.
pub struct ParsedRule(NonNull<sys::nftnl_rule>);

impl ParsedRule {
    /// Parses one complete netlink message (header included); `None` if libnftnl rejects it.
    pub fn parse(msg: &[u8]) -> Option<ParsedRule> {
        let words = aligned(msg);
        // SAFETY: allocation has no preconditions; NULL (out of memory) is checked.
        let rule = NonNull::new(unsafe { sys::nftnl_rule_alloc() })?;
        // SAFETY: `words` holds the whole message, aligned, and outlives the call; `rule` is
        // a valid, exclusively owned rule. libnftnl copies what it keeps.
        let rc = unsafe {
            sys::nftnl_rule_nlmsg_parse(words.as_ptr().cast::<sys::libc::nlmsghdr>(), rule.as_ptr())
        };
        let parsed = ParsedRule(rule);
        (rc >= 0).then_some(parsed)
    }

    /// The chain the rule is in.
    pub fn chain(&self) -> Option<String> {
        // SAFETY: `self.0` is a valid rule for the duration of the call.
        owned_str(unsafe { sys::nftnl_rule_get_str(self.0.as_ptr(), sys::NFTNL_RULE_CHAIN as u16) })
    }

    /// The rule's expressions, in order.
    pub fn exprs(&self) -> Vec<ParsedExpr<'_>> {
        let mut out = Vec::new();
        // SAFETY: `self.0` is a valid rule; the iterator borrows it and is destroyed below,
        // before the rule can be freed.
        let iter = unsafe { sys::nftnl_expr_iter_create(self.0.as_ptr()) };
        if iter.is_null() {
            return out;
        }
        loop {
            // SAFETY: `iter` is a live iterator over this rule.
            let e = unsafe { sys::nftnl_expr_iter_next(iter) };
            match NonNull::new(e) {
                Some(e) => out.push(ParsedExpr(e, PhantomData)),
                None => break,
            }
        }
        // SAFETY: `iter` was created above and is not used after this.
        unsafe { sys::nftnl_expr_iter_destroy(iter) };
        out
    }
}

impl Drop for ParsedRule {
    fn drop(&mut self) {
        // SAFETY: the rule was allocated by nftnl_rule_alloc and is freed once; the
        // `ParsedExpr`s borrowing it cannot outlive `self`.
        unsafe { sys::nftnl_rule_free(self.0.as_ptr()) }
    }
}

/// One expression of a `ParsedRule`, owned by the rule.
pub struct ParsedExpr<'a>(NonNull<sys::nftnl_expr>, PhantomData<&'a ParsedRule>);

impl ParsedExpr<'_> {
    /// The expression's kind (`payload`, `cmp`, ...).
    pub fn name(&self) -> String {
        // SAFETY: the expression is alive while its rule is borrowed.
        owned_str(unsafe { sys::nftnl_expr_get_str(self.0.as_ptr(), sys::NFTNL_EXPR_NAME as u16) })
            .unwrap_or_default()
    }

    /// A string attribute (a lookup's set name), if the kernel reported it.
    pub fn str_attr(&self, key: u32) -> Option<String> {
        let e = self.0.as_ptr();
        // SAFETY: the expression is alive while its rule is borrowed; `is_set` only reads.
        if !unsafe { sys::nftnl_expr_is_set(e, key as u16) } {
            return None;
        }
        // SAFETY: as above; the returned string is owned by the expression and copied.
        owned_str(unsafe { sys::nftnl_expr_get_str(e, key as u16) })
    }

    /// Whether the kernel reported attribute `key` with exactly `value`.
    pub fn has(&self, key: u32, value: &Attr) -> bool {
        let e = self.0.as_ptr();
        let key = key as u16;
        // SAFETY: the expression is alive while its rule is borrowed; `is_set` only reads.
        if !unsafe { sys::nftnl_expr_is_set(e, key) } {
            return false;
        }
        match value {
            Attr::Str(s) => {
                // SAFETY: as above; the returned string is owned by the expression.
                owned_str(unsafe { sys::nftnl_expr_get_str(e, key) })
                    .is_some_and(|live| live.as_bytes() == s.as_bytes())
            }
            Attr::U32(_) | Attr::Data(_) => {
                let mut len = 0u32;
                // SAFETY: as above; `len` receives the data length and the pointer stays
                // valid (owned by the expression) while we copy from it below.
                let p = unsafe { sys::nftnl_expr_get(e, key, &mut len) };
                if p.is_null() {
                    return false;
                }
                // SAFETY: libnftnl guarantees `len` readable bytes at `p`.
                let live = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) };
                match value {
                    Attr::U32(v) => live == v.to_ne_bytes(),
                    Attr::Data(d) => live == d.as_slice(),
                    Attr::Str(_) => unreachable!(),
                }
            }
        }
    }
}

/// A chain the kernel reported in a `GETCHAIN` dump, parsed by libnftnl.
pub struct ParsedChain {
    pub name: String,
    /// (hook number, priority, type) for a base chain.
    pub hook: Option<(u32, i32, String)>,
}

impl ParsedChain {
    pub fn parse(msg: &[u8]) -> Option<ParsedChain> {
        let words = aligned(msg);
        // SAFETY: allocation has no preconditions; NULL is checked.
        let chain = NonNull::new(unsafe { sys::nftnl_chain_alloc() })?;
        let c = chain.as_ptr();
        // SAFETY: `words` holds the whole aligned message and outlives the call; `c` is ours.
        let rc = unsafe {
            sys::nftnl_chain_nlmsg_parse(words.as_ptr().cast::<sys::libc::nlmsghdr>(), c)
        };
        // SAFETY (all reads below): `c` is a valid chain until freed at the end.
        let name = owned_str(unsafe { sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_NAME as u16) });
        let hook =
            unsafe { sys::nftnl_chain_is_set(c, sys::NFTNL_CHAIN_HOOKNUM as u16) }.then(|| {
                (
                    unsafe { sys::nftnl_chain_get_u32(c, sys::NFTNL_CHAIN_HOOKNUM as u16) },
                    unsafe { sys::nftnl_chain_get_s32(c, sys::NFTNL_CHAIN_PRIO as u16) },
                    owned_str(unsafe { sys::nftnl_chain_get_str(c, sys::NFTNL_CHAIN_TYPE as u16) })
                        .unwrap_or_default(),
                )
            });
        // SAFETY: allocated above, freed once, not used afterwards.
        unsafe { sys::nftnl_chain_free(c) };
        (rc >= 0).then_some(ParsedChain { name: name?, hook })
    }
}
