//! Where the tools act: a running `ferry local up` (`--local`: its state file gives every
//! region's endpoints), or AWS (the default credential chain, `--profile`, `--region`, and
//! `--endpoint-url` per region for VPC endpoints or emulators). Table names may differ by region
//! (`--table REGION=NAME`), and a region may be reached through a role (`--role-arn REGION=ARN`,
//! assumed through STS). Queue names follow the template's `<stack>-buffer-<dst>` and
//! `<stack>-dlq-<dst>` with `--stack`, else `ferry-{src}-to-{dst}` and `…-dlq`, unless overridden.

use super::OpsError;
use crate::control::State;
use clap::Args;
use ferry_aws::{Buffer, ClientSettings, Table};
use ferry_core::Config;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Args, Clone, Debug, Default)]
pub struct TargetArgs {
    /// Act on the running `ferry local up` (endpoints, table and regions from its state file).
    #[arg(long)]
    pub local: bool,
    /// Region for the credential look-up (each region's clients use their own region).
    #[arg(long)]
    pub region: Option<String>,
    /// Named profile of the default credential chain.
    #[arg(long)]
    pub profile: Option<String>,
    /// `REGION=URL` for both DynamoDB and SQS of a region, or `dynamodb:REGION=URL` /
    /// `sqs:REGION=URL` / `sts:REGION=URL`; repeatable.
    #[arg(long = "endpoint-url", value_name = "[SERVICE:]REGION=URL")]
    pub endpoint_urls: Vec<String>,
    /// The replicated table's name: `NAME` for every region, `REGION=NAME` for one (repeatable,
    /// e.g. `--table orders --table eu-west-1=orders-eu`).
    #[arg(long = "table", value_name = "[REGION=]NAME")]
    pub tables: Vec<String>,
    /// A role to assume (through STS) for one region's calls, e.g. a destination in another
    /// account: `--role-arn eu-west-1=arn:aws:iam::111122223333:role/ferry-ops`; repeatable.
    #[arg(long = "role-arn", value_name = "REGION=ARN")]
    pub role_arns: Vec<String>,
    /// The stack deployed from `template.yaml` (the same name in every region): its queues
    /// are `<stack>-buffer-<dst>` and `<stack>-dlq-<dst>`.
    #[arg(long)]
    pub stack: Option<String>,
    /// Buffer queue name; `{src}` and `{dst}` are replaced by the regions
    /// (default `<stack>-buffer-{dst}` with --stack, else `ferry-{src}-to-{dst}`).
    #[arg(long)]
    pub buffer_name: Option<String>,
    /// Dead-letter queue name (default `<stack>-dlq-{dst}` with --stack, else
    /// `ferry-{src}-to-{dst}-dlq`).
    #[arg(long)]
    pub dlq_name: Option<String>,
}

impl TargetArgs {
    /// The buffer and DLQ name templates: given, else the stack's scheme, else the sandbox's.
    pub fn queue_templates(&self) -> (String, String) {
        let (buffer, dlq) = match &self.stack {
            Some(stack) => (
                format!("{stack}-buffer-{{dst}}"),
                format!("{stack}-dlq-{{dst}}"),
            ),
            None => (
                "ferry-{src}-to-{dst}".to_string(),
                "ferry-{src}-to-{dst}-dlq".to_string(),
            ),
        };
        (
            self.buffer_name.clone().unwrap_or(buffer),
            self.dlq_name.clone().unwrap_or(dlq),
        )
    }
}

/// Per-region values of a repeatable `[REGION=]VALUE` flag: the default (no region) and the
/// regions' own. `flag` names the flag in errors; `need_region` refuses a bare value.
pub fn parse_per_region(
    flag: &str,
    values: &[String],
    need_region: bool,
) -> Result<(Option<String>, BTreeMap<String, String>), String> {
    let mut default = None;
    let mut by_region = BTreeMap::new();
    for text in values {
        // An ARN holds `:` but never `=`; a region never holds `:`.
        let split = text
            .split_once('=')
            .filter(|(r, _)| !r.is_empty() && !r.contains(':'));
        match split {
            Some((region, value)) if !value.trim().is_empty() => {
                if by_region
                    .insert(region.trim().to_string(), value.trim().to_string())
                    .is_some()
                {
                    return Err(format!("{flag}: region `{region}` given twice"));
                }
            }
            None if !need_region && !text.trim().is_empty() && default.is_none() => {
                default = Some(text.trim().to_string());
            }
            _ if need_region => return Err(format!("{flag} `{text}`: expected REGION=VALUE")),
            _ => {
                return Err(format!(
                    "{flag} `{text}`: expected [REGION=]VALUE, one default"
                ))
            }
        }
    }
    Ok((default, by_region))
}

