//! Label selectors as Kubernetes has them (`metav1.LabelSelector`: `matchLabels` and
//! `matchExpressions` with In, NotIn, Exists and DoesNotExist) and istio-cni's ambient
//! enablement selectors made of them (cni/pkg/util/enablement_selector.go): a pod is ambient
//! when, for one of the selectors, its labels match the `podSelector` and its namespace's
//! labels match the `namespaceSelector`; an empty (or absent) selector matches everything, and
//! no selectors at all match nothing. Typed and checked once (keys and values as the API
//! server checks a label, bounded sizes), from the installer's `AMBIENT_ENABLEMENT_SELECTOR`
//! (YAML, as istio-cni reads it) or from the plugin entry's `kubernetes.enablement-selectors`
//! (the JSON the installer writes); matching is pure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::de::{Deserialize, Deserializer, Visitor};
use serde_json::{Map, Value, json};

use crate::values::{LabelKey, LabelValue, Problem};

/// istio-cni's chart default (`ambient.enablementSelectors` in manifests/charts/istio-cni),
/// as its configmap hands it to the agent: pods labelled `istio.io/dataplane-mode=ambient`,
/// and pods not labelled `none` in namespaces labelled `ambient`.
pub const DEFAULT_YAML: &str = "- podSelector:
    matchLabels: {istio.io/dataplane-mode: ambient}
- podSelector:
    matchExpressions:
    - { key: istio.io/dataplane-mode, operator: NotIn, values: [none] }
  namespaceSelector:
    matchLabels: {istio.io/dataplane-mode: ambient}
";

/// The longest setting read (bytes): the chart's default is 200.
pub const MAX_TEXT: usize = 64 * 1024;
/// The most enablement selectors.
pub const MAX_SELECTORS: usize = 64;
/// The most `matchLabels` entries, and the most `matchExpressions`, of one label selector.
pub const MAX_REQUIREMENTS: usize = 64;
/// The most `values` of one expression.
pub const MAX_VALUES: usize = 256;

/// The label of istio's default selectors.
const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";

/// A `matchExpressions` operator with its values (`metav1.LabelSelectorOperator`). In and
/// NotIn have at least one value, Exists and DoesNotExist none, as `labels.NewRequirement`
/// demands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operator {
    In(Vec<LabelValue>),
    NotIn(Vec<LabelValue>),
    Exists,
    DoesNotExist,
}

impl Operator {
    fn name(&self) -> &'static str {
        match self {
            Operator::In(_) => "In",
            Operator::NotIn(_) => "NotIn",
            Operator::Exists => "Exists",
            Operator::DoesNotExist => "DoesNotExist",
        }
    }
    fn values(&self) -> &[LabelValue] {
        match self {
            Operator::In(v) | Operator::NotIn(v) => v,
            Operator::Exists | Operator::DoesNotExist => &[],
        }
    }
}

/// One `matchExpressions` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: LabelKey,
    pub operator: Operator,
}

impl Requirement {
    /// `labels.Requirement.Matches`: In needs the label with one of the values; NotIn is true
    /// when the label is absent or has none of them; Exists and DoesNotExist look at the key.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(self.key.as_str()).map(String::as_str);
        let listed = |v: &str| self.operator.values().iter().any(|x| x.as_str() == v);
        match &self.operator {
            Operator::In(_) => value.is_some_and(listed),
            Operator::NotIn(_) => !value.is_some_and(listed),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// A `metav1.LabelSelector`: every `matchLabels` entry and every expression must hold; an
/// empty one matches every set of labels (`labels.Everything()`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LabelSelector {
    pub match_labels: BTreeMap<LabelKey, LabelValue>,
    pub match_expressions: Vec<Requirement>,
}

impl LabelSelector {
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| labels.get(k.as_str()).map(String::as_str) == Some(v.as_str()))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        if !self.match_labels.is_empty() {
            let labels: Map<String, Value> = self
                .match_labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string().into()))
                .collect();
            m.insert("matchLabels".into(), labels.into());
        }
        if !self.match_expressions.is_empty() {
            let exprs: Vec<Value> = self
                .match_expressions
                .iter()
                .map(|r| {
                    let mut e = json!({"key": r.key.as_str(), "operator": r.operator.name()});
                    let values = r.operator.values();
                    if !values.is_empty() {
                        e["values"] = values.iter().map(|v| v.as_str()).collect();
                    }
                    e
                })
                .collect();
            m.insert("matchExpressions".into(), exprs.into());
        }
        m.into()
    }
}

