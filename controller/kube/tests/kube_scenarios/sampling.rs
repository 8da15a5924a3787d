//! The kube runtime's sampler against the real proxy and a real PostgreSQL: with the proxy run
//! as the chart runs it behind an NLB (`--proxy-protocol`), a sample reaches the database only
//! when the sampler sends the PROXY header too.

use std::time::Duration;

use devdb_kube::monitor::ThroughProxy;
use devdb_proxy::certs::DevCertificates;
use devdb_proxy::config::{Config, RoutesConfig, TlsSource};
use devdb_shared::{Domain, Name};
use devdb_testkit::TestPostgres;

const DOMAIN: &str = "db.example.com";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn samples_reach_a_database_through_a_proxy_that_expects_the_proxy_protocol() {
    let server = TestPostgres::start("sampled");
    server.trust_local_tcp();
    let dir = tempfile::tempdir().expect("tempdir");
    let certs = DevCertificates::generate(DOMAIN).expect("certs").write_to(&dir.path().join("certs")).expect("write");
    let routes = dir.path().join("routes.json");
    let table = serde_json::json!({ "routes": [{ "name": "kate-pg", "backend": server.addr() }] });
    std::fs::write(&routes, table.to_string()).expect("routes");
    let tls = TlsSource::Files { cert: certs.server_cert.clone(), key: certs.server_key.clone() };
    let mut config = Config::new(Domain::new(DOMAIN).expect("domain"), tls, RoutesConfig::File(routes));
    config.proxy_protocol = true;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let address = listener.local_addr().expect("address").to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let proxy = tokio::spawn(devdb_proxy::run(config, listener, admin, async move {
        let _ = stopped.await;
    }));

    let name = Name::new("kate-pg").expect("name");
    let sampler = |proxy_protocol: bool| {
        ThroughProxy::new(address.clone(), Domain::new(DOMAIN).expect("domain"), Some(&certs.ca_cert))
            .expect("sampler")
            .with_proxy_protocol(proxy_protocol)
    };
    let mut last = None;
    for _ in 0..1200 {
        match sampler(true).sample(&name, devdb_testkit::USER, "unused", "postgres").await {
            Ok(counters) => {
                last = None;
                assert!(counters.size_bytes > 0, "the database's size: {counters:?}");
                break;
            }
            // The proxy may not have read its routes yet.
            Err(e) => last = Some(e.to_string()),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, None, "a sample with the PROXY header reaches the database");
    let refused = sampler(false).sample(&name, devdb_testkit::USER, "unused", "postgres").await;
    assert!(refused.is_err(), "without the header the proxy refuses the sample: {refused:?}");

    let _ = stop.send(());
    let _ = proxy.await;
}
