//! Bad input, tried on purpose: arbitrary bytes and near-valid text into every parser of a
//! format we accept (dataset files, predictions files, sweep files). Each must return a clear
//! error or a value, never panic. Bounded: a few hundred cases each, so CI stays fast.

use orchestrator::{dataset, predictions, sweep_file};
use proptest::prelude::*;

const SWEEP: &str = include_str!("../../examples/agent-sweep.toml");
const DATASET_LINE: &str = include_str!("../../examples/demo-dataset.jsonl");

/// A valid text with a span replaced by arbitrary bytes, cut, or duplicated.
fn mangled(base: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let n = base.len();
    (0..n, 0..64usize, proptest::collection::vec(any::<u8>(), 0..64), 0..3u8).prop_map(
        move |(at, len, junk, how)| {
            let bytes = base.as_bytes();
            let end = (at + len).min(n);
            match how {
                0 => [&bytes[..at], &junk[..], &bytes[end..]].concat(),
                1 => bytes[..at].to_vec(),
                _ => [&bytes[..end], &bytes[at..]].concat(),
            }
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn dataset_parsers_never_panic(bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mangled(DATASET_LINE)]) {
        for format in [dataset::Format::Json, dataset::Format::Jsonl, dataset::Format::Parquet] {
            if let Err(e) = dataset::parse(format, &bytes) {
                prop_assert!(!e.to_string().is_empty());
            }
        }
    }

    #[test]
    fn sweep_files_never_panic(bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mangled(SWEEP)]) {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = sweep_file::parse(&text, "fuzz.toml") {
            prop_assert!(e.to_string().starts_with("fuzz.toml"), "{e}");
        }
    }

    #[test]
    fn predictions_never_panic(bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..512), mangled(r#"{"instance_id": "a__b-1", "model_name_or_path": "m", "model_patch": "diff --git a/x b/x"}"#)]) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = predictions::parse_jsonl(&text, "p.jsonl");
        let _ = predictions::parse_json(&text, "p.json");
    }
}

#[test]
fn hostile_instance_ids_are_refused() {
    for id in ["../etc/passwd__x-1", "a/b__c-1", "x__y-1; rm -rf /", "x__y-1`id`", "x__y-1$(id)", "x__y\n-1"]
    {
        let line =
            DATASET_LINE.lines().next().unwrap().replacen("steerbench__demo-1", &id.replace('\n', "\\n"), 1);
        let err = dataset::parse(dataset::Format::Jsonl, line.as_bytes());
        assert!(err.is_err(), "{id:?} was accepted");
    }
}
