use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use ::parquet::basic::Compression;
use ::parquet::data_type::{ByteArray, ByteArrayType, Int64Type};
use ::parquet::file::properties::WriterProperties;
use ::parquet::file::writer::SerializedFileWriter;
use ::parquet::schema::parser::parse_message_type;
use serde_json::{json, Value};

use super::{load_path, parse, validate, Error, Format, Problems};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

/// A row shaped like one of SWE-bench Verified on the hub (test lists as encoded strings).
fn hub_row(id: &str) -> Value {
    json!({
        "repo": "psf/requests",
        "instance_id": id,
        "base_commit": COMMIT,
        "patch": "diff --git a/requests/models.py b/requests/models.py\n--- a/requests/models.py\n+++ b/requests/models.py\n@@ -1 +1 @@\n-a\n+b\n",
        "test_patch": "diff --git a/test_requests.py b/test_requests.py\n--- a/test_requests.py\n+++ b/test_requests.py\n@@ -1 +1 @@\n-a\n+b\n",
        "problem_statement": "Session.get ignores the timeout\n",
        "hints_text": "",
        "created_at": "2013-01-24T22:25:26Z",
        "version": "1.1",
        "FAIL_TO_PASS": "[\"test_requests.py::test_timeout\"]",
        "PASS_TO_PASS": "[\"test_requests.py::test_get\", \"test_requests.py::test_post\"]",
        "environment_setup_commit": COMMIT,
    })
}

fn hub_rows(count: usize) -> Vec<Value> {
    (1..=count).map(|n| hub_row(&format!("psf__requests-{n}"))).collect()
}

fn jsonl(rows: &[Value]) -> String {
    rows.iter().map(|row| format!("{row}\n")).collect()
}

fn with(mut row: Value, field: &str, value: Value) -> Value {
    row[field] = value;
    row
}

fn without(mut row: Value, field: &str) -> Value {
    row.as_object_mut().unwrap().remove(field);
    row
}

fn error_text(format: Format, bytes: &[u8]) -> String {
    parse(format, bytes).expect_err("the input should be rejected").to_string()
}

fn temp_file(suffix: &str, bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new().suffix(suffix).tempfile().unwrap();
    file.write_all(bytes).unwrap();
    file
}

/// A Parquet file the way pyarrow writes the hub's: every column an optional UTF-8 string,
/// snappy-compressed; plus any INT64 columns given with their annotation.
fn parquet_file(rows: &[Value], int64_columns: &[(&str, &str, Vec<i64>)]) -> Vec<u8> {
    let names: Vec<String> = rows[0].as_object().unwrap().keys().cloned().collect();
    let mut fields: String =
        names.iter().map(|name| format!("OPTIONAL BYTE_ARRAY {name} (STRING);\n")).collect();
    for (name, annotation, _) in int64_columns {
        fields += &format!("REQUIRED INT64 {name} ({annotation});\n");
    }
    let schema = Arc::new(parse_message_type(&format!("message schema {{\n{fields}}}")).unwrap());
    let properties = WriterProperties::builder().set_compression(Compression::SNAPPY).build();
    let mut buffer = Vec::new();
    let mut writer = SerializedFileWriter::new(&mut buffer, schema, Arc::new(properties)).unwrap();
    let mut group = writer.next_row_group().unwrap();
    for name in &names {
        let cells: Vec<Option<String>> = rows
            .iter()
            .map(|row| match &row[name] {
                Value::Null => None,
                Value::String(text) => Some(text.clone()),
                other => Some(other.to_string()),
            })
            .collect();
        let values: Vec<ByteArray> = cells.iter().flatten().map(|c| c.as_str().into()).collect();
        let levels: Vec<i16> = cells.iter().map(|c| i16::from(c.is_some())).collect();
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<ByteArrayType>().write_batch(&values, Some(&levels), None).unwrap();
        column.close().unwrap();
    }
    for (_, _, values) in int64_columns {
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<Int64Type>().write_batch(values, None, None).unwrap();
        column.close().unwrap();
    }
    group.close().unwrap();
    writer.close().unwrap();
    buffer
}

// ---------------------------------------------------------------- good files

