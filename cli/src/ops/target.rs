//! Where the tools act: a running `ferry local up` (`--local`: its state file gives every
//! region's endpoints), or AWS (the default credential chain, `--profile`, `--region`, and
//! `--endpoint-url` per region for VPC endpoints or emulators). With `--stack` the deployed
//! stacks' outputs give the table, the regions and every buffer and DLQ (`super::stack`);
//! without, table names come from `--table [REGION=]NAME` and queue names from `--buffer-name`
//! / `--dlq-name`. A region may be reached through a role (`--role-arn REGION=ARN`, assumed
//! through STS). The sandbox names its queues as the template does (stack `ferry-local`).

use super::stack::{self, RegionStack};
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
    /// `REGION=URL` for every service of a region (an emulator that serves them all), or one
    /// service's: `dynamodb:`, `sqs:`, `sts:`, `iam:`, `cloudformation:` or
    /// `cloudwatch:REGION=URL`; repeatable. (`AWS_ENDPOINT_URL_IAM` and the like work too.)
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
    /// The stack deployed from `template.yaml`: its outputs give the table, regions, buffers,
    /// DLQs and drains. `NAME` is found in --region and in each of its destination regions;
    /// `REGION=NAME` names one region's stack (repeatable, e.g.
    /// `--stack us-east-1=ferry-us --stack eu-west-1=ferry-eu`).
    #[arg(long = "stack", value_name = "[REGION=]NAME")]
    pub stacks: Vec<String>,
    /// Buffer queue name instead of the stack's; `{src}` and `{dst}` are replaced by the
    /// regions (e.g. `orders-buffer-{dst}`).
    #[arg(long)]
    pub buffer_name: Option<String>,
    /// Dead-letter queue name instead of the stack's (e.g. `orders-dlq-{dst}`).
    #[arg(long)]
    pub dlq_name: Option<String>,
}

