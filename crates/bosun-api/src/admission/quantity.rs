//! Resource quantities (`100m`, `1.5Gi`, `2e3`) as exact milli-unit integers.
//!
//! The value is computed exactly on decimal digits, so `0.1Ki` or `1e-7` round the way
//! Kubernetes' `MilliValue` does: away from zero to the next milli-unit.

/// Kubernetes' message for text that is not a quantity at all.
const FORMAT_ERROR: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";
const SUFFIX_ERROR: &str = "unable to parse quantity's suffix";
const TOO_LARGE: &str = "quantity is too large";

/// Most decimal digits an `i128` holds.
const MAX_DIGITS: i128 = 39;

/// Parses a Kubernetes quantity into milli-units: `"100m"` → 100, `"1"` → 1000,
/// `"1Ki"` → 1 024 000. Sub-milli amounts round away from zero (`"1n"` → 1). Negative
/// values parse; callers that forbid them check the sign.
///
/// # Errors
/// Kubernetes' message when `s` is empty or not a quantity, or when the value does not fit
/// in an `i128` of milli-units.
pub fn parse_quantity(s: &str) -> Result<i128, String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    let negative = match bytes.first() {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = &s[int_start..i];
    let mut frac_digits = "";
    if i < bytes.len() && bytes[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        frac_digits = &s[frac_start..i];
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(FORMAT_ERROR.to_string());
    }
    let (binary_power, decimal_exp) = parse_suffix(&s[i..])?;

    // value = digits × 10^exp10 × 1024^binary_power, in milli-units.
    let mut digits: Vec<u8> = int_digits
        .bytes()
        .chain(frac_digits.bytes())
        .map(|c| c - b'0')
        .collect();
    let mut exp10: i128 = i128::from(decimal_exp) - frac_digits.len() as i128 + 3;
    trim_zeros(&mut digits, &mut exp10);
    if digits.is_empty() {
        return Ok(0);
    }
    for _ in 0..binary_power {
        multiply(&mut digits, 1024);
    }
    trim_zeros(&mut digits, &mut exp10);

    let int_len = digits.len() as i128 + exp10;
    if int_len > MAX_DIGITS {
        return Err(TOO_LARGE.to_string());
    }
    let (int_part, rest): (&[u8], &[u8]) = if exp10 >= 0 {
        (&digits, &[])
    } else if int_len <= 0 {
        (&[], &digits)
    } else {
        // 0 < int_len <= len, and int_len <= MAX_DIGITS so the cast is lossless.
        digits.split_at(int_len as usize)
    };
    let mut magnitude: u128 = 0;
    for d in int_part {
        magnitude = magnitude
            .checked_mul(10)
            .and_then(|m| m.checked_add(u128::from(*d)))
            .ok_or_else(|| TOO_LARGE.to_string())?;
    }
    if exp10 > 0 {
        for _ in 0..exp10 {
            magnitude = magnitude
                .checked_mul(10)
                .ok_or_else(|| TOO_LARGE.to_string())?;
        }
    }
    if rest.iter().any(|d| *d != 0) {
        magnitude = magnitude
            .checked_add(1)
            .ok_or_else(|| TOO_LARGE.to_string())?;
    }
    let value = i128::try_from(magnitude).map_err(|_| TOO_LARGE.to_string())?;
    Ok(if negative { -value } else { value })
}

/// The suffix as (power of 1024, power of 10).
fn parse_suffix(suffix: &str) -> Result<(u32, i64), String> {
    let decimal = |e: i64| Ok((0, e));
    let binary = |p: u32| Ok((p, 0));
    match suffix {
        "" => decimal(0),
        "n" => decimal(-9),
        "u" => decimal(-6),
        "m" => decimal(-3),
        "k" => decimal(3),
        "M" => decimal(6),
        "G" => decimal(9),
        "T" => decimal(12),
        "P" => decimal(15),
        "E" => decimal(18),
        "Ki" => binary(1),
        "Mi" => binary(2),
        "Gi" => binary(3),
        "Ti" => binary(4),
        "Pi" => binary(5),
        "Ei" => binary(6),
        _ => {
            let exp = suffix
                .strip_prefix('e')
                .or_else(|| suffix.strip_prefix('E'))
                .ok_or_else(|| SUFFIX_ERROR.to_string())?;
            let unsigned = exp
                .strip_prefix('-')
                .or_else(|| exp.strip_prefix('+'))
                .unwrap_or(exp);
            if unsigned.is_empty() || !unsigned.bytes().all(|c| c.is_ascii_digit()) {
                return Err(SUFFIX_ERROR.to_string());
            }
            exp.parse::<i64>()
                .map(|e| (0, e))
                .map_err(|_| SUFFIX_ERROR.to_string())
        }
    }
}

