//! Masked values, computed here from the originals and the project's key: the key never
//! reaches the server.
//!
//! Every keyed output is HMAC-SHA-256 of `tag|input` under the key: without the key no
//! dictionary of inputs leads back from an output, and the same input masks alike in every
//! table (joins and foreign keys on masked columns keep working). Outputs of a few bits (a name
//! from a list, a phone number's digits, a date shift) take them from the same MAC.

use devdb_shared::api::{MaskRule, MaskStrategy};
use ring::hmac;

const FIRST_NAMES: &[&str] = &[
    "Alex", "Blair", "Casey", "Dana", "Eli", "Frankie", "Gray", "Harper", "Indy", "Jules", "Kai", "Lee", "Morgan",
    "Noel", "Oakley", "Parker", "Quinn", "Reese", "Sage", "Taylor", "Uma", "Vic", "Wren", "Yael",
];
const LAST_NAMES: &[&str] = &[
    "Archer", "Brook", "Carter", "Dale", "Ellis", "Fisher", "Gale", "Hale", "Irving", "Jensen", "Keller", "Lane",
    "Mercer", "North", "Oakes", "Price", "Quarry", "Reed", "Stone", "Turner", "Vale", "West", "Young",
];
const STREETS: &[&str] =
    &["Maple", "Oak", "Pine", "Cedar", "Elm", "Birch", "Willow", "Ash", "Spruce", "Walnut", "Chestnut", "Laurel"];

/// The project's key, ready to MAC with.
pub struct Keyed(hmac::Key);

impl Keyed {
    pub fn new(key: &str) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, key.as_bytes()))
    }

    /// The MAC of `tag|input`.
    fn mac(&self, tag: &str, input: &str) -> hmac::Tag {
        let mut context = hmac::Context::with_key(&self.0);
        context.update(tag.as_bytes());
        context.update(b"|");
        context.update(input.as_bytes());
        context.sign()
    }

    /// A number from 0 to `modulo - 1` picked by `input` under `tag`.
    fn pick(&self, tag: &str, input: &str, modulo: u64) -> u64 {
        let tag = self.mac(tag, input);
        let mut first = [0_u8; 8];
        first.copy_from_slice(&tag.as_ref()[..8]);
        u64::from_be_bytes(first) % modulo
    }

    fn pick_from<'a>(&self, list: &[&'a str], tag: &str, input: &str) -> &'a str {
        list[usize::try_from(self.pick(tag, input, list.len() as u64)).unwrap_or(0)]
    }

    fn hex(&self, tag: &str, input: &str, bytes: usize) -> String {
        self.mac(tag, input).as_ref()[..bytes].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The masked text of a (non-NULL) original under a text strategy; `None` for strategies
    /// that give no text (keep, null, dateShift).
    pub fn text(&self, rule: &MaskRule, original: &str) -> Option<String> {
        Some(match rule.strategy {
            MaskStrategy::Keep | MaskStrategy::Null | MaskStrategy::DateShift => return None,
            MaskStrategy::Constant => rule.value.clone().unwrap_or_default(),
            MaskStrategy::Email => format!("user_{}@example.com", self.hex("email", original, 8)),
            MaskStrategy::Hash => self.hex("hash", original, 32),
            MaskStrategy::Name => format!(
                "{} {}",
                self.pick_from(FIRST_NAMES, "first", original),
                self.pick_from(LAST_NAMES, "last", original)
            ),
            MaskStrategy::Phone => format!(
                "+1 555 0{:02} {:04}",
                self.pick("phone-a", original, 100),
                self.pick("phone-b", original, 10_000)
            ),
            MaskStrategy::Address => format!(
                "{} {} Street",
                1 + self.pick("number", original, 9999),
                self.pick_from(STREETS, "street", original)
            ),
            MaskStrategy::Redact => original
                .chars()
                .map(|c| {
                    if c.is_ascii_digit() {
                        '0'
                    } else if c.is_alphabetic() {
                        'x'
                    } else {
                        c
                    }
                })
                .collect(),
        })
    }

    /// A date shift in days, from `-days` to `days`, picked by the whole row's text.
    pub fn shift(&self, row: &str, days: u32) -> i64 {
        let span = 2 * u64::from(days) + 1;
        i64::try_from(self.pick("date", row, span)).unwrap_or(0) - i64::from(days)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(strategy: MaskStrategy) -> MaskRule {
        MaskRule::new("t", "c", strategy)
    }

    #[test]
    fn outputs_are_deterministic_per_key_and_differ_across_keys() {
        let (a, b) = (Keyed::new(&"a".repeat(40)), Keyed::new(&"b".repeat(40)));
        let email = rule(MaskStrategy::Email);
        let masked = a.text(&email, "ada@example.com").expect("text");
        assert!(masked.starts_with("user_") && masked.ends_with("@example.com") && masked.len() == 33, "{masked}");
        assert_eq!(a.text(&email, "ada@example.com"), Some(masked.clone()), "the same input, the same output");
        assert_ne!(b.text(&email, "ada@example.com"), Some(masked), "another key, another output");
        assert_eq!(a.text(&rule(MaskStrategy::Hash), "x").expect("hash").len(), 64);
    }

    #[test]
    fn each_strategy_has_its_shape() {
        let key = Keyed::new(&"k".repeat(40));
        let name = key.text(&rule(MaskStrategy::Name), "Ada Lovelace").expect("name");
        let (first, last) = name.split_once(' ').expect("two words");
        assert!(FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last), "{name}");
        let phone = key.text(&rule(MaskStrategy::Phone), "+44 20 7946 0042").expect("phone");
        assert!(phone.starts_with("+1 555 0") && phone.len() == 15, "{phone}");
        let address = key.text(&rule(MaskStrategy::Address), "1 Main St").expect("address");
        assert!(address.ends_with(" Street"), "{address}");
        assert_eq!(key.text(&rule(MaskStrategy::Redact), "Åsa 42-b").expect("redact"), "xxx 00-x");
        let mut constant = rule(MaskStrategy::Constant);
        constant.value = Some("n/a".into());
        assert_eq!(key.text(&constant, "anything").as_deref(), Some("n/a"));
        assert_eq!(key.text(&rule(MaskStrategy::Null), "x"), None);
        for row in ["(1,a)", "(2,b)", "(3,c)"] {
            assert!((-30..=30).contains(&key.shift(row, 30)));
        }
    }
}
