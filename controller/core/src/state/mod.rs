//! The state machines of databases ([`database`]) and projects ([`project`]): every transition
//! with its guard and the fields it writes, and the typed refusals of those people ask for.
//! Nothing else in the controller writes a database's `want` or `status`, or a project's
//! generations and status; [`update_database`] and [`update_project`] apply a fallible
//! transition inside the store's update and return the committed record or the refusal.

pub mod database;
pub mod project;

use devdb_shared::Name;

use crate::model::{DatabaseRecord, ProjectRecord};
use crate::store::{Store, StoreError};

/// A transition that was refused, or a store that failed.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError<R> {
    #[error(transparent)]
    Refused(R),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Applies `transition` to database `name` inside the store's update: its outcome on the record
/// as committed (the update may run it more than once, on a record changed meanwhile).
///
/// # Errors
/// The transition's refusal (nothing is changed), or the store's error.
pub async fn update_database<S: Store, T: Send>(
    store: &S,
    name: &Name,
    transition: impl FnMut(&mut DatabaseRecord) -> Result<T, database::Refusal> + Send,
) -> Result<(DatabaseRecord, T), TransitionError<database::Refusal>> {
    let mut outcome = None;
    let record = store.update_database(name, guarded(&mut outcome, transition)).await?;
    finish(record, outcome, "database", name)
}

/// [`update_database`] for projects.
///
/// # Errors
/// The transition's refusal (nothing is changed), or the store's error.
pub async fn update_project<S: Store, T: Send>(
    store: &S,
    name: &Name,
    transition: impl FnMut(&mut ProjectRecord) -> Result<T, project::Refusal> + Send,
) -> Result<(ProjectRecord, T), TransitionError<project::Refusal>> {
    let mut outcome = None;
    let record = store.update_project(name, guarded(&mut outcome, transition)).await?;
    finish(record, outcome, "project", name)
}

/// `transition` as a store update: a refused one writes nothing, whatever it touched before
/// refusing; the outcome of its last run is left in `outcome`.
fn guarded<'a, R: Clone, T, E>(
    outcome: &'a mut Option<Result<T, E>>,
    mut transition: impl FnMut(&mut R) -> Result<T, E> + 'a,
) -> impl FnMut(&mut R) + 'a {
    move |record| {
        let mut changed = record.clone();
        let result = transition(&mut changed);
        if result.is_ok() {
            *record = changed;
        }
        *outcome = Some(result);
    }
}

fn finish<R, T, E>(
    record: R,
    outcome: Option<Result<T, E>>,
    kind: &'static str,
    name: &Name,
) -> Result<(R, T), TransitionError<E>> {
    match outcome {
        Some(Ok(value)) => Ok((record, value)),
        Some(Err(refusal)) => Err(TransitionError::Refused(refusal)),
        None => Err(StoreError::NotFound { kind, name: name.to_string() }.into()),
    }
}
