//! Masking against real PostgreSQL: a realistic dump (customers, orders referencing them by
//! e-mail, an e-mail inside JSONB, a unique index, TOASTed notes, an audit trigger), masked into
//! a template whose files hold no original value anywhere, whose joins and constraints still
//! hold, and whose masked values depend only on the key.

use std::path::Path;

use devdb_pgctl::StopMode;
use devdb_pgctl::session::Session;
use devdb_restore::load::Loaded;
use devdb_restore::masking::MaskPlan;
use devdb_restore::masking::leaks as files_holding;
use devdb_restore::{Guard, RestoreError, Template};
use devdb_shared::api::{MaskRule, MaskStrategy};
use devdb_testkit::SmallDisk;

use crate::restore::{OWNER, build_template, prepare, start_template, tenant_session, workspace};

const CUSTOMERS: usize = 300;

pub(crate) fn dump() -> String {
    let mut sql = String::from(
        "CREATE TABLE customers (id serial PRIMARY KEY, email text NOT NULL UNIQUE CHECK (email LIKE '%@%'),\n\
         name text NOT NULL, phone text, profile jsonb, notes text, born date, card text);\n\
         CREATE TABLE orders (id serial PRIMARY KEY, customer_email text NOT NULL REFERENCES customers (email), total int);\n\
         CREATE TABLE audit (old text);\n\
         CREATE FUNCTION audit_change() RETURNS trigger LANGUAGE plpgsql AS $$\n\
         BEGIN INSERT INTO audit VALUES (OLD.email || ' ' || OLD.name); RETURN NEW; END $$;\n\
         CREATE TRIGGER audit_customers BEFORE UPDATE ON customers FOR EACH ROW EXECUTE FUNCTION audit_change();\n\
         ALTER TABLE customers ENABLE ALWAYS TRIGGER audit_customers;\n",
    );
    for i in 0..CUSTOMERS {
        let email = format!("secret-customer-{i}@acme-private.test");
        sql.push_str(&format!(
            "INSERT INTO customers (email, name, phone, profile, notes, born, card) VALUES ('{email}', 'Zebulon Quixote{i}', \
             '+44 20 7946 {i:04}', '{{\"contact\": {{\"email\": \"{email}\"}}, \"tier\": \"gold\"}}', \
             repeat('confidential-note-{i} ', 500), DATE '1980-01-01' + {i}, '4111 1111 1111 1111');\n\
             INSERT INTO orders (customer_email, total) VALUES ('{email}', {i}), ('{email}', {});\n",
            i + 1
        ));
    }
    // A copy of the customers in a materialized view, and a policy that hides the odd rows
    // even from their owner (FORCE): masking must reach both. Statistics that ANALYZE would
    // keep (a column set to STATISTICS 0) or update in place (extended statistics). And code
    // that masking runs (a check constraint, a view it refreshes) trying to read the key.
    sql.push_str(
        "CREATE STATISTICS customers_mcv (mcv) ON email, name FROM customers;\n\
         ANALYZE customers;\n\
         ALTER TABLE customers ALTER phone SET STATISTICS 0;\n\
         CREATE TABLE stolen (k text);\n\
         CREATE FUNCTION peek(text) RETURNS boolean LANGUAGE plpgsql AS $$ BEGIN \
           INSERT INTO public.stolen SELECT current_setting(s, true) FROM unnest(ARRAY['devdb.mask_key', 'devdb.key']) s; \
           RETURN true; END $$;\n\
         ALTER TABLE customers ADD CONSTRAINT peeking CHECK (public.peek(email));\n\
         CREATE MATERIALIZED VIEW key_view AS SELECT current_query() AS q FROM public.customers LIMIT 1;\n\
         CREATE MATERIALIZED VIEW customer_contacts AS SELECT id, email, name FROM customers;\n\
         ALTER TABLE customers ENABLE ROW LEVEL SECURITY;\n\
         ALTER TABLE customers FORCE ROW LEVEL SECURITY;\n\
         CREATE POLICY even_rows ON customers USING (id % 2 = 0);\n",
    );
    sql
}

