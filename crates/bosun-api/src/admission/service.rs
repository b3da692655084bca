//! core/v1 Service and Endpoints.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{EndpointAddress, Endpoints, Service, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::meta::validate_labels;
use super::names::{dns1123_label_errors, dns1123_subdomain_errors};
use super::pod::{validate_port_num_or_name, PROTOCOLS};
use super::{
    dns1123_label, dns1123_subdomain, ip_address, validate_meta_update, validate_object_meta,
    Admit, FieldError,
};

const SERVICE_TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const AFFINITIES: [&str; 2] = ["ClientIP", "None"];
const TRAFFIC_POLICIES: [&str; 2] = ["Cluster", "Local"];
/// bosun's fixed NodePort range (Kubernetes' default `--service-node-port-range`).
pub const NODE_PORT_RANGE: std::ops::RangeInclusive<i32> = 30000..=32767;
const PORT_RANGE: &str = "must be between 1 and 65535, inclusive";

fn service_type(spec: &ServiceSpec) -> &str {
    spec.type_.as_deref().unwrap_or("ClusterIP")
}

impl Admit for Service {
    fn default_fields(&mut self) {
        let Some(spec) = &mut self.spec else {
            return;
        };
        if spec.type_.as_deref().is_none_or(str::is_empty) {
            spec.type_ = Some("ClusterIP".into());
        }
        if spec.session_affinity.as_deref().is_none_or(str::is_empty) {
            spec.session_affinity = Some("None".into());
        }
        for port in spec.ports.iter_mut().flatten() {
            if port.protocol.as_deref().is_none_or(str::is_empty) {
                port.protocol = Some("TCP".into());
            }
            let unset = match &port.target_port {
                None => true,
                Some(IntOrString::Int(0)) => true,
                Some(IntOrString::String(s)) => s.is_empty(),
                Some(IntOrString::Int(_)) => false,
            };
            if unset {
                port.target_port = Some(IntOrString::Int(port.port));
            }
        }
        let kind = spec.type_.as_deref().unwrap_or("ClusterIP");
        if kind != "ExternalName" && spec.internal_traffic_policy.is_none() {
            spec.internal_traffic_policy = Some("Cluster".into());
        }
        if matches!(kind, "NodePort" | "LoadBalancer") && spec.external_traffic_policy.is_none() {
            spec.external_traffic_policy = Some("Cluster".into());
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_label);
        let empty = ServiceSpec::default();
        let spec = self.spec.as_ref().unwrap_or(&empty);
        let kind = service_type(spec);
        let cluster_ip = spec.cluster_ip.as_deref().unwrap_or("");
        let headless = cluster_ip == "None";
        let node_ports_allowed = matches!(kind, "NodePort" | "LoadBalancer");

        if !SERVICE_TYPES.contains(&kind) {
            errs.push(FieldError::not_supported("spec.type", kind, &SERVICE_TYPES));
        }
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ports.is_empty() && kind != "ExternalName" && !headless {
            errs.push(FieldError::required("spec.ports", ""));
        }
        let mut names = HashSet::new();
        let mut pairs = HashSet::new();
        let mut node_ports = HashSet::new();
        for (i, port) in ports.iter().enumerate() {
            let p = format!("spec.ports[{i}]");
            match port.name.as_deref().filter(|n| !n.is_empty()) {
                None if ports.len() > 1 => errs.push(FieldError::required(format!("{p}.name"), "")),
                None => {}
                Some(name) => {
                    for msg in dns1123_label_errors(name) {
                        errs.push(FieldError::invalid(format!("{p}.name"), name, msg));
                    }
                    if !names.insert(name) {
                        errs.push(FieldError::duplicate(format!("{p}.name"), name));
                    }
                }
            }
            if !(1..=65535).contains(&port.port) {
                errs.push(FieldError::invalid_number(
                    format!("{p}.port"),
                    i64::from(port.port),
                    PORT_RANGE,
                ));
            }
            let protocol = port.protocol.as_deref().unwrap_or("TCP");
            if !PROTOCOLS.contains(&protocol) {
                errs.push(FieldError::not_supported(
                    format!("{p}.protocol"),
                    protocol,
                    &PROTOCOLS,
                ));
            }
            if !pairs.insert((port.port, protocol)) {
                errs.push(FieldError::duplicate(
                    p.clone(),
                    &format!("{}/{protocol}", port.port),
                ));
            }
            if let Some(target) = &port.target_port {
                validate_port_num_or_name(target, &format!("{p}.targetPort"), &mut errs);
            }
            if let Some(node_port) = port.node_port.filter(|n| *n != 0) {
                let np = format!("{p}.nodePort");
                if !node_ports_allowed {
                    errs.push(FieldError::forbidden(
                        np,
                        format!("may not be used when `type` is '{kind}'"),
                    ));
                } else if !NODE_PORT_RANGE.contains(&node_port) {
                    errs.push(FieldError::invalid_number(
                        np,
                        i64::from(node_port),
                        format!(
                            "provided port is not in the valid range. The range of valid ports is {}-{}",
                            NODE_PORT_RANGE.start(),
                            NODE_PORT_RANGE.end()
                        ),
                    ));
                } else if !node_ports.insert((node_port, protocol)) {
                    errs.push(FieldError::duplicate(np, &node_port.to_string()));
                }
            }
        }
        if let Some(selector) = &spec.selector {
            errs.extend(validate_labels(selector, "spec.selector"));
        }
        match cluster_ip {
            "" => {}
            "None" => {
                if node_ports_allowed {
                    errs.push(FieldError::invalid(
                        "spec.clusterIP",
                        cluster_ip,
                        format!("may not be set to 'None' for {kind} services"),
                    ));
                }
            }
            ip => {
                if kind == "ExternalName" {
                    errs.push(FieldError::forbidden(
                        "spec.clusterIP",
                        "may not be set for ExternalName services",
                    ));
                } else if ip.parse::<Ipv4Addr>().is_err() {
                    errs.push(FieldError::invalid(
                        "spec.clusterIP",
                        ip,
                        "must be a valid IPv4 address, or 'None' for a headless service",
                    ));
                }
            }
        }
        for (i, ip) in spec.cluster_ips.iter().flatten().enumerate() {
            if ip != "None" && ip.parse::<Ipv4Addr>().is_err() {
                errs.push(FieldError::invalid(
                    format!("spec.clusterIPs[{i}]"),
                    ip,
                    "must be a valid IPv4 address, or 'None' for a headless service",
                ));
            }
        }
        if let Some(affinity) = &spec.session_affinity {
            if !AFFINITIES.contains(&affinity.as_str()) {
                errs.push(FieldError::not_supported(
                    "spec.sessionAffinity",
                    affinity,
                    &AFFINITIES,
                ));
            }
        }
        for (value, field) in [
            (&spec.internal_traffic_policy, "spec.internalTrafficPolicy"),
            (&spec.external_traffic_policy, "spec.externalTrafficPolicy"),
        ] {
            if let Some(v) = value.as_deref().filter(|v| !TRAFFIC_POLICIES.contains(v)) {
                errs.push(FieldError::not_supported(field, v, &TRAFFIC_POLICIES));
            }
        }
        if kind == "ExternalName" {
            match spec.external_name.as_deref().filter(|n| !n.is_empty()) {
                None => errs.push(FieldError::required("spec.externalName", "")),
                Some(name) => {
                    let bare = name.strip_suffix('.').unwrap_or(name);
                    for msg in dns1123_subdomain_errors(bare) {
                        errs.push(FieldError::invalid("spec.externalName", name, msg));
                    }
                }
            }
        }
        for (i, ip) in spec.external_ips.iter().flatten().enumerate() {
            if let Err(msg) = ip_address(ip) {
                errs.push(FieldError::invalid(
                    format!("spec.externalIPs[{i}]"),
                    ip,
                    msg,
                ));
            }
        }
        errs
    }

