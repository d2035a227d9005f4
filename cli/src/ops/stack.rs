//! A deployed stack as the tools see it: the outputs `template.yaml` gives every region's stack,
//! read into the table, the destinations and each destination's buffer, DLQ, drain and roles.
//! Pure: `Target` reads the outputs (`ferry_aws::stack`) and hands them here.

use serde::Serialize;
use std::collections::BTreeMap;

/// The sandbox's stack name in every region (`ferry local up`): its queues follow the template.
pub const LOCAL_STACK: &str = "ferry-local";

/// Stack-wide outputs the tools need.
pub const TABLE_NAME: &str = "TableName";
pub const REGION: &str = "Region";
pub const DESTINATION_REGIONS: &str = "DestinationRegions";
/// The region's conflict table; absent when the stack keeps no conflict log.
pub const CONFLICT_TABLE: &str = "ConflictTableName";
/// Per-destination outputs (`Fn::ForEach`: the key is the prefix and the region without dashes).
pub const BUFFER_URL: &str = "BufferUrl";
pub const DLQ_URL: &str = "DlqUrl";
pub const DRAIN_FUNCTION: &str = "DrainFunction";
pub const DRAIN_ROLE_ARN: &str = "DrainRoleArn";
pub const DESTINATION_TABLE: &str = "DestinationTable";
/// Only where the stack reaches its destinations through roles (`DestinationRoleArns`).
pub const DESTINATION_ROLE_ARN: &str = "DestinationRoleArn";
/// The drains' write-rate cap (`MaxWriteUnitsPerSecond`); stacks from before it lack it.
pub const MAX_WRITE_UNITS: &str = "MaxWriteUnitsPerSecond";

pub const STACK_OUTPUTS: &[&str] = &[TABLE_NAME, REGION, DESTINATION_REGIONS];
pub const DESTINATION_OUTPUTS: &[&str] = &[
    BUFFER_URL,
    DLQ_URL,
    DRAIN_FUNCTION,
    DRAIN_ROLE_ARN,
    DESTINATION_TABLE,
];

/// The template's buffer name for a destination (in the source region's account).
pub fn buffer_name(stack: &str, destination: &str) -> String {
    format!("{stack}-buffer-{destination}")
}

/// The template's dead-letter queue name for a destination.
pub fn dlq_name(stack: &str, destination: &str) -> String {
    format!("{stack}-dlq-{destination}")
}

/// The output key of a per-destination output: CloudFormation drops what is not alphanumeric
/// from the `&{Region}` of `Fn::ForEach`.
pub fn output_key(prefix: &str, region: &str) -> String {
    let suffix: String = region.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("{prefix}{suffix}")
}

/// One region's stack.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RegionStack {
    pub stack: String,
    pub region: String,
    pub table: String,
    /// The conflict table (`None`: `ConflictLog` is off in this stack).
    pub conflict_table: Option<String>,
    pub destinations: BTreeMap<String, DestinationOutputs>,
    /// The write-rate cap of the drains to each destination (`None`: none, or not published).
    pub max_wcu: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DestinationOutputs {
    pub buffer_url: String,
    pub dlq_url: String,
    pub drain_function: String,
    pub drain_role_arn: String,
    /// The destination table's name (`DestinationTableNames`, else the stack's table).
    pub table: String,
    /// The role the drain assumes in the destination's account, if any.
    pub role_arn: Option<String>,
}

/// Reads the outputs of `stack` in `region`; a missing output or another region's stack is an
/// error naming the stack, the region and the output.
pub fn parse(
    stack: &str,
    region: &str,
    outputs: &BTreeMap<String, String>,
) -> Result<RegionStack, String> {
    let get = |key: &str| {
        outputs
            .get(key)
            .filter(|v| !v.trim().is_empty())
            .map(|v| v.trim().to_string())
            .ok_or_else(|| {
                format!(
                    "{region} stack {stack}: output `{key}` missing (fix: deploy the current template.yaml, which has it)"
                )
            })
    };
    let own = get(REGION)?;
    if own != region {
        return Err(format!(
            "{region} stack {stack}: output `{REGION}` says {own} (fix: name each region's stack, --stack REGION=NAME)"
        ));
    }
    let mut destinations = BTreeMap::new();
    for d in get(DESTINATION_REGIONS)?.split(',').map(str::trim) {
        if d.is_empty() || d == region {
            continue;
        }
        let per = |prefix: &str| get(&output_key(prefix, d));
        destinations.insert(
            d.to_string(),
            DestinationOutputs {
                buffer_url: per(BUFFER_URL)?,
                dlq_url: per(DLQ_URL)?,
                drain_function: per(DRAIN_FUNCTION)?,
                drain_role_arn: per(DRAIN_ROLE_ARN)?,
                table: per(DESTINATION_TABLE)?,
                role_arn: per(DESTINATION_ROLE_ARN).ok(),
            },
        );
    }
    Ok(RegionStack {
        stack: stack.to_string(),
        region: region.to_string(),
        table: get(TABLE_NAME)?,
        conflict_table: get(CONFLICT_TABLE).ok(),
        destinations,
        max_wcu: get(MAX_WRITE_UNITS)
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|c| c.is_finite() && *c > 0.0),
    })
}

