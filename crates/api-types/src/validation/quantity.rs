//! Reads Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) well enough to compare them.

/// The value of a quantity, or `None` when it is not valid quantity syntax.
pub fn parse_quantity(text: &str) -> Option<f64> {
    let text = text.trim();
    let number_end = text
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || *c == '.' || ((*c == '+' || *c == '-') && *i == 0)))
        .map_or(text.len(), |(i, _)| i);
    let (number, suffix) = text.split_at(number_end);
    if number.is_empty() || number == "+" || number == "-" || number.matches('.').count() > 1 {
        return None;
    }
    let value: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().ok()?;
            10f64.powi(power)
        }
        _ => return None,
    };
    Some(value * multiplier)
}

#[cfg(test)]
mod tests {
    use super::parse_quantity;

    #[test]
    fn parses_kubernetes_quantities() {
        let cases = [
            ("1", 1.0),
            ("100m", 0.1),
            ("1.5Gi", 1.5 * 1024f64.powi(3)),
            ("2e3", 2000.0),
            ("-1", -1.0),
            ("128Mi", 128.0 * 1024.0 * 1024.0),
            ("1k", 1000.0),
        ];
        for (text, expected) in cases {
            let value = parse_quantity(text).expect(text);
            assert!(
                (value - expected).abs() < 1e-9 * expected.abs().max(1.0),
                "{text}"
            );
        }
        for invalid in ["", "m", "1.2.3", "1Zi", "abc", "1 Gi", "--1"] {
            assert_eq!(parse_quantity(invalid), None, "{invalid}");
        }
    }
}
