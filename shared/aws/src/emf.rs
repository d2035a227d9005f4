//! CloudWatch Embedded Metric Format: JSON lines that CloudWatch Logs turns into metrics, so a
//! function reports without an API call (print them to stdout on Lambda). Every Ferry function
//! publishes through one [`Metrics`]: the namespace `FERRY_METRICS_NAMESPACE` names (default
//! `Ferry`) and dimensions named like Global Tables' (`TableName`, `ReceivingRegion`), so two
//! stacks in one account never share a series.

use crate::env::Env;
use serde_json::{json, Map, Value};

/// The variable naming the namespace, and the namespace without it.
pub const NAMESPACE_VARIABLE: &str = "FERRY_METRICS_NAMESPACE";
pub const DEFAULT_NAMESPACE: &str = "Ferry";
/// Global Tables' dimension names: the table a metric is about, and the region receiving its
/// changes (for the drain of one pair).
pub const TABLE_NAME: &str = "TableName";
pub const RECEIVING_REGION: &str = "ReceivingRegion";
/// EMF takes at most 100 values for one metric in one line; more go on further lines.
pub const MAX_VALUES_PER_LINE: usize = 100;

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

/// One metric and its values: one value for a count or a flag, one per event for a figure
/// CloudWatch must aggregate into true percentiles (each value is a sample of its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub values: Vec<u64>,
}

impl Metric {
    pub fn count(name: &'static str, value: u64) -> Metric {
        Metric::new(name, Unit::Count, value)
    }

    pub fn new(name: &'static str, unit: Unit, value: u64) -> Metric {
        Metric::values(name, unit, vec![value])
    }

    /// Several samples; none leaves the metric out of the line (absent, not 0).
    pub fn values(name: &'static str, unit: Unit, values: Vec<u64>) -> Metric {
        Metric { name, unit, values }
    }
}

/// Where a function's metrics go: the namespace and the dimension values every line carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metrics {
    pub namespace: String,
    /// Dimension name → value; each is declared as a dimension and given as a property.
    pub dimensions: Vec<(&'static str, String)>,
    /// Further properties: searchable in Logs Insights, not dimensions.
    pub properties: Vec<(&'static str, String)>,
}

impl Metrics {
    /// `namespace`, with the table dimension.
    pub fn new(namespace: &str, table: &str) -> Metrics {
        Metrics {
            namespace: namespace.to_string(),
            dimensions: vec![(TABLE_NAME, table.to_string())],
            properties: Vec::new(),
        }
    }

    /// The namespace from `FERRY_METRICS_NAMESPACE` (default `Ferry`) and the table dimension.
    pub fn from_env<F: Fn(&str) -> Option<String>>(env: &Env<F>, table: &str) -> Metrics {
        let namespace = env.get(NAMESPACE_VARIABLE);
        Metrics::new(namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE), table)
    }

    pub fn dimension(mut self, name: &'static str, value: &str) -> Metrics {
        self.dimensions.push((name, value.to_string()));
        self
    }

    pub fn property(mut self, name: &'static str, value: &str) -> Metrics {
        self.properties.push((name, value.to_string()));
        self
    }

    /// The EMF lines of `metrics`: the first carries every metric with its first 100 values;
    /// further lines carry only the values left (one sample is never split or repeated).
    pub fn lines(&self, metrics: &[Metric], timestamp_ms: u64) -> Vec<String> {
        let longest = metrics.iter().map(|m| m.values.len()).max().unwrap_or(0);
        (0..longest.div_ceil(MAX_VALUES_PER_LINE))
            .map(|chunk| {
                let from = chunk * MAX_VALUES_PER_LINE;
                let part: Vec<(&Metric, &[u64])> = metrics
                    .iter()
                    .filter(|m| m.values.len() > from)
                    .map(|m| {
                        let to = m.values.len().min(from + MAX_VALUES_PER_LINE);
                        (m, &m.values[from..to])
                    })
                    .collect();
                self.line(&part, timestamp_ms)
            })
            .collect()
    }

    fn line(&self, metrics: &[(&Metric, &[u64])], timestamp_ms: u64) -> String {
        let names: Vec<&str> = self.dimensions.iter().map(|(n, _)| *n).collect();
        let definitions: Vec<Value> = metrics
            .iter()
            .map(|(m, _)| json!({ "Name": m.name, "Unit": m.unit.as_str() }))
            .collect();
        let mut root = Map::new();
        root.insert(
            "_aws".into(),
            json!({
                "Timestamp": timestamp_ms,
                "CloudWatchMetrics": [{
                    "Namespace": self.namespace,
                    "Dimensions": [names],
                    "Metrics": definitions,
                }],
            }),
        );
        for (name, value) in self.dimensions.iter().chain(&self.properties) {
            root.insert((*name).into(), json!(value));
        }
        for (m, values) in metrics {
            let value = match values {
                [one] => json!(one),
                many => json!(many),
            };
            root.insert(m.name.into(), value);
        }
        Value::Object(root).to_string()
    }
}

