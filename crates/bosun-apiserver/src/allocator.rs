//! ClusterIP and NodePort allocation. Each allocated value is a key in the store
//! (`/registry/allocations/...`) written in the same transaction as the Service, guarded by
//! "this key does not exist": two concurrent creates can never get the same value, and a
//! delete releases its values in the same transaction that removes the Service.

use bosun_api::json::At;
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use bosun_api::admission::FieldError;
use rand::Rng;
use serde_json::Value;

use crate::error::{Error, Result};

/// Key prefix of allocated service IPs.
pub const IP_PREFIX: &str = "/registry/allocations/serviceips/";
/// Key prefix of allocated node ports.
pub const PORT_PREFIX: &str = "/registry/allocations/nodeports/";
/// The node port range (as Kubernetes' default).
pub const NODE_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

/// An IPv4 range to allocate service IPs from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceCidr {
    base: u32,
    prefix: u8,
}

impl ServiceCidr {
    /// Parses `10.96.0.0/16`. Between /8 and /28.
    ///
    /// # Errors
    /// When malformed.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("service CIDR {s:?}: expected address/prefix"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("service CIDR {s:?}: {ip:?} is not an IPv4 address"))?;
        let prefix: u8 = len
            .parse()
            .map_err(|_| format!("service CIDR {s:?}: bad prefix length"))?;
        if !(8..=28).contains(&prefix) {
            return Err(format!("service CIDR {s:?}: prefix length must be 8 to 28"));
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(ServiceCidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    /// Whether `ip` is an allocatable address of the range (not network or broadcast).
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v > self.base && v < self.base + self.size() - 1
    }

    /// A random allocatable address (the first one, `.1`, is kept for the cluster's own
    /// API Service as Kubernetes does).
    pub fn random(&self) -> Ipv4Addr {
        let off = rand::thread_rng().gen_range(2..self.size() - 1);
        Ipv4Addr::from(self.base + off)
    }
}

impl Default for ServiceCidr {
    fn default() -> Self {
        ServiceCidr {
            base: u32::from(Ipv4Addr::new(10, 96, 0, 0)),
            prefix: 16,
        }
    }
}

impl std::fmt::Display for ServiceCidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// The allocation keys a Service holds.
pub fn held(svc: &Value) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    if let Some(ip) = svc.at("/spec/clusterIP").and_then(Value::as_str) {
        if ip.parse::<Ipv4Addr>().is_ok() {
            keys.insert(format!("{IP_PREFIX}{ip}"));
        }
    }
    for p in ports(svc) {
        if let Some(np) = p.get("nodePort").and_then(Value::as_i64) {
            if np > 0 {
                keys.insert(format!("{PORT_PREFIX}{np}"));
            }
        }
    }
    keys
}

fn ports(svc: &Value) -> Vec<&Value> {
    svc.at("/spec/ports")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}

/// What [`fill`] decided: values it picked (may be retried with others on a clash) and
/// values the user asked for (a clash is the user's error).
#[derive(Debug, Default)]
pub struct Picked {
    /// Keys of values picked at random.
    pub automatic: BTreeSet<String>,
}

/// What is wrong with the values a Service asks for against this server's ranges (the
/// service CIDR is configuration, so validation cannot know it), as field errors that
/// admission reports together with its own. Values `old` (the stored Service) already
/// holds are kept as they are. Node ports out of their fixed range, node ports on a type
/// that has none and malformed IPs are validation's to report.
pub fn check(svc: &Value, old: Option<&Value>, cidr: &ServiceCidr) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if svc.at("/spec/type").and_then(Value::as_str) == Some("ExternalName") {
        return errors;
    }
    let current = svc
        .at("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    let kept = old
        .and_then(|o| o.at("/spec/clusterIP"))
        .and_then(Value::as_str)
        .unwrap_or("");
    if let Ok(ip) = current.parse::<Ipv4Addr>() {
        if current != kept && !cidr.contains(ip) {
            errors.push(FieldError::invalid(
                "spec.clusterIP",
                current,
                format!("provided IP is not in the valid range. The range of valid IPs is {cidr}"),
            ));
        }
    }
    errors
}