pub(crate) fn rules() -> Vec<MaskRule> {
    let rule = MaskRule::new;
    let in_json = rule("customers", "profile", MaskStrategy::Email).at(vec!["contact".into(), "email".into()]);
    vec![
        rule("customers", "email", MaskStrategy::Email),
        rule("customers", "name", MaskStrategy::Name),
        rule("customers", "phone", MaskStrategy::Phone),
        in_json,
        rule("customers", "notes", MaskStrategy::Redact),
        rule("customers", "born", MaskStrategy::DateShift),
        rule("public.orders", "customer_email", MaskStrategy::Email),
    ]
}

/// Builds a template of the dump in a fresh directory, masked by `rules` under `key`.
fn build(rules: Option<Vec<MaskRule>>, key: &str) -> (tempfile::TempDir, Result<Loaded, RestoreError>) {
    build_from(&dump(), rules, key)
}

/// [`build`] of the dump `sql`.
fn build_from(sql: &str, rules: Option<Vec<MaskRule>>, key: &str) -> (tempfile::TempDir, Result<Loaded, RestoreError>) {
    build_plan(sql, rules.map(|rules| MaskPlan { rules, key: key.into(), verify: true }))
}

/// [`build_from`] with any plan (`verify` off, say).
fn build_plan(sql: &str, plan: Option<MaskPlan>) -> (tempfile::TempDir, Result<Loaded, RestoreError>) {
    let dir = workspace();
    let path = dir.path().join("dump.sql");
    std::fs::write(&path, sql).expect("dump");
    let dump = prepare(&path, dir.path());
    let built = build_template(dir.path(), Some(&dump), plan.as_ref());
    std::fs::remove_file(&path).expect("the dump goes (it is not part of the template)");
    (dir, built)
}

/// Runs `sql` on the template (started on a private socket, then stopped) as its superuser.
fn query(dir: &Path, sql: &[&str]) -> Vec<Vec<Vec<Option<String>>>> {
    let (pg, socket, port) = start_template(dir);
    let mut session = Session::admin(&socket, port, OWNER.database).expect("session");
    let answers = sql.iter().map(|q| session.rows(q).expect("query")).collect();
    drop(session);
    pg.stop(&dir.join("data"), StopMode::Fast).expect("stops");
    answers
}

fn one(rows: &[Vec<Option<String>>]) -> String {
    rows[0][0].clone().unwrap_or_default()
}

pub(crate) const ORIGINALS: [&str; 5] =
    ["acme-private.test", "secret-customer-17@", "Zebulon", "confidential-note-7 ", "+44 20 7946 0042"];

