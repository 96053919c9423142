//! The identity STS confirms for a token: a plain domain type, shared by the STS client that
//! reads it and the mapping that turns it into a Kubernetes user (neither depends on the
//! other).

use serde::{Deserialize, Serialize};

/// The identity STS returns for `GetCallerIdentity`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CallerIdentity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub account_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_id: Option<String>,
    pub arn: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sts_shapes() {
        let id: CallerIdentity = serde_json::from_str(
            r#"{"RequestId":"r","AccountId":"123","RoleId":"3","Arn":"acs:ram::123:assumed-role/a/s","IdentityType":"AssumedRoleUser","PrincipalId":"3:s"}"#,
        )
        .expect("identity");
        assert_eq!(id.principal_id.as_deref(), Some("3:s"));
        assert_eq!(id.user_id, None);
    }
}
