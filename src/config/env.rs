//! Environment overlays: `P2P_<SECTION>__<KEY>` variables written into the YAML tree before it is typed.

use serde_yaml_ng::Value;

use super::ConfigError;

/// Prefix of environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "P2P_";

/// Writes every `P2P_*` variable of `env` into `tree`. Returns each override as (dotted key,
/// variable name), so that a value the typed tree rejects can be blamed on its variable.
pub(super) fn apply(
    tree: &mut Value,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut overridden = Vec::new();
    for (name, value) in env {
        if let Some(key) = env_key(&name) {
            apply_override(tree, &key, &value).map_err(|message| ConfigError::Invalid {
                file: format!("environment variable {name}"),
                key: key.join("."),
                message,
            })?;
            overridden.push((key.join("."), name));
        }
    }
    Ok(overridden)
}

/// `P2P_NODE__LISTEN_PORT` -> `["node", "listen_port"]`; other variables -> `None`.
fn env_key(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let parts: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
    (parts.len() >= 2 && parts.iter().all(|p| !p.is_empty())).then_some(parts)
}

fn apply_override(tree: &mut Value, key: &[String], raw: &str) -> Result<(), String> {
    let mut node = tree;
    for (i, part) in key.iter().enumerate() {
        let map =
            node.as_mapping_mut().ok_or_else(|| format!("cannot set {}: parent is not a section", key.join(".")))?;
        let k = Value::String(part.clone());
        if i + 1 == key.len() {
            let is_list =
                matches!(map.get(&k), Some(Value::Sequence(_))) || LIST_KEYS.contains(&key.join(".").as_str());
            map.insert(k, parse_env_value(raw, is_list)?);
            return Ok(());
        }
        node = map.entry(k).or_insert_with(|| Value::Mapping(Default::default()));
    }
    Ok(())
}

/// Keys whose values are lists, so `a,b` in the environment means two entries.
const LIST_KEYS: &[&str] = &[
    "node.capabilities",
    "node.external_addresses",
    "network.bootstrap_peers",
    "security.allowed_submitters",
    "security.allowed_workers",
    "security.gossip_shared_ips",
];

fn parse_env_value(raw: &str, is_list: bool) -> Result<Value, String> {
    let trimmed = raw.trim();
    if is_list && !trimmed.starts_with('[') {
        let items =
            trimmed.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| Value::String(s.to_string())).collect();
        return Ok(Value::Sequence(items));
    }
    serde_yaml_ng::from_str(trimmed).map_err(|e| format!("value {raw:?} is not valid YAML: {e}"))
}
