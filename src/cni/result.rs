//! The result ADD prints: the primary plugin's result (`prevResult`), read in the shape of
//! its own version and printed in the configuration's, as a libcni plugin does it
//! (`version.ParsePrevResult`, then `GetAsVersion` through libcni's converters; docs/upstream.md,
//! "CNI versions"). Typed, so a malformed prevResult is refused naming the field, and only
//! what a result may hold is passed on (libcni decodes into the same fields and drops the
//! rest).
//!
//! What changes between the shapes: before 1.0.0 every IP carries `"version": "4"|"6"` (we
//! derive it from the address when printing, as libcni's conversion does, and ignore what
//! the input said) and an interface has only name, mac and sandbox; from 1.0.0 IPs have no
//! `version` and interfaces may carry mtu, socketPath and pciID (dropped when printed in an
//! older version). A 0.x result always prints `dns` (`{}` when empty), a 1.x one only when it
//! holds something. Routes and DNS are the same in every version.

use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::{Map, Value, json};

use super::error::{CniError, code};
use super::version::{SUPPORTED_VERSIONS, Shape, Version};

/// One interface the primary plugin created.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Interface {
    pub name: String,
    pub mac: String,
    /// 1.0.0 and later; 0 when not said.
    pub mtu: u32,
    pub sandbox: String,
    /// 1.0.0 and later.
    pub socket_path: String,
    /// 1.0.0 and later.
    pub pci_id: String,
}

/// One address the primary plugin assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpConfig {
    /// Index into `interfaces` (libcni does not check that it points at one; neither do we).
    pub interface: Option<u32>,
    /// The address with its prefix length (`10.244.1.5/24`; the host bits are kept).
    pub address: IpNet,
    pub gateway: Option<IpAddr>,
}

/// One route the primary plugin added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub dst: IpNet,
    pub gw: Option<IpAddr>,
    /// 0 when not said (libcni omits zero).
    pub mtu: u32,
    pub advmss: u32,
    pub priority: u32,
    /// Present even when 0 (libcni keeps a pointer).
    pub table: Option<u32>,
    pub scope: Option<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dns {
    pub nameservers: Vec<String>,
    pub domain: String,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    fn is_empty(&self) -> bool {
        self.nameservers.is_empty()
            && self.domain.is_empty()
            && self.search.is_empty()
            && self.options.is_empty()
    }
}

/// A CNI result, whatever version it came in.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CniResult {
    pub interfaces: Vec<Interface>,
    pub ips: Vec<IpConfig>,
    pub routes: Vec<Route>,
    pub dns: Dns,
}

fn invalid(key: &str, value: &Value, expected: &str) -> CniError {
    CniError::new(
        code::INVALID_CONFIG,
        "invalid network configuration",
        format!("{key} = {value}: {expected}"),
    )
}

/// The members of `obj` that a result of some version may hold, read one by one; the rest
/// are ignored, as libcni's decoder ignores them.
struct Fields<'a> {
    obj: &'a Map<String, Value>,
    at: String,
}

impl<'a> Fields<'a> {
    fn of(value: &'a Value, at: String) -> Result<Fields<'a>, CniError> {
        match value {
            Value::Object(obj) => Ok(Fields { obj, at }),
            other => Err(invalid(&at, other, "expected an object")),
        }
    }
    fn key(&self, name: &str) -> String {
        format!("{}.{name}", self.at)
    }
    fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }
    fn string(&self, name: &str) -> Result<String, CniError> {
        match self.get(name) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(invalid(&self.key(name), other, "expected a string")),
        }
    }
    fn strings(&self, name: &str) -> Result<Vec<String>, CniError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    invalid(
                        &self.key(name),
                        &Value::Array(items.clone()),
                        "expected a list of strings",
                    )
                }),
            Some(other) => Err(invalid(
                &self.key(name),
                other,
                "expected a list of strings",
            )),
        }
    }
    fn number<T: TryFrom<u64>>(&self, name: &str, what: &str) -> Result<Option<T>, CniError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| T::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| invalid(&self.key(name), v, what)),
        }
    }
    fn net(&self, name: &str) -> Result<IpNet, CniError> {
        let v = self.get(name).unwrap_or(&Value::Null);
        v.as_str().and_then(|s| s.parse().ok()).ok_or_else(|| {
            invalid(
                &self.key(name),
                v,
                "expected an address with its prefix length (10.244.1.5/24, fd00::5/64)",
            )
        })
    }
    fn ip(&self, name: &str) -> Result<Option<IpAddr>, CniError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| invalid(&self.key(name), v, "expected an IP address")),
        }
    }
    fn list(&self, name: &str) -> Result<&'a [Value], CniError> {
        match self.get(name) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(other) => Err(invalid(&self.key(name), other, "expected a list")),
        }
    }
}

