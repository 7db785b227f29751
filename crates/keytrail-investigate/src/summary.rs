//! "What was asked", in a few words: the resource names and the settings that matter, taken
//! from the request parameters (and, for calls that create something, the response).

use serde_json::Value;

/// Request members worth naming, in the order they are shown.
const FIELDS: &[&str] = &[
    "userName",
    "roleName",
    "groupName",
    "policyArn",
    "policyName",
    "roleArn",
    "roleSessionName",
    "name",
    "bucketName",
    "key",
    "trailName",
    "detectorId",
    "configurationRecorderName",
    "flowLogIds",
    "groupId",
    "instanceType",
    "maxCount",
    "instanceId",
    "keyName",
    "snapshotId",
    "imageId",
    "attribute",
    "accessKeyId",
    "status",
    "serialNumber",
    "durationSeconds",
    "alternateContactType",
    "regionName",
    "accountId",
];

/// Up to four `name=value` pairs of a call's `requestParameters` as the lake stores them (JSON
/// text; text that is not JSON names nothing), then the credential the call minted (the
/// `mintedkeyid` and `mintedprincipal` facts).
pub fn summarize(
    event_name: &str,
    request: Option<&str>,
    minted_key: Option<&str>,
    minted_principal: Option<&str>,
) -> String {
    let request: Option<Value> = request.and_then(|t| serde_json::from_str(t).ok());
    let mut parts: Vec<String> = Vec::new();
    if let Some(Value::Object(req)) = &request {
        for f in FIELDS {
            if parts.len() >= 4 {
                break;
            }
            if let Some(v) = req.get(*f) {
                parts.push(format!("{f}={}", short(v)));
            }
        }
        if event_name == "AuthorizeSecurityGroupIngress"
            || event_name == "AuthorizeSecurityGroupEgress"
        {
            let text = Value::Object(req.clone()).to_string();
            for cidr in ["0.0.0.0/0", "::/0"] {
                if text.contains(cidr) {
                    parts.push(format!("open to {cidr}"));
                }
            }
        }
        if event_name == "PutBucketPolicy" {
            let text = Value::Object(req.clone()).to_string();
            if text.contains(r#""Principal":"*""#) || text.contains(r#""AWS":"*""#) {
                parts.push("Principal \"*\"".to_owned());
            }
        }
    }
    if let Some(k) = minted_key {
        parts.push(format!("new key {k}"));
    }
    if let Some(p) = minted_principal.filter(|p| p.starts_with("arn:")) {
        parts.push(format!("as {p}"));
    }
    parts.join(", ")
}

fn short(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 80 {
        let mut t: String = text.chars().take(79).collect();
        t.push('…');
        t
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_resource_and_what_was_created() {
        let req: Value = serde_json::json!({"userName": "backup-admin", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"});
        assert_eq!(
            summarize("AttachUserPolicy", Some(&req.to_string()), None, None),
            "userName=backup-admin, policyArn=arn:aws:iam::aws:policy/AdministratorAccess"
        );
        assert_eq!(
            summarize(
                "GetFederationToken",
                Some(r#"{"name": "x"}"#),
                Some("ASIAEXAMPLE"),
                Some("arn:aws:sts::1:federated-user/x")
            ),
            "name=x, new key ASIAEXAMPLE, as arn:aws:sts::1:federated-user/x"
        );
        let sg: Value = serde_json::json!({"groupId": "sg-1", "ipPermissions": {"items": [{"ipRanges": {"items": [{"cidrIp": "0.0.0.0/0"}]}}]}});
        assert_eq!(
            summarize(
                "AuthorizeSecurityGroupIngress",
                Some(&sg.to_string()),
                None,
                None
            ),
            "groupId=sg-1, open to 0.0.0.0/0"
        );
    }
}