/// One `--endpoint-url` value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointOverride {
    /// `None`: both services.
    pub service: Option<Service>,
    pub region: String,
    pub url: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    Sqs,
    Sts,
}

/// Parses `[dynamodb:|sqs:]REGION=URL`.
pub fn parse_endpoint(text: &str) -> Result<EndpointOverride, String> {
    let (left, url) = text
        .split_once('=')
        .ok_or_else(|| format!("--endpoint-url `{text}`: expected [SERVICE:]REGION=URL"))?;
    let (service, region) = match left.split_once(':') {
        Some(("dynamodb", r)) => (Some(Service::DynamoDb), r),
        Some(("sqs", r)) => (Some(Service::Sqs), r),
        Some(("sts", r)) => (Some(Service::Sts), r),
        Some((s, _)) => {
            return Err(format!(
                "--endpoint-url `{text}`: unknown service `{s}` (dynamodb, sqs or sts)"
            ))
        }
        None => (None, left),
    };
    let url = url.trim();
    if region.trim().is_empty() || !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(format!(
            "--endpoint-url `{text}`: expected [SERVICE:]REGION=http(s)://…"
        ));
    }
    Ok(EndpointOverride {
        service,
        region: region.trim().to_string(),
        url: url.to_string(),
    })
}

/// The queue name for a pair from a `{src}`/`{dst}` template.
pub fn queue_name(template: &str, source: &str, destination: &str) -> String {
    template
        .replace("{src}", source)
        .replace("{dst}", destination)
}

/// Resolved endpoints of one region.
#[derive(Clone, Debug, Default)]
struct RegionEndpoints {
    dynamodb: Option<String>,
    sqs: Option<String>,
    sts: Option<String>,
}

/// What the tools act on.
pub struct Target {
    /// The table's name where no region has its own (what reports show).
    pub table_name: String,
    /// Regions whose table has another name (`--table REGION=NAME`).
    table_names: BTreeMap<String, String>,
    /// Roles assumed for a region's calls (`--role-arn REGION=ARN`).
    roles: BTreeMap<String, String>,
    /// The regions the sandbox runs (with `--local`); the user names them otherwise.
    pub known_regions: Vec<String>,
    base: aws_config::SdkConfig,
    endpoints: BTreeMap<String, RegionEndpoints>,
    buffer_name: String,
    dlq_name: String,
}

impl Target {
    /// Resolves the arguments: reads the sandbox's state with `--local`, else loads the
    /// default credential chain.
    pub async fn connect(args: &TargetArgs) -> Result<Target, OpsError> {
        if args.local {
            let state = crate::control::read_state().map_err(OpsError::Usage)?;
            return Target::local(&state, args);
        }
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(p) = &args.profile {
            loader = loader.profile_name(p);
        }
        if let Some(r) = &args.region {
            loader = loader.region(aws_config::Region::new(r.clone()));
        }
        let base = loader.load().await;
        let (table, table_names) =
            parse_per_region("--table", &args.tables, false).map_err(OpsError::Usage)?;
        let table_name = table
            .or_else(|| (!table_names.is_empty()).then(String::new))
            .ok_or_else(|| OpsError::Usage("--table is required (or --local)".into()))?;
        let (buffer_name, dlq_name) = args.queue_templates();
        let mut target = Target {
            table_name,
            table_names,
            roles: BTreeMap::new(),
            known_regions: Vec::new(),
            base,
            endpoints: BTreeMap::new(),
            buffer_name,
            dlq_name,
        };
        target.apply_overrides(args)?;
        Ok(target)
    }

