//! The blast radius: what the chain's calls changed or tried to change, grouped as AWS's
//! compromised-key checklist groups it. The grouping is a table (event source, event names,
//! group), not code: a call not in the table that changed something lands in `other-changes`.

use std::collections::HashMap;

use keytrail_model::time::format_millis;
use serde::Serialize;

use crate::summary;

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

/// One call of the chain, as the blast radius needs it.
#[derive(Clone, Debug)]
pub struct Call<'a> {
    pub source: &'a str,
    pub name: &'a str,
    pub key: Option<&'a str>,
    pub time: i64,
    pub event_id: Option<&'a str>,
    pub error_code: Option<&'a str>,
    /// The `denied` fact.
    pub denied: bool,
    pub readonly: Option<bool>,
    /// `requestParameters` as stored (JSON text).
    pub request: Option<&'a str>,
    /// The `mintedkeyid` and `mintedprincipal` facts.
    pub minted_key: Option<&'a str>,
    pub minted_principal: Option<&'a str>,
}

/// The blast radius, built one call at a time (in any order).
#[derive(Debug, Default)]
pub struct Blast {
    items: Vec<BlastItem>,
    /// (group, action, key) → grouped row for reconnaissance and denied calls.
    grouped: HashMap<(&'static str, String, Option<String>), (BlastItem, i64)>,
}

impl Blast {
    /// Add a call made with a key of the chain.
    pub fn add(&mut self, c: &Call<'_>) {
        let ok = c.error_code.is_none();
        let quarantine = c
            .request
            .is_some_and(|r| r.contains("AWSCompromisedKeyQuarantine"));
        let group = if quarantine {
            Some("quarantine")
        } else {
            group_of(c.source, c.name)
        };
        // What was asked is summed up only for the calls listed one by one (a grouped row
        // names error codes instead): most of a busy chain's calls are grouped.
        let item = |group: &'static str, resource: String| BlastItem {
            group,
            action: c.name.to_owned(),
            resource,
            succeeded: ok,
            time: format_millis(c.time),
            key: c.key.map(str::to_owned),
            event_id: c.event_id.map(str::to_owned),
            count: 1,
        };
        let summary = || summary::summarize(c.name, c.request, c.minted_key, c.minted_principal);
        if let Some(g) = group {
            self.items.push(item(g, summary()));
            return;
        }
        let readonly = c.readonly.unwrap_or_else(|| is_recon(c.name));
        let g = if c.denied {
            "denied"
        } else if readonly || is_recon(c.name) {
            "reconnaissance"
        } else if ok {
            self.items.push(item("other-changes", summary()));
            return;
        } else {
            "denied" // failed for another reason; listed with the denied calls
        };
        let (e, first) = self
            .grouped
            .entry((
                g,
                format!("{} {}", c.source, c.name),
                c.key.map(str::to_owned),
            ))
            .or_insert_with(|| {
                (
                    BlastItem {
                        count: 0,
                        ..item(g, String::new())
                    },
                    c.time,
                )
            });
        e.count += 1;
        e.succeeded &= ok;
        // The group is dated by its first call.
        if c.time < *first {
            *first = c.time;
            e.time = format_millis(c.time);
            e.event_id = c.event_id.map(str::to_owned);
        }
        if !ok
            && let Some(code) = c.error_code
            && !e.resource.split(", ").any(|x| x == code)
        {
            if !e.resource.is_empty() {
                e.resource.push_str(", ");
            }
            e.resource.push_str(code);
        }
    }

    /// The items, grouped as the checklist groups them, in time order within a group.
    pub fn finish(self) -> Vec<BlastItem> {
        // Sized exactly: the items are held until the investigation is written, and a busy
        // chain has hundreds of thousands (a vector grown by doubling is up to half empty).
        let mut items = Vec::with_capacity(self.items.len() + self.grouped.len());
        items.extend(self.items);
        items.extend(self.grouped.into_values().map(|(i, _)| i));
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
            (order(a.group), &a.time, &a.action, &a.event_id, &a.key).cmp(&(
                order(b.group),
                &b.time,
                &b.action,
                &b.event_id,
                &b.key,
            ))
        });
        items
    }
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