/// The version a prevResult is in: its own `cniVersion`, else the configuration's (libcni
/// injects the configuration's into a result that names none).
fn version_of(prev: &Value, conf: Version) -> Result<Version, CniError> {
    match prev.get("cniVersion") {
        None | Some(Value::Null) => Ok(conf),
        Some(Value::String(s)) if s.is_empty() => Ok(conf),
        Some(Value::String(s)) => Version::supported(s).ok_or_else(|| {
            CniError::new(
                code::INCOMPATIBLE_VERSION,
                "incompatible CNI versions",
                format!(
                    "prevResult.cniVersion {s:?} is not supported (supported: {})",
                    SUPPORTED_VERSIONS.join(", ")
                ),
            )
        }),
        Some(other) => Err(invalid(
            "prevResult.cniVersion",
            other,
            "expected a version string",
        )),
    }
}

impl CniResult {
    /// Reads `prev` (a configuration's `prevResult`) in the shape of its own version.
    pub fn read(prev: &Value, conf: Version) -> Result<CniResult, CniError> {
        let shape = version_of(prev, conf)?.shape();
        let top = Fields::of(prev, "prevResult".into())?;
        let mut interfaces = Vec::new();
        for (i, v) in top.list("interfaces")?.iter().enumerate() {
            let f = Fields::of(v, format!("prevResult.interfaces[{i}]"))?;
            let mut intf = Interface {
                name: f.string("name")?,
                mac: f.string("mac")?,
                sandbox: f.string("sandbox")?,
                ..Interface::default()
            };
            if shape == Shape::V1 {
                intf.mtu = f.number("mtu", "expected an MTU")?.unwrap_or(0);
                intf.socket_path = f.string("socketPath")?;
                intf.pci_id = f.string("pciID")?;
            }
            interfaces.push(intf);
        }
        let mut ips = Vec::new();
        for (i, v) in top.list("ips")?.iter().enumerate() {
            let f = Fields::of(v, format!("prevResult.ips[{i}]"))?;
            ips.push(IpConfig {
                interface: f.number("interface", "expected an index into interfaces")?,
                address: f.net("address")?,
                gateway: f.ip("gateway")?,
            });
        }
        let mut routes = Vec::new();
        for (i, v) in top.list("routes")?.iter().enumerate() {
            let f = Fields::of(v, format!("prevResult.routes[{i}]"))?;
            routes.push(Route {
                dst: f.net("dst")?,
                gw: f.ip("gw")?,
                mtu: f.number("mtu", "expected an MTU")?.unwrap_or(0),
                advmss: f.number("advmss", "expected an MSS")?.unwrap_or(0),
                priority: f
                    .number("priority", "expected a route priority")?
                    .unwrap_or(0),
                table: f.number("table", "expected a routing table id")?,
                scope: f.number("scope", "expected a route scope (0-255)")?,
            });
        }
        let dns = match top.get("dns") {
            None => Dns::default(),
            Some(v) => {
                let f = Fields::of(v, "prevResult.dns".into())?;
                Dns {
                    nameservers: f.strings("nameservers")?,
                    domain: f.string("domain")?,
                    search: f.strings("search")?,
                    options: f.strings("options")?,
                }
            }
        };
        Ok(CniResult {
            interfaces,
            ips,
            routes,
            dns,
        })
    }

    /// Whether the addresses include IPv6; `None` when there is no address.
    pub fn has_ipv6(&self) -> Option<bool> {
        (!self.ips.is_empty()).then(|| self.ips.iter().any(|ip| ip.address.addr().is_ipv6()))
    }

    /// The addresses (without their prefix lengths), in the result's order.
    pub fn ips(&self) -> Vec<std::net::IpAddr> {
        self.ips.iter().map(|ip| ip.address.addr()).collect()
    }

