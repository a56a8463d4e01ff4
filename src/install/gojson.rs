//! JSON as Go's `encoding/json` (v1, the one containerd, CRI-O and podman are built with)
//! decodes it, so that the installer judges a CNI configuration as the runtime does rather
//! than as serde_json does. Pure: bytes in, values out; no recursion on the input's nesting
//! (an explicit stack parses, converts and drops), so any input up to Go's depth limit is
//! handled on any thread's stack.
//!
//! The rules, each from Go's source (src/encoding/json, read from golang/go): the grammar and
//! its error wording from scanner.go's state machine (`checkValid` runs over the whole input
//! before anything is decoded; at most `maxNestingDepth` = 10000 open arrays and objects;
//! nothing but space, tab, CR and LF after the value); string contents from decode.go's
//! `unquoteBytes` (an invalid UTF-8 byte becomes U+FFFD, one per byte, as `utf8.DecodeRune`
//! returns `(RuneError, 1)`; a `\u` surrogate that is not half of a valid pair becomes
//! U+FFFD); numbers from `convertNumber` (`strconv.ParseFloat(s, 64)`: out of range is an
//! error, underflow is zero); objects into `map[string]interface{}` keep the last of
//! duplicate keys; objects into a struct from `object` (an exact field name first, else
//! `foldName` of fold.go: Unicode simple folding), each key assigning in document order,
//! unknown keys skipped unparsed, `null` leaving a string or struct as it was, a type
//! mismatch failing the whole `Unmarshal`.

use serde_json::{Map, Number, Value};

/// scanner.go's `maxNestingDepth`: this many open arrays and objects are accepted, one more is
/// "exceeded max depth".
pub const MAX_DEPTH: usize = 10_000;

/// Why `json.Unmarshal` refuses the bytes (Go's wording, with the byte offset).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GoJsonError {
    #[error("invalid character {} {context} (byte {offset})", quote_byte(*.byte))]
    Syntax {
        offset: usize,
        byte: u8,
        context: &'static str,
    },
    #[error("unexpected end of JSON input")]
    Eof,
    #[error("invalid character {} exceeded max depth (byte {offset})", quote_byte(*.byte))]
    TooDeep { offset: usize, byte: u8 },
    /// `convertNumber`: the literal does not fit a float64.
    #[error("json: cannot unmarshal number {literal} into Go value of type float64")]
    NumberRange { literal: String },
}

/// scanner.go's `quoteChar`: `strconv.Quote` of the byte taken as a rune (so 0xff is 'ÿ').
fn quote_byte(c: u8) -> String {
    let inner = match c {
        b'\'' => return r"'\''".to_string(),
        b'"' => return "'\"'".to_string(),
        b'\\' => r"\\".to_string(),
        0x07 => r"\a".to_string(),
        0x08 => r"\b".to_string(),
        0x0c => r"\f".to_string(),
        b'\n' => r"\n".to_string(),
        b'\r' => r"\r".to_string(),
        b'\t' => r"\t".to_string(),
        0x0b => r"\v".to_string(),
        0x20..=0x7e => char::from(c).to_string(),
        0x00..=0x1f | 0x7f => format!("\\x{c:02x}"),
        // Not printable by Go's unicode.IsPrint: C1 controls, no-break space, soft hyphen.
        0x80..=0xa0 | 0xad => format!("\\u{:04x}", u32::from(c)),
        _ => char::from(c).to_string(),
    };
    format!("'{inner}'")
}

/// A parsed document as Go's decoder walks it: objects keep every member in document order,
/// duplicates included (a struct sees each of them); numbers keep their literal (Go converts
/// a number only where it is stored, never in a skipped field). Strings hold Go's
/// replacements. Dropping is iterative; nothing derives a recursive trait (`Debug` shows the
/// top level only).
pub enum Node {
    Null,
    Bool(bool),
    Number(Box<str>),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl Drop for Node {
    fn drop(&mut self) {
        let mut pending = Vec::new();
        take_children(self, &mut pending);
        while let Some(mut n) = pending.pop() {
            take_children(&mut n, &mut pending);
            // `n` drops here childless: no recursion.
        }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Node::Null => f.write_str("null"),
            Node::Bool(b) => write!(f, "{b}"),
            Node::Number(n) => f.write_str(n),
            Node::String(s) => write!(f, "{s:?}"),
            Node::Array(items) => write!(f, "[{} items]", items.len()),
            Node::Object(m) => write!(f, "{{{} members}}", m.len()),
        }
    }
}

fn take_children(n: &mut Node, into: &mut Vec<Node>) {
    match n {
        Node::Array(items) => into.append(items),
        Node::Object(members) => into.extend(members.drain(..).map(|(_, v)| v)),
        _ => {}
    }
}

impl Node {
    /// How many arrays and objects are open at the deepest point (0 for a scalar), counted
    /// without recursion.
    pub fn depth(&self) -> usize {
        let mut deepest = 0;
        let mut pending = vec![(self, 0usize)];
        while let Some((n, d)) = pending.pop() {
            match n {
                Node::Array(items) => pending.extend(items.iter().map(|c| (c, d + 1))),
                Node::Object(m) => pending.extend(m.iter().map(|(_, c)| (c, d + 1))),
                _ => {}
            }
            let here = d + usize::from(matches!(n, Node::Array(_) | Node::Object(_)));
            deepest = deepest.max(here);
        }
        deepest
    }