/// At most `max` of `values`, chosen so that their distribution is the original's: the sorted
/// values at evenly spaced ranks (each stands for `len / max` samples). Bounds the lines a busy
/// invocation prints while its percentiles stay within one rank step of the truth.
pub fn spread_sample(values: &[u64], max: usize) -> Vec<u64> {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    if sorted.len() <= max {
        return sorted;
    }
    let n = sorted.len();
    (0..max)
        .filter_map(|i| sorted.get((2 * i + 1) * n / (2 * max)).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Value {
        assert!(!line.contains('\n'));
        serde_json::from_str(line).expect("json")
    }

    fn metrics() -> Metrics {
        let env = Env::new(|k: &str| (k == NAMESPACE_VARIABLE).then(|| "Orders".to_string()));
        Metrics::from_env(&env, "orders")
            .dimension(RECEIVING_REGION, "eu-west-1")
            .property("Function", "drain")
    }

    #[test]
    fn declares_every_metric_and_its_dimensions() {
        let lines = metrics().lines(
            &[
                Metric::count("Applied", 3),
                Metric::values("ReplicationLatency", Unit::Milliseconds, vec![5, 9]),
                Metric::values("PendingAge", Unit::Milliseconds, vec![]),
            ],
            1_700_000_000_000,
        );
        assert_eq!(lines.len(), 1);
        let v = parse(&lines[0]);
        let directive = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Orders");
        assert_eq!(
            directive["Dimensions"],
            json!([["TableName", "ReceivingRegion"]])
        );
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "Applied", "Unit": "Count"},
                   {"Name": "ReplicationLatency", "Unit": "Milliseconds"}])
        );
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000u64);
        assert_eq!(v["TableName"], "orders");
        assert_eq!(v["ReceivingRegion"], "eu-west-1");
        assert_eq!(v["Function"], "drain");
        assert_eq!(v["Applied"], 3);
        assert_eq!(v["ReplicationLatency"], json!([5, 9]));
        assert!(v.get("PendingAge").is_none(), "no value, no metric");
    }

    #[test]
    fn the_namespace_defaults_to_ferry() {
        let env = Env::new(|_: &str| None);
        assert_eq!(Metrics::from_env(&env, "t").namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn more_than_a_hundred_values_go_on_further_lines_each_once() {
        let lags: Vec<u64> = (0..250).collect();
        let lines = metrics().lines(
            &[
                Metric::count("Applied", 250),
                Metric::values("ReplicationLatency", Unit::Milliseconds, lags.clone()),
            ],
            0,
        );
        assert_eq!(lines.len(), 3);
        let mut seen = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            let v = parse(line);
            let values = v["ReplicationLatency"].as_array().expect("array");
            assert!(values.len() <= MAX_VALUES_PER_LINE);
            seen.extend(values.iter().filter_map(Value::as_u64));
            // the count goes once, on the first line; every line carries the dimensions
            assert_eq!(v.get("Applied").is_some(), i == 0);
            let declared = v["_aws"]["CloudWatchMetrics"][0]["Metrics"]
                .as_array()
                .expect("metrics")
                .len();
            assert_eq!(declared, if i == 0 { 2 } else { 1 });
            assert_eq!(v["TableName"], "orders");
        }
        assert_eq!(seen, lags);
    }

    #[test]
    fn a_spread_sample_keeps_the_percentiles() {
        let values: Vec<u64> = (1..=10_000).rev().collect();
        let sample = spread_sample(&values, 1000);
        assert_eq!(sample.len(), 1000);
        assert!(sample.windows(2).all(|w| w[0] <= w[1]));
        let p = |s: &[u64], q: usize| s[(q * s.len()).div_ceil(100) - 1];
        assert!(p(&sample, 50).abs_diff(5_000) <= 10);
        assert!(p(&sample, 99).abs_diff(9_900) <= 10);
        assert_eq!(spread_sample(&[3, 1, 2], 1000), vec![1, 2, 3]);
        assert!(spread_sample(&[1, 2], 0).is_empty());
    }
}