    /// The result as version `v` prints it.
    pub fn to_json(&self, v: Version) -> Value {
        let shape = v.shape();
        let mut out = Map::new();
        out.insert("cniVersion".into(), v.as_str().into());
        if !self.interfaces.is_empty() {
            let list = self
                .interfaces
                .iter()
                .map(|i| interface(i, shape))
                .collect();
            out.insert("interfaces".into(), Value::Array(list));
        }
        if !self.ips.is_empty() {
            let list = self.ips.iter().map(|ip| ip_config(ip, shape)).collect();
            out.insert("ips".into(), Value::Array(list));
        }
        if !self.routes.is_empty() {
            out.insert(
                "routes".into(),
                Value::Array(self.routes.iter().map(route).collect()),
            );
        }
        if shape == Shape::V04 || !self.dns.is_empty() {
            out.insert("dns".into(), dns(&self.dns));
        }
        Value::Object(out)
    }
}

/// Members that libcni omits when empty or zero.
fn put(out: &mut Map<String, Value>, key: &str, value: Value) {
    let empty = match &value {
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Number(n) => n.as_u64() == Some(0),
        Value::Null => true,
        _ => false,
    };
    if !empty {
        out.insert(key.into(), value);
    }
}

fn interface(i: &Interface, shape: Shape) -> Value {
    let mut out = Map::new();
    out.insert("name".into(), i.name.clone().into());
    put(&mut out, "mac", i.mac.clone().into());
    if shape == Shape::V1 {
        put(&mut out, "mtu", i.mtu.into());
    }
    put(&mut out, "sandbox", i.sandbox.clone().into());
    if shape == Shape::V1 {
        put(&mut out, "socketPath", i.socket_path.clone().into());
        put(&mut out, "pciID", i.pci_id.clone().into());
    }
    Value::Object(out)
}

fn ip_config(ip: &IpConfig, shape: Shape) -> Value {
    let mut out = Map::new();
    if shape == Shape::V04 {
        let family = if ip.address.addr().is_ipv4() {
            "4"
        } else {
            "6"
        };
        out.insert("version".into(), family.into());
    }
    if let Some(i) = ip.interface {
        out.insert("interface".into(), i.into());
    }
    out.insert("address".into(), ip.address.to_string().into());
    if let Some(gw) = ip.gateway {
        out.insert("gateway".into(), gw.to_string().into());
    }
    Value::Object(out)
}

fn route(r: &Route) -> Value {
    let mut out = Map::new();
    out.insert("dst".into(), r.dst.to_string().into());
    if let Some(gw) = r.gw {
        out.insert("gw".into(), gw.to_string().into());
    }
    put(&mut out, "mtu", r.mtu.into());
    put(&mut out, "advmss", r.advmss.into());
    put(&mut out, "priority", r.priority.into());
    if let Some(t) = r.table {
        out.insert("table".into(), t.into());
    }
    if let Some(s) = r.scope {
        out.insert("scope".into(), s.into());
    }
    Value::Object(out)
}