/// Drops leading zeros, and trailing zeros into the exponent.
fn trim_zeros(digits: &mut Vec<u8>, exp10: &mut i128) {
    let lead = digits.iter().take_while(|d| **d == 0).count();
    digits.drain(..lead);
    while digits.last() == Some(&0) {
        digits.pop();
        *exp10 += 1;
    }
}

/// Multiplies a most-significant-first decimal digit string by a small factor.
fn multiply(digits: &mut Vec<u8>, factor: u32) {
    let mut carry: u64 = 0;
    for d in digits.iter_mut().rev() {
        let v = u64::from(*d) * u64::from(factor) + carry;
        *d = (v % 10) as u8;
        carry = v / 10;
    }
    while carry > 0 {
        digits.insert(0, (carry % 10) as u8);
        carry /= 10;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_milli_quantities_parse_to_milli_units() {
        assert_eq!(parse_quantity("100m"), Ok(100));
        assert_eq!(parse_quantity("1"), Ok(1000));
        assert_eq!(parse_quantity("0"), Ok(0));
        assert_eq!(parse_quantity("0.5"), Ok(500));
        assert_eq!(parse_quantity(".5"), Ok(500));
        assert_eq!(parse_quantity("5."), Ok(5000));
        assert_eq!(parse_quantity("+2"), Ok(2000));
        assert_eq!(parse_quantity("-2"), Ok(-2000));
        assert_eq!(parse_quantity("-0"), Ok(0));
    }

    #[test]
    fn binary_suffixes_multiply_by_powers_of_1024() {
        assert_eq!(parse_quantity("1Ki"), Ok(1_024_000));
        assert_eq!(parse_quantity("128Mi"), Ok(128 * 1024 * 1024 * 1000));
        assert_eq!(parse_quantity("1.5Gi"), Ok(1_610_612_736_000));
        assert_eq!(parse_quantity("1Ei"), Ok(1_152_921_504_606_846_976_000));
    }

    #[test]
    fn decimal_suffixes_and_exponents_scale_by_powers_of_ten() {
        assert_eq!(parse_quantity("1k"), Ok(1_000_000));
        assert_eq!(parse_quantity("2M"), Ok(2_000_000_000));
        assert_eq!(parse_quantity("1G"), Ok(1_000_000_000_000));
        assert_eq!(parse_quantity("1E"), Ok(1_000_000_000_000_000_000_000));
        assert_eq!(parse_quantity("2e3"), Ok(2_000_000));
        assert_eq!(parse_quantity("2E3"), Ok(2_000_000));
        assert_eq!(parse_quantity("2e+3"), Ok(2_000_000));
        assert_eq!(parse_quantity("2e-3"), Ok(2));
        assert_eq!(parse_quantity("500u"), Ok(1));
    }

    #[test]
    fn sub_milli_values_round_away_from_zero() {
        assert_eq!(parse_quantity("1n"), Ok(1));
        assert_eq!(parse_quantity("1u"), Ok(1));
        assert_eq!(parse_quantity("1001u"), Ok(2));
        assert_eq!(parse_quantity("0.0001"), Ok(1));
        assert_eq!(parse_quantity("-1n"), Ok(-1));
        assert_eq!(parse_quantity("1e-1000000"), Ok(1));
        assert_eq!(parse_quantity("0.001Ki"), Ok(1024));
        assert_eq!(parse_quantity("0.0001Ki"), Ok(103));
        assert_eq!(parse_quantity("0e99999"), Ok(0));
    }

    #[test]
    fn garbage_and_empty_are_refused() {
        for bad in [
            "", "m", ".", "+", "-", "abc", "1K", "1mi", "1 ", " 1", "1.2.3", "1e", "1e+", "1Mi5",
            "--1", "1ee3", "0x10",
        ] {
            assert!(parse_quantity(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_quantity("abc"), Err(FORMAT_ERROR.to_string()));
    }

    #[test]
    fn values_beyond_i128_are_refused_as_too_large() {
        assert_eq!(parse_quantity("1e40"), Err(TOO_LARGE.to_string()));
        assert_eq!(parse_quantity("1e9999999999"), Err(TOO_LARGE.to_string()));
        assert_eq!(
            parse_quantity("999999999999999999999999999999Ei"),
            Err(TOO_LARGE.to_string())
        );
        assert!(parse_quantity(&"9".repeat(60)).is_err());
        assert!(parse_quantity("1e99999999999999999999999").is_err());
        // i128::MAX is 170141183460469231731687303715884105727 milli-units.
        assert_eq!(
            parse_quantity("170141183460469231731687303715884105727m"),
            Ok(i128::MAX)
        );
        assert!(parse_quantity("170141183460469231731687303715884105728m").is_err());
    }
}
