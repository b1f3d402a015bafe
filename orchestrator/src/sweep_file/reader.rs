//! A thin reader over toml_edit's spanned tree.
//!
//! Each getter knows the key path and byte span of what it reads, so every error (wrong type,
//! out of range, unknown key, missing key) names the path and the line to fix in one uniform
//! way. Type errors never quote the offending value: a misplaced API key must not reach logs.

use std::fmt::Display;
use std::ops::Range;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{Map, Value as Json};
use toml_edit::{Item, TableLike, Value};

use super::Error;

/// The text being read, to turn byte offsets into line numbers.
pub(super) struct Source<'a> {
    pub text: &'a str,
    pub file: &'a str,
}

impl Source<'_> {
    pub fn error(&self, span: Option<Range<usize>>, message: String) -> Error {
        let line = span.map(|span| {
            let before = &self.text.as_bytes()[..span.start.min(self.text.len())];
            before.iter().filter(|&&b| b == b'\n').count() + 1
        });
        Error { file: self.file.to_owned(), line, message }
    }
}

/// One table of the sweep file: the top level, a `[table]`, an inline table or one `[[array]]`
/// entry.
pub(super) struct Table<'a> {
    src: &'a Source<'a>,
    /// Key path as errors show it: "" for the top level, "agents[0]", "agents[0].price".
    path: String,
    table: &'a dyn TableLike,
    /// Where the table starts, or where the nearest enclosing table with a span starts
    /// (implicit tables such as dotted keys have none).
    span: Option<Range<usize>>,
}

impl<'a> Table<'a> {
    pub fn root(src: &'a Source<'a>, table: &'a toml_edit::Table) -> Self {
        Table { src, path: String::new(), table, span: None }
    }

    /// The key path of `key` in this table.
    pub fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// An error about `key`, on the key's line (or the table's line when the key is absent).
    /// Whether the table has `key` (whatever its value).
    pub fn has(&self, key: &str) -> bool {
        self.table.contains_key(key)
    }

    pub fn err(&self, key: &str, message: impl Display) -> Error {
        self.src.error(self.span_of(key), format!("{}: {message}", self.path(key)))
    }

    fn span_of(&self, key: &str) -> Option<Range<usize>> {
        self.table
            .get_key_value(key)
            .and_then(|(k, item)| k.span().or_else(|| item.span()))
            .or_else(|| self.span.clone())
    }

    /// Rejects every key outside `known`, suggesting the closest known one (typo protection).
    pub fn only(&self, known: &[&str]) -> Result<(), Error> {
        let Some((key, _)) = self.table.iter().find(|(key, _)| !known.contains(key)) else {
            return Ok(());
        };
        let place =
            if self.path.is_empty() { "at the top level".to_owned() } else { format!("in {}", self.path) };
        let hint = match suggest(key, known) {
            Some(close) => format!("; did you mean `{close}`?"),
            None => format!(" (known keys: {})", known.join(", ")),
        };
        Err(self.src.error(self.span_of(key), format!("unknown key `{key}` {place}{hint}")))
    }

    /// `value` if present, or a "missing" error for `key`.
    pub fn required<T>(&self, key: &str, value: Option<T>) -> Result<T, Error> {
        value.ok_or_else(|| self.err(key, "required but missing"))
    }

