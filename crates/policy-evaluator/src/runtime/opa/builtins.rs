//! Rego built-in functions the OPA compiler leaves to the host: the ones Kubewarden and
//! Gatekeeper policies use (the string, time, regex, semver, YAML and encoding families).
//! Arguments and results are JSON; an `Err` makes the calling expression undefined.

use base64::Engine as _;
use serde_json::{Value, json};

use super::sprintf;

/// What a built-in may know about its caller.
#[derive(Debug)]
pub(crate) struct Context<'a> {
    pub(crate) policy: &'a str,
}

type Run = fn(&Context<'_>, &[Value]) -> Result<Value, String>;

/// A built-in function by its Rego name.
#[derive(Clone, Copy)]
pub(crate) struct Builtin {
    pub(crate) name: &'static str,
    pub(crate) run: Run,
}

impl std::fmt::Debug for Builtin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "sprintf",
        run: |_, args| sprintf_builtin(args),
    },
    Builtin {
        name: "trace",
        run: trace,
    },
    Builtin {
        name: "internal.print",
        run: print,
    },
    Builtin {
        name: "opa.runtime",
        run: |_, _| Ok(json!({})),
    },
    Builtin {
        name: "time.now_ns",
        run: |_, _| now_ns(),
    },
    Builtin {
        name: "time.parse_rfc3339_ns",
        run: |_, args| parse_rfc3339_ns(args),
    },
    Builtin {
        name: "time.date",
        run: |_, args| date(args),
    },
    Builtin {
        name: "time.clock",
        run: |_, args| clock(args),
    },
    Builtin {
        name: "time.weekday",
        run: |_, args| weekday(args),
    },
    Builtin {
        name: "regex.split",
        run: |_, args| regex_split(args),
    },
    Builtin {
        name: "regex.find_n",
        run: |_, args| regex_find_n(args),
    },
    Builtin {
        name: "regex.replace",
        run: |_, args| regex_replace(args),
    },
    Builtin {
        name: "semver.is_valid",
        run: |_, args| Ok(Value::Bool(semver_of(arg(args, 0)?).is_ok())),
    },
    Builtin {
        name: "semver.compare",
        run: |_, args| semver_compare(args),
    },
    Builtin {
        name: "yaml.marshal",
        run: |_, args| yaml_marshal(args),
    },
    Builtin {
        name: "yaml.unmarshal",
        run: |_, args| yaml_unmarshal(args),
    },
    Builtin {
        name: "yaml.is_valid",
        run: |_, args| Ok(Value::Bool(yaml_unmarshal(args).is_ok())),
    },
    Builtin {
        name: "hex.encode",
        run: |_, args| Ok(Value::String(hex_encode(string(args, 0)?.as_bytes()))),
    },
    Builtin {
        name: "hex.decode",
        run: |_, args| hex_decode(string(args, 0)?),
    },
    Builtin {
        name: "base64url.encode_no_pad",
        run: |_, args| {
            Ok(Value::String(
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(string(args, 0)?),
            ))
        },
    },
    Builtin {
        name: "urlquery.encode",
        run: |_, args| Ok(Value::String(query_escape(string(args, 0)?))),
    },
    Builtin {
        name: "urlquery.decode",
        run: |_, args| query_unescape(string(args, 0)?).map(Value::String),
    },
    Builtin {
        name: "urlquery.encode_object",
        run: |_, args| urlquery_encode_object(args),
    },
    Builtin {
        name: "urlquery.decode_object",
        run: |_, args| urlquery_decode_object(args),
    },
    Builtin {
        name: "json.patch",
        run: |_, args| json_patch_builtin(args),
    },
    Builtin {
        name: "strings.any_prefix_match",
        run: |_, args| any_match(args, |s, p| s.starts_with(p)),
    },
    Builtin {
        name: "strings.any_suffix_match",
        run: |_, args| any_match(args, |s, p| s.ends_with(p)),
    },
    Builtin {
        name: "strings.count",
        run: |_, args| strings_count(args),
    },
    Builtin {
        name: "units.parse_bytes",
        run: |_, args| units_parse_bytes(string(args, 0)?),
    },
    Builtin {
        name: "units.parse",
        run: |_, args| units_parse(string(args, 0)?),
    },
];

/// The host's implementation of `name`, if it has one.
pub(crate) fn lookup(name: &str) -> Option<Builtin> {
    BUILTINS
        .iter()
        .find(|builtin| builtin.name == name)
        .copied()
}

