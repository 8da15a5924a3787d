//! Store documents (monitoring histories, the usage ledger) are ConfigMaps in the controller's
//! namespace, written whole by server-side apply.

use std::sync::Arc;

use devdb_core::store::Store;
use devdb_kube::{CrdStore, Passwords};
use serde_json::json;

use crate::common::*;

const MAP: &str = "/api/v1/namespaces/devdb/configmaps/devdb-doc.history.db-abc";

#[tokio::test]
async fn a_document_is_applied_read_and_deleted_as_a_config_map() {
    let (client, mut server) = apiserver::client();
    let reporter = kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: None };
    let store = Arc::new(CrdStore::new(client, "devdb", Passwords::new(KEY), reporter));
    let map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "devdb-doc.history.db-abc",
            "labels": {
                "app.kubernetes.io/managed-by": "devdb",
                "devdb.dev/document": "true",
                "devdb.dev/document-group": "history",
            },
        },
        "data": { "document.json": "{\"hour\":[]}" },
    });
    let writing = {
        let store = store.clone();
        tokio::spawn(async move {
            store.put_document("history/db-abc", "{\"hour\":[]}").await.expect("written");
            let read = store.document("history/db-abc").await.expect("read");
            let absent = store.document("history/db-abc").await.expect("read");
            store.delete_document("history/db-abc").await.expect("deleted");
            store.delete_document("history/db-abc").await.expect("absent already is fine");
            (read, absent)
        })
    };
    server
        .run(vec![
            Step::apply(MAP, &map),
            Step::get(MAP).reply(map.clone()),
            Step::get(MAP).fail(404, "NotFound"),
            Step::delete(MAP),
            Step::delete(MAP).fail(404, "NotFound"),
        ])
        .await;
    let (read, absent) = writing.await.expect("ran");
    assert_eq!(read.as_deref(), Some("{\"hour\":[]}"));
    assert_eq!(absent, None);
}

#[tokio::test]
async fn documents_of_a_group_are_listed_by_their_label_in_one_request() {
    let (client, mut server) = apiserver::client();
    let reporter = kube::runtime::events::Reporter { controller: "devdb-controller".into(), instance: None };
    let store = Arc::new(CrdStore::new(client, "devdb", Passwords::new(KEY), reporter));
    let map = |name: &str, doc: &str| json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": { "name": name }, "data": { "document.json": doc } });
    let listing = {
        let store = store.clone();
        tokio::spawn(async move { store.documents("activity").await.expect("listed") })
    };
    server
        .run(vec![Step::list(
            "/api/v1/namespaces/devdb/configmaps?&labelSelector=devdb.dev%2Fdocument-group%3Dactivity",
            vec![map("devdb-doc.activity.0a1b", "{}"), map("devdb-doc.activity.ff00", "{\"x\":1}")],
        )])
        .await;
    let listed = listing.await.expect("ran");
    assert_eq!(
        listed,
        vec![("activity/0a1b".to_string(), "{}".to_string()), ("activity/ff00".into(), "{\"x\":1}".into())]
    );
}
