//! The harness's JSON files byte for byte: Python's `json.dumps(obj, indent=4)` (4-space
//! indent, `", "`-free item separators, `": "` after keys, `ensure_ascii`), with object keys in
//! the order the harness inserts them.
//!
//! Reports travel through Postgres as `jsonb`, which keeps no key order, so the order is put
//! back here from [`HARNESS_KEY_ORDER`]; keys it does not list (instance ids, the integrity
//! check's note) follow in sorted order, as the harness sorts its id-keyed maps.

use serde_json::Value;

/// Keys of the per-instance `report.json` (`get_eval_report`) and of the summary
/// (`make_run_report`), in the order the harness writes them.
pub const HARNESS_KEY_ORDER: &[&str] = &[
    // report.json
    "patch_is_None",
    "patch_exists",
    "patch_successfully_applied",
    "resolved",
    "infra_failure",
    "infra_failure_reason",
    "tests_status",
    "FAIL_TO_PASS",
    "PASS_TO_PASS",
    "FAIL_TO_FAIL",
    "PASS_TO_FAIL",
    "success",
    "failure",
    // the summary
    "total_instances",
    "submitted_instances",
    "completed_instances",
    "resolved_instances",
    "unresolved_instances",
    "infra_failure_instances",
    "ambiguous_failure_instances",
    "empty_patch_instances",
    "error_instances",
    "completed_ids",
    "incomplete_ids",
    "empty_patch_ids",
    "submitted_ids",
    "resolved_ids",
    "unresolved_ids",
    "infra_failure_ids",
    "ambiguous_failure_ids",
    "failure_reasons",
    "error_ids",
    "schema_version",
    "unstopped_instances",
    "unstopped_containers",
    "unremoved_images",
    // run.json
    "dataset",
    "split",
    "task_repo",
    "created_at",
];

/// `json.dumps(value, indent=4)` with the harness's key order. The harness ends the summary
/// with a newline (`print`) and a report.json without one (`write`); callers add it.
pub fn dumps(value: &Value) -> String {
    dumps_indented(value, 4)
}

/// `json.dumps(value, indent=indent)` with the harness's key order (`run.json` is written with
/// an indent of 2).
pub fn dumps_indented(value: &Value, indent: usize) -> String {
    let mut out = String::new();
    Writer { out: &mut out, indent }.value(value, 0);
    out
}

fn rank(key: &str) -> usize {
    HARNESS_KEY_ORDER.iter().position(|k| *k == key).unwrap_or(HARNESS_KEY_ORDER.len())
}

struct Writer<'a> {
    out: &'a mut String,
    indent: usize,
}

impl Writer<'_> {
    fn newline(&mut self, depth: usize) {
        self.out.push('\n');
        self.out.extend(std::iter::repeat_n(' ', self.indent * depth));
    }

    fn value(&mut self, value: &Value, depth: usize) {
        match value {
            Value::Null => self.out.push_str("null"),
            Value::Bool(b) => self.out.push_str(if *b { "true" } else { "false" }),
            Value::Number(n) => self.out.push_str(&n.to_string()),
            Value::String(s) => write_string(self.out, s),
            Value::Array(items) if items.is_empty() => self.out.push_str("[]"),
            Value::Array(items) => {
                self.out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.newline(depth + 1);
                    self.value(item, depth + 1);
                }
                self.newline(depth);
                self.out.push(']');
            }
            Value::Object(map) if map.is_empty() => self.out.push_str("{}"),
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                // stable: keys the order does not list keep the map's sorted order
                entries.sort_by_key(|(k, _)| rank(k));
                self.out.push('{');
                for (i, (key, item)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.newline(depth + 1);
                    write_string(self.out, key);
                    self.out.push_str(": ");
                    self.value(item, depth + 1);
                }
                self.newline(depth);
                self.out.push('}');
            }
        }
    }
}

/// A JSON string as Python writes it with `ensure_ascii=True`: every character outside ASCII
/// as `\uXXXX` (UTF-16, so a surrogate pair above the BMP).
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_what_python_writes_with_indent_4() {
        // json.dumps({"b": [], "a": {}, "x": [1, "é😀\"\n"], "resolved": True, "patch_is_None": None}, indent=4)
        // with the harness's key order: patch_is_None and resolved first, then a, b, x sorted.
        let v = json!({"b": [], "a": {}, "x": [1, "é😀\"\n"], "resolved": true, "patch_is_None": null});
        let expected = "{\n    \"patch_is_None\": null,\n    \"resolved\": true,\n    \"a\": {},\n    \"b\": [],\n    \"x\": [\n        1,\n        \"\\u00e9\\ud83d\\ude00\\\"\\n\"\n    ]\n}";
        assert_eq!(dumps(&v), expected);
    }

    #[test]
    fn run_metadata_is_written_with_an_indent_of_2() {
        let v = json!({"created_at": "2026-12-07T06:38:27+00:00", "task_repo": null, "split": "test", "dataset": "d.jsonl"});
        let expected = "{\n  \"dataset\": \"d.jsonl\",\n  \"split\": \"test\",\n  \"task_repo\": null,\n  \"created_at\": \"2026-12-07T06:38:27+00:00\"\n}";
        assert_eq!(dumps_indented(&v, 2), expected);
    }

    #[test]
    fn report_keys_come_in_the_harness_order() {
        let v = json!({"i-1": {"tests_status": {"PASS_TO_PASS": {"failure": [], "success": []}, "FAIL_TO_PASS": {"failure": [], "success": []}},
                                "resolved": false, "patch_exists": true, "infra_failure": false}});
        let text = dumps(&v);
        let at = |k: &str| text.find(&format!("\"{k}\"")).unwrap();
        assert!(at("patch_exists") < at("resolved"));
        assert!(at("resolved") < at("infra_failure"));
        assert!(at("infra_failure") < at("tests_status"));
        assert!(at("FAIL_TO_PASS") < at("PASS_TO_PASS"));
        assert!(text.find("\"success\"").unwrap() < text.find("\"failure\"").unwrap());
    }
}
