//! CloudWatch Embedded Metric Format: one JSON line per invocation that CloudWatch Logs turns
//! into metrics, so a function reports its counts without an API call (print it to stdout on
//! Lambda). Each function chooses its own namespace, dimensions and metric names.

use serde_json::{json, Map, Value};

/// The CloudWatch unit of a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Count,
    Milliseconds,
    /// A flag or a level: no unit.
    None,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
            Unit::None => "None",
        }
    }
}

/// One metric value of the line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: u64,
}

impl Metric {
    pub fn count(name: &'static str, value: u64) -> Metric {
        Metric {
            name,
            unit: Unit::Count,
            value,
        }
    }

    pub fn new(name: &'static str, unit: Unit, value: u64) -> Metric {
        Metric { name, unit, value }
    }
}

/// One EMF line. `properties` are top-level string fields; the names in `dimensions` must be
/// among them (EMF reads a dimension's value from the property of that name). Every metric is
/// declared in the directive and given its value at the top level.
pub fn line(
    namespace: &str,
    dimensions: &[&str],
    properties: &[(&str, &str)],
    metrics: &[Metric],
    timestamp_ms: u64,
) -> String {
    let definitions: Vec<Value> = metrics
        .iter()
        .map(|m| json!({ "Name": m.name, "Unit": m.unit.as_str() }))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [dimensions],
                "Metrics": definitions,
            }],
        }),
    );
    for (name, value) in properties {
        root.insert((*name).into(), json!(value));
    }
    for m in metrics {
        root.insert(m.name.into(), json!(m.value));
    }
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_every_metric_and_its_dimensions() {
        let text = line(
            "Ferry",
            &["Function", "Source"],
            &[("Function", "drain"), ("Source", "us-east-1")],
            &[
                Metric::count("Applied", 3),
                Metric::new("LagP99", Unit::Milliseconds, 100),
            ],
            1_700_000_000_000,
        );
        assert!(!text.contains('\n'));
        let v: Value = serde_json::from_str(&text).expect("json");
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Ferry");
        assert_eq!(directive["Dimensions"], json!([["Function", "Source"]]));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "LagP99", "Unit": "Milliseconds"})
        );
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(v["Function"], "drain");
        assert_eq!(v["Source"], "us-east-1");
        assert_eq!(v["Applied"], 3);
        assert_eq!(v["LagP99"], 100);
    }
}
