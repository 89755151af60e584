//! The query parts of the `kubernetes/*` capabilities, on objects already in memory: label
//! and field selectors (Kubernetes' string syntax) and field masks.

use std::collections::BTreeMap;

use kube::core::{Expression, Selector, SelectorExt};
use serde_json::{Map, Value};

/// Parses a label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`,
/// comma separated.
pub fn parse_label_selector(text: &str) -> Result<Selector, String> {
    let mut expressions = Vec::new();
    for requirement in split_requirements(text) {
        let requirement = requirement.trim();
        if requirement.is_empty() {
            continue;
        }
        let invalid = || format!("invalid label selector requirement {requirement:?}");
        let expression = if let Some(key) = requirement.strip_prefix('!') {
            Expression::DoesNotExist(key.trim().to_string())
        } else if let Some((key, values)) = split_set(requirement, " notin ") {
            Expression::NotIn(key, values.ok_or_else(invalid)?)
        } else if let Some((key, values)) = split_set(requirement, " in ") {
            Expression::In(key, values.ok_or_else(invalid)?)
        } else if let Some((key, value)) = requirement.split_once("!=") {
            Expression::NotEqual(key.trim().to_string(), value.trim().to_string())
        } else if let Some((key, value)) = requirement
            .split_once("==")
            .or_else(|| requirement.split_once('='))
        {
            Expression::Equal(key.trim().to_string(), value.trim().to_string())
        } else if requirement.chars().all(is_label_char) {
            Expression::Exists(requirement.to_string())
        } else {
            return Err(invalid());
        };
        expressions.push(expression);
    }
    Ok(Selector::from_iter(expressions))
}

fn is_label_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/')
}

/// Commas separate requirements except inside `( )`.
fn split_requirements(text: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (index, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..index]);
                start = index + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// `key <operator> (a, b)`: the key and the set (`None` when the set is malformed).
fn split_set(
    requirement: &str,
    operator: &str,
) -> Option<(String, Option<std::collections::BTreeSet<String>>)> {
    let (key, rest) = requirement.split_once(operator)?;
    let values = rest
        .trim()
        .strip_prefix('(')
        .and_then(|rest| rest.strip_suffix(')'))
        .map(|inner| {
            inner
                .split(',')
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
                .collect()
        });
    Some((key.trim().to_string(), values))
}

/// Whether labels match `selector`.
pub fn labels_match(selector: &Selector, labels: Option<&BTreeMap<String, String>>) -> bool {
    static NONE: BTreeMap<String, String> = BTreeMap::new();
    selector.matches(labels.unwrap_or(&NONE))
}

/// A field selector: `path=value`, `path==value` or `path!=value` requirements, comma
/// separated, on any dotted path of the object (`metadata.name`, `spec.nodeName`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSelector(Vec<(Vec<String>, bool, String)>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for requirement in text.split(',').map(str::trim).filter(|r| !r.is_empty()) {
            let (path, equal, value) = if let Some((path, value)) = requirement.split_once("!=") {
                (path, false, value)
            } else if let Some((path, value)) = requirement
                .split_once("==")
                .or_else(|| requirement.split_once('='))
            {
                (path, true, value)
            } else {
                return Err(format!(
                    "invalid field selector requirement {requirement:?}"
                ));
            };
            let path = path.trim().split('.').map(str::to_string).collect();
            requirements.push((path, equal, value.trim().to_string()));
        }
        Ok(FieldSelector(requirements))
    }

    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, equal, expected)| {
            let actual = path
                .iter()
                .try_fold(object, |value, key| value.get(key))
                .map(|value| match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .unwrap_or_default();
            (actual == *expected) == *equal
        })
    }
}

/// Keeps only the dotted `masks` of `object` (a mask through an array applies to each
/// element); no masks keep everything.
pub fn apply_field_masks(object: &Value, masks: &[String]) -> Value {
    if masks.is_empty() {
        return object.clone();
    }
    let mut tree = MaskTree::default();
    for mask in masks {
        tree.insert(mask.split('.').filter(|part| !part.is_empty()));
    }
    tree.prune(object).unwrap_or(Value::Object(Map::new()))
}

/// Paths to keep, as a tree; a leaf keeps the whole value under it.
#[derive(Debug, Default)]
struct MaskTree {
    children: BTreeMap<String, MaskTree>,
    keep_all: bool,
}

impl MaskTree {
    fn insert<'a>(&mut self, mut parts: impl Iterator<Item = &'a str>) {
        match parts.next() {
            None => self.keep_all = true,
            Some(part) => self
                .children
                .entry(part.to_string())
                .or_default()
                .insert(parts),
        }
    }

    fn prune(&self, value: &Value) -> Option<Value> {
        if self.keep_all {
            return Some(value.clone());
        }
        match value {
            Value::Object(map) => {
                let kept: Map<String, Value> = self
                    .children
                    .iter()
                    .filter_map(|(key, subtree)| Some((key.clone(), subtree.prune(map.get(key)?)?)))
                    .collect();
                (!kept.is_empty()).then_some(Value::Object(kept))
            }
            Value::Array(items) => Some(Value::Array(
                items.iter().filter_map(|item| self.prune(item)).collect(),
            )),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(labels: Value) -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns", "labels": labels}, "spec": {"nodeName": "n1"}})
    }

    fn labels(value: Value) -> Option<BTreeMap<String, String>> {
        serde_json::from_value(value).ok()
    }

    #[test]
    fn label_selectors_follow_kubernetes_syntax() {
        let selector = parse_label_selector("app=web,tier in (front, back),!legacy,env,owner!=bob")
            .expect("parses");
        assert!(labels_match(
            &selector,
            labels(json!({"app": "web", "tier": "front", "env": "x"})).as_ref()
        ));
        assert!(!labels_match(
            &selector,
            labels(json!({"app": "web", "tier": "db", "env": "x"})).as_ref()
        ));
        assert!(!labels_match(
            &selector,
            labels(json!({"app": "web", "tier": "front", "env": "x", "legacy": "1"})).as_ref()
        ));
        assert!(!labels_match(
            &selector,
            labels(json!({"app": "web", "tier": "front", "env": "x", "owner": "bob"})).as_ref()
        ));
        assert!(labels_match(
            &parse_label_selector("").expect("empty"),
            labels(json!({})).as_ref()
        ));
        assert!(parse_label_selector("tier in front").is_err());
        assert!(parse_label_selector("a b").is_err());
        let notin = parse_label_selector("tier notin (db)").expect("parses");
        assert!(labels_match(
            &notin,
            labels(json!({"tier": "web"})).as_ref()
        ));
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let selector = FieldSelector::parse("metadata.name=a,spec.nodeName!=n2").expect("parses");
        assert!(selector.matches(&object(json!({}))));
        let other = FieldSelector::parse("metadata.namespace==other").expect("parses");
        assert!(!other.matches(&object(json!({}))));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }

    #[test]
    fn field_masks_prune_objects_and_arrays() {
        let pod = json!({
            "metadata": {"name": "p", "labels": {"a": "1"}, "annotations": {"x": "y"}},
            "spec": {"containers": [{"name": "c", "image": "i", "env": []}, {"name": "d", "image": "j"}]}
        });
        let masked = apply_field_masks(
            &pod,
            &[
                "metadata.name".into(),
                "metadata.labels".into(),
                "spec.containers.image".into(),
            ],
        );
        assert_eq!(
            masked,
            json!({"metadata": {"name": "p", "labels": {"a": "1"}}, "spec": {"containers": [{"image": "i"}, {"image": "j"}]}})
        );
        assert_eq!(apply_field_masks(&pod, &[]), pod);
    }
}