#[test]
fn json_array_takes_test_lists_as_lists_or_encoded_strings() {
    let as_list = with(hub_row("a__b-1"), "FAIL_TO_PASS", json!(["t1", "t2"]));
    let as_list = with(as_list, "PASS_TO_PASS", json!([]));
    let encoded = hub_row("a__b-2");
    let text = serde_json::to_string_pretty(&json!([as_list, encoded])).unwrap();
    let instances = parse(Format::Json, text.as_bytes()).unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(instances[0].fail_to_pass, ["t1", "t2"]);
    assert!(instances[0].pass_to_pass.is_empty());
    assert_eq!(instances[1].fail_to_pass, ["test_requests.py::test_timeout"]);
    assert_eq!(instances[1].pass_to_pass.len(), 2);
    assert_eq!(instances[1].created_at.as_deref(), Some("2013-01-24T22:25:26Z"));
}

#[test]
fn jsonl_file_loads_skipping_blank_lines_and_keeping_extra_fields() {
    let mut first = hub_row("psf__requests-1142");
    first["difficulty"] = json!("<15 min fix");
    first["eval_type"] = json!("pass_and_fail");
    first["hints_text"] = Value::Null;
    let second = without(hub_row("psf__requests-2317"), "created_at");
    let text = format!("{first}\n\n   \r\n{second}\r\n");
    let file = temp_file(".jsonl", text.as_bytes());
    let instances = load_path(file.path()).unwrap();
    assert_eq!(instances.len(), 2);
    assert_eq!(instances[0].difficulty.as_deref(), Some("<15 min fix"));
    assert_eq!(instances[0].extra.get("eval_type"), Some(&json!("pass_and_fail")));
    assert_eq!(instances[0].hints_text, "");
    assert_eq!(instances[1].created_at, None);
    assert!(instances[1].extra.is_empty());
}

#[test]
fn json_file_with_one_row_per_line_reads_as_jsonl() {
    // Hugging Face's `Dataset.to_json("x.json")` writes JSON Lines.
    let file = temp_file(".json", jsonl(&hub_rows(3)).as_bytes());
    assert_eq!(load_path(file.path()).unwrap().len(), 3);
}

#[test]
fn parquet_as_published_on_the_hub_loads() {
    let mut rows = hub_rows(3);
    rows[1]["hints_text"] = Value::Null;
    rows[2]["hints_text"] = json!("see #1141");
    let file = temp_file(".parquet", &parquet_file(&rows, &[]));
    let instances = load_path(file.path()).unwrap();
    assert_eq!(instances.len(), 3);
    assert_eq!(instances[0].instance_id, "psf__requests-1");
    assert_eq!(instances[0].fail_to_pass, ["test_requests.py::test_timeout"]);
    assert_eq!(instances[1].hints_text, "");
    assert_eq!(instances[2].hints_text, "see #1141");
    assert_eq!(instances[2].created_at.as_deref(), Some("2013-01-24T22:25:26Z"));
}

#[test]
fn parquet_timestamp_columns_become_rfc3339_strings() {
    let rows: Vec<Value> = hub_rows(2).into_iter().map(|row| without(row, "created_at")).collect();
    let columns = [
        ("created_at", "TIMESTAMP(MICROS,true)", vec![1_553_053_578_000_000, 1_553_053_578_500_000]),
        // pyarrow's default unit; the record API hands these over as plain integers.
        ("fetched_at", "TIMESTAMP(NANOS,true)", vec![0, 1_000_000_001]),
    ];
    let instances = parse(Format::Parquet, &parquet_file(&rows, &columns)).unwrap();
    assert_eq!(instances[0].created_at.as_deref(), Some("2019-03-20T03:46:18Z"));
    assert_eq!(instances[1].created_at.as_deref(), Some("2019-03-20T03:46:18.500000Z"));
    assert_eq!(instances[0].extra["fetched_at"], json!("1970-01-01T00:00:00Z"));
    assert_eq!(instances[1].extra["fetched_at"], json!("1970-01-01T00:00:01.000000001Z"));
}

#[test]
fn demo_dataset_loads() {
    let text = include_str!("../../../examples/demo-dataset.jsonl");
    let instances = parse(Format::Jsonl, text.as_bytes()).unwrap();
    assert_eq!(instances.len(), 6);
    assert!(instances.iter().all(|i| i.repo == "steerbench/demo" && i.version == "0.1"));
    assert_eq!(instances[0].instance_id, "steerbench__demo-1");
    assert_eq!(instances[5].instance_id, "steerbench__demo-6");
    assert_eq!(instances.iter().filter(|i| i.difficulty.is_some()).count(), 1);
}

