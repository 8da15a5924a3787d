//! Sizes in bytes as people read and write them: `1.2 GiB`, `512MiB`.

/// `1288490188` → `1.2 GiB`.
pub fn human(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", units[unit]) }
}

/// `512MiB`, `100GiB`, `1TB`, `4096` → bytes.
///
/// # Errors
/// A message naming the accepted forms.
pub fn parse(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| format!("{text:?} is not a size like 512MiB or 100GiB"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{text:?} is not a size like 512MiB or 100GiB")),
    };
    number.checked_mul(factor).ok_or_else(|| format!("{text:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_and_print_like_people_write_them() {
        assert_eq!(parse("512MiB"), Ok(512 << 20));
        assert_eq!(parse("100GiB"), Ok(100 << 30));
        assert_eq!(parse("4096"), Ok(4096));
        assert_eq!(parse("2 gb"), Ok(2 << 30));
        assert!(parse("lots").is_err() && parse("5 parsecs").is_err());
        assert_eq!(human(1 << 30), "1.0 GiB");
        assert_eq!(human(300 << 20), "300.0 MiB");
        assert_eq!(human(12), "12 B");
    }
}