    /// The plain value at `key`, if any; `what` names the expected type for the error otherwise.
    fn value(&self, key: &str, what: &str) -> Result<Option<&'a Value>, Error> {
        match self.table.get(key) {
            None | Some(Item::None) => Ok(None),
            Some(Item::Value(v)) => Ok(Some(v)),
            Some(_) => Err(self.err(key, format!("expected {what}, found a table"))),
        }
    }

    fn typed<T>(
        &self,
        key: &str,
        what: &str,
        convert: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Result<Option<T>, Error> {
        let Some(value) = self.value(key, what)? else { return Ok(None) };
        match convert(value) {
            Some(v) => Ok(Some(v)),
            None => Err(self.err(key, format!("expected {what}, found {}", type_name(value)))),
        }
    }

    pub fn string(&self, key: &str) -> Result<Option<String>, Error> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// Whether `key` holds a string (for keys that take a word or a table).
    pub fn is_string(&self, key: &str) -> bool {
        matches!(self.table.get(key), Some(Item::Value(Value::String(_))))
    }

    pub fn boolean(&self, key: &str) -> Result<Option<bool>, Error> {
        self.typed(key, "a boolean", Value::as_bool)
    }

    /// A table of string values (e.g. per-instance overrides); absent means empty.
    pub fn string_map(&self, key: &str) -> Result<std::collections::BTreeMap<String, String>, Error> {
        let Some(table) = self.table(key)? else { return Ok(Default::default()) };
        let mut out = std::collections::BTreeMap::new();
        let keys: Vec<String> = table.table.iter().map(|(k, _)| k.to_string()).collect();
        for k in keys {
            let v = table.required(&k, table.string(&k)?)?;
            out.insert(k, v);
        }
        Ok(out)
    }

    /// An array of strings; absent means empty.
    pub fn strings(&self, key: &str) -> Result<Vec<String>, Error> {
        let list = self.typed(key, "an array of strings", |v| {
            v.as_array()?.iter().map(|e| e.as_str().map(str::to_owned)).collect()
        })?;
        Ok(list.unwrap_or_default())
    }

    /// An integer of at least `min` that fits `T`.
    pub fn integer<T: TryFrom<i64>>(&self, key: &str, min: i64) -> Result<Option<T>, Error> {
        let Some(i) = self.typed(key, "an integer", Value::as_integer)? else { return Ok(None) };
        if i < min {
            return Err(self.err(key, format!("must be at least {min} (found {i})")));
        }
        T::try_from(i).map(Some).map_err(|_| self.err(key, format!("{i} is too large")))
    }

    /// A number (integers accepted) for which `ok` holds; `rule` says what `ok` demands.
    pub fn float(&self, key: &str, ok: impl Fn(f64) -> bool, rule: &str) -> Result<Option<f64>, Error> {
        let number =
            self.typed(key, "a number", |v| v.as_float().or_else(|| v.as_integer().map(|i| i as f64)))?;
        match number {
            Some(x) if !ok(x) => Err(self.err(key, format!("must be {rule} (found {x})"))),
            _ => Ok(number),
        }
    }

    /// A non-negative amount of dollars, exact: an integer, a float or a string such as "0.15".
    pub fn money(&self, key: &str) -> Result<Option<Decimal>, Error> {
        let what = "an amount in dollars (a number, or a string such as \"0.15\")";
        let parsed = self.typed(key, what, |v| match v {
            Value::Integer(i) => Some(Ok(Decimal::from(*i.value()))),
            // A float's shortest round-trip text is what the user wrote: 0.15, not 0.1499999….
            Value::Float(f) => Some(Decimal::from_str(&f.value().to_string())),
            Value::String(s) => Some(Decimal::from_str(s.value().trim())),
            _ => None,
        })?;
        let Some(parsed) = parsed else { return Ok(None) };
        let amount = parsed.map_err(|_| self.err(key, format!("expected {what}")))?;
        if amount < Decimal::ZERO {
            return Err(self.err(key, "must not be negative"));
        }
        // One spelling per amount (1.5, not 1.50), so equal sweeps hash equally.
        Ok(Some(amount.normalize()))
    }

    /// The sub-table at `key`, if any.
    pub fn table(&self, key: &str) -> Result<Option<Table<'a>>, Error> {
        let Some(item) = self.table.get(key) else { return Ok(None) };
        match item.as_table_like() {
            // The key's span, since tables made by dotted keys (`price.input_per_mtok = 1`) have none.
            Some(table) => Ok(Some(self.child(self.path(key), table, self.span_of(key)))),
            None => Err(self.err(key, format!("expected a table, found {}", item_type_name(item)))),
        }
    }

    /// The entries of `[[key]]` (or of an inline array of inline tables); absent means none.
    pub fn tables(&self, key: &str) -> Result<Vec<Table<'a>>, Error> {
        let path = self.path(key);
        let expected = || self.err(key, format!("expected an array of tables (`[[{key}]]`)"));
        match self.table.get(key) {
            None | Some(Item::None) => Ok(Vec::new()),
            Some(Item::ArrayOfTables(array)) => Ok(array
                .iter()
                .enumerate()
                .map(|(i, t)| self.child(format!("{path}[{i}]"), t, t.span()))
                .collect()),
            Some(Item::Value(Value::Array(array))) => array
                .iter()
                .enumerate()
                .map(|(i, v)| match v.as_inline_table() {
                    Some(t) => Ok(self.child(format!("{path}[{i}]"), t, v.span())),
                    None => Err(expected()),
                })
                .collect(),
            Some(_) => Err(expected()),
        }
    }

    fn child(&self, path: String, table: &'a dyn TableLike, span: Option<Range<usize>>) -> Table<'a> {
        Table { src: self.src, path, table, span: span.or_else(|| self.span.clone()) }
    }

    /// The keys outside `known` as a JSON object, kept as given (kind-specific parameters).
    pub fn others_as_json(&self, known: &[&str]) -> Result<Map<String, Json>, Error> {
        let mut map = Map::new();
        for (key, item) in self.table.iter().filter(|(key, _)| !known.contains(key)) {
            let json = item_json(item)
                .ok_or_else(|| self.err(key, "NaN and infinity cannot be kept as parameters"))?;
            map.insert(key.to_owned(), json);
        }
        Ok(map)
    }
}