/// The stack name of `region`: its own (`--stack REGION=NAME`), else the one name for all.
pub fn name_in(
    region: &str,
    default: Option<&str>,
    by_region: &BTreeMap<String, String>,
) -> Result<String, String> {
    by_region
        .get(region)
        .map(String::as_str)
        .or(default)
        .map(str::to_string)
        .ok_or_else(|| {
            format!("no stack named for {region}, a destination of the others (fix: --stack {region}=NAME, or one --stack NAME for every region)")
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs(region: &str, destinations: &[&str]) -> BTreeMap<String, String> {
        let mut o: BTreeMap<String, String> = [
            (TABLE_NAME, "orders".to_string()),
            (REGION, region.to_string()),
            (DESTINATION_REGIONS, destinations.join(",")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for d in destinations {
            for p in DESTINATION_OUTPUTS {
                o.insert(output_key(p, d), format!("{p} of {d}"));
            }
        }
        o
    }

    #[test]
    fn outputs_make_a_region_stack() {
        let mut o = outputs("us-east-1", &["eu-west-1", "ap-southeast-2"]);
        o.insert("DestinationRoleArneuwest1".into(), "arn:role".into());
        let s = parse("ferry-prod", "us-east-1", &o).unwrap();
        assert_eq!(s.table, "orders");
        assert_eq!(s.conflict_table, None, "no log in this stack");
        assert_eq!(s.destinations.len(), 2);
        let eu = &s.destinations["eu-west-1"];
        assert_eq!(eu.buffer_url, "BufferUrl of eu-west-1");
        assert_eq!(eu.table, "DestinationTable of eu-west-1");
        assert_eq!(eu.role_arn.as_deref(), Some("arn:role"));
        assert_eq!(s.destinations["ap-southeast-2"].role_arn, None);
        assert_eq!(
            output_key(BUFFER_URL, "ap-southeast-2"),
            "BufferUrlapsoutheast2"
        );
    }

    #[test]
    fn the_write_cap_is_read_when_published() {
        let mut o = outputs("us-east-1", &["eu-west-1"]);
        assert_eq!(parse("s", "us-east-1", &o).unwrap().max_wcu, None);
        o.insert(MAX_WRITE_UNITS.into(), "0".into());
        assert_eq!(parse("s", "us-east-1", &o).unwrap().max_wcu, None);
        o.insert(MAX_WRITE_UNITS.into(), "150".into());
        assert_eq!(parse("s", "us-east-1", &o).unwrap().max_wcu, Some(150.0));
    }

    #[test]
    fn a_missing_output_names_stack_region_and_output() {
        let mut o = outputs("us-east-1", &["eu-west-1"]);
        o.remove("DlqUrleuwest1");
        let e = parse("ferry-prod", "us-east-1", &o).unwrap_err();
        assert!(
            e.contains("us-east-1 stack ferry-prod: output `DlqUrleuwest1` missing"),
            "{e}"
        );
        let e = parse("ferry-prod", "eu-west-1", &o).unwrap_err();
        assert!(e.contains("output `Region` says us-east-1"), "{e}");
    }

    #[test]
    fn names_per_region_or_one_for_all() {
        let by: BTreeMap<String, String> = [("eu-west-1".into(), "ferry-eu".into())].into();
        assert_eq!(
            name_in("eu-west-1", Some("ferry"), &by).unwrap(),
            "ferry-eu"
        );
        assert_eq!(name_in("us-east-1", Some("ferry"), &by).unwrap(), "ferry");
        let e = name_in("us-east-1", None, &by).unwrap_err();
        assert!(e.contains("--stack us-east-1=NAME"), "{e}");
        assert_eq!(buffer_name("s", "eu-west-1"), "s-buffer-eu-west-1");
        assert_eq!(dlq_name("s", "eu-west-1"), "s-dlq-eu-west-1");
    }
}