fn arg(args: &[Value], index: usize) -> Result<&Value, String> {
    args.get(index)
        .ok_or_else(|| format!("operand {} is missing", index + 1))
}

fn string(args: &[Value], index: usize) -> Result<&str, String> {
    arg(args, index)?
        .as_str()
        .ok_or_else(|| format!("operand {} must be a string", index + 1))
}

fn integer(args: &[Value], index: usize) -> Result<i64, String> {
    arg(args, index)?
        .as_i64()
        .ok_or_else(|| format!("operand {} must be an integer", index + 1))
}

fn sprintf_builtin(args: &[Value]) -> Result<Value, String> {
    let format = string(args, 0)?;
    let values = arg(args, 1)?
        .as_array()
        .ok_or("operand 2 must be an array")?;
    Ok(Value::String(sprintf::sprintf(format, values)))
}

fn trace(context: &Context<'_>, args: &[Value]) -> Result<Value, String> {
    tracing::debug!(policy = context.policy, note = %string(args, 0)?, "Rego trace");
    Ok(Value::Bool(true))
}

/// `print(a, b, ...)`: each operand arrives as the set of its values (empty when undefined).
fn print(context: &Context<'_>, args: &[Value]) -> Result<Value, String> {
    let operands = arg(args, 0)?
        .as_array()
        .ok_or("operand 1 must be an array")?;
    let line = operands
        .iter()
        .map(|values| match values.as_array().map(Vec::as_slice) {
            Some([]) | None => "<undefined>".to_string(),
            Some(values) => values
                .iter()
                .map(|value| match value {
                    Value::String(text) => text.clone(),
                    other => sprintf::rego_string(other),
                })
                .collect::<Vec<_>>()
                .join(", "),
        })
        .collect::<Vec<_>>()
        .join(" ");
    tracing::info!(policy = context.policy, "{line}");
    Ok(Value::Bool(true))
}

fn now_ns() -> Result<Value, String> {
    let now = jiff::Timestamp::now().as_nanosecond();
    i64::try_from(now)
        .map(Value::from)
        .map_err(|_| "the time is out of range".to_string())
}

fn parse_rfc3339_ns(args: &[Value]) -> Result<Value, String> {
    let timestamp: jiff::Timestamp = string(args, 0)?
        .parse()
        .map_err(|e| format!("not an RFC 3339 time: {e}"))?;
    i64::try_from(timestamp.as_nanosecond())
        .map(Value::from)
        .map_err(|_| "the time is out of range".to_string())
}

/// The civil time of `ns` or `[ns, "UTC"]` (only UTC is known here).
fn civil(args: &[Value]) -> Result<jiff::civil::DateTime, String> {
    let (nanos, zone) = match arg(args, 0)? {
        Value::Array(pair) => (
            pair.first().and_then(Value::as_i64),
            pair.get(1).and_then(Value::as_str).unwrap_or("UTC"),
        ),
        other => (other.as_i64(), "UTC"),
    };
    let nanos = nanos.ok_or("operand 1 must be nanoseconds or [nanoseconds, timezone]")?;
    if !matches!(zone, "" | "UTC") {
        return Err(format!("time zone {zone:?} is not supported, only UTC"));
    }
    let timestamp =
        jiff::Timestamp::from_nanosecond(i128::from(nanos)).map_err(|e| e.to_string())?;
    Ok(timestamp.to_zoned(jiff::tz::TimeZone::UTC).datetime())
}

fn date(args: &[Value]) -> Result<Value, String> {
    let time = civil(args)?;
    Ok(json!([time.year(), time.month(), time.day()]))
}

fn clock(args: &[Value]) -> Result<Value, String> {
    let time = civil(args)?;
    Ok(json!([time.hour(), time.minute(), time.second()]))
}

fn weekday(args: &[Value]) -> Result<Value, String> {
    let name = match civil(args)?.weekday() {
        jiff::civil::Weekday::Monday => "Monday",
        jiff::civil::Weekday::Tuesday => "Tuesday",
        jiff::civil::Weekday::Wednesday => "Wednesday",
        jiff::civil::Weekday::Thursday => "Thursday",
        jiff::civil::Weekday::Friday => "Friday",
        jiff::civil::Weekday::Saturday => "Saturday",
        jiff::civil::Weekday::Sunday => "Sunday",
    };
    Ok(Value::String(name.into()))
}

fn regex(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(pattern).map_err(|e| format!("invalid regular expression: {e}"))
}