    /// The Go kind word `UnmarshalTypeError` uses for this value.
    pub fn kind(&self) -> &'static str {
        match self {
            Node::Null => "null",
            Node::Bool(_) => "bool",
            Node::Number(_) => "number",
            Node::String(_) => "string",
            Node::Array(_) => "array",
            Node::Object(_) => "object",
        }
    }

    /// The value `json.Unmarshal` into an `interface{}` stores: every number converted (an
    /// out-of-range one fails), the last of duplicate keys kept. Integers that fit 64 bits stay
    /// integers here (Go holds a float64; no verdict depends on the difference, and a rewritten
    /// file keeps `1500`, not `1500.0`).
    pub fn to_value(&self) -> Result<Value, GoJsonError> {
        enum Frame<'a> {
            Array(std::slice::Iter<'a, Node>, Vec<Value>),
            Object(
                std::slice::Iter<'a, (String, Node)>,
                Map<String, Value>,
                &'a str,
            ),
        }
        let mut stack: Vec<Frame<'_>> = Vec::new();
        let mut next: &Node = self;
        loop {
            // Descend to a leaf or an empty container, pushing frames on the way.
            let mut done = match next {
                Node::Null => Value::Null,
                Node::Bool(b) => Value::Bool(*b),
                Node::Number(lit) => Value::Number(number(lit)?),
                Node::String(s) => Value::String(s.clone()),
                Node::Array(items) => {
                    let mut it = items.iter();
                    match it.next() {
                        Some(first) => {
                            stack.push(Frame::Array(it, Vec::with_capacity(items.len())));
                            next = first;
                            continue;
                        }
                        None => Value::Array(Vec::new()),
                    }
                }
                Node::Object(members) => {
                    let mut it = members.iter();
                    match it.next() {
                        Some((k, v)) => {
                            stack.push(Frame::Object(it, Map::new(), k));
                            next = v;
                            continue;
                        }
                        None => Value::Object(Map::new()),
                    }
                }
            };
            // Hand the finished value up until a frame has another child to visit.
            loop {
                match stack.last_mut() {
                    None => return Ok(done),
                    Some(Frame::Array(it, out)) => {
                        out.push(done);
                        if let Some(n) = it.next() {
                            next = n;
                            break;
                        }
                        done = Value::Array(std::mem::take(out));
                    }
                    Some(Frame::Object(it, out, key)) => {
                        out.insert((*key).to_string(), done);
                        if let Some((k, v)) = it.next() {
                            *key = k;
                            next = v;
                            break;
                        }
                        done = Value::Object(std::mem::take(out));
                    }
                }
                stack.pop();
            }
        }
    }
}

/// `convertNumber`: `strconv.ParseFloat(s, 64)`, an error when out of range. Rust's `f64`
/// parse rounds correctly, as Go's does, and gives infinity exactly where Go reports
/// `ErrRange`.
fn number(lit: &str) -> Result<Number, GoJsonError> {
    let range = || GoJsonError::NumberRange {
        literal: lit.to_string(),
    };
    if !lit.contains(['.', 'e', 'E']) {
        if let Ok(u) = lit.parse::<u64>() {
            return Ok(u.into());
        }
        if let Ok(i) = lit.parse::<i64>() {
            return Ok(i.into());
        }
    }
    let f: f64 = lit.parse().map_err(|_| range())?;
    Number::from_f64(f).ok_or_else(range)
}

/// Every number under `node` converted as into an `interface{}`: whether
/// `json.Unmarshal` into a `map[string]interface{}` gets past the numbers.
pub fn numbers_fit(node: &Node) -> Result<(), GoJsonError> {
    let mut pending = vec![node];
    while let Some(n) = pending.pop() {
        match n {
            Node::Number(lit) => {
                number(lit)?;
            }
            Node::Array(items) => pending.extend(items.iter().rev()),
            Node::Object(m) => pending.extend(m.iter().rev().map(|(_, v)| v)),
            _ => {}
        }
    }
    Ok(())
}

/// What `json.Unmarshal(bytes, &v)` with `var v interface{}` stores, or its error.
///
/// serde_json drops and serializes a `Value` recursively: at depth 10000 that takes 8 MiB of
/// stack to drop and 16 MiB to serialize in a debug build, 2 MiB for either in release
/// (measured). Drop a value that may be deep with [`drop_value`]; serialize one only on a
/// stack that holds it.
pub fn decode(bytes: &[u8]) -> Result<Value, GoJsonError> {
    parse(bytes)?.to_value()
}

/// Drops `v` without recursion, however deep.
pub fn drop_value(v: Value) {
    let mut pending = vec![v];
    while let Some(v) = pending.pop() {
        match v {
            Value::Array(items) => pending.extend(items),
            Value::Object(m) => pending.extend(m.into_iter().map(|(_, v)| v)),
            _ => {}
        }
    }
}