    /// The ClusterIP never changes once allocated, except that it is dropped when the
    /// Service becomes an ExternalName (the caller clears it then).
    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        let mut errs = validate_meta_update(&self.metadata, &old.metadata);
        let empty = ServiceSpec::default();
        let new_spec = self.spec.as_ref().unwrap_or(&empty);
        let old_spec = old.spec.as_ref().unwrap_or(&empty);
        let old_ip = old_spec.cluster_ip.as_deref().unwrap_or("");
        let new_ip = new_spec.cluster_ip.as_deref().unwrap_or("");
        let dropped_for_external_name =
            new_ip.is_empty() && service_type(new_spec) == "ExternalName";
        if !old_ip.is_empty() && new_ip != old_ip && !dropped_for_external_name {
            errs.push(FieldError::immutable("spec.clusterIP", new_ip));
        }
        errs
    }
}

fn validate_endpoint_address(a: &EndpointAddress, p: &str, errs: &mut Vec<FieldError>) {
    if a.ip.is_empty() {
        errs.push(FieldError::required(format!("{p}.ip"), ""));
    } else if let Err(msg) = ip_address(&a.ip) {
        errs.push(FieldError::invalid(format!("{p}.ip"), &a.ip, msg));
    }
    if let Some(h) = a.hostname.as_deref().filter(|h| !h.is_empty()) {
        for msg in dns1123_label_errors(h) {
            errs.push(FieldError::invalid(format!("{p}.hostname"), h, msg));
        }
    }
    if let Some(n) = a.node_name.as_deref().filter(|n| !n.is_empty()) {
        for msg in dns1123_subdomain_errors(n) {
            errs.push(FieldError::invalid(format!("{p}.nodeName"), n, msg));
        }
    }
}