fn regex_split(args: &[Value]) -> Result<Value, String> {
    let pattern = regex(string(args, 0)?)?;
    Ok(json!(pattern.split(string(args, 1)?).collect::<Vec<_>>()))
}

fn regex_find_n(args: &[Value]) -> Result<Value, String> {
    let pattern = regex(string(args, 0)?)?;
    let text = string(args, 1)?;
    let found = pattern.find_iter(text).map(|m| m.as_str());
    // Go's convention: a negative count means all matches.
    let found: Vec<&str> = match usize::try_from(integer(args, 2)?) {
        Ok(limit) => found.take(limit).collect(),
        Err(_) => found.collect(),
    };
    Ok(json!(found))
}

fn regex_replace(args: &[Value]) -> Result<Value, String> {
    let text = string(args, 0)?;
    let pattern = regex(string(args, 1)?)?;
    let replacement = string(args, 2)?;
    Ok(Value::String(
        pattern.replace_all(text, replacement).into_owned(),
    ))
}

fn semver_of(value: &Value) -> Result<semver::Version, String> {
    let text = value.as_str().ok_or("a version must be a string")?;
    semver::Version::parse(text).map_err(|e| format!("{text:?} is not a semantic version: {e}"))
}

fn semver_compare(args: &[Value]) -> Result<Value, String> {
    let (a, b) = (semver_of(arg(args, 0)?)?, semver_of(arg(args, 1)?)?);
    // Semantic versioning ignores build metadata when comparing; `semver::Version`'s Ord does
    // not, so compare without it.
    let order = (&a.major, &a.minor, &a.patch, &a.pre).cmp(&(&b.major, &b.minor, &b.patch, &b.pre));
    Ok(json!(order as i8))
}

fn yaml_marshal(args: &[Value]) -> Result<Value, String> {
    serde_yaml_ng::to_string(arg(args, 0)?)
        .map(Value::String)
        .map_err(|e| e.to_string())
}

fn yaml_unmarshal(args: &[Value]) -> Result<Value, String> {
    serde_yaml_ng::from_str::<Value>(string(args, 0)?).map_err(|e| e.to_string())
}

fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn hex_decode(text: &str) -> Result<Value, String> {
    if !text.len().is_multiple_of(2) {
        return Err("odd number of hex digits".into());
    }
    let bytes = (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("invalid hex at offset {i}"))
        })
        .collect::<Result<Vec<u8>, String>>()?;
    String::from_utf8(bytes)
        .map(Value::String)
        .map_err(|_| "the decoded bytes are not UTF-8".to_string())
}

/// Go's `url.QueryEscape`: letters, digits and `-_.~` stay, a space becomes `+`.
fn query_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                escaped.push(char::from(byte));
            }
            b' ' => escaped.push('+'),
            other => escaped.push_str(&format!("%{other:02X}")),
        }
    }
    escaped
}

/// Go's `url.QueryUnescape`.
fn query_unescape(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => decoded.push(b' '),
            b'%' => {
                let byte = text
                    .get(i + 1..i + 3)
                    .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                    .ok_or_else(|| format!("invalid URL escape at offset {i}"))?;
                decoded.push(byte);
                i += 2;
            }
            other => decoded.push(other),
        }
        i += 1;
    }
    String::from_utf8(decoded).map_err(|_| "the decoded bytes are not UTF-8".to_string())
}

fn urlquery_encode_object(args: &[Value]) -> Result<Value, String> {
    let object = arg(args, 0)?
        .as_object()
        .ok_or("operand 1 must be an object")?;
    let mut pairs = Vec::new();
    for (key, value) in object {
        let values: Vec<&str> = match value {
            Value::String(text) => vec![text.as_str()],
            Value::Array(items) => items
                .iter()
                .map(|item| item.as_str().ok_or("values must be strings"))
                .collect::<Result<_, _>>()?,
            _ => return Err("values must be strings or arrays of strings".into()),
        };
        for value in values {
            pairs.push(format!("{}={}", query_escape(key), query_escape(value)));
        }
    }
    Ok(Value::String(pairs.join("&")))
}

fn urlquery_decode_object(args: &[Value]) -> Result<Value, String> {
    let mut object = serde_json::Map::new();
    for pair in string(args, 0)?.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let values = object
            .entry(query_unescape(key)?)
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(values) = values {
            values.push(Value::String(query_unescape(value)?));
        }
    }
    Ok(Value::Object(object))
}

