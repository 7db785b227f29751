//! The blast radius: what the chain's calls changed or tried to change, grouped as AWS's
//! compromised-key checklist groups it. The grouping is a table (event source, event names,
//! group), not code: a call not in the table that changed something lands in `other-changes`.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::{MADE_WITH, TimelineRow};

/// One thing done (or tried) with a key of the chain.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct BlastItem {
    /// `iam`, `credentials`, `ec2`, `s3`, `security-groups`, `logging-detection`, `quarantine`, `account`,
    /// `reconnaissance`, `denied`, `other-changes`.
    pub group: &'static str,
    pub action: String,
    /// The resource names or IDs (user names, policy ARNs, group IDs, buckets, accounts).
    pub resource: String,
    pub succeeded: bool,
    pub time: String,
    pub key: Option<String>,
    pub event_id: Option<String>,
    /// For reconnaissance and denied calls, grouped: how many calls this row stands for.
    pub count: u64,
}

/// `(group, event source, event names)`.
const GROUPS: &[(&str, &str, &[&str])] = &[
    (
        "iam",
        "iam.amazonaws.com",
        &[
            "CreateUser",
            "DeleteUser",
            "UpdateUser",
            "CreateAccessKey",
            "UpdateAccessKey",
            "DeleteAccessKey",
            "CreateLoginProfile",
            "UpdateLoginProfile",
            "DeleteLoginProfile",
            "CreateRole",
            "DeleteRole",
            "UpdateAssumeRolePolicy",
            "AttachUserPolicy",
            "AttachRolePolicy",
            "AttachGroupPolicy",
            "PutUserPolicy",
            "PutRolePolicy",
            "PutGroupPolicy",
            "CreatePolicy",
            "CreatePolicyVersion",
            "SetDefaultPolicyVersion",
            "AddUserToGroup",
            "CreateGroup",
            "DeactivateMFADevice",
            "DeleteVirtualMFADevice",
            "CreateVirtualMFADevice",
            "EnableMFADevice",
            "CreateServiceSpecificCredential",
            "UploadSSHPublicKey",
            "CreateSAMLProvider",
            "CreateOpenIDConnectProvider",
            "UpdateSAMLProvider",
            "CreateInstanceProfile",
            "AddRoleToInstanceProfile",
            "PassRole",
        ],
    ),
    (
        "credentials",
        "sts.amazonaws.com",
        &[
            "AssumeRole",
            "GetSessionToken",
            "GetFederationToken",
            "AssumeRoot",
            "AssumeRoleWithSAML",
            "AssumeRoleWithWebIdentity",
        ],
    ),
    (
        "credentials",
        "signin.amazonaws.com",
        &["GetSigninToken", "ConsoleLogin"],
    ),
    (
        "ec2",
        "ec2.amazonaws.com",
        &[
            "RunInstances",
            "StartInstances",
            "CreateKeyPair",
            "ImportKeyPair",
            "ModifyInstanceAttribute",
            "GetPasswordData",
            "ModifySnapshotAttribute",
            "ModifyImageAttribute",
            "CreateImage",
            "CopySnapshot",
            "CopyImage",
            "CreateSnapshot",
            "SharedSnapshotCopyInitiated",
            "RequestSpotInstances",
            "RequestSpotFleet",
            "CreateFleet",
            "CreateLaunchTemplate",
            "ModifyLaunchTemplate",
        ],
    ),
    (
        "s3",
        "s3.amazonaws.com",
        &[
            "PutBucketPolicy",
            "DeleteBucketPolicy",
            "PutBucketAcl",
            "PutObjectAcl",
            "DeletePublicAccessBlock",
            "PutPublicAccessBlock",
            "DeleteBucketPublicAccessBlock",
            "PutBucketPublicAccessBlock",
            "PutBucketReplication",
            "PutBucketWebsite",
            "PutBucketOwnershipControls",
            "DeleteBucket",
            "PutBucketLifecycle",
            "PutBucketEncryption",
            "DeleteBucketEncryption",
            "PutBucketVersioning",
        ],
    ),
    (
        "s3",
        "s3-control.amazonaws.com",
        &["DeletePublicAccessBlock", "PutPublicAccessBlock"],
    ),
    (
        "security-groups",
        "ec2.amazonaws.com",
        &[
            "AuthorizeSecurityGroupIngress",
            "AuthorizeSecurityGroupEgress",
            "CreateSecurityGroup",
            "ModifySecurityGroupRules",
            "RevokeSecurityGroupIngress",
            "RevokeSecurityGroupEgress",
            "DeleteSecurityGroup",
            "CreateNetworkAclEntry",
            "ReplaceNetworkAclEntry",
        ],
    ),
    (
        "logging-detection",
        "cloudtrail.amazonaws.com",
        &[
            "StopLogging",
            "DeleteTrail",
            "UpdateTrail",
            "PutEventSelectors",
            "PutInsightSelectors",
            "DeleteEventDataStore",
            "StopEventDataStoreIngestion",
        ],
    ),
    (
        "logging-detection",
        "guardduty.amazonaws.com",
        &[
            "DeleteDetector",
            "UpdateDetector",
            "DisassociateFromMasterAccount",
            "DisassociateFromAdministratorAccount",
            "DeleteMembers",
            "DisassociateMembers",
            "StopMonitoringMembers",
            "CreateIPSet",
            "UpdateIPSet",
            "DeletePublishingDestination",
            "CreateFilter",
            "UpdateFilter",
            "ArchiveFindings",
        ],
    ),
    (
        "logging-detection",
        "config.amazonaws.com",
        &[
            "StopConfigurationRecorder",
            "DeleteConfigurationRecorder",
            "DeleteDeliveryChannel",
            "DeleteConfigRule",
            "PutConfigurationRecorder",
        ],
    ),
    (
        "logging-detection",
        "ec2.amazonaws.com",
        &["DeleteFlowLogs"],
    ),
    (
        "logging-detection",
        "securityhub.amazonaws.com",
        &[
            "DisableSecurityHub",
            "BatchDisableStandards",
            "DeleteMembers",
        ],
    ),
    (
        "logging-detection",
        "logs.amazonaws.com",
        &["DeleteLogGroup", "DeleteLogStream", "PutRetentionPolicy"],
    ),
    (
        "account",
        "account.amazonaws.com",
        &[
            "PutAlternateContact",
            "DeleteAlternateContact",
            "PutContactInformation",
            "EnableRegion",
            "DisableRegion",
            "PutChallengeQuestions",
        ],
    ),
    (
        "account",
        "organizations.amazonaws.com",
        &[
            "LeaveOrganization",
            "CreateAccount",
            "InviteAccountToOrganization",
            "DeleteOrganization",
            "RemoveAccountFromOrganization",
        ],
    ),
    (
        "account",
        "billingconsole.amazonaws.com",
        &["UpdateBillingPreferences", "SetContactAddress"],
    ),
];

