//! Merging Ferry's parts into an application's expressions: placeholders, the condition, the
//! update expression's clauses, projection paths.
//!
//! Ferry's placeholders all start with `#ferry_` / `:ferry_`, a prefix an application request may
//! not use (checked), so they never collide with the application's own — whatever attribute
//! names the configuration gives Ferry's attributes.

use crate::error::RequestError;
use crate::SdkValue;
use std::collections::HashMap;

pub(crate) const N_TS: &str = "#ferry_ts";
pub(crate) const N_ORIGIN: &str = "#ferry_origin";
pub(crate) const N_DELETED: &str = "#ferry_deleted";
pub(crate) const N_TTL: &str = "#ferry_ttl";
pub(crate) const N_PK: &str = "#ferry_pk";
pub(crate) const N_SUM: &str = "#ferry_sum";
pub(crate) const V_TS: &str = ":ferry_ts";
pub(crate) const V_ORIGIN: &str = ":ferry_origin";
pub(crate) const V_TRUE: &str = ":ferry_true";
pub(crate) const V_MARKER: &str = ":ferry_marker";
pub(crate) const V_TTL: &str = ":ferry_ttl";

const RESERVED_NAME_PREFIX: &str = "#ferry_";
const RESERVED_VALUE_PREFIX: &str = ":ferry_";

/// A request's condition (or filter) and its placeholders, the application's merged with Ferry's.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Parts {
    pub condition: Option<String>,
    pub names: HashMap<String, String>,
    pub values: HashMap<String, SdkValue>,
}

impl Parts {
    /// The application's parts, refusing placeholders in Ferry's reserved namespace.
    pub fn from_app(
        condition: Option<&String>,
        names: Option<&HashMap<String, String>>,
        values: Option<&HashMap<String, SdkValue>>,
    ) -> Result<Self, RequestError> {
        let names = names.cloned().unwrap_or_default();
        let values = values.cloned().unwrap_or_default();
        if let Some(p) = names.keys().find(|p| p.starts_with(RESERVED_NAME_PREFIX)) {
            return Err(RequestError::ReservedPlaceholder(p.clone()));
        }
        if let Some(p) = values.keys().find(|p| p.starts_with(RESERVED_VALUE_PREFIX)) {
            return Err(RequestError::ReservedPlaceholder(p.clone()));
        }
        Ok(Parts {
            condition: condition.filter(|c| !c.trim().is_empty()).cloned(),
            names,
            values,
        })
    }

    pub fn name(&mut self, placeholder: &str, attribute: &str) -> &mut Self {
        self.names
            .insert(placeholder.to_string(), attribute.to_string());
        self
    }

    pub fn value(&mut self, placeholder: &str, value: SdkValue) -> &mut Self {
        self.values.insert(placeholder.to_string(), value);
        self
    }

    /// `(<application's>) AND (<ours>)`: the parentheses keep the application's `OR`s its own.
    pub fn and(&mut self, ours: &str) -> &mut Self {
        self.condition = Some(match self.condition.take() {
            Some(app) => format!("({app}) AND ({ours})"),
            None => ours.to_string(),
        });
        self
    }

    /// The maps as the SDK setters take them: DynamoDB rejects an empty map.
    pub fn names_opt(&self) -> Option<HashMap<String, String>> {
        (!self.names.is_empty()).then(|| self.names.clone())
    }

    pub fn values_opt(&self) -> Option<HashMap<String, SdkValue>> {
        (!self.values.is_empty()).then(|| self.values.clone())
    }
}

/// The clauses of an update expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Clause {
    Set,
    Remove,
    Add,
    Delete,
}

impl Clause {
    fn keyword(self) -> &'static str {
        match self {
            Clause::Set => "SET",
            Clause::Remove => "REMOVE",
            Clause::Add => "ADD",
            Clause::Delete => "DELETE",
        }
    }

    fn parse(word: &str) -> Option<Clause> {
        match word.to_ascii_uppercase().as_str() {
            "SET" => Some(Clause::Set),
            "REMOVE" => Some(Clause::Remove),
            "ADD" => Some(Clause::Add),
            "DELETE" => Some(Clause::Delete),
            _ => None,
        }
    }
}

