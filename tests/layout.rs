//! The crate's layout, checked from its sources: no import circle between modules under
//! `src/` (the README's Layout section says so, and this keeps it true).
//!
//! Module `A` depends on module `B` when `A`'s code (tests included) names an item through
//! `B`: a `crate::`, `super::` or `self::` path, or a path through one of `A`'s child modules.
//! A path resolves to the longest module prefix it names (`crate::plan::Chain` is a use of
//! `crate::plan`). Declaring `mod b;` is not a use; re-exporting from `b` is. A module's own
//! inline `mod tests` is the module itself. The binaries (`src/main.rs`, `src/bin/`) are
//! other crates and not checked.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test: a failed unwrap or assertion fails the trial"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// `src/a/b.rs` → `crate::a::b`; `src/a/mod.rs` → `crate::a`; `src/lib.rs` → `crate`.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).ok()?;
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    let stem = last.strip_suffix(".rs")?.to_string();
    if parts.first().map(String::as_str) == Some("bin") || (parts.is_empty() && stem == "main") {
        return None;
    }
    if stem != "mod" && !(parts.is_empty() && stem == "lib") {
        parts.push(stem);
    }
    let mut m = String::from("crate");
    for p in parts {
        m.push_str("::");
        m.push_str(&p);
    }
    Some(m)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source with comments, string and char literals blanked (so paths in docs and
/// messages are not uses).
fn code_only(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let mut depth = 0;
            while i < b.len() {
                if b[i..].starts_with(b"/*") {
                    depth += 1;
                    i += 2;
                } else if b[i..].starts_with(b"*/") {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if b[i] == b'r' && (b.get(i + 1) == Some(&b'"') || b.get(i + 1) == Some(&b'#')) {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&b'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&b'"') {
                out.push(b[i]);
                i += 1;
                continue;
            }
            j += 1;
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            while j < b.len() && !b[j..].starts_with(&close) {
                j += 1;
            }
            i = j + close.len();
            out.push(b' ');
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push(b' ');
        } else if b[i] == b'\'' && b.get(i + 2) == Some(&b'\'') {
            i += 3;
            out.push(b' ');
        } else if b[i] == b'\'' && b.get(i + 1) == Some(&b'\\') {
            i += 2;
            while i < b.len() && b[i] != b'\'' {
                i += 1;
            }
            i += 1;
            out.push(b' ');
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every path the code names, with the inline modules (`mod tests { .. }`) it sits in:
/// `a::b::c` sequences, `use` groups expanded (`crate::x::{a, b::c}` gives `crate::x::a` and
/// `crate::x::b::c`).
fn paths(code: &str) -> Vec<(Vec<String>, Vec<String>)> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // Inline modules open here, with the brace depth their `{` opened at.
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match toks[i].as_str() {
            "{" => {
                depth += 1;
                i += 1;
                continue;
            }
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                i += 1;
                continue;
            }
            "mod" if toks.get(i + 2).map(String::as_str) == Some("{") => {
                inline.push((toks[i + 1].clone(), depth));
                i += 2;
                continue;
            }
            _ => {}
        }
        let here: Vec<String> = inline.iter().map(|(n, _)| n.clone()).collect();
        if is_ident(&toks[i]) && (i == 0 || toks[i - 1] != "::") {
            let mut prefix = vec![toks[i].clone()];
            let mut j = i + 1;
            while j + 1 < toks.len() && toks[j] == "::" && is_ident(&toks[j + 1]) {
                prefix.push(toks[j + 1].clone());
                j += 2;
            }
            if j + 1 < toks.len() && toks[j] == "::" && toks[j + 1] == "{" {
                let (group, end) = tree(&toks, j + 2);
                for g in group {
                    let mut p = prefix.clone();
                    p.extend(g);
                    out.push((p, here.clone()));
                }
                i = end;
                continue;
            }
            // `a::b::*` (a glob import) uses `a::b`.
            let glob = j + 1 < toks.len() && toks[j] == "::" && toks[j + 1] == "*";
            if prefix.len() > 1 || glob {
                out.push((prefix, here));
            }
            i = j;
        } else {
            i += 1;
        }
    }
    out
}

/// The paths of a `use` group starting after `{`; returns them and the index after `}`.
fn tree(toks: &[String], mut i: usize) -> (Vec<Vec<String>>, usize) {
    let mut out = Vec::new();
    let mut cur: Vec<String> = Vec::new();
    while i < toks.len() {
        match toks[i].as_str() {
            "}" => {
                if !cur.is_empty() {
                    out.push(cur);
                }
                return (out, i + 1);
            }
            "," => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                i += 1;
            }
            "{" => {
                let (inner, end) = tree(toks, i + 1);
                for g in inner {
                    let mut p = cur.clone();
                    p.extend(g);
                    out.push(p);
                }
                cur.clear();
                i = end;
            }
            "::" | "as" => i += 1,
            t if is_ident(t) => {
                if i > 0 && toks[i - 1] == "as" {
                    i += 1;
                    continue;
                }
                cur.push(t.to_string());
                i += 1;
            }
            _ => i += 1,
        }
    }
    (out, i)
}