/// Codes that mean "not allowed".
fn denied(code: &str) -> bool {
    code.contains("AccessDenied") || code.contains("Unauthorized") || code == "Forbidden"
}

fn group_of(source: &str, name: &str) -> Option<&'static str> {
    GROUPS
        .iter()
        .find(|(_, s, names)| *s == source && names.contains(&name))
        .map(|(g, _, _)| *g)
}

fn is_recon(name: &str) -> bool {
    name == "GetCallerIdentity"
        || [
            "List", "Describe", "Get", "Search", "Lookup", "BatchGet", "Head",
        ]
        .iter()
        .any(|p| {
            name.starts_with(p) && name[p.len()..].starts_with(|c: char| c.is_ascii_uppercase())
        })
}

/// The resources a call names (its request summary without settings).
fn resource(t: &TimelineRow) -> String {
    t.summary.clone()
}

pub fn classify(timeline: &[TimelineRow]) -> Vec<BlastItem> {
    let mut items = Vec::new();
    // (group, action, key) → grouped row for reconnaissance and denied calls.
    let mut grouped: BTreeMap<(&'static str, String, Option<String>), BlastItem> = BTreeMap::new();
    for t in timeline.iter().filter(|t| t.relation == MADE_WITH) {
        let name = t.event_name.clone().unwrap_or_default();
        let source = t.event_source.clone().unwrap_or_default();
        let ok = t.error_code.is_none();
        let req = t
            .event
            .get("requestparameters")
            .cloned()
            .unwrap_or(Value::Null);
        let quarantine = req.to_string().contains("AWSCompromisedKeyQuarantine");
        let group = if quarantine {
            Some("quarantine")
        } else {
            group_of(&source, &name)
        };
        let item = |group: &'static str| BlastItem {
            group,
            action: name.clone(),
            resource: resource(t),
            succeeded: ok,
            time: t.time.clone(),
            key: t.key.clone(),
            event_id: t.event_id.clone(),
            count: 1,
        };
        match group {
            Some(g) => items.push(item(g)),
            None => {
                let readonly = t
                    .event
                    .get("readonly")
                    .and_then(Value::as_bool)
                    .unwrap_or_else(|| is_recon(&name));
                let g = if !ok && t.error_code.as_deref().is_some_and(denied) {
                    "denied"
                } else if readonly || is_recon(&name) {
                    "reconnaissance"
                } else if ok {
                    items.push(item("other-changes"));
                    continue;
                } else {
                    "denied" // failed for another reason; listed with the denied calls
                };
                let e = grouped
                    .entry((g, format!("{source} {name}"), t.key.clone()))
                    .or_insert_with(|| BlastItem {
                        resource: String::new(),
                        count: 0,
                        ..item(g)
                    });
                e.count += 1;
                e.succeeded &= ok;
                if !ok
                    && let Some(c) = &t.error_code
                    && !e.resource.contains(c.as_str())
                {
                    if !e.resource.is_empty() {
                        e.resource.push_str(", ");
                    }
                    e.resource.push_str(c);
                }
            }
        }
    }
    items.extend(grouped.into_values());
    let order = |g: &str| {
        [
            "iam",
            "credentials",
            "ec2",
            "s3",
            "security-groups",
            "logging-detection",
            "quarantine",
            "account",
            "reconnaissance",
            "denied",
            "other-changes",
        ]
        .iter()
        .position(|x| *x == g)
        .unwrap_or(99)
    };
    items.sort_by(|a, b| {
        (order(a.group), &a.time, &a.action).cmp(&(order(b.group), &b.time, &b.action))
    });
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recon_names() {
        assert!(is_recon("ListUsers"));
        assert!(is_recon("DescribeInstances"));
        assert!(is_recon("GetCallerIdentity"));
        assert!(!is_recon("Getaway"));
        assert!(!is_recon("CreateUser"));
    }

    #[test]
    fn checklist_groups() {
        assert_eq!(group_of("iam.amazonaws.com", "CreateUser"), Some("iam"));
        assert_eq!(
            group_of("ec2.amazonaws.com", "AuthorizeSecurityGroupIngress"),
            Some("security-groups")
        );
        assert_eq!(
            group_of("cloudtrail.amazonaws.com", "StopLogging"),
            Some("logging-detection")
        );
        assert_eq!(group_of("ec2.amazonaws.com", "DescribeInstances"), None);
    }
}
