//! Rego's `sprintf`, which is Go's `fmt.Sprintf` over the operands as OPA converts them:
//! integers as `int64`, numbers with a fraction or exponent as `float64`, strings as `string`,
//! everything else (booleans, null, arrays, objects) as its Rego text. Messages of existing
//! policies must read the same here as under OPA, so the Go conventions are kept, down to
//! `%!d(string=x)` for a verb that does not fit its operand.

use serde_json::Value;

/// One operand, typed as OPA hands it to Go.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Int(i64),
    Float(f64),
    Str(String),
}

impl Operand {
    fn from_value(value: &Value) -> Self {
        match value {
            Value::String(text) => Operand::Str(text.clone()),
            Value::Number(number) => match (number.as_i64(), number.as_f64()) {
                (Some(int), _) => Operand::Int(int),
                (None, Some(float)) if number.is_f64() => Operand::Float(float),
                // Integers beyond i64: Go prints the decimal text of a big.Int.
                _ => Operand::Str(number.to_string()),
            },
            other => Operand::Str(rego_string(other)),
        }
    }

    fn go_type(&self) -> &'static str {
        match self {
            Operand::Int(_) => "int64",
            Operand::Float(_) => "float64",
            Operand::Str(_) => "string",
        }
    }

    /// The operand as `%v` prints it.
    fn plain(&self) -> String {
        match self {
            Operand::Int(int) => int.to_string(),
            Operand::Float(float) => format_g(*float, None),
            Operand::Str(text) => text.clone(),
        }
    }
}

/// A parsed `%[flags][width][.precision]verb`.
#[derive(Debug, Default)]
struct Spec {
    minus: bool,
    plus: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    precision: Option<usize>,
}