fn is_ident(t: &str) -> bool {
    t.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn tokens(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let cs: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < cs.len() {
        let c = cs[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < cs.len() && (cs[i].is_alphanumeric() || cs[i] == '_') {
                i += 1;
            }
            out.push(cs[start..i].iter().collect());
        } else if c == ':' && cs.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else if c.is_whitespace() {
            i += 1;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The module `path` (named in module `from`, inside its inline modules `inline`) uses, if
/// it is one of the crate's.
fn resolve(
    path: &[String],
    from: &str,
    inline: &[String],
    modules: &BTreeSet<String>,
) -> Option<String> {
    let mut base: Vec<String> = from.split("::").map(String::from).collect();
    base.extend(inline.iter().cloned());
    let mut rest = path;
    match path.first().map(String::as_str) {
        Some("crate") => {
            base = vec!["crate".into()];
            rest = &path[1..];
        }
        Some("self") => rest = &path[1..],
        Some("super") => {
            while rest.first().map(String::as_str) == Some("super") {
                base.pop();
                rest = &rest[1..];
            }
        }
        Some(first) => {
            // A path through a child module of `from` (inline modules have none in files).
            let child = format!("{from}::{first}");
            if !inline.is_empty() || !modules.contains(&child) {
                return None;
            }
            base = from.split("::").map(String::from).collect();
        }
        None => return None,
    }
    // Inline modules are part of their file's module.
    let mut cur = String::new();
    let mut best = None;
    for seg in base.iter().chain(rest) {
        cur = if cur.is_empty() {
            seg.clone()
        } else {
            format!("{cur}::{seg}")
        };
        if modules.contains(&cur) {
            best = Some(cur.clone());
        } else if best.is_some() && cur.len() > from.len() && !from.starts_with(&cur) {
            break;
        }
    }
    best.filter(|m| m != from)
}

/// The dependency graph of the crate's modules.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mods: Vec<(String, PathBuf)> = files
        .into_iter()
        .filter_map(|f| module_of(&src, &f).map(|m| (m, f)))
        .collect();
    let modules: BTreeSet<String> = mods.iter().map(|(m, _)| m.clone()).collect();
    let mut g = BTreeMap::new();
    for (m, f) in &mods {
        let code = code_only(&std::fs::read_to_string(f).unwrap());
        let deps: BTreeSet<String> = paths(&code)
            .iter()
            .filter_map(|(p, inline)| resolve(p, m, inline, &modules))
            .collect();
        g.insert(m.clone(), deps);
    }
    g
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn circles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a str) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        if let Some(ws) = t.g.get(v) {
            for w in ws {
                let w = w.as_str();
                if !t.g.contains_key(w) {
                    continue;
                }
                if !t.index.contains_key(w) {
                    visit(t, w);
                    let lw = t.low[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if t.on.contains(w) {
                    let iw = t.index[w];
                    let lv = t.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                comp.sort();
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v.as_str()) {
            visit(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_module_imports_a_module_that_imports_it_back() {
    let g = graph();
    let found = circles(&g);
    let shown: Vec<String> = found
        .iter()
        .map(|c| {
            let edges: Vec<String> = c
                .iter()
                .flat_map(|a| {
                    g[a].iter()
                        .filter(|b| c.contains(b))
                        .map(move |b| format!("{a} → {b}"))
                })
                .collect();
            format!("{{{}}}: {}", c.join(", "), edges.join("; "))
        })
        .collect();
    assert!(found.is_empty(), "import circles:\n{}", shown.join("\n"));
}

#[test]
fn the_checker_sees_a_circle() {
    let mut g = BTreeMap::new();
    g.insert(
        "crate::a".to_string(),
        BTreeSet::from(["crate::b".to_string()]),
    );
    g.insert(
        "crate::b".to_string(),
        BTreeSet::from(["crate::a".to_string()]),
    );
    g.insert(
        "crate::c".to_string(),
        BTreeSet::from(["crate::a".to_string()]),
    );
    assert_eq!(
        circles(&g),
        [vec!["crate::a".to_string(), "crate::b".to_string()]]
    );
    let modules: BTreeSet<String> = ["crate", "crate::plan", "crate::plan::types", "crate::x"]
        .map(String::from)
        .into();
    let p = |s: &str| s.split("::").map(String::from).collect::<Vec<_>>();
    assert_eq!(
        resolve(&p("super::Chain"), "crate::plan::types", &[], &modules).as_deref(),
        Some("crate::plan")
    );
    assert_eq!(
        resolve(&p("types::Chain"), "crate::plan", &[], &modules).as_deref(),
        Some("crate::plan::types")
    );
    // `super` in a file's inline `mod tests` is the file's own module.
    assert_eq!(
        resolve(
            &p("super::Chain"),
            "crate::plan::types",
            &["tests".into()],
            &modules
        ),
        None
    );
    let code = code_only(
        "use crate::{plan::types::{Chain, Table}, x}; // crate::y\n\"crate::z\"\nmod tests { use super::*; }",
    );
    let found = paths(&code);
    assert_eq!(
        found.last().map(|(_, i)| i.as_slice()),
        Some(&["tests".to_string()][..])
    );
    let got: Vec<Option<String>> = found
        .iter()
        .map(|(q, i)| resolve(q, "crate", i, &modules))
        .collect();
    assert_eq!(
        got,
        [
            Some("crate::plan::types".into()),
            Some("crate::plan::types".into()),
            Some("crate::x".into()),
            None
        ]
    );
}

/// The backends are siblings over one kernel layer (`backend::nl`): neither imports the other.
#[test]
fn no_backend_imports_another() {
    let g = graph();
    let under = |m: &str, root: &str| m == root || m.starts_with(&format!("{root}::"));
    let backends = ["crate::backend::netlink", "crate::backend::iptables"];
    let mut found = Vec::new();
    for (a, deps) in &g {
        for b in deps {
            for x in backends {
                for y in backends {
                    if x != y && under(a, x) && under(b, y) {
                        found.push(format!("{a} → {b}"));
                    }
                }
            }
        }
    }
    assert!(found.is_empty(), "a backend imports another: {found:?}");
}
