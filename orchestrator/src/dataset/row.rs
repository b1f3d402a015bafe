//! One row object, whatever file it came from, into an [`Instance`].
//!
//! Written by hand rather than derived so that a row reports every bad field at once, each
//! with a message that says what was expected.

use protocol::Instance;
use serde_json::{Map, Value};

use super::json_type;

/// The instance a row describes, or one message per bad field.
pub(super) fn to_instance(row: Value) -> Result<Instance, Vec<String>> {
    let Value::Object(map) = row else {
        return Err(vec![format!("expected an object, got {}", json_type(&row))]);
    };
    let mut fields = Fields { map, problems: Vec::new() };
    let instance = Instance {
        instance_id: fields.required_string("instance_id"),
        repo: fields.required_string("repo"),
        base_commit: fields.required_string("base_commit"),
        patch: fields.required_string("patch"),
        test_patch: fields.required_string("test_patch"),
        problem_statement: fields.required_string("problem_statement"),
        // Often "" in SWE-bench; null is taken to mean the same.
        hints_text: fields.optional_string("hints_text").unwrap_or_default(),
        created_at: fields.optional_string("created_at"),
        version: fields.required_string("version"),
        environment_setup_commit: fields.optional_string("environment_setup_commit"),
        fail_to_pass: fields.test_ids("FAIL_TO_PASS"),
        pass_to_pass: fields.test_ids("PASS_TO_PASS"),
        difficulty: fields.optional_string("difficulty"),
        image: fields.optional_string("image"),
        eval_script: fields.optional_string("eval_script"),
        log_parser: fields.optional_string("log_parser"),
        extra: Default::default(),
    };
    if !fields.problems.is_empty() {
        return Err(fields.problems);
    }
    // Whatever no field above took is kept verbatim.
    Ok(Instance { extra: fields.map.into_iter().collect(), ..instance })
}

/// A row's fields, taken out one by one, and the problems found so far.
struct Fields {
    map: Map<String, Value>,
    problems: Vec<String>,
}

impl Fields {
    fn required_string(&mut self, name: &str) -> String {
        match self.map.remove(name) {
            Some(Value::String(text)) => text,
            Some(other) => self.wrong_type(name, "a string", &other),
            None => self.missing(name),
        }
    }

    /// Missing and null both mean "not given". Versions and commits are never numbers in
    /// SWE-bench, and converting one (3.10 -> "3.1") would be silently wrong, so only strings
    /// are accepted.
    fn optional_string(&mut self, name: &str) -> Option<String> {
        match self.map.remove(name) {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text),
            Some(other) => self.wrong_type(name, "a string or null", &other),
        }
    }

    /// Test ids: a list of strings, or a string holding one JSON-encoded (as on the hub).
    fn test_ids(&mut self, name: &str) -> Vec<String> {
        const EXPECTED: &str = "a list of strings or a string holding a JSON list";
        let list = match self.map.remove(name) {
            None => return self.missing(name),
            Some(Value::Array(items)) => items,
            Some(Value::String(encoded)) => match serde_json::from_str::<Value>(&encoded) {
                Ok(Value::Array(items)) => items,
                Ok(other) => {
                    let message = format!("the string holds {}, expected a JSON list", json_type(&other));
                    return self.bad(name, message);
                }
                Err(error) => {
                    let message = format!("the string is not a JSON list: {error}");
                    return self.bad(name, message);
                }
            },
            Some(other) => return self.wrong_type(name, EXPECTED, &other),
        };
        let mut ids = Vec::with_capacity(list.len());
        for (index, item) in list.into_iter().enumerate() {
            match item {
                Value::String(id) => ids.push(id),
                other => {
                    let message = format!("item {index} is {}, expected a string", json_type(&other));
                    return self.bad(name, message);
                }
            }
        }
        ids
    }

    fn missing<T: Default>(&mut self, name: &str) -> T {
        self.problems.push(format!("missing field {name:?}"));
        T::default()
    }

    fn wrong_type<T: Default>(&mut self, name: &str, expected: &str, got: &Value) -> T {
        self.bad(name, format!("expected {expected}, got {}", json_type(got)))
    }

    fn bad<T: Default>(&mut self, name: &str, message: String) -> T {
        self.problems.push(format!("field {name:?}: {message}"));
        T::default()
    }
}
