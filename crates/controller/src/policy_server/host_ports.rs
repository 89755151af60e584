//! Host network mode puts every port a policy-server binds on its node. These checks explain,
//! on the PolicyServer, why its pods cannot run: a port the controller itself binds, or a port
//! already taken on every node the scheduler could use.

use std::collections::BTreeSet;

use api_types::crd::PolicyServer;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use crate::options::Options;

/// Condition type reporting host-port problems (only present in host network mode).
pub const CONDITION: &str = "HostPortsAvailable";
pub const REASON_FREE: &str = "HostPortsFree";
pub const REASON_CONTROLLER_PORT: &str = "ControllerPortConflict";
pub const REASON_POD_PENDING: &str = "HostPortConflict";

/// The scheduler's NodePorts plugin says this when no node has the requested ports free.
const SCHEDULER_PORT_MESSAGE: &str = "free ports";

/// The ports of a PolicyServer that are bound on the node, with the spec field that sets them.
pub fn bound_ports(ps: &PolicyServer, options: &Options) -> Vec<(i32, &'static str)> {
    let mut ports = vec![
        (ps.spec.webhook_port, "spec.webhookPort"),
        (ps.spec.readiness_probe_port, "spec.readinessProbePort"),
    ];
    if options.enable_metrics {
        ports.push((
            options.policy_server_metrics_port,
            "the policy-server metrics port (--policy-server-metrics-port)",
        ));
    }
    ports
}

/// A policy-server port that is also one of the controller's own ports.
pub fn controller_port_clash(ps: &PolicyServer, options: &Options) -> Option<String> {
    if !options.host_network {
        return None;
    }
    let clashes: Vec<String> = bound_ports(ps, options)
        .into_iter()
        .flat_map(|(port, field)| {
            options
                .own_ports
                .named()
                .into_iter()
                .filter(move |(own, _)| i32::from(*own) == port)
                .map(move |(_, what)| {
                    format!("{field} {port} is also the controller's {what} port")
                })
        })
        .collect();
    if clashes.is_empty() {
        return None;
    }
    Some(format!(
        "{}; in host network mode a policy-server pod cannot start on the node running the \
         controller: choose another port, or keep the pods apart with pod anti-affinity \
         (spec.affinity)",
        clashes.join("; ")
    ))
}

fn unschedulable_for_ports(pod: &Pod) -> Option<String> {
    let status = pod.status.as_ref()?;
    if status.phase.as_deref() != Some("Pending") {
        return None;
    }
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.message
                    .as_deref()
                    .is_some_and(|m| m.contains(SCHEDULER_PORT_MESSAGE))
        })
        .map(|c| c.message.clone().unwrap_or_default())
}

fn host_ports(pod: &Pod) -> BTreeSet<i32> {
    pod.spec
        .iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| p.host_port.filter(|p| *p > 0))
        .collect()
}

fn is_running_on_a_node(pod: &Pod) -> Option<String> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    (!matches!(phase, Some("Succeeded" | "Failed"))).then_some(node)
}

/// Explains pods of this PolicyServer that the scheduler cannot place because their host ports
/// are taken. `pods` are the PolicyServer's own pods; `neighbours` are other pods that may hold
/// host ports (the rest of the deployments namespace).
pub fn pending_pod_conflicts(
    ps: &PolicyServer,
    options: &Options,
    pods: &[Pod],
    neighbours: &[Pod],
) -> Option<String> {
    if !options.host_network {
        return None;
    }
    let pending: Vec<&Pod> = pods
        .iter()
        .filter(|p| unschedulable_for_ports(p).is_some())
        .collect();
    let first = pending.first()?;
    let scheduler_message = unschedulable_for_ports(first).unwrap_or_default();
    let mut holders = Vec::new();
    for (port, field) in bound_ports(ps, options) {
        let users: BTreeSet<String> = pods
            .iter()
            .chain(neighbours)
            .filter(|p| host_ports(p).contains(&port))
            .filter_map(|p| {
                is_running_on_a_node(p).map(|node| format!("{} on {node}", p.name_any()))
            })
            .collect();
        if !users.is_empty() {
            holders.push(format!(
                "{field} {port} is already bound by {}",
                users.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let which = if holders.is_empty() {
        "a port it needs is taken on every eligible node".to_string()
    } else {
        holders.join("; ")
    };
    Some(format!(
        "{} policy-server pod(s) cannot be scheduled: {which} (scheduler: {}). Give this \
         PolicyServer other spec.webhookPort / spec.readinessProbePort values, or spread its \
         pods with pod anti-affinity (spec.affinity) over more nodes",
        pending.len(),
        scheduler_message.trim()
    ))
}
