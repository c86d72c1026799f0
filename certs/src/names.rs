//! How fedgate names live inside certificates: URI SANs with a fixed prefix.

use fedgate_catalog::{NodeId, Region};

/// URI SAN prefix of a node certificate's identity.
pub const NODE_URI_PREFIX: &str = "urn:fedgate:node:";
/// URI SAN prefix of a CA certificate's region binding.
pub const REGION_URI_PREFIX: &str = "urn:fedgate:region:";

/// The URI SAN that carries `node`.
pub fn node_uri(node: &NodeId) -> String {
    format!("{NODE_URI_PREFIX}{node}")
}

/// The URI SAN that binds a CA to `region`.
pub fn region_uri(region: &Region) -> String {
    format!("{REGION_URI_PREFIX}{region}")
}

/// What a certificate's URI SANs say about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// Exactly one node identity.
    Node(NodeId),
    /// Exactly one region binding (a CA).
    Region(Region),
    /// No fedgate name at all.
    Nothing,
    /// Several fedgate names, or one that does not parse: refused.
    Ambiguous(String),
}

/// Reads the fedgate names among `uris`; anything other than exactly one is not an identity.
pub fn classify<'a>(uris: impl IntoIterator<Item = &'a str>) -> Named {
    let mut found = Vec::new();
    for uri in uris {
        if let Some(rest) = uri.strip_prefix(NODE_URI_PREFIX) {
            found.push(rest.parse::<NodeId>().map(Named::Node).map_err(|e| e.to_string()));
        } else if let Some(rest) = uri.strip_prefix(REGION_URI_PREFIX) {
            found.push(rest.parse::<Region>().map(Named::Region).map_err(|e| e.to_string()));
        }
    }
    match found.len() {
        0 => Named::Nothing,
        1 => found.pop().map_or(Named::Nothing, |r| r.unwrap_or_else(Named::Ambiguous)),
        n => Named::Ambiguous(format!("{n} fedgate names in one certificate")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_name_each() {
        let n: NodeId = "police@wuxi.liangxi".parse().unwrap();
        assert_eq!(classify([node_uri(&n).as_str()]), Named::Node(n.clone()));
        assert_eq!(classify(["https://example.org"]), Named::Nothing);
        let two = [node_uri(&n), region_uri(n.region())];
        assert!(matches!(classify(two.iter().map(String::as_str)), Named::Ambiguous(_)));
        assert!(matches!(classify(["urn:fedgate:node:Bad"]), Named::Ambiguous(_)));
    }
}
