//! A database's data restored from backups (another database's at a moment, its own latest after
//! losing the installation, or its own at a moment in place): restored into a staging directory,
//! then published and started as a clone is, archiving into a stanza of its own.

use devdb_backup::{PgBackRest, Target};
use devdb_core::model::{DatabaseRecord, ProjectRecord};
use devdb_core::runtime::RuntimeError;

use super::{LocalRuntime, Publish, blocking};

impl LocalRuntime {
    /// Restores `backrest`'s stanza to `target` as `database`, published as `publish` says, and
    /// starts it with its password set. The staging directory is cleared when it fails.
    pub(super) async fn restore_staged(
        &self,
        database: &DatabaseRecord,
        project: &ProjectRecord,
        backrest: &PgBackRest,
        target: Target,
        publish: Publish,
    ) -> Result<(), RuntimeError> {
        let staging = self.database_dir(&database.name).with_extension("cloning");
        let (this, dir) = (self.clone(), staging.clone());
        blocking(move || {
            this.clear_staging(&dir)?;
            this.pg.make_dir(&dir).map_err(RuntimeError::step("creating the restore's directory"))?;
            this.pg.make_dir(&dir.join("data")).map_err(RuntimeError::step("creating the restore's directory"))
        })
        .await?;
        if let Err(error) = backrest.restore(target, &staging.join("data")).await {
            let _ = self.clear_staging(&staging);
            return Err(RuntimeError::Step { step: "restoring from the backups", detail: error.to_string() });
        }
        let (this, database, project) = (self.clone(), database.clone(), project.clone());
        blocking(move || {
            let finished = this.finish_restore(&database, &project, &staging, publish);
            if finished.is_err() {
                let _ = this.clear_staging(&staging);
            }
            finished
        })
        .await
    }

    /// Restores `database` (no data here yet; its stanzas listed, from another installation)
    /// from its latest stanza with everything archived, and starts it: disaster recovery.
    ///
    /// # Errors
    /// When its stanzas cannot be read or restored, or it does not start.
    pub async fn restore_latest(&self, database: &DatabaseRecord, project: &ProjectRecord) -> Result<(), RuntimeError> {
        let backrest = self.backups.backrest(database, &self.database_dir(&database.name))?;
        self.restore_staged(database, project, &backrest, Target::Latest, Publish::Replace).await
    }
}
