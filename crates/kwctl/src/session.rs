//! Host-capabilities session files, upstream kwctl's format, written by
//! `--record-host-capabilities-interactions` and read by
//! `--replay-host-capabilities-interactions`:
//!
//! ```yaml
//! - type: Exchange
//!   request: |
//!     !KubernetesGetResource
//!     api_version: v1
//!     kind: Namespace
//!     name: default
//!     namespace: null
//!     disable_cache: false
//!   response:
//!     type: Success            # or `type: Error` with `message:`
//!     payload: '{"apiVersion":"v1","kind":"Namespace",...}'
//! ```
//!
//! `request` is the YAML of upstream's `CallbackRequestType`, held as text. A replayed request
//! is compared with the recorded ones as YAML values (`null` fields count as absent), so files
//! recorded by upstream's kwctl replay here and the other way round.

use std::path::Path;

use anyhow::{Context, Result};
use api_types::capabilities::Capability;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;
use serde_yaml_ng::value::{Tag, TaggedValue};

/// One host call and its answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub struct Exchange {
    pub request: String,
    pub response: Response,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum Response {
    Success { payload: String },
    Error { message: String },
}

impl Response {
    pub fn of(answer: &Result<Vec<u8>, String>) -> Result<Self, String> {
        match answer {
            Ok(bytes) => String::from_utf8(bytes.clone())
                .map(|payload| Response::Success { payload })
                .map_err(|_| "the host answered with bytes that are not UTF-8".to_string()),
            Err(message) => Ok(Response::Error {
                message: message.clone(),
            }),
        }
    }

    fn answer(&self) -> Result<Vec<u8>, String> {
        match self {
            Response::Success { payload } => Ok(payload.clone().into_bytes()),
            Response::Error { message } => Err(message.clone()),
        }
    }
}

pub fn read(path: &Path) -> Result<Vec<Exchange>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("Cannot open host capabilities interactions file {path:?}"))?;
    serde_yaml_ng::from_str(&text)
        .with_context(|| format!("cannot deserialize contents of {path:?}"))
}

