//! The CNI versions the plugin speaks, and which command each one allows, as libcni's
//! `pkg/skel` decides it (docs/upstream.md, "CNI versions"): the configuration's `cniVersion`
//! must be one of `SUPPORTED_VERSIONS` exactly (a missing one reads as 0.1.0); CHECK needs
//! 0.4.0 or later, STATUS and GC 1.1.0 or later; any refusal is code 1 (incompatible
//! version), except a version that is not a version at all for a command that compares it
//! (code 6, as skel). VERSION lists them all; the reply's own `cniVersion` is the newest.

use serde_json::Value;

use super::error::{CniError, code};

/// The CNI versions this plugin speaks, oldest first: the one list. VERSION answers it, a
/// configuration in any other version is refused, and the installer refuses a chain whose
/// version is not in it. 0.3.x is what Calico's and flannel's stock conflists say.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A version number as libcni's `ParseVersion` reads one: up to three dot-separated
/// integers, missing parts 0, the empty string 0.1.0.
type Number = (u64, u64, u64);

fn number(text: &str) -> Option<Number> {
    if text.is_empty() {
        return Some((0, 1, 0));
    }
    let mut parts = text.split('.');
    let mut next = || parts.next().map(|p| p.parse::<u64>().ok());
    let major = next()??;
    let minor = next().unwrap_or(Some(0))?;
    let micro = next().unwrap_or(Some(0))?;
    parts.next().is_none().then_some((major, minor, micro))
}

/// One of `SUPPORTED_VERSIONS` (its index: the list is in ascending order, which a test
/// keeps true, so versions compare as their indexes do).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(usize);

const _: () = assert!(!SUPPORTED_VERSIONS.is_empty());

/// The shape a version gives a result: before 1.0.0 each IP names its family (`"version":
/// "4"`) and interfaces carry only name, mac and sandbox; from 1.0.0 IPs have no `version`
/// and interfaces may carry mtu, socketPath and pciID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    V04,
    V1,
}

impl Version {
    /// The version `text` names exactly, when the plugin speaks it (libcni compares the
    /// strings: "1.0" is not "1.0.0").
    pub fn supported(text: &str) -> Option<Version> {
        SUPPORTED_VERSIONS
            .iter()
            .position(|v| *v == text)
            .map(Version)
    }

    /// The newest version: VERSION's own `cniVersion`, and that of an error reply to a
    /// configuration whose version is unknown.
    pub fn latest() -> Version {
        Version(SUPPORTED_VERSIONS.len() - 1)
    }

