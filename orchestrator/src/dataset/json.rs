//! Splitting JSON and JSON Lines files into located row objects.

use serde_json::Value;

use super::{json_type, Error, Location, Rows};

/// A `.json` file: a top-level array of rows. A file starting with `{` is read as JSON Lines,
/// because that is what Hugging Face's `Dataset.to_json` writes under a `.json` name.
pub(super) fn read_json(bytes: &[u8], rows: &mut Rows) -> Result<(), Error> {
    let bytes = strip_bom(bytes);
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        read_lines(bytes, rows);
        return Ok(());
    }
    let document: Value = serde_json::from_slice(bytes).map_err(|e| Error::Json(e.to_string()))?;
    let Value::Array(values) = document else {
        return Err(Error::NotAnArray(json_type(&document)));
    };
    // The document is valid JSON, so the scan below finds exactly one line per element.
    let lines = element_lines(bytes);
    for (index, value) in values.into_iter().enumerate() {
        rows.push(Location::Row { index, line: lines.get(index).copied() }, value);
    }
    Ok(())
}

/// A JSON Lines file: one row object per line; blank lines are skipped.
pub(super) fn read_lines(bytes: &[u8], rows: &mut Rows) {
    for (index, line) in strip_bom(bytes).split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let location = Location::Line(index + 1);
        match serde_json::from_slice::<Value>(line) {
            Ok(value) => rows.push(location, value),
            Err(error) => rows.problem(location, format!("not valid JSON: {}", column_only(&error))),
        }
    }
}

/// serde_json says "at line 1 column 5" of the single line it was given; only the column means
/// anything to the user, who is told the file's line separately.
fn column_only(error: &serde_json::Error) -> String {
    let message = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    match message.strip_suffix(&position) {
        Some(bare) => format!("{bare} at column {}", error.column()),
        None => message,
    }
}

/// Editors on Windows save UTF-8 with a byte order mark, which serde_json rejects.
fn strip_bom(bytes: &[u8]) -> &[u8] {
    bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes)
}

/// The 1-based line on which each element of the top-level array starts. `bytes` must be valid
/// JSON: the scan only tracks strings and nesting depth, which is enough for valid input and
/// far cheaper than a second, position-aware parse.
fn element_lines(bytes: &[u8]) -> Vec<usize> {
    let mut lines = Vec::new();
    let mut line = 1;
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut element_expected = false;
    for &byte in bytes {
        if in_string {
            // Valid JSON strings hold no raw newlines, so none are missed here.
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        if byte == b'\n' {
            line += 1;
        }
        if byte.is_ascii_whitespace() {
            continue;
        }
        if element_expected && byte != b']' {
            lines.push(line);
        }
        element_expected = false;
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                element_expected = depth == 1;
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            b',' => element_expected = depth == 1,
            _ => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::element_lines;

    #[test]
    fn element_lines_follow_the_top_level_array_only() {
        let text = "[\n  {\"a\": [1,\n 2], \"b\": \"x,]\\\"{\"},\n\n  {}, 3\n]";
        assert_eq!(element_lines(text.as_bytes()), vec![2, 5, 5]);
        assert_eq!(element_lines(b"[ ]"), Vec::<usize>::new());
    }
}