pub fn write(path: &Path, exchanges: &[Exchange]) -> Result<()> {
    let text = serde_yaml_ng::to_string(exchanges)?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The text of a request, as upstream writes it.
pub fn request_text(request: &Yaml) -> Result<String, String> {
    serde_yaml_ng::to_string(request).map_err(|e| format!("cannot record the request: {e}"))
}

fn tagged(tag: &str, fields: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Tagged(Box::new(TaggedValue {
        tag: Tag::new(tag),
        value: Yaml::Mapping(
            fields
                .into_iter()
                .map(|(key, value)| (Yaml::String(key.to_string()), value))
                .collect(),
        ),
    }))
}

fn yaml(value: &Json) -> Yaml {
    serde_yaml_ng::to_value(value).unwrap_or(Yaml::Null)
}

/// `kubernetes/list_resources_all` of a kind, with no selectors: also how the objects a Rego
/// policy sees as context data are recorded.
pub fn list_all_request(api_version: &str, kind: &str) -> Yaml {
    tagged(
        "KubernetesListResourceAll",
        vec![
            ("api_version", Yaml::String(api_version.to_string())),
            ("kind", Yaml::String(kind.to_string())),
            ("label_selector", Yaml::Null),
            ("field_selector", Yaml::Null),
        ],
    )
}

/// The upstream request a host call is. `None` for calls that never leave the host
/// (`crypto/*`: certificate checks), which upstream does not record either.
pub fn request_of(capability: Capability, payload: &[u8]) -> Result<Option<Yaml>, String> {
    if capability == Capability::CryptoIsCertificateTrusted {
        return Ok(None);
    }
    let query: Json =
        serde_json::from_slice(payload).map_err(|e| format!("invalid request payload: {e}"))?;
    let field = |name: &str| yaml(&query[name]);
    let flag = |name: &str| Yaml::Bool(query[name].as_bool().unwrap_or(false));
    let request = match capability {
        Capability::KubernetesListResourcesAll => tagged(
            "KubernetesListResourceAll",
            vec![
                ("api_version", field("api_version")),
                ("kind", field("kind")),
                ("label_selector", field("label_selector")),
                ("field_selector", field("field_selector")),
            ],
        ),
        Capability::KubernetesListResourcesByNamespace => tagged(
            "KubernetesListResourceNamespace",
            vec![
                ("api_version", field("api_version")),
                ("kind", field("kind")),
                ("namespace", field("namespace")),
                ("label_selector", field("label_selector")),
                ("field_selector", field("field_selector")),
            ],
        ),
        Capability::KubernetesGetResource => tagged(
            "KubernetesGetResource",
            vec![
                ("api_version", field("api_version")),
                ("kind", field("kind")),
                ("name", field("name")),
                ("namespace", field("namespace")),
                ("disable_cache", flag("disable_cache")),
            ],
        ),
        Capability::KubernetesCanI => {
            // Upstream records the SubjectAccessReview it sends to the API server.
            let review = &query["subject_access_review"];
            let review = serde_json::json!({
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "metadata": {},
                "spec": {
                    "resourceAttributes": review["resource_attributes"],
                    "user": review["user"],
                    "groups": review["groups"],
                }
            });
            tagged(
                "KubernetesCanI",
                vec![
                    ("subject_access_review", yaml(&review)),
                    ("disable_cache", flag("disable_cache")),
                ],
            )
        }
        Capability::OciManifestDigest => tagged("OciManifestDigest", vec![("image", yaml(&query))]),
        Capability::OciManifest => tagged("OciManifest", vec![("image", yaml(&query))]),
        Capability::OciManifestConfig => {
            tagged("OciManifestAndConfig", vec![("image", yaml(&query))])
        }
        Capability::OciVerifyV1 => match query.as_object() {
            // Externally tagged: `{"SigstorePubKeyVerify": {...}}`.
            Some(map) if map.len() == 1 => {
                let (tag, fields) = map.iter().next().ok_or("empty verify request")?;
                Yaml::Tagged(Box::new(TaggedValue {
                    tag: Tag::new(tag),
                    value: yaml(fields),
                }))
            }
            _ => return Err("invalid oci/v1/verify request".into()),
        },
        Capability::OciVerifyV2 => {
            // Tagged by `type`.
            let mut fields = query.clone();
            let tag = fields
                .as_object_mut()
                .and_then(|map| map.remove("type"))
                .and_then(|tag| tag.as_str().map(str::to_string))
                .ok_or("invalid oci/v2/verify request: no type")?;
            Yaml::Tagged(Box::new(TaggedValue {
                tag: Tag::new(tag),
                value: yaml(&fields),
            }))
        }
        Capability::NetDnsLookupHost => tagged("DNSLookupHost", vec![("host", yaml(&query))]),
        Capability::CryptoIsCertificateTrusted => return Ok(None),
    };
    Ok(Some(request))
}

/// `value` without `null` mapping entries, the form requests are compared in.
fn normalized(value: &Yaml) -> Yaml {
    match value {
        Yaml::Mapping(map) => Yaml::Mapping(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), normalized(v)))
                .collect(),
        ),
        Yaml::Sequence(items) => Yaml::Sequence(items.iter().map(normalized).collect()),
        Yaml::Tagged(tagged) => Yaml::Tagged(Box::new(TaggedValue {
            tag: tagged.tag.clone(),
            value: normalized(&tagged.value),
        })),
        other => other.clone(),
    }
}

/// The answers of a session file.
#[derive(Debug)]
pub struct Replay {
    /// Each exchange with its request parsed and normalized.
    exchanges: Vec<(Yaml, Exchange)>,
    used: Vec<bool>,
}

