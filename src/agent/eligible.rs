//! Which pods are ambient: istio-cni's enablement selectors (`AMBIENT_ENABLEMENT_SELECTOR`, its
//! chart's `ambient.enablementSelectors`; by default pods labelled
//! `istio.io/dataplane-mode=ambient` and pods not labelled `none` in namespaces labelled so),
//! its exclusions (host-network pods, pods with a sidecar, ztunnel itself, excluded
//! namespaces), and the `ambient.istio.io/redirection` annotation that says how far a pod got.
//! One decision, used by the plugin's ADD and by the agent, so the two cannot disagree about a
//! pod: both are handed the same selectors (the installer parses the setting once and writes
//! it into the plugin's entry). Pure: typed objects in, a verdict out.

use std::collections::BTreeMap;

use crate::cni::pod::Pod;
use crate::selector::EnablementSelectors;

/// The label of istio's default selectors: it puts a pod (or every pod of a namespace) in
/// ambient mode, or keeps it out.
pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
/// The annotation the agent writes through pods/status; istiod sends HBONE only to `enabled`.
pub const REDIRECTION: &str = "ambient.istio.io/redirection";
/// Rules are in the pod, ztunnel has not acked it yet: a removal must still undo the rules.
pub const PENDING: &str = "pending";
/// Rules in and ztunnel acked.
pub const ENABLED: &str = "enabled";

const SIDECAR_STATUS: &str = "sidecar.istio.io/status";

/// Where the agent runs, which namespaces it leaves alone and which pods it takes.
#[derive(Debug, Clone)]
pub struct Scope {
    /// Istio's namespace (`POD_NAMESPACE` of the DaemonSet): ztunnel's pods live there.
    pub system_namespace: String,
    pub exclude_namespaces: Vec<String>,
    /// Which pods are ambient (`AMBIENT_ENABLEMENT_SELECTOR`).
    pub selectors: EnablementSelectors,
}

/// Whether a pod is ambient, and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ambient,
    Not(String),
}

/// What rules a pod out whatever its labels: an excluded namespace, the host's network (no
/// namespace of its own to redirect in), a sidecar (a pod is sidecar or ambient, not both:
/// `CompiledEnablementSelectors.Matches`), or being ztunnel (`IsZtunnelPod`).
fn excluded(pod: &Pod, scope: &Scope) -> Option<String> {
    let m = &pod.metadata;
    if scope.exclude_namespaces.iter().any(|n| n == &m.namespace) {
        return Some(format!("namespace {} is excluded", m.namespace));
    }
    if pod.spec.host_network {
        return Some("it is on the host's network".into());
    }
    if m.annotations.contains_key(SIDECAR_STATUS) {
        return Some(format!(
            "it has a sidecar ({SIDECAR_STATUS}); a pod is sidecar or ambient, not both"
        ));
    }
    if m.namespace == scope.system_namespace
        && m.labels.get("app").map(String::as_str) == Some("ztunnel")
    {
        return Some("it is ztunnel".into());
    }
    None
}

/// istio-cni's decision (`CompiledEnablementSelectors.Matches`, `IsZtunnelPod`, the excluded
/// namespaces): the exclusions first, then whether one of the selectors matches the pod's
/// labels and its namespace's.
pub fn verdict(pod: &Pod, namespace_labels: &BTreeMap<String, String>, scope: &Scope) -> Verdict {
    if let Some(why) = excluded(pod, scope) {
        return Verdict::Not(why);
    }
    if scope
        .selectors
        .matches(&pod.metadata.labels, namespace_labels)
    {
        Verdict::Ambient
    } else {
        Verdict::Not(format!(
            "no enablement selector matches its labels and its namespace's (selectors: {})",
            scope.selectors
        ))
    }
}

/// Whether the pod alone decides (so its namespace need not be read): an exclusion, or
/// labels that every selector's pod selector refuses, or that one with an empty namespace
/// selector takes (`EnablementSelectors::decided_by_pod`).
pub fn decided_without_namespace(pod: &Pod, scope: &Scope) -> bool {
    excluded(pod, scope).is_some()
        || scope
            .selectors
            .decided_by_pod(&pod.metadata.labels)
            .is_some()
}