fn json_patch_builtin(args: &[Value]) -> Result<Value, String> {
    let mut document = arg(args, 0)?.clone();
    let patch: json_patch::Patch =
        serde_json::from_value(arg(args, 1)?.clone()).map_err(|e| format!("invalid patch: {e}"))?;
    json_patch::patch(&mut document, &patch).map_err(|e| e.to_string())?;
    Ok(document)
}

/// Strings of an operand that is a string or an array of strings.
fn strings_of(value: &Value) -> Result<Vec<&str>, String> {
    match value {
        Value::String(text) => Ok(vec![text]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().ok_or_else(|| "expected strings".to_string()))
            .collect(),
        _ => Err("expected a string or an array of strings".into()),
    }
}

fn any_match(args: &[Value], matches: fn(&str, &str) -> bool) -> Result<Value, String> {
    let texts = strings_of(arg(args, 0)?)?;
    let affixes = strings_of(arg(args, 1)?)?;
    Ok(Value::Bool(texts.iter().any(|text| {
        affixes.iter().any(|affix| matches(text, affix))
    })))
}

fn strings_count(args: &[Value]) -> Result<Value, String> {
    let (text, needle) = (string(args, 0)?, string(args, 1)?);
    let count = if needle.is_empty() {
        text.chars().count() + 1
    } else {
        text.matches(needle).count()
    };
    Ok(json!(count))
}

/// Splits `"10Gi"` into its number and unit.
fn number_and_unit(text: &str) -> Result<(f64, String), String> {
    let text = text.trim().trim_matches('"');
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} does not start with a number"))?;
    Ok((number, unit.trim().to_string()))
}

/// An integral result as an integer, anything else as a float.
fn number_value(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn units_parse_bytes(text: &str) -> Result<Value, String> {
    let (number, unit) = number_and_unit(text)?;
    let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "ki" | "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mi" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gi" | "gib" => 1024.0_f64.powi(3),
        "t" | "tb" => 1e12,
        "ti" | "tib" => 1024.0_f64.powi(4),
        "p" | "pb" => 1e15,
        "pi" | "pib" => 1024.0_f64.powi(5),
        "e" | "eb" => 1e18,
        "ei" | "eib" => 1024.0_f64.powi(6),
        other => return Err(format!("unknown byte unit {other:?}")),
    };
    Ok(json!((number * multiplier).trunc() as i64))
}