#[test]
fn a_masked_template_keeps_no_original_anywhere_and_its_joins_and_constraints_hold() {
    const KEY: &str = "a project's masking key, 32 bytes or more";
    // The scan finds originals in an unmasked template: it can fail.
    let (plain, built) = build(None, KEY);
    built.expect("builds");
    assert!(!files_holding(&plain.path().join("data"), &ORIGINALS).is_empty(), "the scan sees originals");

    let (masked, built) = build(Some(rules()), KEY);
    let loaded = built.expect("masks");
    let verified = loaded.verified.expect("verified");
    assert!(verified >= 50, "sampled originals looked for in every file: {verified}");
    // The scan, before masking: each personal column, covered by its rule but the card numbers.
    let found: Vec<(String, String, bool)> = loaded
        .findings
        .iter()
        .map(|f| {
            (
                format!("{}.{}{}", f.table, f.column, f.json_path.iter().map(|k| format!(".{k}")).collect::<String>()),
                f.kind.clone(),
                f.covered,
            )
        })
        .collect();
    let expected = [
        ("public.customers.email", "email", true),
        ("public.customers.name", "name", true),
        ("public.customers.phone", "phone", true),
        ("public.customers.profile.contact.email", "email", true),
        ("public.customers.card", "card", false),
        ("public.orders.customer_email", "email", true),
    ];
    for (column, kind, covered) in expected {
        assert!(found.contains(&(column.to_string(), kind.to_string(), covered)), "{column} ({kind}) in {found:?}");
    }
    assert_eq!(found.len(), expected.len(), "nothing else looks personal: {found:?}");
    let leaks = files_holding(&masked.path().join("data"), &ORIGINALS);
    assert!(leaks.is_empty(), "originals left in the template's files: {leaks:?}");
    assert!(files_holding(&masked.path().join("data"), &[KEY]).is_empty(), "nor the key");

    let answers = query(
        masked.path(),
        &[
            "SELECT count(*) FROM public.orders o JOIN public.customers c ON c.email = o.customer_email",
            "SELECT count(DISTINCT email) FROM public.customers WHERE email ~ '^user_[0-9a-f]{16}@example\\.com$'",
            "SELECT count(*) FROM public.customers WHERE profile #>> '{contact,email}' = email AND profile ->> 'tier' = 'gold'",
            "SELECT count(*) FROM public.audit",
            "SELECT tgenabled FROM pg_trigger WHERE tgname = 'audit_customers'",
            "SELECT count(*) FROM pg_constraint WHERE conrelid = 'public.orders'::regclass AND contype = 'f' AND convalidated",
            "SELECT count(*) FROM public.customers WHERE length(notes) = length(repeat('confidential-note-' || (id - 1) || ' ', 500)) AND notes ~ '^x+-x+-0+ '",
            "SELECT count(*) FROM public.customers WHERE born BETWEEN DATE '1980-01-01' - 30 AND DATE '1980-01-01' + 330 AND phone ~ '^\\+1 555 0[0-9]{2} [0-9]{4}$'",
            "SELECT count(*) FROM public.customer_contacts JOIN public.customers USING (id, email, name)",
            "SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = 'public.customers'::regclass",
            "SELECT count(*) FROM public.stolen WHERE k IS NOT NULL",
            "SELECT count(*) FROM pg_stats WHERE tablename = 'customers' AND attname = 'phone'",
            "SELECT string_agg(email || name, ',' ORDER BY id) FROM public.customers",
        ],
    );
    let counts: Vec<String> = answers.iter().take(12).map(|a| one(a)).collect();
    let all = CUSTOMERS.to_string();
    assert_eq!(
        counts,
        [
            (2 * CUSTOMERS).to_string(),
            all.clone(),
            all.clone(),
            "0".into(),
            "A".into(),
            "1".into(),
            all.clone(),
            all.clone(),
            all,
            "t".into(),
            "0".into(),
            "0".into(),
        ],
        "joins on the masked key, unique e-mails, JSON in step, no audit rows, the trigger and foreign key as they were, \
         shapes kept, the materialized view refreshed, the row security as it was, the key unseen by the dump's \
         code, no statistics kept for a column ANALYZE skips"
    );

    // Deterministic under the key: the same again; another key, other values.
    let values = one(&answers[12]);
    let (again, built) = build(Some(rules()), KEY);
    built.expect("masks");
    let same =
        one(&query(again.path(), &["SELECT string_agg(email || name, ',' ORDER BY id) FROM public.customers"])[0]);
    assert_eq!(same, values, "two refreshes give identical masked values");
    let (other, built) = build(Some(rules()), "another project's key, 32 bytes or more");
    built.expect("masks");
    let different = one(&query(other.path(), &["SELECT string_agg(email, ',' ORDER BY id) FROM public.customers"])[0]);
    assert!(!values.starts_with(different.split(',').next().unwrap_or_default()), "another key, other values");
}

#[test]
fn partitions_and_inheriting_tables_are_masked_whole_and_their_own_triggers_copy_nothing() {
    let sql = "CREATE TABLE copies (v text);\n\
        CREATE FUNCTION copy_email() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO public.copies VALUES (OLD.email); RETURN NEW; END $$;\n\
        CREATE TABLE events (id int, email text NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);\n\
        CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');\n\
        CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');\n\
        CREATE TRIGGER copy_2026 BEFORE UPDATE ON events_2026 FOR EACH ROW EXECUTE FUNCTION copy_email();\n\
        CREATE TRIGGER copy_events BEFORE UPDATE ON events FOR EACH ROW EXECUTE FUNCTION copy_email();\n\
        ALTER TABLE events_2025 DISABLE TRIGGER copy_events;\n\
        INSERT INTO events SELECT g, 'event-secret-' || g || '@acme-private.test', DATE '2025-06-01' + g FROM generate_series(1, 400) g;\n\
        CREATE TABLE people (id int, email text);\n\
        CREATE TABLE staff (badge int) INHERITS (people);\n\
        CREATE TRIGGER copy_staff BEFORE UPDATE ON staff FOR EACH ROW EXECUTE FUNCTION copy_email();\n\
        INSERT INTO staff SELECT g, 'staff-secret-' || g || '@acme-private.test', g FROM generate_series(1, 200) g;\n";
    let rule = |table: &str| MaskRule::new(table, "email", MaskStrategy::Email);
    let (dir, built) =
        build_from(sql, Some(vec![rule("events"), rule("people")]), "a project's masking key, 32 bytes or more");
    let loaded = built.expect("masks");
    assert!(loaded.verified.is_some_and(|n| n >= 20), "{:?}", loaded.verified);
    let leaks = files_holding(&dir.path().join("data"), &["event-secret-", "staff-secret-", "acme-private.test"]);
    assert!(leaks.is_empty(), "originals left in the template's files: {leaks:?}");
    let answers = query(
        dir.path(),
        &[
            "SELECT count(*) FROM public.copies",
            "SELECT count(*) FROM public.events WHERE email LIKE 'user\\_%@example.com'",
            "SELECT count(*) FROM public.staff WHERE email LIKE 'user\\_%@example.com'",
            "SELECT string_agg(tgname::text || tgenabled::text, ',' ORDER BY tgname, tgrelid) FROM pg_trigger WHERE tgname LIKE 'copy%'",
        ],
    );
    let got: Vec<String> = answers.iter().map(|a| one(a)).collect();
    assert_eq!(
        got,
        ["0", "400", "200", "copy_2026O,copy_eventsO,copy_eventsD,copy_eventsO,copy_staffO"],
        "no copies; every row masked; triggers back"
    );
}

