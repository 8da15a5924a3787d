//! A scripted Kubernetes API server (kube's tower-test pattern): the client under test talks to
//! an in-memory service, and the script says, request by request, what must be asked and what
//! is answered. Any other request, a body that differs, or a step never asked for fails the test
//! with the requests seen so far.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::fmt::Write as _;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose API server is the returned script runner.
pub fn client() -> (kube::Client, ApiServer) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), ApiServer { handle, seen: Vec::new(), held: Vec::new() })
}

/// What a step checks of the request body.
#[derive(Debug, Clone)]
enum BodyCheck {
    Any,
    /// The whole body, exactly.
    Equals(Value),
    /// These fields, recursively; others may be present.
    Has(Value),
}

/// One expected request and its answer.
#[derive(Debug, Clone)]
pub struct Step {
    method: &'static str,
    path: String,
    /// Query parameters, in any order.
    query: BTreeSet<String>,
    body: BodyCheck,
    status: u16,
    reply: Value,
    /// Sent instead of `reply` when set (a watch stream: one JSON event per line).
    raw: Option<String>,
    /// Never answered (a watch that stays open with nothing to say).
    hold: bool,
}

impl Step {
    fn new(method: &'static str, target: &str) -> Self {
        let (path, query) = split(target);
        Self { method, path, query, body: BodyCheck::Any, status: 200, reply: json!({}), raw: None, hold: false }
    }

    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    pub fn list(target: &str, items: Vec<Value>) -> Self {
        Self::new("GET", target).reply(
            json!({ "apiVersion": "v1", "kind": "List", "metadata": { "resourceVersion": "1" }, "items": items }),
        )
    }

    pub fn post(target: &str) -> Self {
        Self::new("POST", target)
    }

    pub fn put(target: &str) -> Self {
        Self::new("PUT", target)
    }

    pub fn delete(target: &str) -> Self {
        Self::new("DELETE", target).reply(json!({ "kind": "Status", "apiVersion": "v1", "status": "Success" }))
    }

    pub fn patch(target: &str) -> Self {
        Self::new("PATCH", target)
    }

    /// Server-side apply of exactly `object` at its own URL, answered with the object.
    pub fn apply(target: &str, object: &impl serde::Serialize) -> Self {
        let object = serde_json::to_value(object).expect("serializes");
        let mut step = Self::new("PATCH", &format!("{target}?fieldManager=devdb-controller&force=true"));
        step.body = BodyCheck::Equals(object.clone());
        step.reply = object;
        step
    }

    /// The request body must equal `body`.
    pub fn body(mut self, body: Value) -> Self {
        self.body = BodyCheck::Equals(body);
        self
    }

    /// The request body must contain these fields.
    pub fn has(mut self, fields: Value) -> Self {
        self.body = BodyCheck::Has(fields);
        self
    }

    /// Answers with `text` as it is (a pod's log).
    pub fn text(mut self, text: &str) -> Self {
        self.raw = Some(text.into());
        self
    }

    /// Answers with watch events, then ends the stream.
    pub fn events(mut self, events: &[(&str, Value)]) -> Self {
        let lines = events.iter().map(|(kind, object)| json!({ "type": kind, "object": object }).to_string() + "\n");
        self.raw = Some(lines.collect());
        self
    }

    /// Left unanswered for as long as the server lives.
    pub fn held(mut self) -> Self {
        self.hold = true;
        self
    }

    pub fn reply(mut self, reply: Value) -> Self {
        self.reply = reply;
        self
    }

    /// Answers with a Kubernetes error Status.
    pub fn fail(mut self, status: u16, reason: &str) -> Self {
        self.status = status;
        self.reply = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": reason, "code": status, "message": format!("{reason} (scripted)"),
        });
        self
    }
}

fn split(target: &str) -> (String, BTreeSet<String>) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    (path.to_string(), query.split('&').filter(|p| !p.is_empty()).map(String::from).collect())
}

/// Whether `actual` has every field of `expected` with the same value.
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e.iter().all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        (Value::Array(a), Value::Array(e)) => a.len() == e.len() && a.iter().zip(e).all(|(av, ev)| contains(av, ev)),
        _ => actual == expected,
    }
}

/// The script runner.
pub struct ApiServer {
    handle: Handle,
    seen: Vec<String>,
    /// The answers of held requests, never sent.
    held: Vec<tower_test::mock::SendResponse<Response<Body>>>,
}

impl ApiServer {
    /// Answers `steps` in order, checking each request. Returns the bodies of the requests.
    pub async fn run(&mut self, steps: Vec<Step>) -> Vec<Value> {
        let mut bodies = Vec::new();
        for (i, step) in steps.iter().enumerate() {
            let Some((request, respond)) = self.handle.next_request().await else {
                panic!("step {i} ({} {}) never came; requests so far:\n{}", step.method, step.path, self.log());
            };
            let (parts, body) = request.into_parts();
            let bytes = http_body_util::BodyExt::collect(body).await.expect("body").to_bytes();
            let body: Value =
                if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).expect("JSON body") };
            let target = parts.uri.path_and_query().map(ToString::to_string).unwrap_or_default();
            self.seen.push(format!("{} {target}", parts.method));
            let (path, query) = split(&target);
            let matches = parts.method.as_str() == step.method && path == step.path && query == step.query;
            if !matches {
                panic!(
                    "step {i}: expected {} {}?{:?}, got {} {target}\nbody: {body}\nrequests so far:\n{}",
                    step.method,
                    step.path,
                    step.query,
                    parts.method,
                    self.log()
                );
            }
            match &step.body {
                BodyCheck::Any => {}
                BodyCheck::Equals(expected) => {
                    assert!(
                        &body == expected,
                        "step {i} {target}: body\n{body:#}\nis not\n{expected:#}\n{}",
                        self.log()
                    )
                }
                BodyCheck::Has(expected) => assert!(
                    contains(&body, expected),
                    "step {i} {target}: body\n{body:#}\nlacks\n{expected:#}\n{}",
                    self.log()
                ),
            }
            bodies.push(body);
            if step.hold {
                self.held.push(respond);
                continue;
            }
            let response = Response::builder()
                .status(step.status)
                .header("content-type", "application/json")
                .body(Body::from(match &step.raw {
                    Some(raw) => raw.clone().into_bytes(),
                    None => serde_json::to_vec(&step.reply).expect("json"),
                }))
                .expect("response");
            respond.send_response(response);
        }
        bodies
    }

    /// Fails if any request comes within a moment (the code under test is done asking).
    pub async fn quiet(&mut self) {
        let next = tokio::time::timeout(std::time::Duration::from_millis(200), self.handle.next_request()).await;
        if let Ok(Some((request, _))) = next {
            panic!("unexpected request {} {}\nrequests so far:\n{}", request.method(), request.uri(), self.log());
        }
    }

    fn log(&self) -> String {
        self.seen.iter().enumerate().fold(String::new(), |mut out, (i, r)| {
            let _ = writeln!(out, "  {i}: {r}");
            out
        })
    }
}
