//! Fixtures written from the reference implementation's documented formats (isol8 v0.20,
//! Illusion47586/isol8): what a user of it already has on disk.

/// A configuration file in the reference's format using every key of its schema
/// (`packages/core/schema/isol8.config.schema.json`), with whole numbers spelled as
/// floats in places (`10.0`), as JavaScript tools may write them.
pub const REFERENCE_CONFIG: &str = r#"{
  "$schema": "./node_modules/@isol8/core/schema/isol8.config.schema.json",
  "debug": true,
  "maxConcurrent": 4.0,
  "defaults": {
    "timeoutMs": 15000.0,
    "memoryLimit": "256m",
    "cpuLimit": 0.5,
    "network": "filtered",
    "sandboxSize": "128m",
    "tmpSize": "64m",
    "readonlyRootFs": true
  },
  "network": {
    "whitelist": ["^pypi\\.org$", "^files\\.pythonhosted\\.org$"],
    "blacklist": ["^evil\\.example$"]
  },
  "cleanup": {
    "autoPrune": false,
    "maxContainerAgeMs": 600000.0
  },
  "poolStrategy": "secure",
  "poolSize": {"clean": 2.0, "dirty": 1},
  "security": {
    "seccomp": "custom",
    "customProfilePath": "/etc/isol8/seccomp.json"
  },
  "remoteCode": {
    "enabled": true,
    "allowedSchemes": ["https"],
    "allowedHosts": ["^raw\\.githubusercontent\\.com$"],
    "blockedHosts": ["^internal\\.example$"],
    "maxCodeSize": 524288,
    "fetchTimeoutMs": 5000.0,
    "requireHash": true,
    "enableCache": true,
    "cacheTtl": 120.0
  },
  "audit": {
    "enabled": true,
    "destination": "filesystem",
    "logDir": "/var/log/isol8",
    "postLogScript": "/usr/local/bin/ship-audit.sh",
    "trackResources": false,
    "retentionDays": 30.0,
    "includeCode": true,
    "includeOutput": true
  },
  "auth": {
    "enabled": true,
    "connectionString": "/var/lib/isol8/auth.db",
    "defaultTtlMs": 3600000,
    "cleanupIntervalMs": 600000.0
  },
  "prebuiltImages": [
    {
      "tag": "my-python:data",
      "runtime": "python",
      "installPackages": ["six"],
      "setupScript": "echo ready > /sandbox/ready.txt"
    }
  ]
}"#;

/// Every key of the reference's configuration schema, as a dotted path
/// (`prebuiltImages[].tag` for the keys of each entry, `poolSize.clean` for the object
/// form).
pub const REFERENCE_CONFIG_KEYS: &[&str] = &[
    "$schema",
    "debug",
    "maxConcurrent",
    "defaults.timeoutMs",
    "defaults.memoryLimit",
    "defaults.cpuLimit",
    "defaults.network",
    "defaults.sandboxSize",
    "defaults.tmpSize",
    "defaults.readonlyRootFs",
    "network.whitelist",
    "network.blacklist",
    "cleanup.autoPrune",
    "cleanup.maxContainerAgeMs",
    "poolStrategy",
    "poolSize.clean",
    "poolSize.dirty",
    "security.seccomp",
    "security.customProfilePath",
    "remoteCode.enabled",
    "remoteCode.allowedSchemes",
    "remoteCode.allowedHosts",
    "remoteCode.blockedHosts",
    "remoteCode.maxCodeSize",
    "remoteCode.fetchTimeoutMs",
    "remoteCode.requireHash",
    "remoteCode.enableCache",
    "remoteCode.cacheTtl",
    "audit.enabled",
    "audit.destination",
    "audit.logDir",
    "audit.postLogScript",
    "audit.trackResources",
    "audit.retentionDays",
    "audit.includeCode",
    "audit.includeOutput",
    "auth.enabled",
    "auth.connectionString",
    "auth.defaultTtlMs",
    "auth.cleanupIntervalMs",
    "prebuiltImages[].tag",
    "prebuiltImages[].runtime",
    "prebuiltImages[].installPackages",
    "prebuiltImages[].setupScript",
];

/// The dotted key paths of a JSON document, in the form of [`REFERENCE_CONFIG_KEYS`]:
/// objects are descended into, arrays of objects as `key[]`, other values are leaves.
pub fn key_paths(doc: &serde_json::Value) -> Vec<String> {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Array(a) if a.iter().any(|e| e.is_object()) => {
                for e in a {
                    walk(&format!("{prefix}[]"), e, out);
                }
            }
            _ => out.push(prefix.to_string()),
        }
    }
    let mut out = Vec::new();
    walk("", doc, &mut out);
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_config_uses_exactly_the_listed_keys() {
        let doc: serde_json::Value = serde_json::from_str(REFERENCE_CONFIG).expect("JSON");
        let mut want: Vec<String> = REFERENCE_CONFIG_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect();
        want.sort();
        assert_eq!(key_paths(&doc), want);
    }
}