#[test]
fn a_rule_that_breaks_a_constraint_fails_naming_table_column_and_constraint() {
    let mut rules = rules();
    rules[0].strategy = MaskStrategy::Redact; // every e-mail the same shape: no longer unique
    let (_dir, built) = build(Some(rules), "a project's masking key, 32 bytes or more");
    let error = built.expect_err("refused").to_string();
    assert!(error.contains("public.customers") && error.contains("email"), "{error}");
    assert!(error.contains("customers_email_key"), "the constraint is named: {error}");
}

#[test]
fn masking_errors_name_tables_and_constraints_but_never_a_value() {
    let sql = "CREATE TABLE customers (email text PRIMARY KEY);\n\
        CREATE TABLE orders (customer_email text REFERENCES customers);\n\
        CREATE VIEW customer_emails AS SELECT email FROM customers;\n\
        INSERT INTO customers VALUES ('secret-customer@acme-private.test');\n\
        INSERT INTO orders VALUES ('secret-customer@acme-private.test');\n";
    // Masking alone, on a plain server (each failure rolls back).
    let server = devdb_testkit::TestPostgres::start("masking-errors");
    let mut owner = tenant_session(&server, "shop_errors");
    owner.execute(sql).expect("the dump");
    let mut admin =
        Session::connect(server.dir(), server.port, devdb_testkit::USER, "shop_errors", None).expect("admin");
    let work = workspace();
    let mut error = |rules: Vec<MaskRule>| {
        let plan = MaskPlan { rules, key: "a project's masking key, 32 bytes or more".into(), verify: true };
        apply(&mut owner, &mut admin, &plan, work.path()).expect_err("refused").to_string()
    };
    // The orders keep the original e-mail: the foreign key cannot be added back. The server's
    // DETAIL would quote the key; the message does not.
    let message = error(vec![MaskRule::new("customers", "email", MaskStrategy::Email)]);
    assert!(message.contains("orders_customer_email_fkey") && message.contains("SQLSTATE 23503"), "{message}");
    assert!(!message.contains("acme-private"), "no value in the message: {message}");
    // A path into a text column: refused before anything changes, naming the column.
    let in_json = MaskRule::new("customers", "email", MaskStrategy::Email).at(vec!["contact".into()]);
    let message = error(vec![in_json]);
    assert!(
        message.contains("public.customers.email") && message.contains("a jsonPath needs a json or jsonb column"),
        "{message}"
    );
    assert!(!message.contains("acme-private"), "{message}");
    let message = error(vec![MaskRule::new("customer_emails", "email", MaskStrategy::Email)]);
    assert!(
        message.contains("public.customer_emails is not a table") && message.contains("name the table"),
        "{message}"
    );
    let message = error(vec![MaskRule::new("nope", "email", MaskStrategy::Email)]);
    assert!(message.contains("table public.nope does not exist"), "{message}");
}

