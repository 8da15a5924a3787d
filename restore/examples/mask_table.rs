//! Masks a server's tables by the rules given on standard input (a JSON list of `{table,
//! column, strategy}`), exactly as a restore does (values computed here, written back by
//! `ctid`; then VACUUM FULL and ANALYZE), and prints the seconds it took: what
//! `loadtest/masking.sh` times.
//!
//! ```text
//! mask_table SOCKET_DIR PORT DATABASE USER < rules.json
//! ```

use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

use devdb_pgctl::session::Session;
use devdb_restore::Guard;
use devdb_restore::masking::{MaskPlan, apply};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [socket, port, database, user] = args.as_slice() else {
        anyhow::bail!("usage: mask_table SOCKET_DIR PORT DATABASE USER < rules.json");
    };
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text)?;
    let rules: Vec<devdb_shared::api::MaskRule> = serde_json::from_str(&text)?;
    let plan = MaskPlan { rules, key: "a benchmark key of thirty-two bytes or more".into(), verify: false };
    let socket = PathBuf::from(socket);
    let port: u16 = port.parse()?;
    let mut owner = Session::connect(&socket, port, user, database, None)?;
    let mut admin = Session::admin(&socket, port, database)?;
    let spool = std::env::temp_dir().join(format!("devdb-mask-table-{}", std::process::id()));
    let guard = Guard::unbounded(&std::env::temp_dir());
    let started = Instant::now();
    apply(&mut owner, &mut admin, &plan, &guard, &spool)?;
    println!("{:.3}", started.elapsed().as_secs_f64());
    Ok(())
}