/// One enablement selector: the pod's labels against `pod`, its namespace's against
/// `namespace`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnablementSelector {
    pub pod: LabelSelector,
    pub namespace: LabelSelector,
}

/// istio-cni's `CompiledEnablementSelectors`: a pod is selected when one of them matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnablementSelectors(Vec<EnablementSelector>);

impl Default for EnablementSelectors {
    /// istio-cni's chart default (`DEFAULT_YAML`), built without parsing.
    fn default() -> EnablementSelectors {
        let key = LabelKey::parse(DATAPLANE_MODE);
        let (ambient, none) = (LabelValue::parse("ambient"), LabelValue::parse("none"));
        let (Ok(key), Ok(ambient), Ok(none)) = (key, ambient, none) else {
            // Unreachable: the three are valid; the empty list would select no pod.
            return EnablementSelectors(Vec::new());
        };
        let labelled = LabelSelector {
            match_labels: BTreeMap::from([(key.clone(), ambient)]),
            match_expressions: Vec::new(),
        };
        EnablementSelectors(vec![
            EnablementSelector {
                pod: labelled.clone(),
                namespace: LabelSelector::default(),
            },
            EnablementSelector {
                pod: LabelSelector {
                    match_labels: BTreeMap::new(),
                    match_expressions: vec![Requirement {
                        key,
                        operator: Operator::NotIn(vec![none]),
                    }],
                },
                namespace: labelled,
            },
        ])
    }
}

impl EnablementSelectors {
    pub fn new(selectors: Vec<EnablementSelector>) -> EnablementSelectors {
        EnablementSelectors(selectors)
    }

    pub fn selectors(&self) -> &[EnablementSelector] {
        &self.0
    }

    /// `CompiledEnablementSelectors.Matches`, less its host-network and sidecar exclusions
    /// (`agent::eligible` applies those, with the others).
    pub fn matches(
        &self,
        pod_labels: &BTreeMap<String, String>,
        namespace_labels: &BTreeMap<String, String>,
    ) -> bool {
        self.0
            .iter()
            .any(|s| s.pod.matches(pod_labels) && s.namespace.matches(namespace_labels))
    }

    /// What the pod's labels decide alone, so the namespace need not be read: `Some(true)`
    /// when a selector matching them has an empty namespace selector, `Some(false)` when no
    /// selector's pod selector matches them, else `None`.
    pub fn decided_by_pod(&self, pod_labels: &BTreeMap<String, String>) -> Option<bool> {
        let mut matching = self
            .0
            .iter()
            .filter(|s| s.pod.matches(pod_labels))
            .peekable();
        if matching.peek().is_none() {
            return Some(false);
        }
        matching.any(|s| s.namespace.is_empty()).then_some(true)
    }

    /// The JSON istio-cni's installer writes into its plugin entry (`enablement_selectors`:
    /// `podSelector` and `namespaceSelector` always, `matchLabels`, `matchExpressions` and
    /// `values` when not empty), which `from_json` reads back.
    pub fn to_json(&self) -> Value {
        self.0
            .iter()
            .map(|s| json!({"podSelector": s.pod.to_json(), "namespaceSelector": s.namespace.to_json()}))
            .collect()
    }

    /// The plugin entry's selectors (`to_json`'s shape): strings must be JSON strings.
    pub fn from_json(v: &Value) -> Result<EnablementSelectors, Problem> {
        let raw = Option::<Vec<RawEnablement<'_>>>::deserialize(v).map_err(|e| e.to_string())?;
        compile(raw.unwrap_or_default(), &|_| true)
    }