    /// A target for a sandbox described by `state` (static test credentials).
    pub fn local(state: &State, args: &TargetArgs) -> Result<Target, OpsError> {
        // The sandbox takes any credentials; each region's clients set their own endpoint.
        let base = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                aws_sdk_dynamodb::config::Credentials::new("test", "test", None, None, "sandbox"),
            ))
            .build();
        let (table, table_names) =
            parse_per_region("--table", &args.tables, false).map_err(OpsError::Usage)?;
        let (buffer_name, dlq_name) = args.queue_templates();
        let mut target = Target {
            table_name: table
                .or_else(|| state.regions.first().map(|r| r.table.clone()))
                .ok_or_else(|| OpsError::Usage("the sandbox's state lists no region".into()))?,
            table_names,
            roles: BTreeMap::new(),
            known_regions: state.regions.iter().map(|r| r.region.clone()).collect(),
            base,
            endpoints: state
                .regions
                .iter()
                .map(|r| {
                    (
                        r.region.clone(),
                        RegionEndpoints {
                            dynamodb: Some(r.dynamodb.clone()),
                            sqs: Some(r.sqs.clone()),
                            sts: None,
                        },
                    )
                })
                .collect(),
            buffer_name,
            dlq_name,
        };
        target.apply_overrides(args)?;
        Ok(target)
    }

    /// `--endpoint-url` and `--role-arn`.
    fn apply_overrides(&mut self, args: &TargetArgs) -> Result<(), OpsError> {
        for text in &args.endpoint_urls {
            let o = parse_endpoint(text).map_err(OpsError::Usage)?;
            let e = self.endpoints.entry(o.region).or_default();
            match o.service {
                Some(Service::DynamoDb) => e.dynamodb = Some(o.url),
                Some(Service::Sqs) => e.sqs = Some(o.url),
                Some(Service::Sts) => e.sts = Some(o.url),
                None => {
                    e.dynamodb = Some(o.url.clone());
                    e.sqs = Some(o.url);
                }
            }
        }
        let (_, roles) =
            parse_per_region("--role-arn", &args.role_arns, true).map_err(OpsError::Usage)?;
        self.roles = roles;
        Ok(())
    }

    /// The table's name in `region`.
    pub fn table_name_in(&self, region: &str) -> &str {
        self.table_names
            .get(region)
            .map_or(self.table_name.as_str(), String::as_str)
    }

    /// The regions to act on: those given, else (with `--local`) every sandbox region.
    pub fn regions(&self, given: &[String]) -> Result<Vec<String>, OpsError> {
        let regions: Vec<String> = if given.is_empty() {
            self.known_regions.clone()
        } else {
            given.to_vec()
        };
        if regions.is_empty() {
            return Err(OpsError::Usage("name the regions (--regions a,b)".into()));
        }
        if !self.known_regions.is_empty() {
            if let Some(r) = regions.iter().find(|r| !self.known_regions.contains(r)) {
                return Err(OpsError::Usage(format!(
                    "region `{r}` is not one of the sandbox's: {}",
                    self.known_regions.join(", ")
                )));
            }
        }
        Ok(regions)
    }

    fn settings(&self, region: &str) -> ClientSettings {
        let e = self.endpoints.get(region).cloned().unwrap_or_default();
        let mut s = ClientSettings::new(region);
        s.dynamodb_endpoint = e.dynamodb;
        s.sqs_endpoint = e.sqs;
        s.sts_endpoint = e.sts;
        s.role_arn = self.roles.get(region).cloned();
        s.connect_timeout = Some(Duration::from_secs(2));
        s.attempt_timeout = Some(Duration::from_secs(20));
        s.operation_timeout = Some(Duration::from_secs(60));
        // One SDK retry for a transient failure; throttling beyond that is retried without end
        // by the tools' own back-off (`ferry_aws::retry`), so it slows them and never fails them.
        s.max_attempts = Some(2);
        s
    }

    /// The table in `region`.
    pub async fn table(&self, region: &str) -> Table {
        Table::new(
            self.settings(region).dynamodb(&self.base).await,
            self.table_name_in(region).to_string(),
        )
    }

    /// The buffer and DLQ from `source` to `destination` (both live in the source region).
    pub async fn queues(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<(Buffer, Buffer), OpsError> {
        let sqs = self.settings(source).sqs(&self.base);
        let find = |template: &str| {
            let name = queue_name(template, source, destination);
            let sqs = sqs.clone();
            async move {
                Buffer::by_name(sqs, &name)
                    .await
                    .map_err(|e| e.context(format_args!("{source} queue {name}")))
            }
        };
        let buffer = find(&self.buffer_name).await?;
        let dlq = find(&self.dlq_name).await?;
        Ok((buffer, dlq))
    }

    /// Ferry's config as seen from `region`: the key schema from `DescribeTable`, attribute
    /// names, tombstone lifetime and item filter from the same `FERRY_*` variables the
    /// functions read (defaults otherwise). The merge mode the table publishes
    /// (`ferry:merge-mode`, set by its region's enqueue) is used when `FERRY_MERGE_MODE` is not
    /// set, and must agree with it when it is: a tool must never write a table in the other mode.
    pub async fn config(&self, region: &str, table: &Table) -> Result<Config, OpsError> {
        // Throttling is not an answer: a tool run against a busy account waits it out.
        let d = ferry_aws::retry::while_throttled(|| table.describe(), || {}).await?;
        let pk = d.partition_key.ok_or_else(|| {
            OpsError::Data(format!(
                "{region}: table {} has no partition key",
                table.name
            ))
        })?;
        let published = match &d.arn {
            // Tags are advice here: a table without them (or without the right to read them)
            // is judged by the environment alone.
            Some(arn) => table.tags(arn).await.unwrap_or_default(),
            None => Vec::new(),
        };
        let env_mode = std::env::var("FERRY_MERGE_MODE")
            .ok()
            .filter(|m| !m.trim().is_empty());
        let mut config = config_for(region, &pk, d.sort_key.as_deref(), |k| {
            std::env::var(k).ok()
        })?;
        settle_merge_mode(&mut config, env_mode.is_some(), &published)
            .map_err(|e| OpsError::Usage(format!("{region}: table {}: {e}", table.name)))?;
        Ok(config)
    }
}

