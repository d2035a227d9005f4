//! Reading a function's settings from its environment. Through a lookup function rather than
//! the process environment, so that settings are tested without touching process-wide state.
//! A variable that is unset or blank counts as unset; values are trimmed.

use ferry_core::{Config, ConfigError};
use std::time::Duration;

/// A variable that is missing or cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VariableError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name} = `{value}` is not {what}")]
    Bad {
        name: &'static str,
        value: String,
        what: &'static str,
    },
}

/// The environment, seen through `lookup` (`|k| std::env::var(k).ok()` in a function).
pub struct Env<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Env<F> {
    pub fn new(lookup: F) -> Self {
        Env { lookup }
    }

    /// The core's shared settings (`Config::from_lookup`), from the same environment.
    pub fn config(&self) -> Result<Config, ConfigError> {
        Config::from_lookup(&self.lookup)
    }

    /// The trimmed value, or `None` when unset or blank.
    pub fn get(&self, name: &str) -> Option<String> {
        (self.lookup)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &'static str) -> Result<String, VariableError> {
        self.get(name).ok_or(VariableError::Missing(name))
    }

    /// The value read by `parse` (`None`: unset); `what` says what a valid value is.
    pub fn parsed<T>(
        &self,
        name: &'static str,
        what: &'static str,
        parse: impl FnOnce(&str) -> Option<T>,
    ) -> Result<Option<T>, VariableError> {
        match self.get(name) {
            None => Ok(None),
            Some(value) => parse(&value)
                .map(Some)
                .ok_or(VariableError::Bad { name, value, what }),
        }
    }

    /// A non-negative integer, `default` when unset.
    pub fn number(&self, name: &'static str, default: u64) -> Result<u64, VariableError> {
        self.parsed(name, "a valid number", |v| v.parse().ok())
            .map(|n| n.unwrap_or(default))
    }

    /// A whole number of milliseconds, `default_ms` when unset.
    pub fn millis(&self, name: &'static str, default_ms: u64) -> Result<Duration, VariableError> {
        self.number(name, default_ms).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Env<impl Fn(&str) -> Option<String>> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Env::new(move |k: &str| map.get(k).cloned())
    }

    #[test]
    fn blank_is_unset_and_values_are_trimmed() {
        let e = env(&[("A", " x "), ("B", "  "), ("N", " 42 "), ("BAD", "many")]);
        assert_eq!(e.get("A").as_deref(), Some("x"));
        assert_eq!(e.get("B"), None);
        assert_eq!(e.required("B"), Err(VariableError::Missing("B")));
        assert_eq!(e.number("N", 7), Ok(42));
        assert_eq!(e.number("UNSET", 7), Ok(7));
        assert_eq!(e.millis("N", 0), Ok(Duration::from_millis(42)));
        assert!(matches!(
            e.number("BAD", 7),
            Err(VariableError::Bad { name: "BAD", .. })
        ));
        assert_eq!(
            e.number("BAD", 7).unwrap_err().to_string(),
            "BAD = `many` is not a valid number"
        );
    }
}
