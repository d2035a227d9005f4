//! What `ferry doctor` reads to dry-run the drain's permissions (feature `stack`; the Lambda
//! bootstraps build without it): who the caller is (STS `GetCallerIdentity`), and a role's
//! identity policies and permissions boundary (`GetRole`, `ListRolePolicies`/`GetRolePolicy`,
//! `ListAttachedRolePolicies`/`GetPolicy`/`GetPolicyVersion` — reads moto implements, unlike
//! `SimulatePrincipalPolicy`). Reading them decides nothing; the CLI judges.

use crate::error::{classify_sdk_error, AwsError};

/// The caller's account and ARN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub account: String,
    pub arn: String,
}

/// A role's policy documents (JSON text, decoded) by name: inline policies by their name,
/// managed ones (and the boundary) by ARN.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RolePolicies {
    pub arn: String,
    pub policies: Vec<(String, String)>,
    pub boundary: Option<(String, String)>,
}

/// IAM and STS clients of one region's credentials ([`crate::ClientSettings::iam`]).
#[derive(Clone, Debug)]
pub struct Iam {
    pub iam: aws_sdk_iam::Client,
    pub sts: aws_sdk_sts::Client,
}

impl Iam {
    /// Who these credentials are (`GetCallerIdentity`).
    pub async fn caller(&self) -> Result<Identity, AwsError> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetCallerIdentity", &e))?;
        Ok(Identity {
            account: out.account.unwrap_or_default(),
            arn: out.arn.unwrap_or_default(),
        })
    }

    /// The identity policies and permissions boundary of role `name`.
    pub async fn role_policies(&self, name: &str) -> Result<RolePolicies, AwsError> {
        let place = format!("role {name}");
        let role = self
            .iam
            .get_role()
            .role_name(name)
            .send()
            .await
            .map_err(|e| classify_sdk_error("GetRole", &e).context(&place))?
            .role;
        let mut out = RolePolicies {
            arn: role.as_ref().map(|r| r.arn.clone()).unwrap_or_default(),
            ..RolePolicies::default()
        };
        for policy in self.inline_names(name).await? {
            let doc = self
                .iam
                .get_role_policy()
                .role_name(name)
                .policy_name(&policy)
                .send()
                .await
                .map_err(|e| classify_sdk_error("GetRolePolicy", &e).context(&place))?;
            out.policies
                .push((policy, decode_document(&doc.policy_document)));
        }
        for arn in self.attached_arns(name).await? {
            let doc = self.managed_document(&arn).await?;
            out.policies.push((arn, doc));
        }
        let boundary = role.and_then(|r| r.permissions_boundary);
        if let Some(arn) = boundary.and_then(|b| b.permissions_boundary_arn) {
            let doc = self.managed_document(&arn).await?;
            out.boundary = Some((arn, doc));
        }
        Ok(out)
    }

    async fn inline_names(&self, role: &str) -> Result<Vec<String>, AwsError> {
        let mut names = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .list_role_policies()
                .role_name(role)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| {
                    classify_sdk_error("ListRolePolicies", &e).context(format_args!("role {role}"))
                })?;
            names.extend(page.policy_names);
            marker = page.marker.filter(|_| page.is_truncated);
            if marker.is_none() {
                return Ok(names);
            }
        }
    }

    async fn attached_arns(&self, role: &str) -> Result<Vec<String>, AwsError> {
        let mut arns = Vec::new();
        let mut marker = None;
        loop {
            let page = self
                .iam
                .list_attached_role_policies()
                .role_name(role)
                .set_marker(marker)
                .send()
                .await
                .map_err(|e| {
                    classify_sdk_error("ListAttachedRolePolicies", &e)
                        .context(format_args!("role {role}"))
                })?;
            let attached = page.attached_policies.unwrap_or_default();
            arns.extend(attached.into_iter().filter_map(|p| p.policy_arn));
            marker = page.marker.filter(|_| page.is_truncated);
            if marker.is_none() {
                return Ok(arns);
            }
        }
    }

    /// The default version's document of the managed policy `arn`.
    async fn managed_document(&self, arn: &str) -> Result<String, AwsError> {
        let policy = self
            .iam
            .get_policy()
            .policy_arn(arn)
            .send()
            .await
            .map_err(|e| {
                classify_sdk_error("GetPolicy", &e).context(format_args!("policy {arn}"))
            })?;
        let version = policy
            .policy
            .and_then(|p| p.default_version_id)
            .unwrap_or_else(|| "v1".into());
        let out = self
            .iam
            .get_policy_version()
            .policy_arn(arn)
            .version_id(&version)
            .send()
            .await
            .map_err(|e| {
                classify_sdk_error("GetPolicyVersion", &e).context(format_args!("policy {arn}"))
            })?;
        let text = out
            .policy_version
            .and_then(|v| v.document)
            .unwrap_or_default();
        Ok(decode_document(&text))
    }
}

/// IAM returns policy documents URL-encoded (RFC 3986); one already JSON is kept as it is.
pub fn decode_document(text: &str) -> String {
    if text.trim_start().starts_with('{') {
        return text.to_string();
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_decoded_once() {
        let json = r#"{"Statement": [{"Effect": "Allow", "Action": "sqs:*", "Resource": "*"}]}"#;
        assert_eq!(decode_document(json), json);
        let encoded = "%7B%22Statement%22%3A%20%5B%5D%2C%20%22Sid%22%3A%20%22a%2Bb%25%22%7D";
        assert_eq!(
            decode_document(encoded),
            r#"{"Statement": [], "Sid": "a+b%"}"#
        );
        assert_eq!(decode_document("%7B%zz%"), "{%zz%");
        assert_eq!(decode_document("%E2%9C%93"), "✓");
    }
}