// ---------------------------------------------------------------- formats and files

#[test]
fn format_comes_from_the_extension() {
    assert_eq!(Format::from_path(Path::new("a/verified.json")).unwrap(), Format::Json);
    assert_eq!(Format::from_path(Path::new("x.JSONL")).unwrap(), Format::Jsonl);
    assert_eq!(Format::from_path(Path::new("x.ndjson")).unwrap(), Format::Jsonl);
    assert_eq!(Format::from_path(Path::new("test-00000-of-00001.parquet")).unwrap(), Format::Parquet);
    let error = Format::from_path(Path::new("data/test.csv")).unwrap_err();
    assert!(matches!(error, Error::UnknownFormat { .. }));
    assert!(error.to_string().starts_with("data/test.csv: unknown dataset format"), "{error}");
    assert!(Format::from_path(Path::new("noextension")).is_err());
}

#[test]
fn unreadable_file_is_named() {
    let error = load_path(Path::new("/nonexistent/verified.jsonl")).unwrap_err();
    assert!(matches!(error, Error::Read { .. }));
    assert_eq!(error.to_string(), "cannot read /nonexistent/verified.jsonl");
}

#[test]
fn empty_files_are_empty_datasets() {
    assert!(matches!(parse(Format::Jsonl, b""), Err(Error::Empty)));
    assert!(matches!(parse(Format::Jsonl, b"\n  \n"), Err(Error::Empty)));
    assert!(matches!(parse(Format::Json, b" [ ] "), Err(Error::Empty)));
    assert!(matches!(validate(&[]), Err(Error::Empty)));
}

// ---------------------------------------------------------------- bad rows, located

#[test]
fn jsonl_wrong_type_names_line_and_field() {
    let mut rows = hub_rows(20);
    rows[16]["FAIL_TO_PASS"] = json!(5);
    assert_eq!(
        error_text(Format::Jsonl, jsonl(&rows).as_bytes()),
        "line 17: field \"FAIL_TO_PASS\": expected a list of strings or a string holding a JSON list, got a number"
    );
}

#[test]
fn jsonl_missing_field_names_line() {
    let mut rows = hub_rows(4);
    rows[2] = without(rows[2].clone(), "base_commit");
    assert_eq!(error_text(Format::Jsonl, jsonl(&rows).as_bytes()), "line 3: missing field \"base_commit\"");
}

#[test]
fn jsonl_malformed_line_names_line_and_column() {
    let mut text = jsonl(&hub_rows(8));
    text += "{\"instance_id\": \"x\",, }\n";
    assert_eq!(
        error_text(Format::Jsonl, text.as_bytes()),
        "line 9: not valid JSON: key must be a string at column 21"
    );
}

#[test]
fn json_array_bad_row_names_index_and_line() {
    let rows = vec![hub_row("a__b-1"), with(hub_row("a__b-2"), "version", json!(3.1))];
    let text = serde_json::to_string_pretty(&rows).unwrap();
    // Pretty-printed: line 1 is "[", and each row opens with a line "  {".
    let opening_lines: Vec<usize> =
        text.lines().enumerate().filter(|(_, l)| *l == "  {").map(|(i, _)| i + 1).collect();
    assert_eq!(opening_lines[0], 2);
    assert_eq!(
        error_text(Format::Json, text.as_bytes()),
        format!("row 1 (line {}): field \"version\": expected a string, got a number", opening_lines[1])
    );
}

#[test]
fn parquet_bad_row_names_row_and_field() {
    let mut rows = hub_rows(3);
    rows[2]["PASS_TO_PASS"] = json!("test_a, test_b");
    assert_eq!(
        error_text(Format::Parquet, &parquet_file(&rows, &[])),
        "row 2: field \"PASS_TO_PASS\": the string is not a JSON list: expected ident at line 1 column 2"
    );
}