/// `checkValid` and the unquoting of every string: the document, or the syntax error Go
/// reports before decoding anything.
pub fn parse(bytes: &[u8]) -> Result<Node, GoJsonError> {
    Parser { b: bytes, i: 0 }.document()
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

/// An array or object still open, holding what it has so far.
enum Open {
    Array(Vec<Node>),
    Object(Vec<(String, Node)>, String),
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    /// scanner.go's `isSpace`: only these four.
    fn skip_space(&mut self) {
        while let Some(b' ' | b'\t' | b'\r' | b'\n') = self.peek() {
            self.i += 1;
        }
    }

    fn error(&self, context: &'static str) -> GoJsonError {
        match self.peek() {
            Some(byte) => GoJsonError::Syntax {
                offset: self.i,
                byte,
                context,
            },
            None => GoJsonError::Eof,
        }
    }

    fn document(&mut self) -> Result<Node, GoJsonError> {
        let mut open: Vec<Open> = Vec::new();
        loop {
            self.skip_space();
            let mut done = match self.peek() {
                Some(c @ (b'{' | b'[')) => {
                    // pushParseState: the 10001st open container is the error, at its byte.
                    if open.len() >= MAX_DEPTH {
                        return Err(GoJsonError::TooDeep {
                            offset: self.i,
                            byte: c,
                        });
                    }
                    self.i += 1;
                    self.skip_space();
                    if c == b'[' {
                        if self.peek() == Some(b']') {
                            self.i += 1;
                            Node::Array(Vec::new())
                        } else {
                            open.push(Open::Array(Vec::new()));
                            continue;
                        }
                    } else if self.peek() == Some(b'}') {
                        self.i += 1;
                        Node::Object(Vec::new())
                    } else {
                        let key = self.key()?;
                        open.push(Open::Object(Vec::new(), key));
                        continue;
                    }
                }
                Some(b'"') => Node::String(self.string()?),
                Some(b'-' | b'0'..=b'9') => Node::Number(self.number()?),
                Some(b't') => self.literal(LITERAL_TRUE, Node::Bool(true))?,
                Some(b'f') => self.literal(LITERAL_FALSE, Node::Bool(false))?,
                Some(b'n') => self.literal(LITERAL_NULL, Node::Null)?,
                _ => return Err(self.error("looking for beginning of value")),
            };
            // Attach the finished value; close what it completes.
            loop {
                self.skip_space();
                match open.last_mut() {
                    None => {
                        return match self.peek() {
                            None => Ok(done),
                            Some(_) => Err(self.error("after top-level value")),
                        };
                    }
                    Some(Open::Array(items)) => {
                        items.push(done);
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                break;
                            }
                            Some(b']') => {
                                self.i += 1;
                                done = Node::Array(std::mem::take(items));
                            }
                            _ => return Err(self.error("after array element")),
                        }
                    }
                    Some(Open::Object(members, key)) => {
                        members.push((std::mem::take(key), done));
                        match self.peek() {
                            Some(b',') => {
                                self.i += 1;
                                self.skip_space();
                                *key = self.key()?;
                                break;
                            }
                            Some(b'}') => {
                                self.i += 1;
                                done = Node::Object(std::mem::take(members));
                            }
                            _ => return Err(self.error("after object key:value pair")),
                        }
                    }
                }
                open.pop();
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self) -> Result<String, GoJsonError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("looking for beginning of object key string"));
        }
        let key = self.string()?;
        self.skip_space();
        if self.peek() != Some(b':') {
            return Err(self.error("after object key"));
        }
        self.i += 1;
        Ok(key)
    }

    /// A string: the scanner's rules (no byte below 0x20, the escapes `"\/bfnrt` and `\u` with
    /// four hex digits) and `unquoteBytes`' replacements.
    fn string(&mut self) -> Result<String, GoJsonError> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            // "Coerce to well-formed UTF-8": `utf8.DecodeRune` takes a valid sequence or one
            // byte; each byte of an invalid run is one U+FFFD. (A run ends at an ASCII byte,
            // which never continues a sequence, so the runs are what Go sees.)
            for chunk in self.b[start..self.i].utf8_chunks() {
                out.push_str(chunk.valid());
                out.extend(std::iter::repeat_n('\u{FFFD}', chunk.invalid().len()));
            }
            match self.peek() {
                None => return Err(GoJsonError::Eof),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = match self.peek() {
                        None => return Err(GoJsonError::Eof),
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            self.i += 1;
                            let hi = self.hex4()?;
                            out.push(self.surrogate_pair(hi));
                            continue;
                        }
                        Some(_) => return Err(self.error("in string escape code")),
                    };
                    self.i += 1;
                    out.push(c);
                }
                Some(_) => return Err(self.error("in string literal")),
            }
        }
    }

    /// The four hex digits after `\u` (the scanner's `stateInStringEscU*`).
    fn hex4(&mut self) -> Result<u32, GoJsonError> {
        let mut v = 0;
        for _ in 0..4 {
            let d = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(self.error("in \\u hexadecimal character escape")),
            };
            v = v * 16 + u32::from(d);
            self.i += 1;
        }
        Ok(v)
    }

    /// `unquoteBytes` on a `\u` escape: a surrogate takes the next `\uXXXX` when the two are a
    /// valid pair (`utf16.DecodeRune`); otherwise it is U+FFFD and the next escape stands alone.
    fn surrogate_pair(&mut self, hi: u32) -> char {
        if !(0xd800..0xe000).contains(&hi) {
            return char::from_u32(hi).unwrap_or('\u{FFFD}');
        }
        if (0xd800..0xdc00).contains(&hi) && self.b[self.i..].starts_with(b"\\u") {
            let lo = self.b.get(self.i + 2..self.i + 6).and_then(|h| {
                h.iter()
                    .try_fold(0u32, |v, &c| char::from(c).to_digit(16).map(|d| v * 16 + d))
            });
            if let Some(lo @ 0xdc00..0xe000) = lo {
                self.i += 6;
                let c = 0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00);
                return char::from_u32(c).unwrap_or('\u{FFFD}');
            }
        }
        '\u{FFFD}'
    }

    /// A number literal by the scanner's states (`-`? `0`|[1-9][0-9]*, fraction, exponent);
    /// the byte after it is the caller's (Go's `stateEndValue`).
    fn number(&mut self) -> Result<Box<str>, GoJsonError> {
        let start = self.i;
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek() {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => self.digits(),
            _ => return Err(self.error("in numeric literal")),
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("after decimal point in numeric literal"));
            }
            self.digits();
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if !matches!(self.peek(), Some(b'0'..=b'9')) {
                return Err(self.error("in exponent of numeric literal"));
            }
            self.digits();
        }
        // All ASCII by construction.
        Ok(String::from_utf8_lossy(&self.b[start..self.i]).into())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    /// `true`, `false`, `null`, byte by byte with Go's messages.
    fn literal(&mut self, lit: &[(u8, &'static str)], node: Node) -> Result<Node, GoJsonError> {
        self.i += 1; // the first letter, already matched
        for &(want, context) in lit {
            if self.peek() != Some(want) {
                return Err(self.error(context));
            }
            self.i += 1;
        }
        Ok(node)
    }
}

const LITERAL_TRUE: &[(u8, &str)] = &[
    (b'r', "in literal true (expecting 'r')"),
    (b'u', "in literal true (expecting 'u')"),
    (b'e', "in literal true (expecting 'e')"),
];
const LITERAL_FALSE: &[(u8, &str)] = &[
    (b'a', "in literal false (expecting 'a')"),
    (b'l', "in literal false (expecting 'l')"),
    (b's', "in literal false (expecting 's')"),
    (b'e', "in literal false (expecting 'e')"),
];
const LITERAL_NULL: &[(u8, &str)] = &[
    (b'u', "in literal null (expecting 'u')"),
    (b'l', "in literal null (expecting 'l')"),
    (b'l', "in literal null (expecting 'l')"),
];

// ---------------------------------------------------------------------------------------------
// Decoding into libcni's `types.NetConf`.

/// The order in which an object's keys reach a struct.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrder {
    /// As written, duplicates included: `json.Unmarshal` of a file's own bytes.
    Document,
    /// As `json.Marshal` of a decoded `map[string]interface{}` writes them: duplicates
    /// collapsed to the last, keys sorted bytewise (encode.go sorts map keys), at every level.
    /// libcni decodes each plugin of a list from such bytes.
    Marshalled,
}