/// Formats `format` with `operands` the way Go's `fmt.Sprintf` would after OPA's conversion.
pub(crate) fn sprintf(format: &str, operands: &[Value]) -> String {
    let operands: Vec<Operand> = operands.iter().map(Operand::from_value).collect();
    let mut next = 0;
    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&flag) = chars.peek() {
            match flag {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        spec.width = digits(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.precision = Some(digits(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        match operands.get(next) {
            Some(operand) => {
                next += 1;
                out.push_str(&format_operand(&spec, verb, operand));
            }
            None => out.push_str(&format!("%!{verb}(MISSING)")),
        }
    }
    if next < operands.len() {
        let extra: Vec<String> = operands[next..]
            .iter()
            .map(|operand| format!("{}={}", operand.go_type(), operand.plain()))
            .collect();
        out.push_str(&format!("%!(EXTRA {})", extra.join(", ")));
    }
    out
}

fn digits(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut value: Option<usize> = None;
    while let Some(digit) = chars.peek().and_then(|c| c.to_digit(10)) {
        value = Some(
            value
                .unwrap_or(0)
                .saturating_mul(10)
                .saturating_add(digit as usize),
        );
        chars.next();
    }
    value
}

fn format_operand(spec: &Spec, verb: char, operand: &Operand) -> String {
    if verb == 'T' {
        return pad(spec, operand.go_type().to_string(), false);
    }
    let formatted = match operand {
        Operand::Int(int) => format_int(spec, verb, *int),
        Operand::Float(float) => format_float(spec, verb, *float),
        Operand::Str(text) => format_str(spec, verb, text),
    };
    match formatted {
        Some((text, numeric)) => pad(spec, text, numeric),
        None => format!("%!{verb}({}={})", operand.go_type(), operand.plain()),
    }
}

fn sign(spec: &Spec, negative: bool) -> &'static str {
    match (negative, spec.plus, spec.space) {
        (true, _, _) => "-",
        (false, true, _) => "+",
        (false, false, true) => " ",
        _ => "",
    }
}

/// `(text, is_number)`, or `None` for a verb Go refuses for integers.
fn format_int(spec: &Spec, verb: char, int: i64) -> Option<(String, bool)> {
    let magnitude = int.unsigned_abs();
    let digits = match verb {
        'd' | 'v' => magnitude.to_string(),
        'x' => format!("{magnitude:x}"),
        'X' => format!("{magnitude:X}"),
        'o' => format!("{magnitude:o}"),
        'b' => format!("{magnitude:b}"),
        'c' => return Some((char_of(int).to_string(), false)),
        'q' => return Some((format!("'{}'", char_of(int).escape_default()), false)),
        'U' => return Some((format!("U+{magnitude:04X}"), false)),
        _ => return None,
    };
    let digits = match spec.precision {
        Some(precision) if digits.len() < precision => {
            format!("{}{digits}", "0".repeat(precision - digits.len()))
        }
        _ => digits,
    };
    Some((format!("{}{digits}", sign(spec, int < 0)), true))
}

fn char_of(int: i64) -> char {
    u32::try_from(int)
        .ok()
        .and_then(char::from_u32)
        .unwrap_or(char::REPLACEMENT_CHARACTER)
}

fn format_float(spec: &Spec, verb: char, float: f64) -> Option<(String, bool)> {
    if float.is_nan() {
        return Some(("NaN".to_string(), false));
    }
    if float.is_infinite() {
        let text = match (float < 0.0, spec.space && !spec.plus) {
            (true, _) => "-Inf",
            (false, true) => " Inf",
            (false, false) => "+Inf",
        };
        return Some((text.to_string(), false));
    }
    let magnitude = float.abs();
    let text = match verb {
        'v' | 'g' => format_g(magnitude, spec.precision),
        'G' => format_g(magnitude, spec.precision).to_uppercase(),
        'e' => format_e(magnitude, spec.precision.unwrap_or(6)),
        'E' => format_e(magnitude, spec.precision.unwrap_or(6)).to_uppercase(),
        'f' | 'F' => format!("{magnitude:.*}", spec.precision.unwrap_or(6)),
        _ => return None,
    };
    Some((
        format!("{}{text}", sign(spec, float.is_sign_negative())),
        true,
    ))
}

/// Decimal digits and exponent of `value` (≥ 0): `(digits, exp)` with value = 0.d1d2… × 10^(exp+1).
fn decimal(value: f64, significant: Option<usize>) -> (String, i32) {
    let text = match significant {
        Some(digits) => format!("{value:.*e}", digits.saturating_sub(1)),
        None => format!("{value:e}"),
    };
    let (mantissa, exponent) = text.split_once('e').unwrap_or((&text, "0"));
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// Go's `%e` for a non-negative value: `d.dddddde+XX`.
fn format_e(value: f64, precision: usize) -> String {
    let (digits, exp) = decimal(value, Some(precision + 1));
    e_form(&digits, exp)
}

fn e_form(digits: &str, exp: i32) -> String {
    let (first, rest) = digits.split_at(1.min(digits.len()));
    let mantissa = if rest.is_empty() {
        first.to_string()
    } else {
        format!("{first}.{rest}")
    };
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.unsigned_abs())
}

/// Go's `%g` for a non-negative value: shortest digits when no precision is given (which is
/// also `%v`), exponent form for exponents below -4 or from the precision (6 when shortest) up.
fn format_g(value: f64, precision: Option<usize>) -> String {
    let (mut digits, exp) = decimal(value, precision.map(|p| p.max(1)));
    // Trailing zeros of the digits never print with %g.
    while digits.len() > 1 && digits.ends_with('0') {
        digits.pop();
    }
    let exponent_limit = match precision {
        None => 6,
        Some(precision) => {
            let precision = precision.max(1) as i32;
            let (significant, point) = (digits.len() as i32, exp + 1);
            if precision > significant && significant >= point {
                significant
            } else {
                precision
            }
        }
    };
    if exp < -4 || exp >= exponent_limit {
        return e_form(&digits, exp);
    }
    let decimals = (digits.len() as i32 - exp - 1).max(0) as usize;
    format!("{value:.decimals$}")
}

fn format_str(spec: &Spec, verb: char, text: &str) -> Option<(String, bool)> {
    let text = match spec.precision {
        Some(precision) => text.chars().take(precision).collect(),
        None => text.to_string(),
    };
    let formatted = match verb {
        's' | 'v' => text,
        'q' => go_quote(&text),
        'x' => text.bytes().map(|byte| format!("{byte:02x}")).collect(),
        'X' => text.bytes().map(|byte| format!("{byte:02X}")).collect(),
        _ => return None,
    };
    Some((formatted, false))
}

/// Go's `strconv.Quote`.
fn go_quote(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\r' => quoted.push_str("\\r"),
            '\t' => quoted.push_str("\\t"),
            '\u{07}' => quoted.push_str("\\a"),
            '\u{08}' => quoted.push_str("\\b"),
            '\u{0c}' => quoted.push_str("\\f"),
            '\u{0b}' => quoted.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                quoted.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => quoted.push_str(&format!("\\u{:04x}", c as u32)),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// Pads to the width: spaces on the left (right with `-`), zeros after the sign with `0`.
fn pad(spec: &Spec, text: String, numeric: bool) -> String {
    let Some(width) = spec.width else {
        return text;
    };
    let length = text.chars().count();
    if length >= width {
        return text;
    }
    let fill = width - length;
    if spec.minus {
        format!("{text}{}", " ".repeat(fill))
    } else if spec.zero {
        let split = if numeric && text.starts_with(['-', '+', ' ']) {
            1
        } else {
            0
        };
        let (sign, digits) = text.split_at(split);
        format!("{sign}{}{digits}", "0".repeat(fill))
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}

/// A value as Rego prints it (OPA's `ast.Value.String()`): strings quoted, `, ` between
/// elements, `: ` between key and value.
pub(crate) fn rego_string(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => go_quote(text),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(rego_string).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(key, value)| format!("{}: {}", go_quote(key), rego_string(value)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn go(format: &str, operands: Value) -> String {
        sprintf(format, operands.as_array().map_or(&[][..], Vec::as_slice))
    }

    #[test]
    fn strings_and_integers() {
        assert_eq!(go("%s is %d years", json!(["x", 42])), "x is 42 years");
        assert_eq!(go("%v|%v", json!(["a", -7])), "a|-7");
        assert_eq!(
            go(
                "%5s|%-5s|%05d|%+d|%x|%X|%o|%b",
                json!(["ab", "cd", 42, 3, 255, 255, 8, 5])
            ),
            "   ab|cd   |00042|+3|ff|FF|10|101"
        );
        assert_eq!(
            go("%q %.2s %.3d %c %T", json!(["a\"b", "hello", 7, 65, "s"])),
            "\"a\\\"b\" he 007 A string"
        );
        assert_eq!(go("100%%", json!([])), "100%");
    }

    #[test]
    fn floats_follow_go() {
        assert_eq!(
            go("%v %v %v %v", json!([1.5, 1000000.0, 123456.0, 0.0001])),
            "1.5 1e+06 123456 0.0001"
        );
        assert_eq!(go("%v %v", json!([0.00001, 1.0])), "1e-05 1");
        assert_eq!(
            go(
                "%f %.2f %e %.3g %g",
                json!([1.5, 2.345, 1234.5, 1234.5678, 100000.0])
            ),
            "1.500000 2.35 1.234500e+03 1.23e+03 100000"
        );
        assert_eq!(
            go("%08.3f|%-8.1f|", json!([-4.56789, 2.0])),
            "-004.568|2.0     |"
        );
    }

    #[test]
    fn composites_and_booleans_are_rego_text() {
        assert_eq!(go("%v", json!([["a", 1]])), "[\"a\", 1]");
        assert_eq!(
            go("%v", json!([{"k": true, "a": null}])),
            "{\"a\": null, \"k\": true}"
        );
        assert_eq!(go("%v %s", json!([true, false])), "true false");
        assert_eq!(go("%t", json!([true])), "%!t(string=true)");
    }

    #[test]
    fn mistakes_read_as_in_go() {
        assert_eq!(go("%d", json!(["x"])), "%!d(string=x)");
        assert_eq!(go("%s", json!([5])), "%!s(int64=5)");
        assert_eq!(go("%d", json!([1.5])), "%!d(float64=1.5)");
        assert_eq!(go("%s and %s", json!(["a"])), "a and %!s(MISSING)");
        assert_eq!(
            go("%s", json!(["a", 2, "b"])),
            "a%!(EXTRA int64=2, string=b)"
        );
        assert_eq!(go("tail %", json!([])), "tail %!(NOVERB)");
    }
}