#[test]
fn a_masking_that_fills_the_disk_fails_as_a_full_disk_and_leaves_no_server_running() {
    let dir = workspace();
    let volume = dir.path().join("volume");
    std::fs::create_dir(&volume).expect("mount point");
    // Room for the server and the load (about 100 MB with its WAL), not for masking's copy.
    let Some(_disk) = SmallDisk::mount(&volume, "150m") else { return };
    let path = dir.path().join("dump.sql");
    let sql = "CREATE TABLE customers (id int PRIMARY KEY, email text NOT NULL);\n\
               INSERT INTO customers SELECT g, 'secret-customer-' || g || '@acme-private.test' || repeat('x', 60) \
               FROM generate_series(1, 250000) g;\n";
    std::fs::write(&path, sql).expect("dump");
    let dump = prepare(&path, dir.path());
    let rule = MaskRule::new("customers", "email", MaskStrategy::Hash);
    let plan = MaskPlan { rules: vec![rule], key: "k".repeat(40), verify: false };
    let guard = Guard::unbounded(&volume);
    // Unmasked, it fits: what fills the disk below is the masking.
    let mut sandbox = devdb_testkit::restore_sandbox(&volume.join("box"));
    Template::in_sandbox(&mut sandbox, None, &guard).build(&OWNER, Some(&dump)).expect("the unmasked restore fits");
    drop(sandbox);
    std::fs::remove_dir_all(volume.join("box")).expect("room again");
    let mut sandbox = devdb_testkit::restore_sandbox(&volume.join("box"));
    let socket = sandbox.dir().join("sock");
    match Template::in_sandbox(&mut sandbox, Some(&plan), &guard).build(&OWNER, Some(&dump)) {
        Err(error @ RestoreError::DiskFull { .. }) => assert!(error.to_string().contains("disk is full"), "{error}"),
        other => panic!("not a full disk: {other:?}"),
    }
    assert!(Session::admin(&socket, 5432, "postgres").is_err(), "the restore server was stopped");
}

/// [`devdb_restore::masking::apply`] with a spool file in `work`.
fn apply(
    owner: &mut Session,
    admin: &mut Session,
    plan: &MaskPlan,
    work: &Path,
) -> Result<devdb_restore::masking::Masked, devdb_restore::masking::MaskError> {
    devdb_restore::masking::apply(owner, admin, plan, &Guard::unbounded(work), &work.join("spool"))
}

#[test]
fn the_scan_sees_the_rows_row_security_hides_from_their_owner() {
    let server = devdb_testkit::TestPostgres::start("scan-row-security");
    let mut owner = tenant_session(&server, "shop_scan");
    owner
        .execute(
            "CREATE TABLE contacts (email text); \
             INSERT INTO contacts SELECT 'person' || g || '@example.org' FROM generate_series(1, 50) g; \
             ALTER TABLE contacts ENABLE ROW LEVEL SECURITY; ALTER TABLE contacts FORCE ROW LEVEL SECURITY; \
             CREATE POLICY nothing ON contacts USING (false)",
        )
        .expect("the dump");
    let found = devdb_restore::scan::scan(&mut owner).expect("scanned");
    let found: Vec<(String, String)> =
        found.into_iter().map(|f| (format!("{}.{}", f.table, f.column), f.kind)).collect();
    assert_eq!(found, [("public.contacts.email".to_string(), "email".to_string())]);
    let after = owner.rows("SELECT relforcerowsecurity::text, (SELECT count(*) FROM public.contacts)::text FROM pg_class WHERE relname = 'contacts'");
    assert_eq!(after.expect("rows"), [[Some("true".to_string()), Some("0".to_string())]], "forced again");
}

#[test]
fn a_dump_that_turns_off_standard_strings_for_its_role_cannot_bend_a_rules_literals() {
    let server = devdb_testkit::TestPostgres::start("masking-strings");
    let mut setup = tenant_session(&server, "shop_strings");
    setup
        .execute(
            "CREATE TABLE customers (id int, note text); INSERT INTO customers VALUES (1, 'secret'); \
             ALTER ROLE CURRENT_USER SET standard_conforming_strings = off",
        )
        .expect("the dump");
    drop(setup);
    // The masking's session starts with the role's settings, as a restore's does.
    let mut owner = Session::connect(server.dir(), server.port, "shop_strings", "shop_strings", None).expect("owner");
    let mut admin =
        Session::connect(server.dir(), server.port, devdb_testkit::USER, "shop_strings", None).expect("admin");
    let value = r"x\' || (SELECT 'injected') || '";
    let mut rule = MaskRule::new("customers", "note", MaskStrategy::Constant);
    rule.value = Some(value.into());
    let plan = MaskPlan { rules: vec![rule], key: "a project's masking key, 32 bytes or more".into(), verify: false };
    let work = workspace();
    apply(&mut owner, &mut admin, &plan, work.path()).expect("masked");
    let rows = admin.rows("SELECT note FROM public.customers").expect("rows");
    assert_eq!(rows, [[Some(value.to_string())]], "the constant, as written");
}

