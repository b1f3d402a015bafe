//! Parquet files, as the Hugging Face hub publishes SWE-bench (pyarrow, snappy, string
//! columns), read with the parquet crate's record API: each row becomes a JSON object and goes
//! through the same conversion as a JSON row.

use std::collections::HashMap;
use std::panic::{self, AssertUnwindSafe};

use parquet::basic::{LogicalType, TimeUnit};
use parquet::errors::ParquetError;
use parquet::file::reader::{ChunkReader, FileReader, SerializedFileReader};
use parquet::record::{Field, Row};
use parquet::schema::types::SchemaDescriptor;
use serde_json::{Map, Number, Value};

use super::{Error, Location, Rows};

pub(super) fn read(bytes: &[u8], rows: &mut Rows) -> Result<(), Error> {
    let data = bytes.to_vec();
    // The record reader panics on some input (column types it has no conversion for, some
    // damaged files) instead of returning an error; a bad upload must not bring the server down.
    match panic::catch_unwind(AssertUnwindSafe(|| read_rows(data, rows))) {
        Ok(result) => result,
        Err(payload) => {
            let reason = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown reason");
            Err(Error::Parquet(format!("the reader failed: {reason}")))
        }
    }
}

fn read_rows(data: Vec<u8>, rows: &mut Rows) -> Result<(), Error> {
    let reader = SerializedFileReader::new(in_memory(data)).map_err(unreadable)?;
    let timestamps = timestamp_columns(reader.metadata().file_metadata().schema_descr());
    for (index, record) in reader.get_row_iter(None).map_err(unreadable)?.enumerate() {
        let record = record.map_err(|e| Error::Parquet(format!("row {index}: {}", parquet_message(&e))))?;
        let location = Location::Row { index, line: None };
        match record_to_json(&record, &timestamps) {
            Ok(value) => rows.push(location, value),
            Err(e) => rows.problem(location, e.to_string()),
        }
    }
    Ok(())
}

fn in_memory(data: Vec<u8>) -> impl ChunkReader {
    bytes::Bytes::from(data)
}

fn unreadable(error: ParquetError) -> Error {
    Error::Parquet(parquet_message(&error).to_string())
}

/// The error's text without the crate's "Parquet error: " prefix, which the caller says anyway.
fn parquet_message(error: &ParquetError) -> String {
    let text = error.to_string();
    text.strip_prefix("Parquet error: ").map(str::to_string).unwrap_or(text)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Micros,
    Nanos,
}

impl Unit {
    fn per_second(self) -> i64 {
        match self {
            Unit::Millis => 1_000,
            Unit::Micros => 1_000_000,
            Unit::Nanos => 1_000_000_000,
        }
    }

    fn fraction_digits(self) -> usize {
        match self {
            Unit::Millis => 3,
            Unit::Micros => 6,
            Unit::Nanos => 9,
        }
    }
}

/// Top-level timestamp columns and their units. The record API hands nanosecond timestamps
/// (pyarrow's default unit) and timestamps without a UTC flag over as plain integers, so their
/// unit has to come from the schema.
fn timestamp_columns(schema: &SchemaDescriptor) -> HashMap<String, Unit> {
    let unit_of = |column: &parquet::schema::types::ColumnDescriptor| match column.logical_type() {
        Some(LogicalType::Timestamp { unit: TimeUnit::MILLIS(_), .. }) => Some(Unit::Millis),
        Some(LogicalType::Timestamp { unit: TimeUnit::MICROS(_), .. }) => Some(Unit::Micros),
        Some(LogicalType::Timestamp { unit: TimeUnit::NANOS(_), .. }) => Some(Unit::Nanos),
        _ => None,
    };
    schema
        .columns()
        .iter()
        .filter(|column| column.path().parts().len() == 1)
        .filter_map(|column| Some((column.name().to_string(), unit_of(column)?)))
        .collect()
}

/// A value of a row that has no JSON form here.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
enum ValueError {
    #[error("decimal columns are not supported")]
    Decimal,
    #[error("binary value that is not UTF-8 text")]
    NotText,
    #[error("timestamp {0} is outside the years 0000 to 9999")]
    YearOutOfRange(i64),
}

/// A row with a value that has no JSON form, and the column that holds it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("field {column:?}: {source}")]
struct RowError {
    column: String,
    source: ValueError,
}

