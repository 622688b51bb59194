//! Message matchers: which messages reach a plugin.
//!
//! Heka gave each filter a `message_matcher` expression and sent it nothing without one.
//! Corral keeps the default — no matcher, no messages — and makes the matcher a few
//! declarative conditions in the sidecar, all of which must hold:
//!
//! ```toml
//! [matcher]
//! type = ["nginx.access", "apache.*"]  # one name or a list; `prefix*` matches a prefix
//! logger = "web-*"
//! max-severity = 4                      # severity 0..=4: warning or worse
//!
//! [matcher.fields]
//! status = { min = 500, max = 599 }     # numeric range (ints and floats), inclusive
//! method = "POST"                       # equality: a string, number or bool
//! user = { exists = true }              # present, whatever its value
//! ```
//!
//! `[matcher] all = true` matches every message. Matching allocates nothing and reads
//! each field once: a list of names and a few comparisons per message.

use std::collections::BTreeMap;

use serde::Deserialize;

use corral::{Message, Value};

/// Which messages reach a plugin. Every condition given must hold.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Matcher {
    /// Match every message, whatever the other conditions say.
    #[serde(default)]
    pub all: bool,
    /// The message type must be one of these (`prefix*` matches a prefix).
    #[serde(default, rename = "type")]
    pub types: Names,
    /// The logger must be one of these (`prefix*` matches a prefix).
    #[serde(default)]
    pub logger: Names,
    /// The severity must be at most this (0 is the most severe).
    pub max_severity: Option<i32>,
    /// Conditions on fields, by field name.
    #[serde(default)]
    pub fields: BTreeMap<String, FieldCondition>,
}

/// A list of accepted names; empty accepts any.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Names(pub Vec<String>);

impl<'de> Deserialize<'de> for Names {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Names, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a name or a list of names")]
        enum OneOrMany {
            One(String),
            Many(Vec<String>),
        }
        Ok(match OneOrMany::deserialize(d)? {
            OneOrMany::One(name) => Names(vec![name]),
            OneOrMany::Many(names) => Names(names),
        })
    }
}

impl Names {
    fn accepts(&self, value: &str) -> bool {
        self.0.is_empty()
            || self.0.iter().any(|name| match name.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => value == name,
            })
    }
}

/// A condition on one field.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(
    untagged,
    expecting = "a string, number or bool to equal, or a table with min, max or exists"
)]
pub enum FieldCondition {
    /// The field must be a number in this inclusive range (either bound optional), or
    /// exist (or not) when `exists` is given.
    Test {
        /// The least value accepted.
        min: Option<f64>,
        /// The greatest value accepted.
        max: Option<f64>,
        /// Whether the field must be present (`true`) or absent (`false`).
        exists: Option<bool>,
    },
    /// The field must be this boolean.
    Bool(bool),
    /// The field must be this integer (or a float equal to it).
    Int(i64),
    /// The field must be this number.
    Float(f64),
    /// The field must be this string.
    String(String),
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Int(i) => Some(*i as f64),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

impl FieldCondition {
    fn accepts(&self, value: Option<&Value>) -> bool {
        match (self, value) {
            (FieldCondition::Test { min, max, exists }, value) => {
                if let Some(exists) = exists
                    && value.is_some() != *exists
                {
                    return false;
                }
                if min.is_none() && max.is_none() {
                    return exists.is_some() || value.is_some();
                }
                let Some(n) = value.and_then(number) else {
                    return false;
                };
                min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)
            }
            (_, None) => false,
            (FieldCondition::Bool(want), Some(Value::Bool(got))) => want == got,
            (FieldCondition::String(want), Some(Value::String(got))) => want == got,
            (FieldCondition::Int(want), Some(value)) => number(value) == Some(*want as f64),
            (FieldCondition::Float(want), Some(value)) => number(value) == Some(*want),
            _ => false,
        }
    }
}

impl Matcher {
    /// A matcher that accepts every message.
    pub fn all() -> Matcher {
        Matcher {
            all: true,
            ..Matcher::default()
        }
    }

    /// Whether `message` reaches the plugin.
    pub fn matches(&self, message: &Message) -> bool {
        self.all
            || (self.types.accepts(&message.type_)
                && self.logger.accepts(&message.logger)
                && self.max_severity.is_none_or(|max| message.severity <= max)
                && self
                    .fields
                    .iter()
                    .all(|(name, condition)| condition.accepts(message.field(name))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Matcher {
        toml::from_str(text).unwrap()
    }

    fn access(status: i64) -> Message {
        Message {
            logger: "web-1".into(),
            severity: 3,
            ..Message::new("nginx.access")
        }
        .with_field("status", Value::Int(status))
        .with_field("method", Value::String("POST".into()))
    }

    #[test]
    fn every_condition_must_hold() {
        let m = parse(
            r#"
            type = ["nginx.access", "apache.*"]
            logger = "web-*"
            max-severity = 4
            [fields]
            status = { min = 500, max = 599 }
            method = "POST"
            "#,
        );
        assert!(m.matches(&access(503)));
        assert!(!m.matches(&access(200)), "status out of range");
        assert!(
            !m.matches(&Message {
                severity: 6,
                ..access(503)
            }),
            "not severe enough"
        );
        assert!(!m.matches(&Message {
            logger: "db".into(),
            ..access(503)
        }));
        assert!(m.matches(&Message {
            type_: "apache.error".into(),
            ..access(503)
        }));
        assert!(!m.matches(&Message {
            type_: "nginx.error".into(),
            ..access(503)
        }));
    }

    #[test]
    fn field_conditions_compare_by_type() {
        let m = parse("[fields]\nstatus = 200\nuser = { exists = true }\ngone = { exists = false }\n");
        let with_user = access(200).with_field("user", Value::String("ann".into()));
        assert!(m.matches(&with_user));
        assert!(!m.matches(&access(200)), "user is missing");
        assert!(!m.matches(&with_user.clone().with_field("gone", Value::Bool(true))));
        let m = parse("[fields]\nstatus = \"200\"\n");
        assert!(!m.matches(&access(200)), "a string does not equal an int");
    }

    #[test]
    fn an_empty_matcher_matches_any_message_and_all_matches_everything() {
        assert!(Matcher::default().matches(&Message::new("anything")));
        assert!(Matcher::all().matches(&Message::new("")));
    }

    #[test]
    fn a_bad_matcher_says_what_it_expected() {
        let error = toml::from_str::<Matcher>("[fields]\nx = [1]\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("a table with min, max or exists"), "{error}");
        let error = toml::from_str::<Matcher>("typ = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.contains("unknown field `typ`"), "{error}");
    }
}