    /// The installer's setting, YAML as istio-cni reads it (a list of `podSelector` and
    /// `namespaceSelector`; `[]` or `null`: no pod is selected).
    #[cfg(feature = "kubernetes")]
    pub fn from_yaml(text: &str) -> Result<EnablementSelectors, Problem> {
        if text.len() > MAX_TEXT {
            return Err(format!(
                "is {} bytes, more than {MAX_TEXT}: expected a YAML list of enablement selectors",
                text.len()
            ));
        }
        if let Some(line) = outside_comments(text, '*') {
            return Err(format!(
                "line {line}: a YAML alias ('*'): a few bytes of aliases expand into selectors far past the limits (and the plugin's entry past what the plugin reads), and the chart's toYaml never writes one; expected the selectors written out"
            ));
        }
        if let Some(line) = outside_comments(text, '!') {
            return Err(format!(
                "line {line}: a YAML tag ('!'): istio-cni's reader converts a tagged scalar (`!!bool \"yes\"` is true, `!!binary` decodes base64), so its selector would differ from this one; expected the values plain or quoted, without tags"
            ));
        }
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw = Option::<Vec<RawEnablement<'_>>>::deserialize(de)
            .map_err(|e| format!("is not a YAML list of enablement selectors: {e}"))?;
        compile(raw.unwrap_or_default(), &|t| !plain_in(t, text))
    }

    /// Without the `kubernetes` feature there is no YAML reader (nor an installer to need one).
    #[cfg(not(feature = "kubernetes"))]
    pub fn from_yaml(_text: &str) -> Result<EnablementSelectors, Problem> {
        Err("cannot be read: this build has no YAML reader (the kubernetes feature)".into())
    }
}

impl fmt::Display for EnablementSelectors {
    /// The JSON form, for logs and errors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_json())
    }
}

/// The flag table's parser of `AMBIENT_ENABLEMENT_SELECTOR`.
pub fn enablement_selectors(s: &str) -> Result<EnablementSelectors, Problem> {
    EnablementSelectors::from_yaml(s)
}

