//! FFI: nftables expressions as `nftnl::expr::Expression` impls, set attributes nftnl does not
//! expose, and borrowing the mnl socket's descriptor. The only module with `unsafe`.
//!
//! One generic expression type carries an expression name and its attributes, so every
//! statement meshtables emits (payload, cmp, meta, ct, bitwise, immediate, counter, lookup with
//! inversion, redir, tproxy, ct zone set, ...) is spelled out attribute by attribute in
//! `lower.rs`, exactly as `nft` encodes it. The FFI calls below only copy those attributes
//! into a freshly allocated `nftnl_expr`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString, c_void};
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

/// Sets an anonymous set's user data (key byte order, as `nft` records it) and its
/// declared size. `nftnl::set::Set` exposes neither.
pub fn set_extras<K>(set: &Set<'_, K>, userdata: &[u8], size: u32) {
    let s = set.as_ptr().as_ptr();
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

/// Borrows the descriptor of an open mnl socket for the lifetime of the socket borrow.
pub fn borrow_fd(sock: &mnl::Socket) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is owned by `sock` and stays open while `sock` is borrowed,
    // which the returned lifetime enforces.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(sock.as_raw_fd()) }
}