/// An update expression split into its clauses, so Ferry's actions join the application's
/// `SET` / `REMOVE` clause: DynamoDB allows each clause keyword once, so appending a second
/// `SET ...` would be rejected.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct UpdateExpression {
    clauses: Vec<(Clause, String)>,
}

impl UpdateExpression {
    /// Splits at the clause keywords. A keyword is a bare word at nesting depth 0: placeholders
    /// (`#set`, `:add`) and nested names (`a.set`) are not words here, and DynamoDB requires a
    /// placeholder for an attribute named like a reserved word, so a bare `SET` is the keyword.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut starts: Vec<(usize, usize, Clause)> = Vec::new(); // (keyword start, body start, clause)
        let mut depth: i32 = 0;
        let mut prev: Option<char> = None;
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => {
                    depth -= 1;
                    if depth < 0 {
                        return Err(format!("unbalanced `{c}` at {i}"));
                    }
                }
                _ => {}
            }
            let word_start = (c.is_ascii_alphabetic() || c == '_')
                && !prev.is_some_and(|p| {
                    p.is_ascii_alphanumeric() || matches!(p, '_' | '#' | ':' | '.')
                });
            if word_start {
                let mut end = i + c.len_utf8();
                while let Some(&(j, d)) = chars.peek() {
                    if d.is_ascii_alphanumeric() || d == '_' {
                        end = j + d.len_utf8();
                        chars.next();
                    } else {
                        break;
                    }
                }
                if depth == 0 {
                    if let Some(clause) = Clause::parse(&text[i..end]) {
                        starts.push((i, end, clause));
                    }
                }
                prev = text[..end].chars().next_back();
                continue;
            }
            prev = Some(c);
        }
        if depth != 0 {
            return Err("unbalanced parentheses or brackets".into());
        }
        let first = starts.first().map_or(text.len(), |s| s.0);
        if !text[..first].trim().is_empty() {
            return Err(format!(
                "`{}` does not start with SET, REMOVE, ADD or DELETE",
                text.trim()
            ));
        }
        let mut clauses: Vec<(Clause, String)> = Vec::new();
        for (k, &(_, body_start, clause)) in starts.iter().enumerate() {
            let body_end = starts.get(k + 1).map_or(text.len(), |s| s.0);
            let body = text[body_start..body_end].trim();
            if body.is_empty() {
                return Err(format!("{} has no action", clause.keyword()));
            }
            if clauses.iter().any(|(c, _)| *c == clause) {
                return Err(format!("{} appears twice", clause.keyword()));
            }
            clauses.push((clause, body.to_string()));
        }
        Ok(UpdateExpression { clauses })
    }

    /// The top-level attributes the expression writes (`SET` targets, `REMOVE`d paths, `ADD` and
    /// `DELETE` targets), placeholders resolved through `names`.
    pub fn targets(&self, names: &HashMap<String, String>) -> Vec<String> {
        let mut out = Vec::new();
        for (clause, body) in &self.clauses {
            for action in split_top_level(body, ',') {
                let path = match clause {
                    Clause::Set => split_top_level(action, '=').into_iter().next(),
                    Clause::Remove => Some(action),
                    Clause::Add | Clause::Delete => action.split_whitespace().next(),
                };
                if let Some(name) = path.and_then(|p| top_attribute(p, names)) {
                    out.push(name);
                }
            }
        }
        out
    }

    /// Adds actions (`a = :b, c = :d` or `a, b`) to a clause, joining the application's.
    pub fn append(&mut self, clause: Clause, actions: &str) {
        match self.clauses.iter_mut().find(|(c, _)| *c == clause) {
            Some((_, body)) => {
                body.push_str(", ");
                body.push_str(actions);
            }
            None => self.clauses.push((clause, actions.to_string())),
        }
    }

    pub fn render(&self) -> String {
        self.clauses
            .iter()
            .map(|(c, body)| format!("{} {body}", c.keyword()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Splits at `sep` outside parentheses and brackets (`list_append(a, :b)` is one action).
pub(crate) fn split_top_level(text: &str, sep: char) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '[' => depth += 1,
            ')' | ']' => depth -= 1,
            _ if c == sep && depth == 0 => {
                parts.push(text[start..i].trim());
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    parts.push(text[start..].trim());
    parts
}

/// The top-level attribute of a document path (`#a.b[2]` → what `#a` stands for).
pub(crate) fn top_attribute(path: &str, names: &HashMap<String, String>) -> Option<String> {
    let head = path
        .trim()
        .split(['.', '['])
        .next()
        .map(str::trim)
        .filter(|h| !h.is_empty())?;
    if head.starts_with('#') {
        names.get(head).cloned()
    } else {
        Some(head.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn splits_clauses_in_any_order_and_case() {
        let e = UpdateExpression::parse(
            "remove old, #list[0]  set a = list_append(a, :x), #set = if_not_exists(#set, :zero) + :one add cnt :one delete tags :t",
        )
        .unwrap();
        assert_eq!(
            e.clauses,
            vec![
                (Clause::Remove, "old, #list[0]".to_string()),
                (
                    Clause::Set,
                    "a = list_append(a, :x), #set = if_not_exists(#set, :zero) + :one".to_string()
                ),
                (Clause::Add, "cnt :one".to_string()),
                (Clause::Delete, "tags :t".to_string()),
            ]
        );
        let n = names(&[("#list", "items"), ("#set", "counter")]);
        assert_eq!(
            e.targets(&n),
            vec!["old", "items", "a", "counter", "cnt", "tags"]
        );
    }

    #[test]
    fn appends_to_existing_clause_or_adds_one() {
        let mut e = UpdateExpression::parse("SET a = :a REMOVE b").unwrap();
        e.append(Clause::Set, "#ferry_ts = :ferry_ts");
        e.append(Clause::Remove, "#ferry_deleted");
        assert_eq!(
            e.render(),
            "SET a = :a, #ferry_ts = :ferry_ts REMOVE b, #ferry_deleted"
        );
        let mut e = UpdateExpression::parse("ADD n :one").unwrap();
        e.append(Clause::Set, "#ferry_ts = :ferry_ts");
        assert_eq!(e.render(), "ADD n :one SET #ferry_ts = :ferry_ts");
        let mut e = UpdateExpression::default();
        e.append(Clause::Set, "x = :x");
        assert_eq!(e.render(), "SET x = :x");
    }

    #[test]
    fn placeholders_and_nested_names_are_not_keywords() {
        let e = UpdateExpression::parse("SET #add = :set, m.#remove = :delete").unwrap();
        assert_eq!(e.clauses.len(), 1);
        let n = names(&[("#add", "add"), ("#remove", "remove")]);
        assert_eq!(e.targets(&n), vec!["add", "m"]);
    }

    #[test]
    fn rejects_what_dynamodb_would() {
        assert!(UpdateExpression::parse("a = :a").is_err());
        assert!(UpdateExpression::parse("SET a = :a SET b = :b").is_err());
        assert!(UpdateExpression::parse("SET").is_err());
        assert!(UpdateExpression::parse("SET a = list_append(a, :b").is_err());
    }

    #[test]
    fn merges_conditions_with_parentheses() {
        let mut p = Parts::from_app(Some(&"a = :a OR b = :b".to_string()), None, None).unwrap();
        p.and("attribute_not_exists(#ferry_deleted)");
        assert_eq!(
            p.condition.as_deref(),
            Some("(a = :a OR b = :b) AND (attribute_not_exists(#ferry_deleted))")
        );
        let clash = names(&[("#ferry_ts", "x")]);
        assert_eq!(
            Parts::from_app(None, Some(&clash), None),
            Err(RequestError::ReservedPlaceholder("#ferry_ts".into()))
        );
    }
}