/// A string as the reader has it: borrowed from the input when it is the input's text
/// (plain, or quoted without escapes), so `plain_in` can tell how it was written.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(s)))
            }
        }
        // A YAML reader gives every scalar as text here (`1`, `true`, `~` as written); JSON
        // gives only strings.
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// One list entry as written (istio-cni's `EnablementSelector`). Unknown keys are refused,
/// where Go's decoder ignores them (and matches keys case-insensitively): a misspelt
/// `matchLabel` would otherwise leave an empty selector, which selects every pod.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawEnablement<'a> {
    #[serde(borrow, default)]
    pod_selector: Option<RawLabelSelector<'a>>,
    #[serde(borrow, default)]
    namespace_selector: Option<RawLabelSelector<'a>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLabelSelector<'a> {
    #[serde(borrow, default)]
    match_labels: Option<BTreeMap<Text<'a>, Text<'a>>>,
    #[serde(borrow, default)]
    match_expressions: Option<Vec<RawRequirement<'a>>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequirement<'a> {
    #[serde(borrow)]
    key: Text<'a>,
    #[serde(borrow)]
    operator: Text<'a>,
    #[serde(borrow, default)]
    values: Option<Vec<Text<'a>>>,
}

/// The first line (from 1) of `text` that has `indicator` (a tag's `!`, an alias's `*`)
/// outside a comment. No label key, value or operator may hold either, so any one outside a
/// comment is the YAML indicator (or makes the setting invalid anyway); a `#` that is inside
/// a quoted scalar ends no comment, but such a scalar is no label either, so the setting is
/// refused all the same.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
fn outside_comments(text: &str, indicator: char) -> Option<usize> {
    text.lines().enumerate().find_map(|(n, line)| {
        let code = line
            .char_indices()
            .find(|&(i, c)| c == '#' && (i == 0 || line[..i].ends_with([' ', '\t'])))
            .map_or(line, |(i, _)| &line[..i]);
        code.contains(indicator).then_some(n + 1)
    })
}

/// Whether `t` was written as a plain (unquoted) scalar of `input`: the reader lends a plain
/// scalar's text, and a quoted one's from just inside its quote; text it had to build
/// (escapes, folded lines, block scalars) is owned, and never a plain word YAML 1.1 reads
/// otherwise. Only addresses are compared.
#[cfg_attr(not(feature = "kubernetes"), allow(dead_code))]
fn plain_in(t: &Text<'_>, input: &str) -> bool {
    let Cow::Borrowed(s) = &t.0 else {
        return false;
    };
    let base = input.as_ptr() as usize;
    let Some(start) = (s.as_ptr() as usize).checked_sub(base) else {
        return false;
    };
    if start + s.len() > input.len() {
        return false;
    }
    let before = start.checked_sub(1).and_then(|i| input.as_bytes().get(i));
    !matches!(before, Some(b'"' | b'\''))
}

/// What istio-cni's YAML reader (YAML 1.1: go-yaml v2 under sigs.k8s.io/yaml) makes of a
/// plain scalar that is not a string to it: sigs.k8s.io/yaml then turns it back into text
/// (`yes` becomes "true", `0x1F` "31"), so it would select another value than written.
fn yaml11_not_a_string(s: &str) -> Option<&'static str> {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => Some("null (the empty string)"),
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some("the boolean true (the text \"true\")")
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some("the boolean false (the text \"false\")")
        }
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
        | "-.inf" | "-.Inf" | "-.INF" => Some("a number"),
        _ if go_yaml_number(s) => Some("a number (its digits in Go's decimal form)"),
        _ => None,
    }
}

/// go-yaml v2's `resolve` for a plain scalar starting with a digit, sign or dot: an integer
/// as Go's `ParseInt(s, 0, 64)`/`ParseUint` read it once `_` are dropped (0x, 0o, 0b, a
/// leading 0 for octal), or a float of its `yamlStyleFloat` form.
fn go_yaml_number(s: &str) -> bool {
    let Some(&first) = s.as_bytes().first() else {
        return false;
    };
    if first == b'.' {
        return yaml_style_float(s);
    }
    if !(first.is_ascii_digit() || first == b'+' || first == b'-') {
        return false;
    }
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    go_int(&plain) || yaml_style_float(&plain)
}

fn go_int(s: &str) -> bool {
    let (negative, unsigned) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = unsigned.to_ascii_lowercase();
    let (digits, radix) = if let Some(d) = lower.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = lower.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = lower.strip_prefix("0b") {
        (d, 2)
    } else if lower.len() > 1
        && let Some(d) = lower.strip_prefix('0')
    {
        (d, 8)
    } else {
        (lower.as_str(), 10)
    };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return false;
    }
    match u64::from_str_radix(digits, radix) {
        Ok(n) if negative => n <= 1 << 63,
        Ok(_) => true,
        Err(_) => false,
    }
}

/// `^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`
fn yaml_style_float(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    let digits = |t: &str| t.len() - t.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mantissa_ok = if let Some(frac) = mantissa.strip_prefix('.') {
        !frac.is_empty() && digits(frac) == frac.len()
    } else {
        let int = digits(mantissa);
        let rest = &mantissa[int..];
        int > 0
            && (rest.is_empty() || (rest.starts_with('.') && digits(&rest[1..]) == rest.len() - 1))
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e) == e.len()
    });
    mantissa_ok && exponent_ok
}