#[test]
fn test_list_problems_say_what_is_wrong() {
    let cases = [
        (json!("{\"a\": 1}"), "field \"FAIL_TO_PASS\": the string holds an object, expected a JSON list"),
        (json!(["ok", 7]), "field \"FAIL_TO_PASS\": item 1 is a number, expected a string"),
        (json!("[\"ok\", null]"), "field \"FAIL_TO_PASS\": item 1 is null, expected a string"),
        (
            Value::Null,
            "field \"FAIL_TO_PASS\": expected a list of strings or a string holding a JSON list, got null",
        ),
    ];
    for (value, expected) in cases {
        let text = jsonl(&[with(hub_row("a__b-1"), "FAIL_TO_PASS", value)]);
        assert_eq!(error_text(Format::Jsonl, text.as_bytes()), format!("line 1: {expected}"));
    }
}

#[test]
fn whole_document_problems() {
    let text = error_text(Format::Json, b"[{\"a\": 1},\n  {\"b\": ]");
    assert_eq!(text, "not valid JSON: expected value at line 2 column 9");
    assert_eq!(error_text(Format::Json, b"42"), "expected a JSON array of rows, got a number");
    assert_eq!(error_text(Format::Json, b"[1]"), "row 0 (line 1): expected an object, got a number");
    assert_eq!(error_text(Format::Jsonl, b"[1, 2]\n"), "line 1: expected an object, got a list");
}

#[test]
fn nothing_partial_and_every_problem_listed() {
    let mut rows = hub_rows(40);
    for row in rows.iter_mut().skip(10).take(25) {
        row["repo"] = json!(null);
    }
    let error = parse(Format::Jsonl, jsonl(&rows).as_bytes()).unwrap_err();
    let Error::BadRows(problems) = &error else { panic!("unexpected error: {error}") };
    assert_eq!(problems.shown.len(), Problems::SHOWN);
    assert_eq!(problems.more, 5);
    let text = error.to_string();
    assert!(text.starts_with("25 problems in the dataset, nothing was imported:\n"), "{text}");
    assert!(text.contains("\n  line 11: field \"repo\": expected a string, got null\n"), "{text}");
    assert!(text.ends_with("\n  ... and 5 more"), "{text}");
}

#[test]
fn one_row_reports_all_its_bad_fields() {
    let row = without(without(hub_row("a__b-1"), "patch"), "version");
    let row = with(row, "hints_text", json!(["not", "text"]));
    let text = error_text(Format::Jsonl, jsonl(&[row]).as_bytes());
    assert!(text.contains("line 1: missing field \"patch\""), "{text}");
    assert!(text.contains("line 1: missing field \"version\""), "{text}");
    assert!(text.contains("line 1: field \"hints_text\": expected a string or null, got a list"), "{text}");
}

// ---------------------------------------------------------------- validation

#[test]
fn duplicate_ids_name_both_places() {
    let rows = vec![hub_row("a__b-1"), hub_row("a__b-2"), hub_row("a__b-1")];
    assert_eq!(
        error_text(Format::Jsonl, jsonl(&rows).as_bytes()),
        "line 3: duplicate instance_id \"a__b-1\" (first at line 1)"
    );
    let instances = parse(Format::Jsonl, jsonl(&rows[..2]).as_bytes()).unwrap();
    let doubled = [instances.clone(), instances].concat();
    assert_eq!(
        validate(&doubled).unwrap_err().to_string(),
        "2 problems in the dataset, nothing was imported:\n  \
         row 2: duplicate instance_id \"a__b-1\" (first at row 0)\n  \
         row 3: duplicate instance_id \"a__b-2\" (first at row 1)"
    );
}

#[test]
fn hostile_instance_ids_are_rejected() {
    let good = parse(Format::Jsonl, jsonl(&hub_rows(1)).as_bytes()).unwrap().remove(0);
    for id in ["../etc", "a b", "x;rm -rf /", "", "..", "-rf", "a\nb", "$(id)", "a/b", "é"] {
        let instance = protocol::Instance { instance_id: id.to_string(), ..good.clone() };
        let text = validate(&[instance]).unwrap_err().to_string();
        assert!(text.starts_with("row 0: field \"instance_id\": "), "{id:?}: {text}");
    }
    let long = protocol::Instance { instance_id: "a".repeat(201), ..good.clone() };
    assert!(validate(&[long]).unwrap_err().to_string().contains("longer than 200"));
    for id in ["django__django-11099", "sphinx-doc__sphinx-8721", "psf__requests-1142", "a.b_c-1"] {
        let instance = protocol::Instance { instance_id: id.to_string(), ..good.clone() };
        validate(&[instance]).unwrap();
    }
}

