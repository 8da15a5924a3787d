//! `devdb down` (`devdb-controller down`) when no controller runs (after `devdb up` stopped):
//! stops every database instance under the data directory and records each as stopped, so the
//! next `devdb up` leaves them asleep and a connection wakes them. With a controller running,
//! `devdb down` asks it instead (the data directory is locked).

use devdb_core::runtime::Runtime;
use devdb_core::state::database as transitions;
use devdb_core::store::Store;
use devdb_local::{Local, LocalArgs};
use devdb_shared::api::{DatabaseStatus, StopReason};

pub async fn run(args: &LocalArgs) -> anyhow::Result<()> {
    // Nothing is reconciled: the passes the stops would ask for are the next `devdb up`'s.
    let local = Local::open(args, devdb_core::reconcile::ReconcilerConfig::default())?;
    let (store, runtime) = (local.reconciler.store(), local.reconciler.runtime());
    let mut stopped = 0;
    for database in store.databases(None, None).await? {
        if !matches!(database.status, DatabaseStatus::Running | DatabaseStatus::Recovering | DatabaseStatus::Starting) {
            continue;
        }
        runtime.stop_database(&database).await?;
        let now = devdb_core::clock::now();
        // A stop as the API's, and its end as the reconciler's: one deleting stays so, and the
        // next `devdb up` removes it.
        store
            .update_database(&database.name, |d| {
                if transitions::ask_stop(d, StopReason::Manual).is_ok() {
                    transitions::stopped(d, &now);
                }
            })
            .await?;
        eprintln!("stopped {}", database.name);
        stopped += 1;
    }
    println!(
        "stopped {stopped} database(s) under {}; they keep their data, and after `devdb up` a connection wakes each",
        local.data_dir.display()
    );
    Ok(())
}