/// Checks a scalar: written as upstream reads it (`written_as_is`: not a plain scalar YAML
/// 1.1 reads as something else), then by `check`.
fn text<T>(
    t: &Text<'_>,
    at: &str,
    written_as_is: &dyn Fn(&Text<'_>) -> bool,
    check: fn(&str) -> Result<T, Problem>,
) -> Result<T, Problem> {
    let s: &str = &t.0;
    if !written_as_is(t)
        && let Some(what) = yaml11_not_a_string(s)
    {
        return Err(format!(
            "{at}: {s:?} unquoted is {what} to istio-cni's YAML 1.1 reader, not the text written: quote it (\"{s}\")"
        ));
    }
    check(s).map_err(|p| format!("{at}: {s:?} {p}"))
}

fn label_selector(
    raw: Option<RawLabelSelector<'_>>,
    at: &str,
    written_as_is: &dyn Fn(&Text<'_>) -> bool,
) -> Result<LabelSelector, Problem> {
    let Some(raw) = raw else {
        return Ok(LabelSelector::default());
    };
    let labels = raw.match_labels.unwrap_or_default();
    let exprs = raw.match_expressions.unwrap_or_default();
    for (n, what) in [
        (labels.len(), "matchLabels"),
        (exprs.len(), "matchExpressions"),
    ] {
        if n > MAX_REQUIREMENTS {
            return Err(format!(
                "{at}.{what}: {n} entries, more than {MAX_REQUIREMENTS}"
            ));
        }
    }
    let mut out = LabelSelector::default();
    for (k, v) in &labels {
        let at = format!("{at}.matchLabels");
        let key = text(k, &at, written_as_is, LabelKey::parse)?;
        let value = text(v, &format!("{at}.{key}"), written_as_is, LabelValue::parse)?;
        out.match_labels.insert(key, value);
    }
    for (i, e) in exprs.iter().enumerate() {
        let at = format!("{at}.matchExpressions[{i}]");
        let key = text(&e.key, &format!("{at}.key"), written_as_is, LabelKey::parse)?;
        let op = text(&e.operator, &format!("{at}.operator"), written_as_is, |s| {
            Ok(s.to_string())
        })?;
        let raw_values = e.values.as_deref().unwrap_or_default();
        if raw_values.len() > MAX_VALUES {
            return Err(format!(
                "{at}.values: {} values, more than {MAX_VALUES}",
                raw_values.len()
            ));
        }
        let mut values = Vec::with_capacity(raw_values.len());
        for (j, v) in raw_values.iter().enumerate() {
            values.push(text(
                v,
                &format!("{at}.values[{j}]"),
                written_as_is,
                LabelValue::parse,
            )?);
        }
        let operator = match op.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "{at}: operator {op} needs at least one value in values"
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!(
                    "{at}: operator {op} takes no values (values must be empty)"
                ));
            }
            "In" => Operator::In(values),
            "NotIn" => Operator::NotIn(values),
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            other => {
                return Err(format!(
                    "{at}.operator: {other:?} is not an operator (In, NotIn, Exists or DoesNotExist, as written)"
                ));
            }
        };
        out.match_expressions.push(Requirement { key, operator });
    }
    Ok(out)
}