fn dns(d: &Dns) -> Value {
    let mut out = Map::new();
    put(&mut out, "nameservers", json!(d.nameservers));
    put(&mut out, "domain", d.domain.clone().into());
    put(&mut out, "search", json!(d.search));
    put(&mut out, "options", json!(d.options));
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::supported(s).unwrap()
    }

    /// What bridge + host-local print for a dual-stack pod in a 0.3.1 conflist.
    fn bridge_031() -> Value {
        json!({
            "cniVersion": "0.3.1",
            "interfaces": [
                {"name": "cni0", "mac": "0a:58:0a:f4:01:01"},
                {"name": "veth1", "mac": "5e:9f:1c:7d:2a:11"},
                {"name": "eth0", "mac": "0a:58:0a:f4:01:05", "sandbox": "/var/run/netns/pod"}
            ],
            "ips": [
                {"version": "4", "interface": 2, "address": "10.244.1.5/24", "gateway": "10.244.1.1"},
                {"version": "6", "interface": 2, "address": "fd00:244::5/64", "gateway": "fd00:244::1"}
            ],
            "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}],
            "dns": {}
        })
    }

    #[test]
    fn a_031_result_passes_through_unchanged() {
        let r = CniResult::read(&bridge_031(), v("0.3.1")).unwrap();
        assert_eq!(r.has_ipv6(), Some(true));
        assert_eq!(r.to_json(v("0.3.1")), bridge_031());
    }

    #[test]
    fn a_031_result_printed_as_1_1_0_loses_the_ip_versions() {
        let r = CniResult::read(&bridge_031(), v("1.1.0")).unwrap();
        let mut want = bridge_031();
        want["cniVersion"] = "1.1.0".into();
        for ip in want["ips"].as_array_mut().unwrap() {
            ip.as_object_mut().unwrap().remove("version");
        }
        want.as_object_mut().unwrap().remove("dns");
        assert_eq!(r.to_json(v("1.1.0")), want);
    }

    #[test]
    fn a_1_1_0_result_printed_as_0_4_0_gains_ip_versions_and_loses_1_x_fields() {
        let prev = json!({
            "cniVersion": "1.1.0",
            "interfaces": [{"name": "eth0", "mtu": 1450, "socketPath": "/run/vhost.sock", "pciID": "0000:00:1f.6", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"address": "fd00::5/64", "interface": 0}, {"address": "10.0.0.5/16"}],
            "routes": [{"dst": "10.0.0.0/8", "gw": "10.0.0.1", "mtu": 1400, "table": 0, "scope": 253}],
            "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
        });
        let r = CniResult::read(&prev, v("0.4.0")).unwrap();
        assert_eq!(
            r.to_json(v("0.4.0")),
            json!({
                "cniVersion": "0.4.0",
                "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
                "ips": [
                    {"version": "6", "address": "fd00::5/64", "interface": 0},
                    {"version": "4", "address": "10.0.0.5/16"}
                ],
                "routes": [{"dst": "10.0.0.0/8", "gw": "10.0.0.1", "mtu": 1400, "table": 0, "scope": 253}],
                "dns": {"nameservers": ["10.96.0.10"], "search": ["svc.cluster.local"]}
            })
        );
        // Back in its own version, nothing was lost.
        assert_eq!(r.to_json(v("1.1.0")), prev);
    }

    #[test]
    fn a_0_x_result_has_no_1_x_interface_fields_to_give() {
        let prev = json!({"cniVersion": "0.4.0", "interfaces": [{"name": "eth0", "mtu": 9000}]});
        let r = CniResult::read(&prev, v("1.0.0")).unwrap();
        assert_eq!(r.interfaces[0].mtu, 0, "0.4.0 has no interface mtu");
    }

    #[test]
    fn a_result_without_a_version_is_in_the_configurations() {
        let prev = json!({"ips": [{"version": "4", "address": "10.0.0.5/16"}], "interfaces": [{"name": "eth0", "mtu": 9000}]});
        let r = CniResult::read(&prev, v("0.3.0")).unwrap();
        assert_eq!(r.interfaces[0].mtu, 0, "read as 0.3.0");
        assert_eq!(
            r.to_json(v("0.3.0")),
            json!({"cniVersion": "0.3.0", "interfaces": [{"name": "eth0"}], "ips": [{"version": "4", "address": "10.0.0.5/16"}], "dns": {}})
        );
        assert_eq!(
            CniResult::read(&json!({}), v("1.1.0")).unwrap().has_ipv6(),
            None
        );
    }

    #[test]
    fn malformed_results_are_refused_naming_the_field() {
        let cases: &[(Value, u32, &str)] = &[
            (
                json!({"cniVersion": "0.2.0", "ip4": {}}),
                1,
                "prevResult.cniVersion \"0.2.0\"",
            ),
            (json!({"cniVersion": 2}), 7, "prevResult.cniVersion"),
            (json!({"ips": {}}), 7, "prevResult.ips"),
            (
                json!({"ips": [{"address": "10.0.0.5"}]}),
                7,
                "prevResult.ips[0].address",
            ),
            (json!({"ips": [{}]}), 7, "prevResult.ips[0].address"),
            (
                json!({"ips": [{"address": "10.0.0.5/8", "gateway": "x"}]}),
                7,
                "prevResult.ips[0].gateway",
            ),
            (
                json!({"ips": [{"address": "10.0.0.5/8", "interface": -1}]}),
                7,
                "prevResult.ips[0].interface",
            ),
            (
                json!({"interfaces": [{"name": 1}]}),
                7,
                "prevResult.interfaces[0].name",
            ),
            (
                json!({"interfaces": ["eth0"]}),
                7,
                "prevResult.interfaces[0]",
            ),
            (
                json!({"routes": [{"dst": "0.0.0.0/0", "scope": 256}]}),
                7,
                "prevResult.routes[0].scope",
            ),
            (
                json!({"dns": {"nameservers": [1]}}),
                7,
                "prevResult.dns.nameservers",
            ),
        ];
        for (prev, want, names) in cases {
            let e = CniResult::read(prev, v("1.1.0")).unwrap_err();
            assert_eq!(e.code, *want, "{prev}: {e:?}");
            assert!(e.details.contains(names), "{prev}: {e:?}");
        }
    }
}
