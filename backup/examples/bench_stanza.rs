//! Configures a stanza as DevDB does (devdb-backup's settings: asynchronous archive-push, zstd,
//! aes-256-cbc under a key derived for the stanza, a directory repository) and prints the
//! `archive_command` its instance runs: what `loadtest/backup-bench.sh` measures.
//!
//! Run with `cargo run --release -p devdb-backup --example bench_stanza -- REPO DATA PORT SOCKET_DIR SUPERUSER WORK NAME`
//! (as root, the files are handed to the `postgres` user).

use devdb_backup::config::stanza_key;
use devdb_backup::{PgBackRest, Repository, Stanza};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, data, port, socket_dir, superuser, work, name] = args.as_slice() else {
        return Err("usage: bench_stanza REPO DATA PORT SOCKET_DIR SUPERUSER WORK NAME".into());
    };
    let stanza = Stanza {
        name: name.clone(),
        data_dir: data.into(),
        port: port.parse()?,
        socket_dir: socket_dir.into(),
        superuser: superuser.clone(),
        work_dir: work.into(),
        retention: devdb_backup::Retention::Full(2),
    };
    let key = stanza_key(b"backup-bench", name);
    let run_as = devdb_pgctl::RunAs::detect()?;
    let backrest = PgBackRest::configure(&Repository::Posix(repo.into()), stanza, &key, run_as)?;
    println!("{}", backrest.archive_command());
    Ok(())
}
