//! PolicyServer reconciliation: the Deployment, Service, Secret, ConfigMap and PDB that run a
//! PolicyServer's policies.

pub mod bound;
pub mod desired;
pub mod host_ports;
pub mod reconcile;

#[cfg(test)]
mod tests;