fn record_to_json(record: &Row, timestamps: &HashMap<String, Unit>) -> Result<Value, RowError> {
    let mut object = Map::new();
    for (name, field) in record.get_column_iter() {
        let value = match (field, timestamps.get(name)) {
            (Field::Long(count), Some(&unit)) => rfc3339(*count, unit).map(Value::String),
            _ => to_json(field),
        };
        object.insert(name.clone(), value.map_err(|source| RowError { column: name.clone(), source })?);
    }
    Ok(Value::Object(object))
}

fn to_json(field: &Field) -> Result<Value, ValueError> {
    let float = |x: f64| Number::from_f64(x).map_or(Value::Null, Value::Number);
    Ok(match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => Value::from(*n),
        Field::Short(n) => Value::from(*n),
        Field::Int(n) => Value::from(*n),
        Field::Long(n) => Value::from(*n),
        Field::UByte(n) => Value::from(*n),
        Field::UShort(n) => Value::from(*n),
        Field::UInt(n) => Value::from(*n),
        Field::ULong(n) => Value::from(*n),
        // JSON has no NaN or infinity; those become null.
        Field::Float16(x) => float(f64::from(*x)),
        Field::Float(x) => float(f64::from(*x)),
        Field::Double(x) => float(*x),
        Field::Decimal(_) => return Err(ValueError::Decimal),
        Field::Str(text) => Value::String(text.clone()),
        Field::Bytes(bytes) => match std::str::from_utf8(bytes.data()) {
            Ok(text) => Value::String(text.to_string()),
            Err(_) => return Err(ValueError::NotText),
        },
        Field::Date(days) => {
            let (year, month, day) = civil_from_days(i64::from(*days));
            Value::String(format!("{year:04}-{month:02}-{day:02}"))
        }
        Field::TimestampMillis(count) => Value::String(rfc3339(*count, Unit::Millis)?),
        Field::TimestampMicros(count) => Value::String(rfc3339(*count, Unit::Micros)?),
        Field::Group(row) => {
            let mut object = Map::new();
            for (name, field) in row.get_column_iter() {
                object.insert(name.clone(), to_json(field)?);
            }
            Value::Object(object)
        }
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(to_json).collect::<Result<_, _>>()?)
        }
        Field::MapInternal(map) => {
            let mut object = Map::new();
            for (key, value) in map.entries() {
                let key = match to_json(key)? {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                object.insert(key, to_json(value)?);
            }
            Value::Object(object)
        }
    })
}

/// A timestamp as RFC 3339 in UTC, the form of SWE-bench's `created_at` strings
/// (`2019-03-20T03:46:18Z`), with a fraction only when there is one.
fn rfc3339(count: i64, unit: Unit) -> Result<String, ValueError> {
    let (seconds, fraction) = (count.div_euclid(unit.per_second()), count.rem_euclid(unit.per_second()));
    let (days, second_of_day) = (seconds.div_euclid(86_400), seconds.rem_euclid(86_400));
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return Err(ValueError::YearOutOfRange(count));
    }
    let (hour, minute, second) = (second_of_day / 3600, second_of_day % 3600 / 60, second_of_day % 60);
    let mut text = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
    if fraction != 0 {
        text += &format!(".{fraction:0width$}", width = unit.fraction_digits());
    }
    text.push('Z');
    Ok(text)
}

/// Days since 1970-01-01 to a (year, month, day) of the proleptic Gregorian calendar; Howard
/// Hinnant's `civil_from_days`, which is exact for every `i64` day count used here.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // March is 0
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 { shifted_month + 3 } else { shifted_month - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::{civil_from_days, rfc3339, Unit};

    #[test]
    fn timestamps_print_as_rfc3339_utc() {
        assert_eq!(rfc3339(1_553_053_578_000, Unit::Millis).unwrap(), "2019-03-20T03:46:18Z");
        assert_eq!(rfc3339(1_553_053_578_000_250, Unit::Micros).unwrap(), "2019-03-20T03:46:18.000250Z");
        assert_eq!(rfc3339(-1, Unit::Nanos).unwrap(), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(rfc3339(951_782_400, Unit::Millis).unwrap(), "1970-01-12T00:23:02.400Z");
        assert!(rfc3339(i64::MAX, Unit::Millis).unwrap_err().to_string().contains("outside the years"));
        assert!(rfc3339(i64::MIN, Unit::Millis).is_err());
    }

    #[test]
    fn leap_days_and_century_years() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(47_540), (2100, 2, 28));
        assert_eq!(civil_from_days(47_541), (2100, 3, 1));
        assert_eq!(civil_from_days(-719_468), (0, 3, 1));
    }
}
