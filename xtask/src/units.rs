//! Human-readable times and rates.

use std::time::Duration;

/// Formats `value` with three significant digits (fewer decimals as it grows).
fn three_digits(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude < 10.0 {
        format!("{value:.2}")
    } else if magnitude < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

/// Scales `value` by `step` until it is below `step` or the units run out, then formats it with
/// the reached unit, e.g. `12.3 MiB/s`.
fn scaled(value: f64, step: f64, units: &[&str]) -> String {
    if !value.is_finite() || value < 0.0 {
        return "-".to_owned();
    }
    let mut value = value;
    let mut index = 0;
    while value >= step && index + 1 < units.len() {
        value /= step;
        index += 1;
    }
    let unit = units.get(index).copied().unwrap_or("");
    format!("{} {unit}", three_digits(value))
}

/// A time per iteration given in nanoseconds, in ns, us, ms or s.
pub(crate) fn time_ns(nanos: f64) -> String {
    scaled(nanos, 1000.0, &["ns", "us", "ms", "s"])
}

/// Elements per second with a decimal prefix, e.g. `12.3 M/s`.
pub(crate) fn elements_per_sec(rate: f64) -> String {
    scaled(rate, 1000.0, &["/s", "K/s", "M/s", "G/s", "T/s"]).replace(" /s", "/s")
}

/// Bytes per second with a binary prefix, e.g. `1.50 GiB/s`.
pub(crate) fn bytes_per_sec(rate: f64) -> String {
    scaled(rate, 1024.0, &["B/s", "KiB/s", "MiB/s", "GiB/s", "TiB/s"])
}

/// Bytes per second with a decimal prefix, e.g. `1.50 GB/s`.
pub(crate) fn bytes_decimal_per_sec(rate: f64) -> String {
    scaled(rate, 1000.0, &["B/s", "KB/s", "MB/s", "GB/s", "TB/s"])
}

/// Bits per second with a decimal prefix, e.g. `10.0 Gbit/s`.
pub(crate) fn bits_per_sec(rate: f64) -> String {
    scaled(
        rate,
        1000.0,
        &["bit/s", "Kbit/s", "Mbit/s", "Gbit/s", "Tbit/s"],
    )
}

/// A wall time such as a step's, e.g. `4.2s` or `2m03s`.
pub(crate) fn wall_time(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        let whole = elapsed.as_secs();
        format!("{}m{:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_pick_the_unit_and_three_digits() {
        assert_eq!(time_ns(0.5), "0.50 ns");
        assert_eq!(time_ns(7.0), "7.00 ns");
        assert_eq!(time_ns(42.25), "42.2 ns");
        assert_eq!(time_ns(999.0), "999 ns");
        assert_eq!(time_ns(1_000.0), "1.00 us");
        assert_eq!(time_ns(12_345.0), "12.3 us");
        assert_eq!(time_ns(2_500_000.0), "2.50 ms");
        assert_eq!(time_ns(3.2e9), "3.20 s");
        assert_eq!(time_ns(7.5e12), "7500 s");
        assert_eq!(time_ns(f64::NAN), "-");
        assert_eq!(time_ns(-1.0), "-");
    }

    #[test]
    fn element_rates_use_decimal_prefixes() {
        assert_eq!(elements_per_sec(950.0), "950/s");
        assert_eq!(elements_per_sec(12_300_000.0), "12.3 M/s");
        assert_eq!(elements_per_sec(1.5e9), "1.50 G/s");
    }

    #[test]
    fn byte_rates_use_binary_or_decimal_prefixes() {
        assert_eq!(bytes_per_sec(512.0), "512 B/s");
        assert_eq!(bytes_per_sec(2048.0), "2.00 KiB/s");
        assert_eq!(bytes_per_sec(3.0 * 1024.0 * 1024.0 * 1024.0), "3.00 GiB/s");
        assert_eq!(bytes_decimal_per_sec(3.0e9), "3.00 GB/s");
        assert_eq!(bits_per_sec(1.0e10), "10.0 Gbit/s");
    }

    #[test]
    fn wall_times_switch_to_minutes() {
        assert_eq!(wall_time(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(wall_time(Duration::from_secs(123)), "2m03s");
    }
}