impl Admit for Endpoints {
    fn default_fields(&mut self) {
        for subset in self.subsets.iter_mut().flatten() {
            for port in subset.ports.iter_mut().flatten() {
                if port.protocol.as_deref().is_none_or(str::is_empty) {
                    port.protocol = Some("TCP".into());
                }
            }
        }
    }

    fn validate(&self) -> Vec<FieldError> {
        let mut errs = validate_object_meta(&self.metadata, "metadata", dns1123_subdomain);
        for (i, subset) in self.subsets.iter().flatten().enumerate() {
            let sp = format!("subsets[{i}]");
            for (j, a) in subset.addresses.iter().flatten().enumerate() {
                validate_endpoint_address(a, &format!("{sp}.addresses[{j}]"), &mut errs);
            }
            for (j, a) in subset.not_ready_addresses.iter().flatten().enumerate() {
                validate_endpoint_address(a, &format!("{sp}.notReadyAddresses[{j}]"), &mut errs);
            }
            let ports = subset.ports.as_deref().unwrap_or_default();
            let mut names = HashSet::new();
            for (j, port) in ports.iter().enumerate() {
                let pp = format!("{sp}.ports[{j}]");
                match port.name.as_deref().filter(|n| !n.is_empty()) {
                    None if ports.len() > 1 => {
                        errs.push(FieldError::required(format!("{pp}.name"), ""));
                    }
                    None => {}
                    Some(name) => {
                        for msg in dns1123_label_errors(name) {
                            errs.push(FieldError::invalid(format!("{pp}.name"), name, msg));
                        }
                        if !names.insert(name) {
                            errs.push(FieldError::duplicate(format!("{pp}.name"), name));
                        }
                    }
                }
                if !(1..=65535).contains(&port.port) {
                    errs.push(FieldError::invalid_number(
                        format!("{pp}.port"),
                        i64::from(port.port),
                        PORT_RANGE,
                    ));
                }
                if let Some(proto) = port.protocol.as_deref() {
                    if !PROTOCOLS.contains(&proto) {
                        errs.push(FieldError::not_supported(
                            format!("{pp}.protocol"),
                            proto,
                            &PROTOCOLS,
                        ));
                    }
                }
            }
        }
        errs
    }