const SPY_KEY: &str = "the project's key, which no dump code may see";

/// A dump whose code tries every way to see what masking does: a check constraint and a
/// domain's check that record their error context (with `log_parameter_max_length_on_error`
/// raised, which once showed a statement's parameters, the key among them), every setting,
/// every session's statement and the value they are given; and a cast from the table's row
/// type to text (masking once read whole rows through such a cast, handing the originals to
/// it). Its last statement empties what the load itself recorded.
const SPY_DUMP: &str = "\
CREATE TABLE loot (what text);
CREATE FUNCTION spy(v text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE ctx text; everything text; statements text;
BEGIN
  PERFORM set_config('log_parameter_max_length_on_error', '-1', true);
  GET DIAGNOSTICS ctx = PG_CONTEXT;
  SELECT string_agg(name || '=' || setting, ',') INTO everything FROM pg_settings;
  SELECT string_agg(coalesce(query, ''), ';') INTO statements FROM pg_stat_activity;
  INSERT INTO public.loot VALUES (ctx), (everything), (statements), (v), (current_query());
  RETURN true;
END $$;
CREATE DOMAIN watched AS text CHECK (public.spy(VALUE));
CREATE TABLE customers (id int PRIMARY KEY, email text CHECK (public.spy(email)), note watched, born date);
CREATE FUNCTION row_text(c customers) RETURNS text LANGUAGE plpgsql AS $$
BEGIN INSERT INTO public.loot VALUES ('cast: ' || c.email || ' ' || c.note); RETURN 'row'; END $$;
CREATE CAST (customers AS text) WITH FUNCTION row_text(customers);
INSERT INTO customers VALUES (1, 'secret-customer@acme-private.test', 'confidential-note-7 about Zebulon', '1980-01-02');
TRUNCATE loot;
";

#[test]
fn no_code_of_the_dump_sees_the_key_or_an_original_while_masking() {
    let mut rules = vec![
        MaskRule::new("customers", "email", MaskStrategy::Email),
        MaskRule::new("customers", "note", MaskStrategy::Hash),
        MaskRule::new("customers", "born", MaskStrategy::DateShift),
    ];
    rules[2].days = Some(10);
    let (dir, built) = build_from(SPY_DUMP, Some(rules), SPY_KEY);
    built.expect("masked");
    let answers =
        query(dir.path(), &["SELECT what FROM public.loot", "SELECT email, note, born::text FROM public.customers"]);
    let seen: Vec<String> = answers[0].iter().filter_map(|r| r[0].clone()).collect();
    assert!(!seen.is_empty(), "the dump's code ran while masking (its check saw the new values)");
    for what in &seen {
        assert!(!what.contains(SPY_KEY), "the key reached the dump's code: {what}");
        for original in ["secret-customer", "confidential-note-7", "Zebulon"] {
            assert!(!what.contains(original), "an original reached the dump's code: {what}");
        }
        assert!(!what.starts_with("cast:"), "the dump's cast ran: {what}");
    }
    let row = &answers[1][0];
    assert!(row[0].as_deref().is_some_and(|e| e.starts_with("user_")), "{row:?}");
    assert_ne!(row[2].as_deref(), Some("1980-01-02"), "shifted");
    let leaks = files_holding(&dir.path().join("data"), &[SPY_KEY]);
    assert!(leaks.is_empty(), "the key is in the template's files: {leaks:?}");
}

/// Every strategy on every column type it takes (text, varchar, citext, json, jsonb, arrays,
/// domains over them, dates), or a refusal naming the column before anything changes.
#[test]
fn every_strategy_masks_every_type_it_takes_and_refuses_the_others_by_name() {
    let sql = "\
CREATE EXTENSION citext;
CREATE DOMAIN email_text AS text CHECK (VALUE LIKE '%@%');
CREATE DOMAIN document AS jsonb;
CREATE TABLE people (
  id int PRIMARY KEY, txt text, vc varchar(80), ci citext, js json, jb jsonb, arr text[], dom email_text,
  doc document, d date, ts timestamptz, n int NOT NULL, nn text NOT NULL);
INSERT INTO people VALUES (1, 'Ada Lovelace', 'Grace Hopper', '+44 20 7946 0042',
  '{\"to\": \"ada@example.org\", \"n\": 12345678901234567890.5, \"tags\": [\"x\"]}', '{\"k\": \"v\"}',
  '{\"ada@example.org\",NULL,\"Bob 42\"}', 'ada@example.org', '{\"contact\": {\"email\": \"ada@example.org\"}, \"tier\": \"gold\"}',
  '2020-02-29', '2020-02-29 12:00:00+00', 7, 'x');
";
    let rule = |column: &str, strategy| MaskRule::new("people", column, strategy);
    let mut shift = rule("d", MaskStrategy::DateShift);
    shift.days = Some(5);
    let mut shift_ts = rule("ts", MaskStrategy::DateShift);
    shift_ts.days = Some(5);
    let rules = vec![
        rule("txt", MaskStrategy::Name),
        rule("vc", MaskStrategy::Email),
        rule("ci", MaskStrategy::Phone),
        rule("js", MaskStrategy::Hash),
        rule("jb", MaskStrategy::Null),
        rule("arr", MaskStrategy::Redact),
        rule("dom", MaskStrategy::Email),
        rule("doc", MaskStrategy::Email).at(vec!["contact".into(), "email".into()]),
        shift,
        shift_ts,
    ];
    let (dir, built) = build_from(sql, Some(rules), "a project's masking key, 32 bytes or more");
    built.expect("every rule applies");
    let answers = query(
        dir.path(),
        &[
            "SELECT txt, vc, ci::text, js::text, jb IS NULL, arr::text, dom, doc::text, d::text, ts < '2020-03-06' AND ts > '2020-02-23' FROM public.people",
        ],
    );
    let row: Vec<String> = answers[0][0].iter().map(|v| v.clone().unwrap_or_else(|| "NULL".into())).collect();
    assert!(row[0].contains(' ') && row[0] != "Ada Lovelace", "a name: {row:?}");
    assert!(row[1].starts_with("user_") && row[1].ends_with("@example.com"), "an e-mail in a varchar: {row:?}");
    assert!(row[2].starts_with("+1 555 0"), "a phone in a citext: {row:?}");
    let js: serde_json::Value = serde_json::from_str(&row[3]).expect("still JSON");
    assert_eq!(js["to"].as_str().map(str::len), Some(64), "a JSON string hashed: {row:?}");
    assert!(row[3].contains("12345678901234567890.5"), "its numbers kept as written: {row:?}");
    assert_eq!(row[4], "t", "null on jsonb: {row:?}");
    assert_eq!(row[5], "{xxx@xxxxxxx.xxx,NULL,\"xxx 00\"}", "an array, element by element: {row:?}");
    assert!(row[6].starts_with("user_"), "a domain over text, its check held: {row:?}");
    let doc: serde_json::Value = serde_json::from_str(&row[7]).expect("JSON");
    assert!(doc["contact"]["email"].as_str().is_some_and(|e| e.starts_with("user_")), "{row:?}");
    assert_eq!(doc["tier"], "gold", "the rest of the document kept: {row:?}");
    assert_ne!(row[8], "2020-02-29", "a date shifted: {row:?}");
    assert_eq!(row[9], "t", "a timestamp shifted by at most five days: {row:?}");

    // What a strategy cannot take is refused before anything changes, naming the column.
    for (rule, want) in [
        (rule("n", MaskStrategy::Email), "public.people.n: the column is integer"),
        (rule("nn", MaskStrategy::Null), "public.people.nn: the column is text: the column is NOT NULL"),
        (rule("txt", MaskStrategy::DateShift), "dateShift takes date and timestamp columns"),
        (rule("vc", MaskStrategy::Hash).at(vec!["a".into()]), "a jsonPath needs a json or jsonb column"),
    ] {
        let (_dir, built) = build_from(sql, Some(vec![rule]), "a project's masking key, 32 bytes or more");
        let error = built.expect_err("refused").to_string();
        assert!(error.contains(want), "{error}");
    }
}

/// The scan reads a bounded sample whatever the dump holds: 40 rows of 8 MB values (of text
/// and of JSON) cost the controller a few hundred kilobytes, not 640 MB.
#[test]
fn the_scan_reads_a_bounded_sample_of_huge_values() {
    let server = devdb_testkit::TestPostgres::start("scan-bomb");
    let mut owner = tenant_session(&server, "shop_bomb");
    owner
        .execute(
            "CREATE TABLE blobs (email text, doc jsonb); \
             INSERT INTO blobs SELECT 'person' || g || '@example.org' || repeat('x', 8000000), \
               jsonb_build_object('email', 'person' || g || '@example.org', 'pad', repeat('y', 8000000)) \
             FROM generate_series(1, 40) g; \
             INSERT INTO blobs SELECT 'person' || g || '@example.org', '{\"email\": \"a@b.example\"}' FROM generate_series(1, 40) g",
        )
        .expect("the dump");
    let before = owner.received();
    let found = devdb_restore::scan::scan(&mut owner).expect("scanned");
    let read = owner.received() - before;
    assert!(read < 4 << 20, "the scan read {read} bytes");
    let columns: Vec<String> = found.iter().map(|f| format!("{} {:?}", f.column, f.json_path)).collect();
    assert!(columns.contains(&"doc [\"email\"]".to_string()), "the small documents are judged: {columns:?}");
}

/// The dump's code, run by a domain's check while the masked rows are copied into the temporary
/// table, moves every row (new ctids): the write-back by ctid would then mask nothing. Every row
/// read out must be written back, or the restore fails (without any verification asked for).
#[test]
fn rows_moved_by_the_dumps_code_while_masking_fail_the_restore() {
    let sql = "\
CREATE TABLE flag (done boolean);
INSERT INTO flag VALUES (false);
CREATE FUNCTION public.shuffle(v text) RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  IF pg_catalog.current_query() LIKE 'COPY pg_temp.devdb_masked%' AND NOT (SELECT done FROM public.flag) THEN
    UPDATE public.flag SET done = true;
    UPDATE public.customers SET id = id;
  END IF;
  RETURN true;
END $$;
CREATE DOMAIN public.mail AS text CHECK (public.shuffle(VALUE));
CREATE TABLE customers (id int PRIMARY KEY, email public.mail);
INSERT INTO customers SELECT g, 'original-secret-' || g || '@acme-private.test' FROM generate_series(1, 50) g;
";
    let rules = vec![MaskRule::new("customers", "email", MaskStrategy::Email)];
    let plan = MaskPlan { rules, key: "a project's masking key, 32 bytes or more".into(), verify: false };
    let (_dir, built) = build_plan(sql, Some(plan));
    let error = built.expect_err("refused").to_string();
    assert!(error.contains("50 rows were read out and 0 written back"), "{error}");
    assert!(!error.contains("original-secret"), "{error}");
}

/// Settings a dump gives its role or database do not change what masking reads or writes: the
/// masking session pins them in its start packet.
#[test]
fn the_dumps_role_settings_do_not_bend_the_masking() {
    let sql = "\
CREATE TABLE people (id int, name text, tags text[]);
INSERT INTO people VALUES (1, 'Zoë Original', ARRAY['alpha', NULL, 'beta']);
ALTER ROLE CURRENT_USER SET client_encoding = 'LATIN1';
ALTER ROLE CURRENT_USER SET array_nulls = off;
ALTER ROLE CURRENT_USER SET default_transaction_read_only = on;
";
    let rules = vec![
        MaskRule::new("people", "name", MaskStrategy::Redact),
        MaskRule::new("people", "tags", MaskStrategy::Hash),
    ];
    let plan = MaskPlan { rules, key: "a project's masking key, 32 bytes or more".into(), verify: false };
    let (dir, built) = build_plan(sql, Some(plan));
    built.expect("masked whatever the role's settings");
    let rows = query(dir.path(), &["SELECT name, tags[2] IS NULL, length(tags[1]) FROM public.people"]);
    assert_eq!(rows[0][0], [Some("xxx xxxxxxxx".to_string()), Some("t".to_string()), Some("64".to_string())]);
}