impl Replay {
    pub fn new(exchanges: Vec<Exchange>) -> Result<Self> {
        let exchanges = exchanges
            .into_iter()
            .enumerate()
            .map(|(index, exchange)| {
                let request: Yaml =
                    serde_yaml_ng::from_str(&exchange.request).with_context(|| {
                        format!("exchange {index}: the recorded request is not YAML")
                    })?;
                Ok((normalized(&request), exchange))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Replay {
            used: vec![false; exchanges.len()],
            exchanges,
        })
    }

    /// The recorded answer to `request`: that of the first exchange of this request not
    /// answered yet (so a sequence of equal requests gets its answers in order), else the
    /// last one of this request (so a benchmark can repeat it).
    pub fn answer(&mut self, request: &Yaml) -> Result<Vec<u8>, String> {
        let request = normalized(request);
        let matching: Vec<usize> = (0..self.exchanges.len())
            .filter(|&index| self.exchanges[index].0 == request)
            .collect();
        let chosen = matching
            .iter()
            .copied()
            .find(|&index| !self.used[index])
            .or_else(|| matching.last().copied());
        match chosen {
            Some(index) => {
                self.used[index] = true;
                self.exchanges[index].1.response.answer()
            }
            None => {
                let asked = request_text(&request).unwrap_or_default();
                match self.used.iter().position(|used| !used) {
                    Some(next) => Err(format!(
                        "Replay error: unexpected request. Was expecting {}, got {asked} instead",
                        self.exchanges[next].1.request.trim_end()
                    )),
                    None => Err(format!(
                        "Replay error: the list of recorded responses is empty: no answer to {}",
                        asked.trim_end()
                    )),
                }
            }
        }
    }

    /// Exchanges of the file never answered.
    pub fn unused(&self) -> usize {
        self.used.iter().filter(|used| !**used).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capability(namespace: &str, operation: &str) -> Capability {
        Capability::parse(namespace, operation).expect("a capability")
    }

    /// A file as upstream's kwctl records it.
    const UPSTREAM: &str = r#"- type: Exchange
  request: |
    !KubernetesGetResource
    api_version: v1
    kind: Namespace
    name: team-a
    namespace: null
    disable_cache: false
  response:
    type: Success
    payload: '{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"team-a"}}'
- type: Exchange
  request: |
    !OciManifestDigest
    image: ghcr.io/kubewarden/kubectl:v1.31.0
  response:
    type: Error
    message: manifest unknown
"#;

    fn replay() -> Replay {
        Replay::new(serde_yaml_ng::from_str(UPSTREAM).expect("parses")).expect("requests parse")
    }

    fn ask(
        replay: &mut Replay,
        namespace: &str,
        operation: &str,
        payload: Json,
    ) -> Result<Vec<u8>, String> {
        let request = request_of(
            capability(namespace, operation),
            payload.to_string().as_bytes(),
        )
        .expect("valid")
        .expect("recordable");
        replay.answer(&request)
    }

    #[test]
    fn upstream_files_replay_in_any_order_with_absent_fields_as_null() {
        let mut replay = replay();
        let digest = ask(
            &mut replay,
            "oci",
            "v1/manifest_digest",
            serde_json::json!("ghcr.io/kubewarden/kubectl:v1.31.0"),
        );
        assert_eq!(digest, Err("manifest unknown".to_string()));
        // The SDK leaves `namespace` out for cluster-wide kinds.
        let namespace = ask(
            &mut replay,
            "kubernetes",
            "get_resource",
            serde_json::json!({"api_version": "v1", "kind": "Namespace", "name": "team-a"}),
        )
        .expect("answered");
        assert!(String::from_utf8_lossy(&namespace).contains("team-a"));
        assert_eq!(replay.unused(), 0);
        // Asked again: the last answer is given again.
        assert!(
            ask(
                &mut replay,
                "kubernetes",
                "get_resource",
                serde_json::json!({"api_version": "v1", "kind": "Namespace", "name": "team-a"}),
            )
            .is_ok()
        );
    }

    #[test]
    fn an_unrecorded_request_names_what_was_expected() {
        let mut replay = replay();
        let error = ask(
            &mut replay,
            "net",
            "v1/dns_lookup_host",
            serde_json::json!("example.com"),
        )
        .expect_err("not recorded");
        assert!(
            error.starts_with("Replay error: unexpected request"),
            "{error}"
        );
        assert!(
            error.contains("KubernetesGetResource") && error.contains("DNSLookupHost"),
            "{error}"
        );
    }

    #[test]
    fn recorded_requests_read_back_as_upstream_writes_them() {
        let request = request_of(
            Capability::OciVerifyV2,
            br#"{"type":"SigstorePubKeyVerify","image":"registry.local/p:v1","pub_keys":["KEY"],"annotations":null}"#,
        )
        .expect("valid")
        .expect("recordable");
        let text = request_text(&request).expect("text");
        assert_eq!(
            text,
            "!SigstorePubKeyVerify\nannotations: null\nimage: registry.local/p:v1\npub_keys:\n- KEY\n"
        );
        let exchanges = vec![Exchange {
            request: text,
            response: Response::Success {
                payload: r#"{"is_trusted":true}"#.into(),
            },
        }];
        let written = serde_yaml_ng::to_string(&exchanges).expect("yaml");
        assert!(
            written.starts_with("- type: Exchange\n  request: |\n    !SigstorePubKeyVerify\n"),
            "{written}"
        );
        let mut replay =
            Replay::new(serde_yaml_ng::from_str(&written).expect("reads")).expect("parses");
        assert_eq!(
            replay.answer(&request),
            Ok(br#"{"is_trusted":true}"#.to_vec())
        );
        assert_eq!(
            request_of(Capability::CryptoIsCertificateTrusted, b"{}"),
            Ok(None),
            "certificate checks stay local"
        );
    }
}