impl TargetArgs {
    /// The buffer and DLQ name templates: given, else (for a stack named by convention, like the
    /// sandbox's) the template's `<stack>-buffer-{dst}` and `<stack>-dlq-{dst}`.
    pub fn queue_templates(&self, stack: Option<&str>) -> (Option<String>, Option<String>) {
        (
            self.buffer_name
                .clone()
                .or_else(|| stack.map(|s| stack::buffer_name(s, "{dst}"))),
            self.dlq_name
                .clone()
                .or_else(|| stack.map(|s| stack::dlq_name(s, "{dst}"))),
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
    /// IAM is global: the region's override is used for that region's reads of roles.
    Iam,
    CloudFormation,
    CloudWatch,
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
        Some(("iam", r)) => (Some(Service::Iam), r),
        Some(("cloudformation", r)) => (Some(Service::CloudFormation), r),
        Some(("cloudwatch", r)) => (Some(Service::CloudWatch), r),
        Some((s, _)) => {
            return Err(format!(
                "--endpoint-url `{text}`: unknown service `{s}` (dynamodb, sqs, sts, iam, cloudformation or cloudwatch)"
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
    iam: Option<String>,
    cloudformation: Option<String>,
    cloudwatch: Option<String>,
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
    /// `{src}`/`{dst}` templates of the queue names, where given or named by convention.
    buffer_name: Option<String>,
    dlq_name: Option<String>,
    /// Each region's stack (`--stack`): the queues' URLs come from its outputs.
    pub stacks: BTreeMap<String, RegionStack>,
    /// (source, destination) → (buffer URL, DLQ URL), from the stacks' outputs.
    queue_urls: BTreeMap<(String, String), (String, String)>,
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
        let (buffer_name, dlq_name) = args.queue_templates(None);
        let mut target = Target {
            table_name: table.unwrap_or_default(),
            table_names,
            roles: BTreeMap::new(),
            known_regions: Vec::new(),
            base,
            endpoints: BTreeMap::new(),
            buffer_name,
            dlq_name,
            stacks: BTreeMap::new(),
            queue_urls: BTreeMap::new(),
        };
        target.apply_overrides(args)?;
        if !args.stacks.is_empty() {
            target.read_stacks(args).await?;
        }
        if target.table_name.is_empty() && target.table_names.is_empty() {
            return Err(OpsError::Usage(
                "name the stack (--stack NAME --region REGION) or the table (--table [REGION=]NAME), or use --local".into(),
            ));
        }
        Ok(target)
    }

    /// Reads the stack of `--region` (or each region named) and then of every destination
    /// its outputs list, until every region's stack is known.
    async fn read_stacks(&mut self, args: &TargetArgs) -> Result<(), OpsError> {
        let (name, names) =
            parse_per_region("--stack", &args.stacks, false).map_err(OpsError::Usage)?;
        let mut pending: Vec<String> = names.keys().cloned().collect();
        if name.is_some() {
            let home = self.base.region().map(|r| r.to_string()).ok_or_else(|| {
                OpsError::Usage("--stack NAME needs a region to start from: --region REGION (or AWS_REGION, or the profile's)".into())
            })?;
            pending.insert(0, home);
        }
        while let Some(region) = pending.pop() {
            if self.stacks.contains_key(&region) {
                continue;
            }
            let stack_name =
                stack::name_in(&region, name.as_deref(), &names).map_err(OpsError::Usage)?;
            let endpoint = self.endpoint(&region, Service::CloudFormation);
            let outputs =
                ferry_aws::stack::stack_outputs(&self.base, &region, endpoint, &stack_name).await?;
            let found = stack::parse(&stack_name, &region, &outputs).map_err(OpsError::Usage)?;
            pending.extend(found.destinations.keys().cloned());
            for (d, o) in &found.destinations {
                self.queue_urls.insert(
                    (region.clone(), d.clone()),
                    (o.buffer_url.clone(), o.dlq_url.clone()),
                );
            }
            // A table named on the command line wins over the stack's.
            self.table_names
                .entry(region.clone())
                .or_insert_with(|| found.table.clone());
            self.stacks.insert(region, found);
        }
        self.known_regions = self.stacks.keys().cloned().collect();
        if self.table_name.is_empty() {
            if let Some(s) = self.stacks.values().next() {
                self.table_name = s.table.clone();
            }
        }
        Ok(())
    }

    /// The endpoint override of a region's service, if any.
    pub fn endpoint(&self, region: &str, service: Service) -> Option<&str> {
        let e = self.endpoints.get(region)?;
        match service {
            Service::DynamoDb => e.dynamodb.as_deref(),
            Service::Sqs => e.sqs.as_deref(),
            Service::Sts => e.sts.as_deref(),
            Service::Iam => e.iam.as_deref(),
            Service::CloudFormation => e.cloudformation.as_deref(),
            Service::CloudWatch => e.cloudwatch.as_deref(),
        }
    }

    /// The credentials and settings every client starts from.
    pub fn base(&self) -> &aws_config::SdkConfig {
        &self.base
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
        let (buffer_name, dlq_name) = args.queue_templates(Some(stack::LOCAL_STACK));
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
                            ..RegionEndpoints::default()
                        },
                    )
                })
                .collect(),
            buffer_name,
            dlq_name,
            stacks: BTreeMap::new(),
            queue_urls: BTreeMap::new(),
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
                Some(Service::Iam) => e.iam = Some(o.url),
                Some(Service::CloudFormation) => e.cloudformation = Some(o.url),
                Some(Service::CloudWatch) => e.cloudwatch = Some(o.url),
                // One endpoint for every service (an emulator that serves them all).
                None => {
                    e.dynamodb = Some(o.url.clone());
                    e.sqs = Some(o.url.clone());
                    e.sts = Some(o.url.clone());
                    e.iam = Some(o.url.clone());
                    e.cloudformation = Some(o.url.clone());
                    e.cloudwatch = Some(o.url);
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

    /// The conflict table in `region`: the stack's output, else the name scheme of
    /// `ferry_core::conflict::log_table_name` (the sandbox's, the template's); an error when the
    /// region's stack keeps no log.
    pub fn conflict_table_in(&self, region: &str) -> Result<String, String> {
        match self.stacks.get(region) {
            Some(RegionStack {
                conflict_table: Some(name),
                ..
            }) => Ok(name.clone()),
            Some(s) => Err(format!(
                "{region} stack {}: no conflict log (output `{}` missing: deploy with ConflictLog=true)",
                s.stack,
                stack::CONFLICT_TABLE
            )),
            None => Ok(ferry_core::conflict::log_table_name(
                self.table_name_in(region),
            )),
        }
    }

    /// The regions to act on: those given, else every region of the sandbox or the stacks.
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
                    "region `{r}` is not one of the sandbox's or stacks': {}",
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
        s.iam_endpoint = e.iam;
        s.role_arn = self.roles.get(region).cloned();
        s.connect_timeout = Some(Duration::from_secs(2));
        s.attempt_timeout = Some(Duration::from_secs(20));
        s.operation_timeout = Some(Duration::from_secs(60));
        // One SDK retry for a transient failure; throttling beyond that is retried without end
        // by the tools' own back-off (`ferry_aws::retry`), so it slows them and never fails them.
        s.max_attempts = Some(2);
        s
    }

    /// IAM and STS with `region`'s credentials (its `--role-arn`, if any).
    pub async fn iam(&self, region: &str) -> ferry_aws::iam::Iam {
        self.settings(region).iam(&self.base).await
    }

    /// The table in `region`.
    pub async fn table(&self, region: &str) -> Table {
        Table::new(
            self.settings(region).dynamodb(&self.base).await,
            self.table_name_in(region).to_string(),
        )
    }

    /// The buffer and DLQ from `source` to `destination` (both live in the source region):
    /// named (`--buffer-name`, `--dlq-name`, the sandbox's), else from the source's stack.
    pub async fn queues(
        &self,
        source: &str,
        destination: &str,
    ) -> Result<(Buffer, Buffer), OpsError> {
        let sqs = self.settings(source).sqs(&self.base);
        let urls = self
            .queue_urls
            .get(&(source.to_string(), destination.to_string()));
        let (buffer_name, dlq_name) = match (&self.buffer_name, &self.dlq_name, urls) {
            (None, None, Some((buffer, dlq))) => {
                return Ok((Buffer::new(sqs.clone(), buffer), Buffer::new(sqs, dlq)))
            }
            (Some(b), Some(d), _) => (b, d),
            _ => {
                return Err(OpsError::Usage(format!(
                    "no queues known from {source} to {destination}: the stack in {source} has no buffer for {destination} (fix: --stack NAME, or name both queues: --buffer-name, --dlq-name)"
                )))
            }
        };
        let find = |template: &str| {
            let name = queue_name(template, source, destination);
            let sqs = sqs.clone();
            async move {
                Buffer::by_name(sqs, &name)
                    .await
                    .map_err(|e| e.context(format_args!("{source} queue {name}")))
            }
        };
        let buffer = find(buffer_name).await?;
        let dlq = find(dlq_name).await?;
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
        assert_eq!(
            parse_endpoint("iam:us-east-1=http://127.0.0.1:5000").map(|o| o.service),
            Ok(Some(Service::Iam))
        );
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
    fn the_conflict_table_is_the_stacks_or_the_name_scheme() {
        let state = State {
            pid: 1,
            control: String::new(),
            regions: ["us-east-1", "eu-west-1"]
                .iter()
                .map(|r| crate::control::RegionEndpoints {
                    region: r.to_string(),
                    dynamodb: "http://127.0.0.1:1".into(),
                    sqs: "http://127.0.0.1:2".into(),
                    table: "orders".into(),
                })
                .collect(),
        };
        let mut t = Target::local(&state, &TargetArgs::default()).expect("a local target");
        assert_eq!(
            t.conflict_table_in("eu-west-1").unwrap(),
            "orders-ferry-conflicts"
        );
        let stack = |conflict_table: Option<&str>| RegionStack {
            stack: "ferry-prod".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
            conflict_table: conflict_table.map(str::to_string),
            max_wcu: None,
            destinations: BTreeMap::new(),
        };
        t.stacks
            .insert("us-east-1".into(), stack(Some("orders-log-us")));
        assert_eq!(t.conflict_table_in("us-east-1").unwrap(), "orders-log-us");
        t.stacks.insert("us-east-1".into(), stack(None));
        let e = t.conflict_table_in("us-east-1").unwrap_err();
        assert!(e.contains("ConflictLog=true"), "{e}");
    }

    #[test]
    fn queue_names_follow_the_stack() {
        let args = TargetArgs::default();
        let (Some(buffer), Some(dlq)) = args.queue_templates(Some("ferry-prod")) else {
            panic!("a stack names its queues");
        };
        assert_eq!(
            queue_name(&buffer, "us-east-1", "eu-west-1"),
            "ferry-prod-buffer-eu-west-1"
        );
        assert_eq!(
            queue_name(&dlq, "us-east-1", "eu-west-1"),
            "ferry-prod-dlq-eu-west-1"
        );
        assert_eq!(TargetArgs::default().queue_templates(None), (None, None));
        let args = TargetArgs {
            buffer_name: Some("b-{src}".into()),
            ..TargetArgs::default()
        };
        assert_eq!(
            args.queue_templates(Some("s")).0.as_deref(),
            Some("b-{src}")
        );
    }

    #[test]
    fn queue_names_and_config() {
        assert_eq!(queue_name("x-{src}-{dst}", "a", "b"), "x-a-b");
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