#[test]
fn repo_and_commits_must_have_their_shapes() {
    let good = parse(Format::Jsonl, jsonl(&hub_rows(1)).as_bytes()).unwrap().remove(0);
    for repo in ["requests", "psf/", "/requests", "psf/requests/x", "../x", "psf/re quests", "./x"] {
        let instance = protocol::Instance { repo: repo.to_string(), ..good.clone() };
        let text = validate(&[instance]).unwrap_err().to_string();
        assert!(text.contains("is not of the form owner/name"), "{repo:?}: {text}");
    }
    for commit in ["", "main", "--upload-pack=x", "0123456", &"a".repeat(65)] {
        let instance = protocol::Instance { base_commit: commit.to_string(), ..good.clone() };
        let result = validate(&[instance]);
        if commit == "0123456" {
            result.unwrap(); // abbreviated ids are fine
        } else {
            assert!(result.unwrap_err().to_string().contains("field \"base_commit\""), "{commit:?}");
        }
    }
    let instance = protocol::Instance { environment_setup_commit: Some("HEAD".into()), ..good };
    assert!(validate(&[instance]).unwrap_err().to_string().contains("\"environment_setup_commit\""));
}

#[test]
fn an_instance_without_failing_tests_is_rejected() {
    let row = with(hub_row("a__b-1"), "FAIL_TO_PASS", json!("[]"));
    assert_eq!(
        error_text(Format::Jsonl, jsonl(&[row]).as_bytes()),
        "line 1: field \"FAIL_TO_PASS\": is empty (an instance needs at least one test its fix makes pass)"
    );
}

// ---------------------------------------------------------------- hostile bytes

#[test]
fn garbage_is_not_parquet() {
    for bytes in [&b""[..], b"PAR1", b"PAR1\0\0\0\0PAR1", b"{\"instance_id\": 1}", &[0xff; 4096]] {
        let error = parse(Format::Parquet, bytes).unwrap_err();
        assert!(matches!(error, Error::Parquet(_)), "{error}");
        assert!(error.to_string().starts_with("not a readable Parquet file: "), "{error}");
    }
}

#[test]
fn damaged_parquet_is_an_error_not_a_panic() {
    let file = parquet_file(&hub_rows(5), &[]);
    for cut in [file.len() - 1, file.len() / 2, 8] {
        assert!(matches!(parse(Format::Parquet, &file[..cut]), Err(Error::Parquet(_))), "cut at {cut}");
    }
    // Flip bytes in the data pages, leaving the footer readable.
    let mut damaged = file.clone();
    for byte in damaged.iter_mut().skip(4).step_by(7).take(200) {
        *byte ^= 0x5a;
    }
    assert!(parse(Format::Parquet, &damaged).is_err());
}

#[test]
fn parquet_reader_panic_becomes_an_error() {
    // The record API has no conversion for TIME columns and panics on them.
    let columns = [("at", "TIME(MICROS,true)", vec![1, 2])];
    let error = parse(Format::Parquet, &parquet_file(&hub_rows(2), &columns)).unwrap_err();
    assert!(error.to_string().starts_with("not a readable Parquet file: the reader failed: "), "{error}");
}

#[test]
fn huge_and_deep_lines_fail_cleanly() {
    let huge = format!("{{\"instance_id\": \"{}\n", "x".repeat(5_000_000));
    let text = error_text(Format::Jsonl, huge.as_bytes());
    assert!(text.starts_with("line 1: not valid JSON: "), "{}", &text[..80]);
    assert!(text.len() < 200, "the message should not echo the line");

    let deep = "[".repeat(100_000);
    assert!(error_text(Format::Jsonl, deep.as_bytes()).contains("recursion limit"));
    assert!(error_text(Format::Json, deep.as_bytes()).contains("recursion limit"));

    let long_id = with(hub_row(&"x".repeat(10_000)), "repo", json!("a b"));
    let text = error_text(Format::Jsonl, jsonl(&[long_id]).as_bytes());
    assert!(text.len() < 600, "ids are shortened in messages: {text}");
}