/// Refuses to work across regions whose tables publish other settings than `config`'s (the
/// check every drain makes before writing); an unpublished table is let through.
pub async fn check_peers(config: &Config, peers: &[(String, Table)]) -> Result<(), OpsError> {
    for (region, table) in peers {
        // Unreadable tags (no permission, an emulator without tagging): nothing to check.
        if let Ok(check) = ferry_aws::peer::check_destination(table, config).await {
            if check.is_mismatch() {
                return Err(OpsError::Usage(format!("{region}: {check}")));
            }
        }
    }
    Ok(())
}

/// Reconciles the config's merge mode with the one `published` on the table: adopted when the
/// environment said nothing (`explicit` false), an error when it said the other one.
pub fn settle_merge_mode(
    config: &mut Config,
    explicit: bool,
    published: &[(String, String)],
) -> Result<(), String> {
    let Some((_, mode)) = published
        .iter()
        .find(|(k, _)| k == ferry_core::peer::TAG_MERGE_MODE)
    else {
        return Ok(());
    };
    let mode = ferry_core::MergeMode::parse(mode)
        .map_err(|_| format!("the table publishes an unknown merge mode `{mode}`"))?;
    if mode == config.merge_mode {
        return Ok(());
    }
    if explicit {
        return Err(format!(
            "FERRY_MERGE_MODE={} but the table publishes `{mode}` (ferry:merge-mode, set by its region's enqueue); the tools must use the table's mode",
            config.merge_mode
        ));
    }
    config.merge_mode = mode;
    Ok(())
}

