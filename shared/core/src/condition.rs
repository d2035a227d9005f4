//! Conditions on a write, as data: the adapter renders them as a DynamoDB condition expression,
//! the convergence checker evaluates them with DynamoDB's rules. One definition, two readers.

use crate::item::{AttributeValue, Item};
use std::cmp::Ordering;
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    Exists(String),
    NotExists(String),
    Equals(String, AttributeValue),
    LessThan(String, AttributeValue),
    And(Vec<Condition>),
    Or(Vec<Condition>),
}

/// A condition rendered for the DynamoDB API: expression, names and values placeholders.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Expression {
    pub text: String,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, AttributeValue>,
}

impl Expression {
    /// Placeholder for an attribute name; the same name always gets the same placeholder.
    pub fn name(&mut self, attribute: &str) -> String {
        if let Some((p, _)) = self.names.iter().find(|(_, a)| a.as_str() == attribute) {
            return p.clone();
        }
        let p = format!("#n{}", self.names.len());
        self.names.insert(p.clone(), attribute.to_string());
        p
    }

    /// Placeholder for a value.
    pub fn value(&mut self, v: &AttributeValue) -> String {
        let p = format!(":v{}", self.values.len());
        self.values.insert(p.clone(), v.clone());
        p
    }
}

impl Condition {
    pub fn and(parts: Vec<Condition>) -> Condition {
        if parts.len() == 1 {
            parts.into_iter().next().unwrap_or(Condition::And(vec![]))
        } else {
            Condition::And(parts)
        }
    }

    /// Renders into `expr` (placeholders are shared with the rest of the request).
    pub fn render(&self, expr: &mut Expression) -> String {
        match self {
            Condition::Exists(a) => format!("attribute_exists({})", expr.name(a)),
            Condition::NotExists(a) => format!("attribute_not_exists({})", expr.name(a)),
            Condition::Equals(a, v) => format!("{} = {}", expr.name(a), expr.value(v)),
            Condition::LessThan(a, v) => format!("{} < {}", expr.name(a), expr.value(v)),
            Condition::And(parts) => join(parts, " AND ", expr),
            Condition::Or(parts) => join(parts, " OR ", expr),
        }
    }

    /// The whole condition as a standalone expression.
    pub fn to_expression(&self) -> Expression {
        let mut expr = Expression::default();
        expr.text = self.render(&mut expr);
        expr
    }

    /// Evaluates the condition against a stored item (`None`: no item), as DynamoDB does: a
    /// comparison involving a missing attribute, or values of different types, is false.
    pub fn holds(&self, item: Option<&Item>) -> bool {
        let get = |a: &str| item.and_then(|i| i.get(a));
        match self {
            Condition::Exists(a) => get(a).is_some(),
            Condition::NotExists(a) => get(a).is_none(),
            Condition::Equals(a, v) => get(a).is_some_and(|x| values_equal(x, v)),
            Condition::LessThan(a, v) => get(a).and_then(|x| compare(x, v)) == Some(Ordering::Less),
            Condition::And(parts) => parts.iter().all(|p| p.holds(item)),
            Condition::Or(parts) => parts.iter().any(|p| p.holds(item)),
        }
    }
}

fn join(parts: &[Condition], sep: &str, expr: &mut Expression) -> String {
    if parts.is_empty() {
        // An empty AND: nothing to check. DynamoDB has no literal true; never rendered in practice.
        return String::new();
    }
    let rendered: Vec<String> = parts
        .iter()
        .map(|p| format!("({})", p.render(expr)))
        .collect();
    rendered.join(sep)
}

/// DynamoDB equality of two items: the same attribute names, each value equal as
/// [`values_equal`] says (what `ferry verify` and the demo compare regions with).
pub fn items_equal(a: &Item, b: &Item) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(name, x)| b.get(name).is_some_and(|y| values_equal(x, y)))
}

