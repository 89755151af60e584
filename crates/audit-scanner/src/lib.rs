//! The audit-scanner: evaluates the resources already in the cluster against the policies
//! that have background audit enabled, and writes one report per resource.
//!
//! [`policies`] decides which policies apply where and [`report`] builds reports (both pure);
//! [`client`] talks to policy-servers; [`scan::Scanner`] lists and orchestrates.

pub mod client;
pub mod policies;
pub mod report;
pub mod scan;

pub use client::{PolicyServerClient, TlsOptions};
pub use report::ReportKind;
pub use scan::{ScanOptions, ScanSummary, Scanner, Scope};