    pub fn as_str(self) -> &'static str {
        SUPPORTED_VERSIONS[self.0]
    }

    pub fn shape(self) -> Shape {
        if number(self.as_str()).is_some_and(|n| n >= (1, 0, 0)) {
            Shape::V1
        } else {
            Shape::V04
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first version that allows `command`, for those not in every version.
fn allowed_from(command: &str) -> Option<(&'static str, Number)> {
    match command {
        "CHECK" => Some(("0.4.0", (0, 4, 0))),
        "STATUS" | "GC" => Some(("1.1.0", (1, 1, 0))),
        _ => None,
    }
}

/// The `cniVersion` text of a configuration, as libcni decodes it: absent or empty is
/// "" (read as 0.1.0); anything but a string cannot be decoded (code 6).
fn declared(conf: &Value) -> Result<String, CniError> {
    match conf.get("cniVersion") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(CniError::new(
            code::DECODE,
            "cannot decode the network configuration",
            format!("cniVersion = {other}: expected a version string such as \"1.1.0\""),
        )),
    }
}

/// The configuration's version, if `command` may run in it. `conf` is the decoded
/// configuration (its decoding errors are the caller's).
pub fn accept(command: &str, conf: &Value) -> Result<Version, CniError> {
    let text = declared(conf)?;
    let shown = if text.is_empty() {
        "missing (libcni reads that as 0.1.0)".to_string()
    } else {
        format!("{text:?}")
    };
    if let Some((first, from)) = allowed_from(command) {
        let Some(n) = number(&text) else {
            return Err(CniError::new(
                code::DECODE,
                "cannot decode the network configuration",
                format!("cniVersion {shown} is not a version (expected such as \"1.1.0\")"),
            ));
        };
        if n < from {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("config version does not allow {command}"),
                format!("cniVersion {shown}: {command} needs {first} or later"),
            ));
        }
    }
    Version::supported(&text).ok_or_else(|| {
        CniError::new(
            code::INCOMPATIBLE_VERSION,
            "incompatible CNI versions",
            format!(
                "cniVersion {shown} is not supported (supported: {})",
                SUPPORTED_VERSIONS.join(", ")
            ),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_list_is_in_ascending_order_and_every_entry_parses() {
        let numbers: Vec<Number> = SUPPORTED_VERSIONS
            .iter()
            .map(|v| number(v).expect("parses"))
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
        assert_eq!(Version::latest().as_str(), "1.1.0");
    }

    #[test]
    fn numbers_as_libcni_parses_them() {
        assert_eq!(number(""), Some((0, 1, 0)));
        assert_eq!(number("1"), Some((1, 0, 0)));
        assert_eq!(number("0.4"), Some((0, 4, 0)));
        assert_eq!(number("1.1.0"), Some((1, 1, 0)));
        assert_eq!(number("1.1.0.0"), None);
        assert_eq!(number("x.1"), None);
        assert_eq!(number("1."), None);
    }

    #[test]
    fn shapes() {
        let shape = |v: &str| Version::supported(v).unwrap().shape();
        assert_eq!(shape("0.3.0"), Shape::V04);
        assert_eq!(shape("0.3.1"), Shape::V04);
        assert_eq!(shape("0.4.0"), Shape::V04);
        assert_eq!(shape("1.0.0"), Shape::V1);
        assert_eq!(shape("1.1.0"), Shape::V1);
    }

    /// (command, cniVersion, the code, a word of the message); 0: accepted.
    const CASES: &[(&str, &str, u32, &str)] = &[
        ("ADD", "0.3.0", 0, ""),
        ("ADD", "0.3.1", 0, ""),
        ("ADD", "1.1.0", 0, ""),
        ("ADD", "0.2.0", 1, "incompatible"),
        ("ADD", "2.0.0", 1, "incompatible"),
        ("ADD", "1.0", 1, "incompatible"),
        ("ADD", "", 1, "incompatible"),
        ("CHECK", "0.3.0", 1, "does not allow CHECK"),
        ("CHECK", "0.3.1", 1, "does not allow CHECK"),
        ("CHECK", "0.4.0", 0, ""),
        ("CHECK", "1.0.0", 0, ""),
        ("CHECK", "2.0.0", 1, "incompatible"),
        ("CHECK", "abc", 6, "decode"),
        ("STATUS", "1.0.0", 1, "does not allow STATUS"),
        ("STATUS", "0.4.0", 1, "does not allow STATUS"),
        ("STATUS", "1.1.0", 0, ""),
        ("GC", "1.0.0", 1, "does not allow GC"),
        ("GC", "0.3.1", 1, "does not allow GC"),
        ("GC", "1.1.0", 0, ""),
        ("GC", "", 1, "does not allow GC"),
    ];

    #[test]
    fn commands_are_allowed_from_their_version_as_skel_allows_them() {
        for (command, v, want, words) in CASES {
            let conf = if v.is_empty() {
                json!({"name": "n"})
            } else {
                json!({"cniVersion": v})
            };
            match accept(command, &conf) {
                Ok(got) if *want == 0 => assert_eq!(got.as_str(), *v),
                Ok(got) => panic!("{command} {v}: accepted as {got}"),
                Err(e) => {
                    assert_eq!(e.code, *want, "{command} {v:?}: {e:?}");
                    assert!(e.msg.contains(words), "{command} {v:?}: {e:?}");
                    assert!(
                        e.details.contains(if v.is_empty() { "missing" } else { v }),
                        "{command} {v:?}: {e:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_version_that_is_not_a_string_cannot_be_decoded() {
        let e = accept("ADD", &json!({"cniVersion": 1})).unwrap_err();
        assert_eq!(e.code, code::DECODE, "{e:?}");
        assert!(e.details.contains("cniVersion = 1"), "{e:?}");
    }
}