/// The fields of `types.NetConf` a verdict needs (libcni keeps the rest as raw bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    pub plugin_type: String,
}

/// Why `json.Unmarshal` into `types.NetConf` fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetConfError {
    /// `UnmarshalTypeError`: a value of the wrong JSON kind for a field (`field` is its path
    /// from the top, `within` the name of the struct holding it), or for the whole struct
    /// (`field` empty).
    #[error("json: cannot unmarshal {found} into Go {}of type {expected}", field_words(.within, .field))]
    Type {
        within: &'static str,
        field: String,
        found: &'static str,
        expected: &'static str,
    },
    /// A number stored into an `interface{}` (under `prevResult`) does not fit a float64.
    #[error("{0}")]
    Number(GoJsonError),
}

fn field_words(within: &str, field: &str) -> String {
    if field.is_empty() {
        "value ".to_string()
    } else {
        format!("struct field {within}.{field} ")
    }
}

/// A Go type, as far as decoding into it goes.
enum Shape {
    /// `string`: a string; `null` leaves it unchanged.
    Str,
    /// `bool`: a bool; `null` leaves it unchanged.
    Bool,
    /// `interface{}`: anything; numbers are converted (and may be out of range).
    Any,
    /// `map[string]T`: an object, or `null`.
    Map(&'static Shape, &'static str),
    /// `[]T` (T not a byte): an array, or `null`.
    Slice(&'static Shape, &'static str),
    /// A struct: an object whose keys are matched to fields; `null` leaves it unchanged.
    Struct(&'static [(&'static str, Shape)], &'static str),
}

static STR: Shape = Shape::Str;
static BOOL: Shape = Shape::Bool;
static ANY: Shape = Shape::Any;
static GC_ATTACHMENT: Shape = Shape::Struct(
    &[("containerID", Shape::Str), ("ifname", Shape::Str)],
    "types.GCAttachment",
);

/// pkg/types/types.go `NetConf` at v1.1.2 (`PrevResult` is `json:"-"`).
/// The Go struct a plugin's configuration is decoded into: libcni 1.1's `types.NetConf`, or
/// 1.3's `types.PluginConf` (which adds `cni.dev/valid-attachments`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Struct {
    NetConf,
    PluginConf,
}