/// DynamoDB equality: numbers compare by value, sets regardless of order, at any depth.
pub fn values_equal(a: &AttributeValue, b: &AttributeValue) -> bool {
    use AttributeValue::*;
    match (a, b) {
        (M(x), M(y)) => items_equal(x, y),
        (L(x), L(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| values_equal(a, b)),
        (N(x), N(y)) => compare_numbers(x, y) == Some(Ordering::Equal),
        (Ss(x), Ss(y)) => same_set(x, y),
        (Ns(x), Ns(y)) => {
            x.len() == y.len()
                && x.iter().all(|a| {
                    y.iter()
                        .any(|b| compare_numbers(a, b) == Some(Ordering::Equal))
                })
        }
        (Bs(x), Bs(y)) => same_set(x, y),
        _ => a == b,
    }
}

fn same_set<T: Ord + Clone>(x: &[T], y: &[T]) -> bool {
    let mut x = x.to_vec();
    let mut y = y.to_vec();
    x.sort();
    y.sort();
    x == y
}

fn compare(a: &AttributeValue, b: &AttributeValue) -> Option<Ordering> {
    use AttributeValue::*;
    match (a, b) {
        (N(x), N(y)) => compare_numbers(x, y),
        (S(x), S(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (B(x), B(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// Compares two DynamoDB numbers exactly (decimal strings, up to 38 digits, any exponent).
pub fn compare_numbers(a: &str, b: &str) -> Option<Ordering> {
    let (sa, da, ea) = normalize_number(a)?;
    let (sb, db, eb) = normalize_number(b)?;
    let za = da.is_empty();
    let zb = db.is_empty();
    let sign = |neg: bool, zero: bool| {
        if zero {
            0
        } else if neg {
            -1
        } else {
            1
        }
    };
    let (ka, kb) = (sign(sa, za), sign(sb, zb));
    if ka != kb {
        return Some(ka.cmp(&kb));
    }
    if ka == 0 {
        return Some(Ordering::Equal);
    }
    // Same sign, both non-zero: compare magnitude by exponent, then digits.
    let mag = ea.cmp(&eb).then_with(|| da.cmp(&db));
    Some(if ka < 0 { mag.reverse() } else { mag })
}

/// (negative, significant digits without leading/trailing zeros, exponent of the first digit).
pub(crate) fn normalize_number(s: &str) -> Option<(bool, String, i64)> {
    let s = s.trim();
    let (neg, s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], s[i + 1..].parse::<i64>().ok()?),
        None => (s, 0),
    };
    let (int, frac) = match mantissa.split_once('.') {
        Some((i, f)) => (i, f),
        None => (mantissa, ""),
    };
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    if !int.chars().chain(frac.chars()).all(|c| c.is_ascii_digit()) {
        return None;
    }
    let digits: String = format!("{int}{frac}");
    let lead = digits.len() - digits.trim_start_matches('0').len();
    let sig = digits
        .trim_start_matches('0')
        .trim_end_matches('0')
        .to_string();
    let exponent = int.len() as i64 - lead as i64 + exp;
    Some((neg, sig, exponent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_compare_exactly() {
        use Ordering::*;
        assert_eq!(compare_numbers("10", "9"), Some(Greater));
        assert_eq!(compare_numbers("-0", "0"), Some(Equal));
        assert_eq!(compare_numbers("1E+125", "9.99E124"), Some(Greater));
        assert_eq!(compare_numbers("0.001", "1e-3"), Some(Equal));
        assert_eq!(
            compare_numbers(
                "12345678901234567890123456789012345678",
                "12345678901234567890123456789012345677"
            ),
            Some(Greater)
        );
        assert_eq!(compare_numbers("-5", "-10"), Some(Greater));
        assert_eq!(compare_numbers("abc", "1"), None);
    }

    #[test]
    fn missing_attribute_comparisons_are_false() {
        let c = Condition::LessThan("ts".into(), AttributeValue::N("5".into()));
        let item: Item = [("pk".to_string(), AttributeValue::S("a".into()))].into();
        assert!(!c.holds(Some(&item)));
        assert!(!c.holds(None));
        let ne = Condition::NotExists("pk".into());
        assert!(ne.holds(None));
        assert!(!ne.holds(Some(&item)));
    }

    #[test]
    fn renders_placeholders() {
        let c = Condition::Or(vec![
            Condition::NotExists("pk".into()),
            Condition::LessThan("ts".into(), AttributeValue::N("5".into())),
            Condition::And(vec![
                Condition::Equals("ts".into(), AttributeValue::N("5".into())),
                Condition::LessThan("origin".into(), AttributeValue::S("b".into())),
            ]),
        ]);
        let e = c.to_expression();
        assert_eq!(
            e.text,
            "(attribute_not_exists(#n0)) OR (#n1 < :v0) OR ((#n1 = :v1) AND (#n2 < :v2))"
        );
        assert_eq!(e.names.len(), 3);
        assert_eq!(e.values.len(), 3);
    }
}
