//! Per-test databases copied from a migrated template. The template's name
//! carries a digest of `migrations/`, so a changed migration makes a new one.

use commerce_storage::{quote_ident, DbConfig};
use diesel_async::RunQueryDsl;
use sha2::{Digest, Sha256};
use std::path::Path;

pub const SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432";

pub fn server_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| SERVER_URL.to_owned())
}

pub struct TestDb {
    pub name: String,
    pub url: String,
}

fn migrations_digest() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files = Vec::new();
    let mut stack = vec![dir];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("migrations dir").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files.sort();
    let mut h = Sha256::new();
    for f in files {
        h.update(f.to_string_lossy().as_bytes());
        h.update(std::fs::read(&f).expect("read migration"));
    }
    hex::encode(&h.finalize()[..6])
}

async fn admin_conn(server: &str) -> diesel_async::AsyncPgConnection {
    commerce_storage::connect(&DbConfig::with_url(format!("{server}/postgres")))
        .await
        .expect("connect to postgres")
}

#[derive(diesel::QueryableByName)]
struct Flag {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    flag: bool,
}

async fn ensure_template(server: &str) -> String {
    let name = format!("commerce_tpl_{}", migrations_digest());
    let mut c = admin_conn(server).await;
    // Serialise template creation across test processes.
    diesel::sql_query("SELECT pg_advisory_lock(7231002)")
        .execute(&mut c)
        .await
        .expect("lock");
    let ready: Flag = diesel::sql_query(
        "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate) AS flag",
    )
    .bind::<diesel::sql_types::Text, _>(&name)
    .get_result(&mut c)
    .await
    .expect("query template");
    if !ready.flag {
        let q = quote_ident(&name);
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {q} WITH (FORCE)"))
            .execute(&mut c)
            .await
            .expect("drop");
        diesel::sql_query(format!("CREATE DATABASE {q}"))
            .execute(&mut c)
            .await
            .expect("create template");
        let cfg = DbConfig::with_url(format!("{server}/{name}"));
        commerce_storage::run_migrations(&cfg)
            .await
            .expect("migrate template");
        diesel::sql_query(format!("ALTER DATABASE {q} WITH IS_TEMPLATE true"))
            .execute(&mut c)
            .await
            .expect("mark template");
    }
    diesel::sql_query("SELECT pg_advisory_unlock(7231002)")
        .execute(&mut c)
        .await
        .expect("unlock");
    name
}

impl TestDb {
    pub async fn create() -> Self {
        Self::create_on(&server_url()).await
    }

    /// [`TestDb::create`] on another server (`postgres://user@host:port`,
    /// e.g. a disposable [`crate::pg_server::PgServer`]).
    pub async fn create_on(server: &str) -> Self {
        let template = ensure_template(server).await;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut c = admin_conn(server).await;
        diesel::sql_query(format!(
            "CREATE DATABASE {} TEMPLATE {}",
            quote_ident(&name),
            quote_ident(&template)
        ))
        .execute(&mut c)
        .await
        .expect("create test database");
        Self {
            url: format!("{server}/{name}"),
            name,
        }
    }

    /// A direct connection for assertions.
    pub async fn conn(&self) -> diesel_async::AsyncPgConnection {
        commerce_storage::connect(&DbConfig::with_url(&self.url))
            .await
            .expect("connect test db")
    }

    /// A product row written directly (no cache, no gate): for tests that
    /// write events or orders by hand around it.
    pub async fn insert_product(&self, price: i64, stock: i64) -> i64 {
        self.scalar(&format!(
            "INSERT INTO products (name, price, stock) VALUES ('p', {price}, {stock}) RETURNING id AS n"
        ))
        .await
    }

    /// Runs a query returning one BIGINT column named `n`.
    pub async fn scalar(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct N {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = self.conn().await;
        let row: N = diesel::sql_query(sql).get_result(&mut c).await.expect(sql);
        row.n
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // The server this database is on (its URL with the maintenance database).
        let admin = url::Url::parse(&self.url).ok().map(|mut u| {
            u.set_path("/postgres");
            u.to_string()
        });
        // Drop runs outside async context guarantees: use a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async {
                    // A server already gone (a disposable one) has nothing to drop.
                    let Some(admin) = admin else { return };
                    let Ok(mut c) = commerce_storage::connect(&DbConfig::with_url(admin)).await
                    else {
                        return;
                    };
                    let _ = diesel::sql_query(format!(
                        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                        quote_ident(&name)
                    ))
                    .execute(&mut c)
                    .await;
                });
            }
        })
        .join();
    }
}
