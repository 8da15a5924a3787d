//! Backups on a database's page: where they stand, a restore to a moment picked in its window
//! (confirmed by a checkbox, refused outside the window with the API's reason), and its undo.

use std::time::SystemTime;

use axum::http::StatusCode;
use devdb_core::fake::FakeRuntime;

use crate::common::*;

#[tokio::test]
async fn a_database_page_shows_its_backups_and_restores_to_a_moment_picked_in_its_window() {
    let core = Core::start(FakeRuntime::default());
    core.backed_up_database().await;
    let csrf = "a-csrf-token-of-this-browser";
    let kate = format!("devdb_csrf={csrf}; devdb_session={KATE}");

    let page = core.browse("GET", "/ui/databases/kate-pg", &kate, None, &[]).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let (_, shown) = core.database("kate-pg").await;
    let from = shown["backup"]["restorableFrom"].as_str().expect("a window").trim_end_matches('Z').to_string();
    assert!(page.body.contains("<h2 id=\"backups-title\">Backups</h2>"), "{}", page.body);
    assert!(page.body.contains(&format!("min=\"{from}\"")), "the picker starts at the window: {}", page.body);
    assert!(!page.body.contains("Undo the restore"), "nothing to undo yet");

    let restore = |form: String| {
        let kate = kate.clone();
        let core = &core;
        async move { core.browse("POST", "/ui/databases/kate-pg/restore", &kate, Some(&form), &[]).await }
    };
    let now = devdb_core::lifecycle::timestamp(SystemTime::now());
    let picked = now.trim_end_matches('Z').to_string();
    // Refused, nothing restored: unconfirmed, forged, outside the window (with its reason).
    let unconfirmed = restore(format!("csrf={csrf}&to={picked}")).await;
    assert_eq!(unconfirmed.status, StatusCode::BAD_REQUEST);
    assert!(unconfirmed.body.contains("Tick the box to confirm"), "{}", unconfirmed.body);
    assert_eq!(restore(format!("csrf=guess&to={picked}&confirm=yes")).await.status, StatusCode::FORBIDDEN);
    let early = restore(format!("csrf={csrf}&to=2020-01-01T00:00&confirm=yes")).await;
    assert_eq!(early.status, StatusCode::BAD_REQUEST);
    assert!(early.body.contains("restorable window"), "{}", early.body);
    assert!(core.runtime.restored_to().is_empty());

    let done = restore(format!("csrf={csrf}&to={picked}&confirm=yes")).await;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, "/ui/databases/kate-pg"), "{}", done.body);
    core.settles("kate-pg", "running").await;
    let restored: Vec<String> =
        core.runtime.restored_to().into_iter().map(|(_, at)| devdb_core::lifecycle::timestamp(at)).collect();
    assert_eq!(restored, [now], "the moment picked, read as UTC");
    let page = core.browse("GET", "/ui/databases/kate-pg", &kate, None, &[]).await;
    assert!(page.body.contains("Undo the restore"), "{}", page.body);
    let undone = restore(format!("csrf={csrf}&undo=yes&confirm=yes")).await;
    assert_eq!(undone.status, StatusCode::SEE_OTHER, "{}", undone.body);
    core.settles("kate-pg", "running").await;
    assert_eq!(core.runtime.restored_to().len(), 2);
}