fn compile(
    raw: Vec<RawEnablement<'_>>,
    written_as_is: &dyn Fn(&Text<'_>) -> bool,
) -> Result<EnablementSelectors, Problem> {
    if raw.len() > MAX_SELECTORS {
        return Err(format!(
            "has {} selectors, more than {MAX_SELECTORS}",
            raw.len()
        ));
    }
    let mut out = Vec::with_capacity(raw.len());
    for (i, r) in raw.into_iter().enumerate() {
        out.push(EnablementSelector {
            pod: label_selector(r.pod_selector, &format!("[{i}].podSelector"), written_as_is)?,
            namespace: label_selector(
                r.namespace_selector,
                &format!("[{i}].namespaceSelector"),
                written_as_is,
            )?,
        });
    }
    Ok(EnablementSelectors(out))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;

    #[test]
    fn go_yaml_numbers_are_recognised_as_go_yaml_v2_resolves_them() {
        for n in [
            "1", "08", "017", "0x1F", "0o17", "0b101", "1_000", "1e3", "1.5", "1.", ".5", "-1",
        ] {
            assert!(go_yaml_number(n), "{n}");
        }
        for s in [
            "v1",
            "1a",
            "0x",
            "1.2.3",
            "0xfffffffffffffffff",
            "e3",
            "1e",
            "a1",
        ] {
            assert!(!go_yaml_number(s), "{s}");
        }
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn the_reader_lends_plain_and_simple_quoted_scalars_so_their_style_is_seen() {
        let doc = "a: yes\nb: 'yes'\nc: \"yes\"\nd: [yes, \"yes\"]\n";
        let m: BTreeMap<Text<'_>, serde_yaml_ng::Value> =
            BTreeMap::deserialize(serde_yaml_ng::Deserializer::from_str(doc)).unwrap();
        let keys: Vec<bool> = m.keys().map(|k| plain_in(k, doc)).collect();
        assert_eq!(keys, [true, true, true, true]);
        #[derive(serde::Deserialize)]
        struct Doc<'a> {
            #[serde(borrow)]
            a: Text<'a>,
            #[serde(borrow)]
            b: Text<'a>,
            #[serde(borrow)]
            c: Text<'a>,
            #[serde(borrow)]
            d: Vec<Text<'a>>,
        }
        let d = Doc::deserialize(serde_yaml_ng::Deserializer::from_str(doc)).unwrap();
        assert!(plain_in(&d.a, doc));
        assert!(!plain_in(&d.b, doc));
        assert!(!plain_in(&d.c, doc));
        assert!(plain_in(&d.d[0], doc));
        assert!(!plain_in(&d.d[1], doc));
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn a_tagged_scalar_is_refused_since_istio_cni_converts_it() {
        // go-yaml v2 reads `!!bool "yes"` as true (sigs.k8s.io/yaml then writes "true") and
        // decodes `!!binary d2Vi` to "web": accepted as written, both selected other pods
        // than upstream's.
        for doc in [
            "- podSelector: {matchLabels: {app: !!bool \"yes\"}}",
            "- podSelector: {matchLabels: {app: !!binary d2Vi}}",
            "- podSelector: {matchLabels: {app: !foo web}}",
            "- podSelector:\n    matchLabels:\n      app: !!str web # a comment!",
        ] {
            let e = EnablementSelectors::from_yaml(doc).unwrap_err();
            assert!(e.contains("tag"), "{doc}: {e}");
        }
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn an_exclamation_mark_in_a_comment_is_no_tag() {
        let doc = "# careful!\n- podSelector: {matchLabels: {app: web}} # not yes!\n";
        let s = EnablementSelectors::from_yaml(doc).unwrap();
        assert_eq!(s.selectors().len(), 1);
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn an_alias_is_refused_since_a_few_bytes_of_it_expand_past_every_limit() {
        // 20 KB of text that expanded into 64 entries of 2 × 64 expressions of 256 values:
        // 138 MB of plugin entry, past the plugin's stdin cap, so every ADD failed.
        let vals = vec![format!("\"{}\"", "x".repeat(63)); 256].join(", ");
        let mut doc = format!(
            "- podSelector: &s {{matchExpressions: [&e {{key: k, operator: In, values: [{vals}]}}, {}]}}\n  namespaceSelector: *s\n",
            vec!["*e"; 63].join(", ")
        );
        for _ in 0..63 {
            doc.push_str("- {podSelector: *s, namespaceSelector: *s}\n");
        }
        assert!(doc.len() < MAX_TEXT);
        let e = EnablementSelectors::from_yaml(&doc).unwrap_err();
        assert!(e.contains("alias"), "{e}");
    }

    #[cfg(feature = "kubernetes")]
    #[test]
    fn an_anchor_alone_and_a_star_in_a_comment_are_read() {
        let doc = "- podSelector: &p {matchLabels: {app: web}} # *not* an alias\n";
        let s = EnablementSelectors::from_yaml(doc).unwrap();
        assert_eq!(s.selectors().len(), 1);
    }
}