/// The pod's `ambient.istio.io/redirection` state, as the agent last wrote it.
pub fn redirection(pod: &Pod) -> Option<&str> {
    pod.metadata
        .annotations
        .get(REDIRECTION)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test")]
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn scope() -> Scope {
        Scope {
            system_namespace: "istio-system".into(),
            exclude_namespaces: vec!["kube-system".into()],
            selectors: EnablementSelectors::default(),
        }
    }

    /// The scope with the selectors `yaml` (as `AMBIENT_ENABLEMENT_SELECTOR` gives them).
    fn with(yaml: &str) -> Scope {
        Scope {
            selectors: EnablementSelectors::from_yaml(yaml).unwrap(),
            ..scope()
        }
    }

    /// Whether the pod labelled `pod_labels` in a namespace labelled `ns_labels` is ambient.
    fn ambient(s: &Scope, pod_labels: serde_json::Value, ns_labels: &[(&str, &str)]) -> bool {
        verdict(&plain("shop", pod_labels), &labels(ns_labels), s) == Verdict::Ambient
    }

    /// The error of the setting `yaml`.
    fn refused(yaml: &str) -> String {
        EnablementSelectors::from_yaml(yaml).unwrap_err()
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn plain(ns: &str, pod_labels: serde_json::Value) -> Pod {
        pod(json!({"metadata": {"name": "p", "namespace": ns, "labels": pod_labels}}))
    }

    #[test]
    fn a_pod_labelled_ambient_is_ambient_whatever_its_namespace() {
        let p = plain("shop", json!({DATAPLANE_MODE: "ambient"}));
        assert_eq!(verdict(&p, &labels(&[]), &scope()), Verdict::Ambient);
        assert!(decided_without_namespace(&p, &scope()));
    }

    #[test]
    fn a_pod_in_an_ambient_namespace_is_ambient_unless_it_says_none() {
        let ns = labels(&[(DATAPLANE_MODE, "ambient")]);
        let p = plain("shop", json!({}));
        assert_eq!(verdict(&p, &ns, &scope()), Verdict::Ambient);
        assert!(!decided_without_namespace(&p, &scope()));
        let none = plain("shop", json!({DATAPLANE_MODE: "none"}));
        assert!(matches!(verdict(&none, &ns, &scope()), Verdict::Not(_)));
        // Any other value of the pod's label defers to the namespace, as the chart's
        // `NotIn [none]` selector does.
        let other = plain("shop", json!({DATAPLANE_MODE: "sidecar"}));
        assert_eq!(verdict(&other, &ns, &scope()), Verdict::Ambient);
    }

    #[test]
    fn unlabelled_pods_in_unlabelled_namespaces_are_not() {
        let p = plain("shop", json!({}));
        assert!(matches!(
            verdict(&p, &labels(&[]), &scope()),
            Verdict::Not(_)
        ));
    }

    #[test]
    fn host_network_sidecar_ztunnel_and_excluded_pods_never_are() {
        let ns = labels(&[(DATAPLANE_MODE, "ambient")]);
        let host = pod(
            json!({"metadata": {"namespace": "shop", "labels": {DATAPLANE_MODE: "ambient"}},
            "spec": {"hostNetwork": true}}),
        );
        let sidecar = pod(
            json!({"metadata": {"namespace": "shop", "labels": {DATAPLANE_MODE: "ambient"},
            "annotations": {SIDECAR_STATUS: "{}"}}}),
        );
        let ztunnel = plain("istio-system", json!({"app": "ztunnel"}));
        let excluded = plain("kube-system", json!({DATAPLANE_MODE: "ambient"}));
        for p in [&host, &sidecar, &ztunnel, &excluded] {
            assert!(
                matches!(verdict(p, &ns, &scope()), Verdict::Not(_)),
                "{p:?}"
            );
        }
        // An app=ztunnel pod elsewhere is an ordinary pod.
        let lookalike = plain("shop", json!({"app": "ztunnel"}));
        assert_eq!(verdict(&lookalike, &ns, &scope()), Verdict::Ambient);
    }

    #[test]
    fn match_labels_select_a_pod_with_the_label() {
        let s = with("- podSelector: {matchLabels: {mesh: \"yes\"}}");
        assert!(ambient(&s, json!({"mesh": "yes"}), &[]));
    }

    #[test]
    fn match_labels_need_every_label_with_its_value() {
        let s = with("- podSelector: {matchLabels: {mesh: \"yes\", tier: web}}");
        assert!(!ambient(&s, json!({"mesh": "yes"}), &[]));
        assert!(!ambient(&s, json!({"mesh": "yes", "tier": "db"}), &[]));
        assert!(ambient(&s, json!({"mesh": "yes", "tier": "web"}), &[]));
    }

    #[test]
    fn with_custom_selectors_the_default_label_alone_does_not_select() {
        let s = with("- podSelector: {matchLabels: {mesh: \"yes\"}}");
        assert!(!ambient(
            &s,
            json!({DATAPLANE_MODE: "ambient"}),
            &[(DATAPLANE_MODE, "ambient")]
        ));
    }

    #[test]
    fn in_needs_the_label_with_a_listed_value() {
        let s = with(
            "- podSelector: {matchExpressions: [{key: tier, operator: In, values: [web, api]}]}",
        );
        assert!(ambient(&s, json!({"tier": "api"}), &[]));
        assert!(!ambient(&s, json!({"tier": "db"}), &[]));
        assert!(!ambient(&s, json!({}), &[]), "an absent label is in no set");
    }

    #[test]
    fn not_in_holds_when_the_label_is_absent_or_not_listed() {
        let s =
            with("- podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [db]}]}");
        assert!(ambient(&s, json!({}), &[]));
        assert!(ambient(&s, json!({"tier": "web"}), &[]));
        assert!(!ambient(&s, json!({"tier": "db"}), &[]));
    }

    #[test]
    fn exists_needs_the_key_whatever_its_value() {
        let s = with("- podSelector: {matchExpressions: [{key: mesh, operator: Exists}]}");
        assert!(ambient(&s, json!({"mesh": ""}), &[]));
        assert!(!ambient(&s, json!({"other": "x"}), &[]));
    }

    #[test]
    fn does_not_exist_needs_the_key_absent() {
        let s = with("- podSelector: {matchExpressions: [{key: legacy, operator: DoesNotExist}]}");
        assert!(ambient(&s, json!({"tier": "web"}), &[]));
        assert!(!ambient(&s, json!({"legacy": "true"}), &[]));
    }

    #[test]
    fn the_namespace_selector_is_matched_against_the_namespace_not_the_pod() {
        let s = with("- namespaceSelector: {matchLabels: {mesh: on-demand}}");
        assert!(ambient(&s, json!({}), &[("mesh", "on-demand")]));
        assert!(!ambient(&s, json!({"mesh": "on-demand"}), &[]));
    }

    #[test]
    fn pod_and_namespace_selectors_of_one_entry_must_both_match() {
        let s = with(
            "- podSelector: {matchLabels: {tier: web}}\n  namespaceSelector: {matchLabels: {mesh: on-demand}}",
        );
        assert!(ambient(
            &s,
            json!({"tier": "web"}),
            &[("mesh", "on-demand")]
        ));
        assert!(!ambient(&s, json!({"tier": "web"}), &[]));
        assert!(!ambient(&s, json!({}), &[("mesh", "on-demand")]));
    }

    #[test]
    fn entries_are_ored() {
        let s = with(
            "- podSelector: {matchLabels: {tier: web}}\n- namespaceSelector: {matchLabels: {team: a}}",
        );
        assert!(ambient(&s, json!({"tier": "web"}), &[]));
        assert!(ambient(&s, json!({}), &[("team", "a")]));
        assert!(!ambient(&s, json!({"tier": "db"}), &[("team", "b")]));
    }

    #[test]
    fn an_empty_entry_selects_every_pod() {
        let s = with("- {}");
        assert!(ambient(&s, json!({}), &[]));
        let p = plain("shop", json!({}));
        assert!(decided_without_namespace(&p, &s));
    }

    #[test]
    fn an_empty_entry_still_leaves_out_host_network_pods() {
        let s = with("- podSelector: {}\n  namespaceSelector: {}");
        let host = pod(json!({"metadata": {"namespace": "shop"}, "spec": {"hostNetwork": true}}));
        assert!(matches!(verdict(&host, &labels(&[]), &s), Verdict::Not(_)));
    }

    #[test]
    fn an_empty_entry_still_leaves_out_excluded_namespaces() {
        let s = with("- {}");
        let p = plain("kube-system", json!({}));
        assert!(matches!(verdict(&p, &labels(&[]), &s), Verdict::Not(_)));
    }

    #[test]
    fn an_empty_list_selects_no_pod() {
        let s = with("[]");
        assert!(!ambient(
            &s,
            json!({DATAPLANE_MODE: "ambient"}),
            &[(DATAPLANE_MODE, "ambient")]
        ));
    }

    #[test]
    fn null_is_the_empty_list_as_upstream_reads_it() {
        assert_eq!(with("null").selectors, with("[]").selectors);
    }

    #[test]
    fn the_chart_default_text_is_the_built_in_default() {
        assert_eq!(
            EnablementSelectors::from_yaml(crate::selector::DEFAULT_YAML).unwrap(),
            EnablementSelectors::default()
        );
    }

    #[test]
    fn the_default_selectors_decide_as_the_fixed_rules_did() {
        // Every combination of the pod's and the namespace's dataplane-mode label.
        let s = scope();
        for pod_mode in [None, Some("ambient"), Some("none"), Some("other")] {
            for ns_mode in [None, Some("ambient"), Some("none")] {
                let p = pod_mode.map_or(json!({}), |m| json!({DATAPLANE_MODE: m}));
                let ns: Vec<(&str, &str)> =
                    ns_mode.map(|m| (DATAPLANE_MODE, m)).into_iter().collect();
                let old = pod_mode == Some("ambient")
                    || (pod_mode != Some("none") && ns_mode == Some("ambient"));
                assert_eq!(
                    ambient(&s, p, &ns),
                    old,
                    "pod {pod_mode:?} namespace {ns_mode:?}"
                );
            }
        }
    }

    #[test]
    fn a_pod_matched_only_with_its_namespace_needs_the_namespace_read() {
        let s = with(
            "- podSelector: {matchLabels: {tier: web}}\n  namespaceSelector: {matchLabels: {team: a}}",
        );
        assert!(!decided_without_namespace(
            &plain("shop", json!({"tier": "web"})),
            &s
        ));
        assert!(decided_without_namespace(
            &plain("shop", json!({"tier": "db"})),
            &s
        ));
    }

    #[test]
    fn the_plugin_entry_form_reads_back_the_same_selectors() {
        let s = with("- podSelector: {matchLabels: {a: b}, matchExpressions: [{key: c, operator: Exists}, {key: d, operator: In, values: [e]}]}\n- namespaceSelector: {matchLabels: {f: g}}").selectors;
        let j = s.to_json();
        assert_eq!(
            j,
            json!([
                {"podSelector": {"matchLabels": {"a": "b"}, "matchExpressions": [
                    {"key": "c", "operator": "Exists"}, {"key": "d", "operator": "In", "values": ["e"]}]},
                 "namespaceSelector": {}},
                {"podSelector": {}, "namespaceSelector": {"matchLabels": {"f": "g"}}}
            ])
        );
        assert_eq!(EnablementSelectors::from_json(&j).unwrap(), s);
    }

    #[test]
    fn an_unknown_operator_is_refused_naming_where() {
        let e = refused("- podSelector: {matchExpressions: [{key: a, operator: in, values: [b]}]}");
        assert!(
            e.contains("[0].podSelector.matchExpressions[0].operator") && e.contains("\"in\""),
            "{e}"
        );
    }

    #[test]
    fn in_without_values_is_refused() {
        let e = refused("- podSelector: {matchExpressions: [{key: a, operator: In}]}");
        assert!(
            e.contains("[0].podSelector.matchExpressions[0]") && e.contains("at least one value"),
            "{e}"
        );
    }

    #[test]
    fn exists_with_values_is_refused() {
        let e =
            refused("- podSelector: {matchExpressions: [{key: a, operator: Exists, values: [b]}]}");
        assert!(e.contains("takes no values"), "{e}");
    }

    #[test]
    fn a_bad_label_key_is_refused_naming_it() {
        let e = refused("- namespaceSelector: {matchLabels: {\"Bad Key\": x}}");
        assert!(
            e.contains("[0].namespaceSelector.matchLabels")
                && e.contains("\"Bad Key\" is not a label key"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_label_value_is_refused_naming_its_key() {
        let e = refused(
            "- podSelector: {matchExpressions: [{key: tier, operator: NotIn, values: [ok, -bad]}]}",
        );
        assert!(
            e.contains("matchExpressions[0].values[1]")
                && e.contains("\"-bad\" is not a label value"),
            "{e}"
        );
    }

    #[test]
    fn an_unknown_field_is_refused_rather_than_selecting_every_pod() {
        let e = refused("- podSelector: {matchLabel: {a: b}}");
        assert!(e.contains("matchLabel") && e.contains("matchLabels"), "{e}");
    }

    #[test]
    fn an_unquoted_yaml_1_1_boolean_is_refused_with_what_upstream_reads() {
        let e = refused("- podSelector: {matchLabels: {mesh: yes}}");
        assert!(
            e.contains("[0].podSelector.matchLabels.mesh")
                && e.contains("boolean true")
                && e.contains("quote it"),
            "{e}"
        );
    }

    #[test]
    fn an_unquoted_number_is_refused() {
        let e = refused("- podSelector: {matchLabels: {version: 1}}");
        assert!(e.contains("a number"), "{e}");
    }

    #[test]
    fn a_quoted_yaml_1_1_boolean_is_the_text() {
        let s = with("- podSelector: {matchLabels: {mesh: 'on'}}");
        assert!(ambient(&s, json!({"mesh": "on"}), &[]));
    }

    #[test]
    fn a_setting_that_is_not_a_list_is_refused() {
        let e = refused("podSelector: {}");
        assert!(e.contains("not a YAML list of enablement selectors"), "{e}");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let e = refused(&"- {}\n".repeat(crate::selector::MAX_SELECTORS + 1));
        assert!(e.contains("more than 64"), "{e}");
    }

    #[test]
    fn an_oversized_setting_is_refused_unread() {
        let e = refused(&format!("# {}", "x".repeat(crate::selector::MAX_TEXT)));
        assert!(e.contains("bytes, more than"), "{e}");
    }

    #[test]
    fn the_plugin_entry_refuses_a_number_for_a_string() {
        let e =
            EnablementSelectors::from_json(&json!([{"podSelector": {"matchLabels": {"a": 1}}}]));
        assert!(e.is_err());
    }
}