/// Fills `spec.clusterIP` and the node ports a Service needs, keeping values `old` (the
/// stored Service, on update) already holds. `taken` says whether a key is allocated now.
/// Requested values are not judged here ([`check`] and validation do, and admission
/// refuses the Service before anything is written), so that one refusal lists them all.
///
/// # Errors
/// When no free value is found.
pub fn fill(
    svc: &mut Value,
    old: Option<&Value>,
    cidr: &ServiceCidr,
    taken: &dyn Fn(&str) -> bool,
) -> Result<Picked> {
    let mut picked = Picked::default();
    let kind = svc
        .at("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(picked);
    };
    if kind != "ExternalName" {
        let current = spec
            .get("clusterIP")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kept = old
            .and_then(|o| o.at("/spec/clusterIP"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if current.is_empty() && !kept.is_empty() {
            spec.insert("clusterIP".into(), Value::String(kept.clone()));
        } else if current.is_empty() {
            let ip = pick(|| cidr.random().to_string(), IP_PREFIX, taken)
                .ok_or_else(|| Error::Exhausted(format!("no free service IP left in {cidr}")))?;
            picked.automatic.insert(format!("{IP_PREFIX}{ip}"));
            spec.insert("clusterIP".into(), Value::String(ip.clone()));
            spec.insert("clusterIPs".into(), Value::Array(vec![Value::String(ip)]));
        }
    }
    // (port, protocol, nodePort) of the stored Service: an update that leaves a port's
    // nodePort out keeps the one it had, as Kubernetes does.
    let old_ports: Vec<(i64, String, i64)> = old
        .map(|o| {
            ports(o)
                .iter()
                .filter_map(|p| {
                    Some((
                        p.get("port").and_then(Value::as_i64)?,
                        protocol(p),
                        p.get("nodePort").and_then(Value::as_i64)?,
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    let want = matches!(kind.as_str(), "NodePort" | "LoadBalancer");
    let Some(list) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        return Ok(picked);
    };
    for p in list.iter_mut() {
        let Some(p) = p.as_object_mut() else { continue };
        let np = p.get("nodePort").and_then(Value::as_i64).unwrap_or(0);
        if !want {
            continue;
        }
        let kept = old_ports.iter().find(|(port, proto, _)| {
            Some(*port) == p.get("port").and_then(Value::as_i64)
                && *proto == protocol(&Value::Object(p.clone()))
        });
        if np == 0 {
            if let Some((_, _, n)) = kept {
                p.insert("nodePort".into(), Value::from(*n));
                continue;
            }
            let port = pick(
                || rand::thread_rng().gen_range(NODE_PORTS).to_string(),
                PORT_PREFIX,
                taken,
            )
            .ok_or_else(|| Error::Exhausted("no free node port left in 30000-32767".into()))?;
            picked.automatic.insert(format!("{PORT_PREFIX}{port}"));
            let n: i64 = port.parse().unwrap_or_default();
            p.insert("nodePort".into(), Value::from(n));
        }
    }
    Ok(picked)
}

fn protocol(p: &Value) -> String {
    p.get("protocol")
        .and_then(Value::as_str)
        .unwrap_or("TCP")
        .to_string()
}

/// Tries random values until one is free (bounded: a nearly full range reports exhaustion).
fn pick(gen: impl Fn() -> String, prefix: &str, taken: &dyn Fn(&str) -> bool) -> Option<String> {
    (0..64)
        .map(|_| gen())
        .find(|v| !taken(&format!("{prefix}{v}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cluster_ips_come_from_the_range_and_skip_the_reserved_ones() {
        let cidr = ServiceCidr::parse("10.96.0.0/28").unwrap_or_default();
        for _ in 0..200 {
            let ip = cidr.random();
            assert!(cidr.contains(ip));
            assert_ne!(ip, Ipv4Addr::new(10, 96, 0, 1));
        }
        assert!(!cidr.contains(Ipv4Addr::new(10, 96, 0, 15)));
        assert!(ServiceCidr::parse("10.96.0.0").is_err());
        assert!(ServiceCidr::parse("10.96.0.0/30").is_err());
    }

    #[test]
    fn a_node_port_service_gets_an_ip_and_ports_that_are_free() {
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 443, "nodePort": 30443}]}});
        let picked = fill(&mut svc, None, &ServiceCidr::default(), &|k| {
            k.ends_with("/30000")
        })
        .unwrap_or_default();
        let keys = held(&svc);
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert_eq!(picked.automatic.len(), 2);
        assert!(keys.contains("/registry/allocations/nodeports/30443"));
    }

    #[test]
    fn a_requested_ip_outside_the_range_is_a_field_error_unless_the_service_holds_it() {
        let cidr = ServiceCidr::default();
        let svc = json!({"spec": {"clusterIP": "192.168.0.5", "ports": [{"port": 80}]}});
        let errors = check(&svc, None, &cidr);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "spec.clusterIP");
        assert!(errors[0].detail.contains("10.96.0.0/16"), "{errors:?}");
        assert!(check(&svc, Some(&svc), &cidr).is_empty());
        let inside = json!({"spec": {"clusterIP": "10.96.0.9"}});
        assert!(check(&inside, None, &cidr).is_empty());
    }

    #[test]
    fn requested_values_are_left_to_validation_and_not_allocated_anew() {
        let mut svc = json!({"spec": {"type": "ClusterIP", "clusterIP": "not-an-ip",
            "ports": [{"port": 80, "nodePort": 30080}]}});
        let picked = fill(&mut svc, None, &ServiceCidr::default(), &|_| false).unwrap_or_default();
        assert!(picked.automatic.is_empty(), "{picked:?}");
        assert_eq!(svc["spec"]["clusterIP"], "not-an-ip");
        assert_eq!(svc["spec"]["ports"][0]["nodePort"], 30080);
    }

    #[test]
    fn an_update_keeps_the_allocated_ip() {
        let old = json!({"spec": {"clusterIP": "10.96.3.4", "ports": [{"port": 80}]}});
        let mut new = json!({"spec": {"ports": [{"port": 80}]}});
        let picked =
            fill(&mut new, Some(&old), &ServiceCidr::default(), &|_| true).unwrap_or_default();
        assert!(picked.automatic.is_empty());
        assert_eq!(new["spec"]["clusterIP"], "10.96.3.4");
    }
}
