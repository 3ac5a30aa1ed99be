//! Each table has one owning crate, and capability crates do not import each
//! other (DESIGN: one crate per capability). Another crate changes a table
//! only through its owner's functions, wired by the server.
//!
//! Read from the sources: a table named in another crate's diesel imports or
//! in a writing SQL statement there fails this test, as does a table of the
//! migrations that has no owner here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Table -> the crate (directory under `crates/`) that owns it.
const OWNERS: &[(&str, &str)] = &[
    ("users", "accounts"),
    ("balance_ledger", "accounts"),
    ("products", "catalog"),
    ("product_sales_daily", "catalog"),
    ("coupons", "coupons"),
    ("user_coupons", "coupons"),
    ("orders", "orders"),
    ("order_items", "orders"),
    ("payments", "orders"),
    ("idempotency_keys", "storage"),
    ("outbox", "storage"),
    ("inbox_data_platform", "events"),
    ("inbox_notification", "events"),
    ("inbox_ranking", "events"),
    ("dead_letters", "events"),
    ("lock_fencing", "resilience"),
];

/// Writes other crates may make to a table they do not own, and why.
const SHARED: &[(&str, &str, &str)] = &[
    // The outbox pattern: every capability enqueues its events in its own
    // transaction (storage::outbox, or the coupon batch's single statement).
    (
        "outbox",
        "*",
        "events are enqueued in the writer's own transaction",
    ),
    // The relay is the outbox's reader: it marks rows published.
    ("outbox", "events", "the relay marks published rows"),
];

const CAPABILITIES: &[&str] = &[
    "accounts", "catalog", "coupons", "orders", "queue", "events",
];

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Tables a source file names in `schema::...` imports.
fn diesel_tables(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for part in src.split("schema::").skip(1) {
        let part = part.trim_start();
        let names = if let Some(rest) = part.strip_prefix('{') {
            rest.split('}').next().unwrap_or("")
        } else {
            part.split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .next()
                .unwrap_or("")
        };
        for n in names.split(',') {
            let n = n.trim();
            if !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
                found.push(n.to_owned());
            }
        }
    }
    found
}

/// Tables a source file writes with SQL text.
fn sql_writes(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for verb in ["INSERT INTO ", "UPDATE ", "DELETE FROM "] {
        for part in src.split(verb).skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

fn owner(table: &str) -> Option<&'static str> {
    OWNERS.iter().find(|(t, _)| *t == table).map(|(_, o)| *o)
}

fn shared(table: &str, krate: &str) -> bool {
    SHARED
        .iter()
        .any(|(t, c, _)| *t == table && (*c == "*" || *c == krate))
}

#[test]
fn every_table_is_touched_only_by_its_owner() {
    let root = crates_dir();
    let mut broken: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut files_seen = 0;
    for krate in std::fs::read_dir(&root).expect("crates dir").flatten() {
        let name = krate.file_name().to_string_lossy().into_owned();
        // The test kit and the load-test runner set up and check data of
        // every table on purpose; the server only wires owners together.
        if matches!(name.as_str(), "testkit" | "loadtest") {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&krate.path().join("src"), &mut files);
        for f in files {
            if f.ends_with("storage/src/schema.rs") {
                continue;
            }
            let src = std::fs::read_to_string(&f).unwrap_or_default();
            files_seen += 1;
            let tables = diesel_tables(&src).into_iter().chain(sql_writes(&src));
            for table in tables {
                // A word after UPDATE that is not a table (prose, SQL
                // keywords) has no owner and is not ours to judge.
                let Some(owner) = owner(&table) else { continue };
                if owner != name && !shared(&table, &name) {
                    broken
                        .entry(format!("{table} (owned by {owner})"))
                        .or_default()
                        .push(f.strip_prefix(&root).unwrap_or(&f).display().to_string());
                }
            }
        }
    }
    assert!(
        files_seen > 20,
        "sources not found under {}",
        root.display()
    );
    assert!(
        broken.is_empty(),
        "tables touched outside their owning crate: {broken:#?}"
    );
}

#[test]
fn every_table_of_the_migrations_has_an_owner() {
    let migrations = crates_dir().join("../migrations");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&migrations)
        .expect("migrations")
        .flatten()
    {
        files.push(dir.path().join("up.sql"));
    }
    let mut missing = Vec::new();
    let mut tables = 0;
    for f in files {
        let sql = std::fs::read_to_string(&f).unwrap_or_default();
        for part in sql.split("CREATE TABLE ").skip(1) {
            let part = part.trim_start_matches("IF NOT EXISTS ");
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            tables += 1;
            if owner(&name).is_none() {
                missing.push(name);
            }
        }
    }
    assert!(tables >= 10, "no migrations found");
    assert!(missing.is_empty(), "tables without an owner: {missing:?}");
}

#[test]
fn capability_crates_do_not_import_each_other() {
    let root = crates_dir();
    let mut broken = Vec::new();
    for krate in CAPABILITIES {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml"))
            .expect("capability manifest");
        for other in CAPABILITIES.iter().filter(|o| *o != krate) {
            if manifest.contains(&format!("commerce-{other}")) {
                broken.push(format!("{krate} depends on {other}"));
            }
        }
    }
    assert!(broken.is_empty(), "{broken:?}");
}

#[test]
fn the_source_scan_finds_what_it_looks_for() {
    // The scanners themselves: a test that cannot fail is a defect.
    assert_eq!(
        diesel_tables("use commerce_storage::schema::{orders, users};\nuse x::schema::products;"),
        vec!["orders", "users", "products"]
    );
    assert_eq!(
        sql_writes("\"UPDATE users SET x\" ... \"INSERT INTO balance_ledger (a)\""),
        vec!["balance_ledger", "users"]
    );
}