static NETCONF_1_1: &[(&str, Shape)] = &[
    ("cniVersion", Shape::Str),
    ("name", Shape::Str),
    ("type", Shape::Str),
    ("capabilities", Shape::Map(&BOOL, "map[string]bool")),
    ("ipam", Shape::Struct(&[("type", Shape::Str)], "types.IPAM")),
    (
        "dns",
        Shape::Struct(
            &[
                ("nameservers", Shape::Slice(&STR, "[]string")),
                ("domain", Shape::Str),
                ("search", Shape::Slice(&STR, "[]string")),
                ("options", Shape::Slice(&STR, "[]string")),
            ],
            "types.DNS",
        ),
    ),
    ("prevResult", Shape::Map(&ANY, "map[string]interface {}")),
];

/// v1.3.0's `PluginConf` (`NetConf` is its alias): one field more, for GC.
static NETCONF_1_3: &[(&str, Shape)] = &[
    ("cniVersion", Shape::Str),
    ("name", Shape::Str),
    ("type", Shape::Str),
    ("capabilities", Shape::Map(&BOOL, "map[string]bool")),
    ("ipam", Shape::Struct(&[("type", Shape::Str)], "types.IPAM")),
    (
        "dns",
        Shape::Struct(
            &[
                ("nameservers", Shape::Slice(&STR, "[]string")),
                ("domain", Shape::Str),
                ("search", Shape::Slice(&STR, "[]string")),
                ("options", Shape::Slice(&STR, "[]string")),
            ],
            "types.DNS",
        ),
    ),
    ("prevResult", Shape::Map(&ANY, "map[string]interface {}")),
    (
        "cni.dev/valid-attachments",
        Shape::Slice(&GC_ATTACHMENT, "[]types.GCAttachment"),
    ),
];

/// What `json.Unmarshal(bytes, &types.NetConf{})` decides, for the document `node` whose keys
/// arrive in `order`, with the struct of libcni `lib`. A top-level `null` is an empty NetConf
/// (the pointer libcni passes is not settable, so null reaches the struct and is ignored).
pub fn net_conf(node: &Node, order: KeyOrder, lib: Struct) -> Result<NetConf, NetConfError> {
    // 1.3.0's NetConf is an alias of PluginConf, the name Go reports.
    let (fields, go_name) = match lib {
        Struct::NetConf => (NETCONF_1_1, "types.NetConf"),
        Struct::PluginConf => (NETCONF_1_3, "types.PluginConf"),
    };
    let mut out = NetConf::default();
    let members = match node {
        Node::Null => return Ok(out),
        Node::Object(m) => members(m, order),
        other => {
            return Err(NetConfError::Type {
                within: "",
                field: String::new(),
                found: other.kind(),
                expected: go_name,
            });
        }
    };
    for (key, value) in members {
        let Some((name, shape)) = field(fields, key) else {
            continue; // unknown: skipped, never converted
        };
        let slot = match *name {
            "cniVersion" => Some(&mut out.cni_version),
            "name" => Some(&mut out.name),
            "type" => Some(&mut out.plugin_type),
            _ => None,
        };
        match (slot, value) {
            (Some(slot), Node::String(s)) => *slot = s.clone(),
            (Some(_), Node::Null) => {}
            _ => check(value, shape, order, short(go_name), name)?,
        }
    }
    Ok(out)
}