    fn validate_update(&self, old: &Self) -> Vec<FieldError> {
        validate_meta_update(&self.metadata, &old.metadata)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{fields, meta};
    use crate::admission::FieldErrorKind;
    use k8s_openapi::api::core::v1::{EndpointPort, EndpointSubset, ServicePort};

    fn port(name: Option<&str>, port: i32) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port,
            ..Default::default()
        }
    }

    fn service(spec: ServiceSpec) -> Service {
        Service {
            metadata: meta("web"),
            spec: Some(spec),
            status: None,
        }
    }

    #[test]
    fn a_cluster_ip_service_is_valid_and_defaulted_like_kubernetes() {
        let mut s = service(ServiceSpec {
            selector: Some([("app".to_string(), "web".to_string())].into()),
            ports: Some(vec![port(None, 80)]),
            ..Default::default()
        });
        s.default_fields();
        assert_eq!(s.validate(), vec![]);
        let spec = s.spec.as_ref().unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.session_affinity.as_deref(), Some("None"));
        assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
        assert_eq!(spec.external_traffic_policy, None);
        let p = &spec.ports.as_ref().unwrap()[0];
        assert_eq!(p.protocol.as_deref(), Some("TCP"));
        assert_eq!(p.target_port, Some(IntOrString::Int(80)));
        let once = s.clone();
        s.default_fields();
        assert_eq!(s, once);
    }

    #[test]
    fn service_names_must_be_dns_labels() {
        let mut s = service(ServiceSpec {
            ports: Some(vec![port(None, 80)]),
            ..Default::default()
        });
        s.metadata.name = Some("web.v1".into());
        assert_eq!(fields(&s.validate()), ["metadata.name"]);
    }

    #[test]
    fn service_ports_are_checked() {
        let mut ports = vec![
            port(Some("http"), 80),
            port(None, 0),
            port(Some("http"), 80),
        ];
        ports[0].target_port = Some(IntOrString::String("Web_Port".into()));
        ports[1].protocol = Some("HTTP".into());
        ports[1].node_port = Some(30080);
        let s = service(ServiceSpec {
            ports: Some(ports),
            ..Default::default()
        });
        let errs = s.validate();
        assert_eq!(
            fields(&errs),
            [
                "spec.ports[0].targetPort",
                "spec.ports[1].name",
                "spec.ports[1].port",
                "spec.ports[1].protocol",
                "spec.ports[1].nodePort",
                "spec.ports[2].name",
                "spec.ports[2]",
            ]
        );
        assert_eq!(errs[6].kind, FieldErrorKind::Duplicate("\"80/TCP\"".into()));
    }

    #[test]
    fn node_ports_must_be_in_range_and_unique() {
        let mut ports = vec![
            port(Some("a"), 80),
            port(Some("b"), 81),
            port(Some("c"), 82),
        ];
        ports[0].node_port = Some(30000);
        ports[1].node_port = Some(30000);
        ports[2].node_port = Some(8080);
        let s = service(ServiceSpec {
            type_: Some("NodePort".into()),
            ports: Some(ports),
            ..Default::default()
        });
        let errs = s.validate();
        assert_eq!(
            fields(&errs),
            ["spec.ports[1].nodePort", "spec.ports[2].nodePort"]
        );
        assert!(errs[1].detail.contains("30000-32767"));
    }

    #[test]
    fn headless_and_external_name_services_need_no_ports() {
        let headless = service(ServiceSpec {
            cluster_ip: Some("None".into()),
            ..Default::default()
        });
        assert_eq!(headless.validate(), vec![]);
        let external = service(ServiceSpec {
            type_: Some("ExternalName".into()),
            external_name: Some("db.example.com.".into()),
            ..Default::default()
        });
        assert_eq!(external.validate(), vec![]);
        let missing = service(ServiceSpec {
            type_: Some("ExternalName".into()),
            ..Default::default()
        });
        assert_eq!(fields(&missing.validate()), ["spec.externalName"]);
        let no_ports = service(ServiceSpec::default());
        assert_eq!(fields(&no_ports.validate()), ["spec.ports"]);
    }

    #[test]
    fn bad_type_cluster_ip_and_affinity_are_refused() {
        let s = service(ServiceSpec {
            type_: Some("Magic".into()),
            cluster_ip: Some("10.0.0.300".into()),
            session_affinity: Some("Sticky".into()),
            ports: Some(vec![port(None, 80)]),
            ..Default::default()
        });
        assert_eq!(
            fields(&s.validate()),
            ["spec.type", "spec.clusterIP", "spec.sessionAffinity"]
        );
    }

    #[test]
    fn cluster_ip_is_immutable_once_set_but_type_may_change() {
        let old = service(ServiceSpec {
            cluster_ip: Some("10.96.0.10".into()),
            ports: Some(vec![port(None, 80)]),
            ..Default::default()
        });
        let mut to_node_port = old.clone();
        to_node_port.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        assert_eq!(to_node_port.validate_update(&old), vec![]);
        let mut moved = old.clone();
        moved.spec.as_mut().unwrap().cluster_ip = Some("10.96.0.11".into());
        let errs = moved.validate_update(&old);
        assert_eq!(errs.len(), 1);
        assert_eq!(
            errs[0].to_string(),
            r#"spec.clusterIP: Invalid value: "10.96.0.11": field is immutable"#
        );
        let mut cleared = old.clone();
        cleared.spec.as_mut().unwrap().cluster_ip = None;
        assert_eq!(fields(&cleared.validate_update(&old)), ["spec.clusterIP"]);
    }

    #[test]
    fn endpoints_need_valid_addresses_and_ports() {
        let mut e = Endpoints {
            metadata: meta("web"),
            subsets: Some(vec![EndpointSubset {
                addresses: Some(vec![
                    EndpointAddress {
                        ip: "10.1.0.5".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "fd00::5".into(),
                        ..Default::default()
                    },
                    EndpointAddress {
                        ip: "not-an-ip".into(),
                        ..Default::default()
                    },
                ]),
                not_ready_addresses: Some(vec![EndpointAddress::default()]),
                ports: Some(vec![
                    EndpointPort {
                        name: Some("http".into()),
                        port: 80,
                        ..Default::default()
                    },
                    EndpointPort {
                        name: Some("dns".into()),
                        port: 70000,
                        protocol: Some("ICMP".into()),
                        ..Default::default()
                    },
                ]),
            }]),
        };
        e.default_fields();
        let errs = e.validate();
        assert_eq!(
            fields(&errs),
            [
                "subsets[0].addresses[2].ip",
                "subsets[0].notReadyAddresses[0].ip",
                "subsets[0].ports[1].port",
                "subsets[0].ports[1].protocol",
            ]
        );
        e.subsets.as_mut().unwrap()[0]
            .addresses
            .as_mut()
            .unwrap()
            .truncate(2);
        e.subsets.as_mut().unwrap()[0].not_ready_addresses = None;
        e.subsets.as_mut().unwrap()[0]
            .ports
            .as_mut()
            .unwrap()
            .truncate(1);
        assert_eq!(e.validate(), vec![]);
        let once = e.clone();
        e.default_fields();
        assert_eq!(e, once);
    }
}