/// The config for `region` with this key schema; the rest from `lookup` (`FERRY_*`), except
/// the destinations (not the tools' business).
pub fn config_for(
    region: &str,
    partition: &str,
    sort: Option<&str>,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<Config, OpsError> {
    Config::from_lookup(|k| match k {
        "FERRY_LOCAL_REGION" => Some(region.to_string()),
        "FERRY_PARTITION_KEY" => Some(partition.to_string()),
        "FERRY_SORT_KEY" => sort.map(str::to_string),
        "FERRY_DESTINATIONS" | "AWS_REGION" => None,
        other => lookup(other),
    })
    .map_err(|e| OpsError::Usage(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_overrides() {
        assert_eq!(
            parse_endpoint("eu-west-1=http://127.0.0.1:4566"),
            Ok(EndpointOverride {
                service: None,
                region: "eu-west-1".into(),
                url: "http://127.0.0.1:4566".into()
            })
        );
        assert_eq!(
            parse_endpoint("sqs:us-east-1=https://sqs.example").map(|o| o.service),
            Ok(Some(Service::Sqs))
        );
        assert!(parse_endpoint("us-east-1").is_err());
        assert!(parse_endpoint("s3:us-east-1=http://x").is_err());
        assert!(parse_endpoint("us-east-1=localhost:1").is_err());
    }

    #[test]
    fn the_published_merge_mode_is_adopted_or_enforced() {
        use ferry_core::MergeMode;
        let published = |mode: MergeMode| {
            let mut c = Config::new("eu-west-1", "pk");
            c.merge_mode = mode;
            ferry_core::peer::tags(&c)
        };
        let mut c = Config::new("eu-west-1", "pk");
        settle_merge_mode(&mut c, false, &published(MergeMode::Attribute)).unwrap();
        assert_eq!(c.merge_mode, MergeMode::Attribute);
        let mut c = Config::new("eu-west-1", "pk");
        let e = settle_merge_mode(&mut c, true, &published(MergeMode::Attribute)).unwrap_err();
        assert!(e.contains("publishes `attribute`"), "{e}");
        settle_merge_mode(&mut c, true, &[]).unwrap();
        settle_merge_mode(&mut c, true, &published(MergeMode::Item)).unwrap();
        assert_eq!(c.merge_mode, MergeMode::Item);
    }

    #[test]
    fn per_region_tables_and_roles() {
        let v = |xs: &[&str]| xs.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let (default, regions) =
            parse_per_region("--table", &v(&["orders", "eu-west-1=orders-eu"]), false).unwrap();
        assert_eq!(default.as_deref(), Some("orders"));
        assert_eq!(regions["eu-west-1"], "orders-eu");
        let arn = "arn:aws:iam::111122223333:role/ferry-ops";
        let (_, roles) =
            parse_per_region("--role-arn", &v(&[&format!("eu-west-1={arn}")]), true).unwrap();
        assert_eq!(roles["eu-west-1"], arn);
        let e = parse_per_region("--role-arn", &v(&[arn]), true).unwrap_err();
        assert!(e.contains("expected REGION=VALUE"), "{e}");
        assert!(parse_per_region("--table", &v(&["a", "b"]), false).is_err());
        assert!(parse_per_region("--table", &v(&["x=a", "x=b"]), false).is_err());
    }

    #[test]
    fn queue_names_follow_the_stack() {
        let args = TargetArgs {
            stack: Some("ferry-prod".into()),
            ..TargetArgs::default()
        };
        let (buffer, dlq) = args.queue_templates();
        assert_eq!(
            queue_name(&buffer, "us-east-1", "eu-west-1"),
            "ferry-prod-buffer-eu-west-1"
        );
        assert_eq!(
            queue_name(&dlq, "us-east-1", "eu-west-1"),
            "ferry-prod-dlq-eu-west-1"
        );
        let (buffer, _) = TargetArgs::default().queue_templates();
        assert_eq!(buffer, "ferry-{src}-to-{dst}");
    }

    #[test]
    fn queue_names_and_config() {
        assert_eq!(
            queue_name("ferry-{src}-to-{dst}-dlq", "a", "b"),
            "ferry-a-to-b-dlq"
        );
        let c = config_for("eu-west-1", "id", Some("sk"), |k| {
            (k == "FERRY_ATTR_TS").then(|| "v_ts".to_string())
        })
        .unwrap();
        assert_eq!(c.local_region, "eu-west-1");
        assert_eq!(c.key.sort.as_deref(), Some("sk"));
        assert_eq!(c.names.ts, "v_ts");
        assert!(c.destinations.is_empty());
    }
}