/// `units.parse`: SI and binary suffixes as in Kubernetes quantities; `m` is milli, `M` mega.
fn units_parse(text: &str) -> Result<Value, String> {
    let (number, unit) = number_and_unit(text)?;
    let multiplier: f64 = match unit.as_str() {
        "" => 1.0,
        "m" => 1e-3,
        "k" | "K" => 1e3,
        "Ki" | "ki" => 1024.0,
        "M" => 1e6,
        "Mi" | "mi" => 1024.0 * 1024.0,
        "G" | "g" => 1e9,
        "Gi" | "gi" => 1024.0_f64.powi(3),
        "T" | "t" => 1e12,
        "Ti" | "ti" => 1024.0_f64.powi(4),
        "P" | "p" => 1e15,
        "Pi" | "pi" => 1024.0_f64.powi(5),
        "E" | "e" => 1e18,
        "Ei" | "ei" => 1024.0_f64.powi(6),
        other => return Err(format!("unknown unit {other:?}")),
    };
    Ok(number_value(number * multiplier))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str, args: Value) -> Result<Value, String> {
        let builtin = lookup(name).unwrap_or_else(|| panic!("{name} is provided"));
        let args = args.as_array().cloned().unwrap_or_default();
        (builtin.run)(&Context { policy: "test" }, &args)
    }

    #[test]
    fn sprintf_formats_like_go() {
        assert_eq!(
            call(
                "sprintf",
                json!(["label %v is not allowed (%d)", ["team", 3]])
            ),
            Ok(json!("label team is not allowed (3)"))
        );
    }

    #[test]
    fn time_builtins_use_nanoseconds() {
        let ns = call("time.parse_rfc3339_ns", json!(["2026-11-23T17:30:05Z"])).expect("parses");
        assert_eq!(ns, json!(1_795_455_005_000_000_000_i64));
        assert_eq!(call("time.date", json!([ns])), Ok(json!([2026, 11, 23])));
        assert_eq!(
            call("time.clock", json!([[ns, "UTC"]])),
            Ok(json!([17, 30, 5]))
        );
        assert_eq!(call("time.weekday", json!([ns])), Ok(json!("Monday")));
        assert!(call("time.date", json!([[ns, "Europe/Rome"]])).is_err());
        assert!(
            call("time.now_ns", json!([]))
                .expect("now")
                .as_i64()
                .is_some()
        );
    }

    #[test]
    fn regex_builtins() {
        assert_eq!(
            call("regex.split", json!(["[,;]", "a,b;c"])),
            Ok(json!(["a", "b", "c"]))
        );
        assert_eq!(
            call("regex.find_n", json!(["[0-9]+", "a1b22c333", 2])),
            Ok(json!(["1", "22"]))
        );
        assert_eq!(
            call("regex.find_n", json!(["[0-9]+", "a1b22c333", -1])),
            Ok(json!(["1", "22", "333"]))
        );
        assert_eq!(
            call("regex.replace", json!(["v1.2", "v([0-9])", "version-$1"])),
            Ok(json!("version-1.2"))
        );
        assert!(call("regex.split", json!(["(", "x"])).is_err());
    }

    #[test]
    fn semver_builtins() {
        assert_eq!(
            call("semver.is_valid", json!(["1.2.3-rc.1"])),
            Ok(json!(true))
        );
        assert_eq!(call("semver.is_valid", json!(["v1.2"])), Ok(json!(false)));
        assert_eq!(
            call("semver.compare", json!(["1.2.3", "1.10.0"])),
            Ok(json!(-1))
        );
        assert_eq!(
            call("semver.compare", json!(["1.2.3+a", "1.2.3+b"])),
            Ok(json!(0))
        );
    }

    #[test]
    fn encodings_round_trip() {
        assert_eq!(call("hex.encode", json!(["hi"])), Ok(json!("6869")));
        assert_eq!(call("hex.decode", json!(["6869"])), Ok(json!("hi")));
        assert_eq!(
            call("base64url.encode_no_pad", json!(["??>"])),
            Ok(json!("Pz8-"))
        );
        assert_eq!(
            call("urlquery.encode", json!(["a b&c*"])),
            Ok(json!("a+b%26c%2A"))
        );
        assert_eq!(
            call("urlquery.decode", json!(["a+b%26c"])),
            Ok(json!("a b&c"))
        );
        assert_eq!(
            call(
                "urlquery.encode_object",
                json!([{"a": ["1", "2"], "b": "x y"}])
            ),
            Ok(json!("a=1&a=2&b=x+y"))
        );
        assert_eq!(
            call("urlquery.decode_object", json!(["a=1&a=2&b=x+y"])),
            Ok(json!({"a": ["1", "2"], "b": ["x y"]}))
        );
        assert_eq!(
            call("yaml.unmarshal", json!(["a: [1, two]"])),
            Ok(json!({"a": [1, "two"]}))
        );
        assert_eq!(call("yaml.marshal", json!([{"a": 1}])), Ok(json!("a: 1\n")));
        assert_eq!(call("yaml.is_valid", json!(["a: ["])), Ok(json!(false)));
    }

    #[test]
    fn string_and_unit_builtins() {
        assert_eq!(
            call("strings.any_prefix_match", json!([["x-a", "y"], "y"])),
            Ok(json!(true))
        );
        assert_eq!(
            call("strings.any_suffix_match", json!(["abc", ["x", "z"]])),
            Ok(json!(false))
        );
        assert_eq!(call("strings.count", json!(["cheese", "e"])), Ok(json!(3)));
        assert_eq!(call("units.parse_bytes", json!(["10Ki"])), Ok(json!(10240)));
        assert_eq!(
            call("units.parse_bytes", json!(["1.5MB"])),
            Ok(json!(1_500_000))
        );
        assert_eq!(call("units.parse", json!(["500m"])), Ok(json!(0.5)));
        assert_eq!(call("units.parse", json!(["2M"])), Ok(json!(2_000_000)));
        assert_eq!(
            call("units.parse", json!(["1Gi"])),
            Ok(json!(1_073_741_824))
        );
        assert!(call("units.parse", json!(["lots"])).is_err());
    }

    #[test]
    fn json_patch_applies_rfc6902() {
        assert_eq!(
            call(
                "json.patch",
                json!([{"a": 1}, [{"op": "add", "path": "/b", "value": 2}]])
            ),
            Ok(json!({"a": 1, "b": 2}))
        );
    }

    #[test]
    fn missing_operands_are_errors_not_panics() {
        for builtin in BUILTINS {
            let _ = (builtin.run)(&Context { policy: "test" }, &[]);
        }
    }
}