/// TOML as JSON; None for NaN and infinity, which JSON cannot hold. Datetimes become strings.
fn item_json(item: &Item) -> Option<Json> {
    match item {
        Item::None => Some(Json::Null),
        Item::Value(v) => value_json(v),
        Item::Table(t) => table_json(t),
        Item::ArrayOfTables(a) => a.iter().map(|t| table_json(t)).collect::<Option<_>>().map(Json::Array),
    }
}

fn value_json(value: &Value) -> Option<Json> {
    Some(match value {
        Value::String(s) => Json::String(s.value().clone()),
        Value::Integer(i) => Json::from(*i.value()),
        Value::Float(f) => Json::Number(serde_json::Number::from_f64(*f.value())?),
        Value::Boolean(b) => Json::Bool(*b.value()),
        Value::Datetime(d) => Json::String(d.value().to_string()),
        Value::Array(a) => Json::Array(a.iter().map(value_json).collect::<Option<_>>()?),
        Value::InlineTable(t) => table_json(t)?,
    })
}

fn table_json(table: &dyn TableLike) -> Option<Json> {
    let map = table.iter().map(|(k, v)| Some((k.to_owned(), item_json(v)?)));
    map.collect::<Option<Map<_, _>>>().map(Json::Object)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::String(_) => "a string",
        Value::Integer(_) => "an integer",
        Value::Float(_) => "a float",
        Value::Boolean(_) => "a boolean",
        Value::Datetime(_) => "a date-time",
        Value::Array(_) => "an array",
        Value::InlineTable(_) => "a table",
    }
}

fn item_type_name(item: &Item) -> &'static str {
    match item {
        Item::Value(v) => type_name(v),
        Item::ArrayOfTables(_) => "an array of tables",
        Item::None | Item::Table(_) => "a table",
    }
}

/// The known key closest to `key`, if it is close enough to be a typo of it.
pub(super) fn suggest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&key, k), *k))
        .filter(|&(distance, k)| distance <= (k.len() / 3).max(1))
        .min_by_key(|&(distance, _)| distance)
        .map(|(_, k)| k)
}

/// Levenshtein distance with adjacent transpositions counting as one edit ("nmae" is one
/// edit from "name").
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: distance between the first i chars of a and the first j chars of b.
    let mut d: Vec<Vec<usize>> = (0..=a.len()).map(|i| vec![i; b.len() + 1]).collect();
    d[0] = (0..=b.len()).collect();
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1).min(d[i][j - 1] + 1).min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[a.len()][b.len()]
}