/// A Go type's name without its package, as `UnmarshalTypeError` names the struct.
fn short(go: &'static str) -> &'static str {
    go.rsplit('.').next().unwrap_or(go)
}

/// An object's members in the order a struct sees them.
fn members(m: &[(String, Node)], order: KeyOrder) -> Vec<(&str, &Node)> {
    match order {
        KeyOrder::Document => m.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        KeyOrder::Marshalled => {
            let mut last: std::collections::BTreeMap<&str, &Node> = Default::default();
            for (k, v) in m {
                last.insert(k, v);
            }
            last.into_iter().collect()
        }
    }
}

/// decode.go's field lookup: the exact name, else the first whose `foldName` is the key's.
fn field<'f>(fields: &'f [(&'static str, Shape)], key: &str) -> Option<&'f (&'static str, Shape)> {
    fields
        .iter()
        .find(|(n, _)| *n == key)
        .or_else(|| fields.iter().find(|(n, _)| fold_eq(key, n)))
}

/// `foldName(key) == foldName(name)` for an ASCII field name: fold.go upper-cases ASCII
/// letters and maps every other rune to the smallest of its `unicode.SimpleFold` orbit; the
/// only non-ASCII runes whose orbit holds an ASCII letter are the Kelvin sign (K, k) and the
/// long s (S, s).
fn fold_eq(key: &str, name: &str) -> bool {
    let mut chars = key.chars();
    for n in name.bytes() {
        let same = match chars.next() {
            None => return false,
            Some(c) if c.is_ascii() => (c as u8).eq_ignore_ascii_case(&n),
            Some('\u{212A}') => n.eq_ignore_ascii_case(&b'k'),
            Some('\u{017F}') => n.eq_ignore_ascii_case(&b's'),
            Some(_) => false,
        };
        if !same {
            return false;
        }
    }
    chars.next().is_none()
}

/// Whether `node` decodes into `shape` (a field's whole value, so the nesting of shapes is at
/// most three deep; only `Any` follows the input's nesting, iteratively).
fn check(
    node: &Node,
    shape: &Shape,
    order: KeyOrder,
    within: &'static str,
    path: &str,
) -> Result<(), NetConfError> {
    let mismatch = |expected| {
        Err(NetConfError::Type {
            within,
            field: path.to_string(),
            found: node.kind(),
            expected,
        })
    };
    match (shape, node) {
        (Shape::Any, _) => numbers_fit(node).map_err(NetConfError::Number),
        // literalStore: null is ignored for primitives and structs, zeroes maps and slices.
        (_, Node::Null) => Ok(()),
        (Shape::Str, Node::String(_)) | (Shape::Bool, Node::Bool(_)) => Ok(()),
        (Shape::Str, _) => mismatch("string"),
        (Shape::Bool, _) => mismatch("bool"),
        // Go names the field, not the map key or the element index.
        (Shape::Map(elem, _), Node::Object(m)) => {
            for (_, v) in members(m, order) {
                check(v, elem, order, within, path)?;
            }
            Ok(())
        }
        (Shape::Slice(elem, _), Node::Array(items)) => {
            for v in items {
                check(v, elem, order, within, path)?;
            }
            Ok(())
        }
        (Shape::Struct(fields, go), Node::Object(m)) => {
            for (k, v) in members(m, order) {
                if let Some((name, sub)) = field(fields, k) {
                    check(v, sub, order, short(go), &format!("{path}.{name}"))?;
                }
            }
            Ok(())
        }
        (Shape::Map(_, go) | Shape::Slice(_, go) | Shape::Struct(_, go), _) => mismatch(go),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nc(doc: &str, order: KeyOrder) -> Result<NetConf, NetConfError> {
        net_conf(&parse(doc.as_bytes()).unwrap(), order, Struct::NetConf)
    }

    // --- decode: the grammar and Go's replacements ---

    #[test]
    fn invalid_utf8_in_a_string_is_one_replacement_per_byte() {
        // E2 82 is a truncated 3-byte sequence: Go's DecodeRune gives (RuneError, 1) twice;
        // a lossy Rust decode would give one U+FFFD.
        let v = decode(b"\"a\xe2\x82b\xff\"").unwrap();
        assert_eq!(v, json!("a\u{FFFD}\u{FFFD}b\u{FFFD}"));
        // An encoded surrogate (ED A0 80) is three invalid bytes.
        assert_eq!(
            decode(b"\"\xed\xa0\x80\"").unwrap(),
            json!("\u{FFFD}".repeat(3))
        );
        assert!(serde_json::from_slice::<Value>(b"\"\xff\"").is_err());
    }

    #[test]
    fn a_lone_surrogate_escape_is_a_replacement() {
        assert_eq!(decode(br#""\ud800""#).unwrap(), json!("\u{FFFD}"));
        assert_eq!(decode(br#""\udc00x""#).unwrap(), json!("\u{FFFD}x"));
        // A high surrogate before a non-low escape: replaced, and the next escape stands alone.
        assert_eq!(decode(br#""\ud800\u0041""#).unwrap(), json!("\u{FFFD}A"));
        assert_eq!(decode(br#""\ud83d\ude00""#).unwrap(), json!("\u{1F600}"));
        assert!(serde_json::from_slice::<Value>(br#""\ud800""#).is_err());
    }

    #[test]
    fn an_invalid_byte_outside_a_string_is_a_syntax_error() {
        assert!(matches!(
            decode(b"{\"a\":1}\xff"),
            Err(GoJsonError::Syntax {
                offset: 7,
                byte: 0xff,
                context: "after top-level value"
            })
        ));
        assert!(matches!(
            decode(b"\xef\xbb\xbf{}"),
            Err(GoJsonError::Syntax { offset: 0, .. })
        ));
    }

    #[test]
    fn a_control_byte_in_a_string_is_a_syntax_error() {
        assert!(matches!(
            decode(b"\"a\nb\""),
            Err(GoJsonError::Syntax {
                context: "in string literal",
                ..
            })
        ));
        assert!(matches!(
            decode(br#""\x""#),
            Err(GoJsonError::Syntax {
                context: "in string escape code",
                ..
            })
        ));
    }

    #[test]
    fn nesting_to_go_s_limit_decodes_and_one_more_does_not() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        // serde_json stops at 128.
        assert!(serde_json::from_str::<Value>(&deep(129)).is_err());
        drop_value(decode(deep(MAX_DEPTH).as_bytes()).unwrap());
        assert!(matches!(
            decode(deep(MAX_DEPTH + 1).as_bytes()),
            Err(GoJsonError::TooDeep {
                offset: MAX_DEPTH,
                ..
            })
        ));
        let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        drop_value(decode(objects.as_bytes()).unwrap());
        drop(parse(objects.as_bytes()).unwrap());
    }

    #[test]
    fn a_number_beyond_float64_is_an_error_and_underflow_is_zero() {
        assert_eq!(
            decode(b"1e400"),
            Err(GoJsonError::NumberRange {
                literal: "1e400".into()
            })
        );
        assert!(decode(format!("1{}", "0".repeat(400)).as_bytes()).is_err());
        assert_eq!(decode(b"1e-400").unwrap(), json!(0.0));
        assert_eq!(decode(b"1.7976931348623157e308").unwrap(), json!(f64::MAX));
    }

    #[test]
    fn the_last_duplicate_key_wins() {
        assert_eq!(decode(br#"{"a":1,"a":2}"#).unwrap(), json!({"a": 2}));
    }

    #[test]
    fn trailing_data_is_an_error() {
        assert!(matches!(
            decode(b"{} {}"),
            Err(GoJsonError::Syntax {
                context: "after top-level value",
                ..
            })
        ));
        assert_eq!(decode(b"{} \t\r\n").unwrap(), json!({}));
    }

    #[test]
    fn a_top_level_null_decodes() {
        assert_eq!(decode(b" null ").unwrap(), Value::Null);
        assert_eq!(decode(b""), Err(GoJsonError::Eof));
    }

    #[test]
    fn number_grammar_is_go_s() {
        for bad in ["01", "-", "1.", ".5", "1e", "+1", "0x1", "1e+"] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad}");
        }
        for good in ["0", "-0", "1.5e+3", "1E-2", "-12.0"] {
            assert!(decode(good.as_bytes()).is_ok(), "{good}");
        }
    }

    #[test]
    fn go_s_error_wording() {
        // podman 4.3.1 printed "invalid character 'ÿ' after object key:value pair".
        let e = decode(b"{\"a\":1\xff}").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid character 'ÿ' after object key:value pair (byte 6)"
        );
        let e = decode(b"[1,]").unwrap_err().to_string();
        assert_eq!(
            e,
            "invalid character ']' looking for beginning of value (byte 3)"
        );
        let e = decode(b"{\"a\" 1}").unwrap_err().to_string();
        assert_eq!(e, "invalid character '1' after object key (byte 5)");
        let e = decode(b"tru").unwrap_err().to_string();
        assert_eq!(e, "unexpected end of JSON input");
    }

    // --- net_conf: json.Unmarshal into types.NetConf ---

    #[test]
    fn fields_match_case_insensitively() {
        let c = nc(
            r#"{"TYPE":"bridge","Name":"n","CNIVERSION":"1.0.0"}"#,
            KeyOrder::Document,
        );
        assert_eq!(
            c.unwrap(),
            NetConf {
                cni_version: "1.0.0".into(),
                name: "n".into(),
                plugin_type: "bridge".into()
            }
        );
    }

    #[test]
    fn the_kelvin_sign_and_the_long_s_fold_to_ascii() {
        // podman 4.3.1: "dnſ" is the dns field ("cannot unmarshal number into ... NetConf.dns").
        let c = nc(
            "{\"type\":\"x\",\"cniVer\u{17F}ion\":\"0.4.0\"}",
            KeyOrder::Document,
        )
        .unwrap();
        assert_eq!(c.cni_version, "0.4.0");
        let e = nc("{\"type\":\"x\",\"dn\u{17F}\":1}", KeyOrder::Document).unwrap_err();
        assert!(matches!(
            e,
            NetConfError::Type {
                expected: "types.DNS",
                ..
            }
        ));
        // No NetConf field holds a k; the fold itself:
        assert!(fold_eq("\u{212A}ey", "key"));
        assert!(fold_eq("KEY", "key"));
        // The dotted capital I and the dotless i fold to no ASCII letter.
        assert!(!fold_eq("\u{130}pam", "ipam"));
        assert!(!fold_eq("\u{131}pam", "ipam"));
        // Non-letters match only themselves.
        assert!(!fold_eq(
            "cni.dev/valid-attachments".replace('-', "_").as_str(),
            "cni.dev/valid-attachments"
        ));
    }

    #[test]
    fn each_key_assigns_in_document_order() {
        let c = nc(r#"{"type":"a","Type":""}"#, KeyOrder::Document).unwrap();
        assert_eq!(c.plugin_type, "");
        let c = nc(r#"{"Type":"","type":"a"}"#, KeyOrder::Document).unwrap();
        assert_eq!(c.plugin_type, "a");
    }

    #[test]
    fn marshalled_keys_assign_in_sorted_order() {
        // Marshal sorts "Type" < "type": the lower-case key is assigned last.
        let c = nc(r#"{"type":"a","Type":""}"#, KeyOrder::Marshalled).unwrap();
        assert_eq!(c.plugin_type, "a");
        // ... and the map kept only the last of a duplicate, so an earlier bad value is gone.
        assert!(nc(r#"{"type":1,"type":"a"}"#, KeyOrder::Document).is_err());
        assert_eq!(
            nc(r#"{"type":1,"type":"a"}"#, KeyOrder::Marshalled)
                .unwrap()
                .plugin_type,
            "a"
        );
    }

    #[test]
    fn null_leaves_a_string_field_as_it_was() {
        let c = nc(r#"{"type":"a","type":null}"#, KeyOrder::Document).unwrap();
        assert_eq!(c.plugin_type, "a");
    }

    #[test]
    fn a_string_field_of_another_kind_is_a_type_error() {
        for v in ["1", "true", "{}", "[]"] {
            let e = nc(&format!(r#"{{"type":"a","name":{v}}}"#), KeyOrder::Document).unwrap_err();
            assert!(
                matches!(
                    e,
                    NetConfError::Type {
                        expected: "string",
                        ..
                    }
                ),
                "{v}"
            );
        }
        let e = nc(r#"{"name":1}"#, KeyOrder::Document)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "json: cannot unmarshal number into Go struct field NetConf.name of type string"
        );
        // podman 4.3.1: a nested field is named by its struct and its path from the top.
        let e = nc(r#"{"dns":{"search":[1]}}"#, KeyOrder::Document)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "json: cannot unmarshal number into Go struct field DNS.dns.search of type string"
        );
    }

    #[test]
    fn capabilities_are_a_map_of_bool() {
        assert!(
            nc(
                r#"{"capabilities":{"portMappings":true,"x":null}}"#,
                KeyOrder::Document
            )
            .is_ok()
        );
        assert!(nc(r#"{"capabilities":null}"#, KeyOrder::Document).is_ok());
        assert!(
            nc(
                r#"{"capabilities":{"portMappings":"true"}}"#,
                KeyOrder::Document
            )
            .is_err()
        );
        assert!(nc(r#"{"capabilities":[]}"#, KeyOrder::Document).is_err());
    }

    #[test]
    fn ipam_is_an_object_with_a_string_type() {
        assert!(
            nc(
                r#"{"ipam":{"type":"host-local","ranges":[[1]]}}"#,
                KeyOrder::Document
            )
            .is_ok()
        );
        assert!(nc(r#"{"ipam":null}"#, KeyOrder::Document).is_ok());
        assert!(nc(r#"{"ipam":{"TYPE":1}}"#, KeyOrder::Document).is_err());
        assert!(nc(r#"{"ipam":"host-local"}"#, KeyOrder::Document).is_err());
    }

    #[test]
    fn dns_is_an_object_of_string_lists_and_a_domain() {
        let ok =
            r#"{"dns":{"nameservers":["10.0.0.10",null],"domain":"d","search":null,"options":[]}}"#;
        assert!(nc(ok, KeyOrder::Document).is_ok());
        assert!(nc(r#"{"dns":{"nameservers":"10.0.0.10"}}"#, KeyOrder::Document).is_err());
        assert!(nc(r#"{"dns":{"search":[1]}}"#, KeyOrder::Document).is_err());
        assert!(nc(r#"{"dns":{"domain":[]}}"#, KeyOrder::Document).is_err());
        assert!(nc(r#"{"dns":[]}"#, KeyOrder::Document).is_err());
    }

    #[test]
    fn prev_result_is_an_object_whose_numbers_must_fit() {
        assert!(nc(r#"{"prevResult":{"ips":[{"a":1}]}}"#, KeyOrder::Document).is_ok());
        assert!(nc(r#"{"prevResult":[]}"#, KeyOrder::Document).is_err());
        assert!(matches!(
            nc(r#"{"prevResult":{"x":[1e400]}}"#, KeyOrder::Document),
            Err(NetConfError::Number(GoJsonError::NumberRange { .. }))
        ));
    }

    #[test]
    fn unknown_keys_are_skipped_unconverted() {
        // A number out of range in a skipped field is no error for a struct.
        let c = nc(
            r#"{"type":"a","mtu":1e400,"args":{"x":[]}}"#,
            KeyOrder::Document,
        )
        .unwrap();
        assert_eq!(c.plugin_type, "a");
    }

    #[test]
    fn a_non_object_document_fails_and_null_is_empty() {
        assert!(nc(r#""bridge""#, KeyOrder::Marshalled).is_err());
        assert!(nc("[]", KeyOrder::Marshalled).is_err());
        assert_eq!(
            nc("null", KeyOrder::Marshalled).unwrap(),
            NetConf::default()
        );
    }

    #[test]
    fn valid_attachments_is_a_field_from_libcni_1_3_0() {
        let doc = parse(br#"{"type":"a","cni.dev/valid-attachments":1}"#).unwrap();
        assert!(net_conf(&doc, KeyOrder::Document, Struct::NetConf).is_ok());
        assert!(net_conf(&doc, KeyOrder::Document, Struct::PluginConf).is_err());
        let ok = parse(
            br#"{"type":"a","cni.dev/valid-attachments":[{"containerID":"c","ifname":null}]}"#,
        )
        .unwrap();
        assert!(net_conf(&ok, KeyOrder::Document, Struct::PluginConf).is_ok());
    }

    mod random {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn no_input_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode(&bytes);
                if let Ok(doc) = parse(&bytes) {
                    let _ = net_conf(&doc, KeyOrder::Document, Struct::PluginConf);
                    let _ = net_conf(&doc, KeyOrder::Marshalled, Struct::NetConf);
                }
            }

            #[test]
            fn json_serde_accepts_decodes_the_same(v in any_json()) {
                // Where serde_json's and Go's rules meet (valid UTF-8, shallow, no duplicates),
                // the values agree.
                let text = serde_json::to_vec(&v).unwrap();
                prop_assert_eq!(decode(&text).unwrap(), v);
            }
        }

        fn any_json() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::Bool),
                any::<i64>().prop_map(|i| json!(i)),
                any::<u64>().prop_map(|u| json!(u)),
                (-1e300f64..1e300).prop_map(|f| json!(f)),
                ".*".prop_map(Value::String),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                    proptest::collection::btree_map(".*", inner, 0..6)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
        }
    }
}
