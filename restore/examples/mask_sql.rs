//! Prints the masking statements DevDB runs for the rules given on standard input (a JSON list
//! of `{table, column, strategy}`), one per line: what `loadtest/masking.sh` times.

use std::io::Read;

fn main() -> anyhow::Result<()> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let rules: Vec<devdb_shared::api::MaskRule> = serde_json::from_str(&text)?;
    for update in devdb_restore::masking::statements(&rules)? {
        println!("{};", update.sql);
    }
    Ok(())
}
