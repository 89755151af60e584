//! `sources.yml`: registries and hosts policies may be fetched from without TLS verification,
//! and extra certificate authorities to trust per host.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ConfigError;

/// A certificate authority trusted for one source, given inline or as a file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(tag = "type")]
pub enum SourceAuthority {
    /// PEM text.
    Data { data: String },
    /// Path of a PEM file.
    Path { path: String },
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct SourcesConfig {
    /// `host[:port]` of sources that may be reached without TLS verification or over HTTP.
    #[serde(default)]
    pub insecure_sources: Vec<String>,
    /// Authorities trusted for a `host[:port]`, in addition to the system roots.
    #[serde(default)]
    pub source_authorities: BTreeMap<String, Vec<SourceAuthority>>,
}

impl SourcesConfig {
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        serde_yaml_ng::from_str(text).map_err(|source| ConfigError::Parse {
            file: "sources.yml",
            source,
        })
    }

    /// Builds the file from the fields of a PolicyServer spec.
    pub fn from_policy_server(
        insecure_sources: &[String],
        source_authorities: &BTreeMap<String, Vec<String>>,
    ) -> Self {
        SourcesConfig {
            insecure_sources: insecure_sources.to_vec(),
            source_authorities: source_authorities
                .iter()
                .map(|(host, pems)| {
                    let authorities = pems
                        .iter()
                        .map(|pem| SourceAuthority::Data { data: pem.clone() })
                        .collect();
                    (host.clone(), authorities)
                })
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.insecure_sources.is_empty() && self.source_authorities.is_empty()
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
