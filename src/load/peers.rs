//! The peers of the benchmark, driven over their native protocols by the same scenarios as
//! godown: PostgreSQL (tokio-postgres) and Redis (a Lua script per order).
//!
//! Both models hold the same rule as godown — an order takes all its lines or none, and
//! stock never goes below zero — so that what is compared is what each engine pays for it.
//!
//! * PostgreSQL: one transaction per order; lines locked in product-id order (no
//!   deadlocks); each line a guarded `UPDATE … WHERE on_hand - reserved >= q`; any line
//!   that matches no row rolls the order back. Prepared statements, and the statements of
//!   a round trip are pipelined (BEGIN + all UPDATEs, then INSERT + COMMIT): two round
//!   trips per order, the fewest this model allows from a client.
//! * Redis: one `EVALSHA` per order; the script checks every line, then takes them all and
//!   records the order under `order:{id}`.

use super::{Op, Outcome, SetupPlan, check_target, product_id, store_id};
use std::future::Future;
use std::pin::Pin;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Statement};

/// The first peer error of the process goes to stderr (a run full of "transport error"
/// should say why); the rest are only counted.
fn report_first_error(system: &str, e: &dyn std::fmt::Display) {
    static SHOWN: AtomicBool = AtomicBool::new(false);
    if !SHOWN.swap(true, Ordering::Relaxed) {
        eprintln!("godown load: {system}: {e} (further errors are only counted)");
    }
}

/// "host:port" as `check_target` takes it (IPv6 literals in brackets).
fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL
// ---------------------------------------------------------------------------------------

type PgFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// Polls every future until all are done, first polls in order: tokio-postgres sends a
/// request when its future is first polled, so the requests leave in this order on one
/// connection (a pipeline) and PostgreSQL runs them in this order.
async fn pipeline<T>(mut futures: Vec<PgFuture<'_, T>>) -> Vec<Result<T, tokio_postgres::Error>> {
    let mut results: Vec<Option<Result<T, tokio_postgres::Error>>> =
        futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, r) in futures.iter_mut().zip(results.iter_mut()) {
            if r.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *r = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    results
        .into_iter()
        .map(|r| r.expect("every future finished"))
        .collect()
}

struct PgStatements {
    begin: Statement,
    commit: Statement,
    rollback: Statement,
    take: Statement,
    insert_order: Statement,
    read: Statement,
    restock: Statement,
    health: Statement,
    on_hand: Statement,
}

impl PgStatements {
    async fn prepare(client: &Client) -> Result<PgStatements, tokio_postgres::Error> {
        let sql = [
            "BEGIN",
            "COMMIT",
            "ROLLBACK",
            "UPDATE stock SET on_hand = on_hand - $3 \
             WHERE store_id = $1 AND product_id = $2 AND on_hand - reserved >= $3",
            "WITH o AS (INSERT INTO orders (store_id) VALUES ($1) RETURNING order_id) \
             INSERT INTO order_lines (order_id, product_id, quantity) \
             SELECT o.order_id, l.product_id, l.quantity \
             FROM o, unnest($2::text[], $3::bigint[]) AS l(product_id, quantity)",
            "SELECT on_hand - reserved FROM stock WHERE store_id = $1 AND product_id = $2",
            "UPDATE stock SET on_hand = on_hand + $3 WHERE store_id = $1 AND product_id = $2",
            "SELECT 1",
            "SELECT on_hand FROM stock WHERE store_id = $1 AND product_id = $2",
        ];
        let futures: Vec<PgFuture<'_, Statement>> = sql
            .iter()
            .map(|s| Box::pin(client.prepare(s)) as _)
            .collect();
        let mut s = pipeline(futures).await.into_iter();
        let mut next = || s.next().expect("one statement per query");
        Ok(PgStatements {
            begin: next()?,
            commit: next()?,
            rollback: next()?,
            take: next()?,
            insert_order: next()?,
            read: next()?,
            restock: next()?,
            health: next()?,
            on_hand: next()?,
        })
    }
}

pub struct PgBackend {
    client: Client,
    /// Prepared at connect when the tables exist, else at the first request (the
    /// connection that runs the set-up creates them).
    statements: Option<PgStatements>,
}

/// What an order transaction came to, before it is an `Outcome`.
enum OrderError {
    Short,
    Pg(tokio_postgres::Error),
}

impl From<tokio_postgres::Error> for OrderError {
    fn from(e: tokio_postgres::Error) -> Self {
        OrderError::Pg(e)
    }
}

impl PgBackend {
    pub async fn connect(url: &str, allow_remote: bool) -> Result<PgBackend, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("bad PostgreSQL url {url}: {e}"))?;
        let port = |i: usize| match config.get_ports() {
            [] => 5432,
            [one] => *one,
            many => many.get(i).copied().unwrap_or(5432),
        };
        for (i, host) in config.get_hosts().iter().enumerate() {
            // A Unix socket is on this box by definition.
            if let tokio_postgres::config::Host::Tcp(h) = host {
                check_target(&host_port(h, port(i)), allow_remote)?;
            }
        }
        for (i, addr) in config.get_hostaddrs().iter().enumerate() {
            check_target(&host_port(&addr.to_string(), port(i)), allow_remote)?;
        }
        let (client, connection) = config
            .connect(NoTls)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; a broken
            // connection shows up as errors of the requests.
            let _ = connection.await;
        });
        // Before the set-up has made the tables there is nothing to prepare yet.
        let tables = client
            .query_one(
                "SELECT to_regclass('stock') IS NOT NULL AND to_regclass('orders') IS NOT NULL \
                 AND to_regclass('order_lines') IS NOT NULL",
                &[],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0))
            .map_err(|e| format!("postgres: {e}"))?;
        let statements = if tables {
            Some(
                PgStatements::prepare(&client)
                    .await
                    .map_err(|e| format!("postgres: preparing the statements: {e}"))?,
            )
        } else {
            None
        };
        Ok(PgBackend { client, statements })
    }

    async fn statements(&mut self) -> Result<&PgStatements, tokio_postgres::Error> {
        if self.statements.is_none() {
            self.statements = Some(PgStatements::prepare(&self.client).await?);
        }
        Ok(self.statements.as_ref().expect("just prepared"))
    }

    pub async fn run(&mut self, op: &Op) -> Outcome {
        let result = match op {
            Op::Order(s, lines) => match self.order(*s, lines).await {
                Ok(()) => Ok(Outcome::Ok),
                Err(OrderError::Short) => Ok(Outcome::Short),
                Err(OrderError::Pg(e)) => Err(e),
            },
            Op::Read(s, p) => self.read(*s, *p).await,
            Op::Restock(s, p, q) => self.restock(*s, *p, *q).await,
            Op::Health => self.health().await,
        };
        result.unwrap_or_else(|e| {
            report_first_error("postgres", &e);
            Outcome::Failed(0)
        })
    }

    async fn order(&mut self, s: usize, lines: &[(usize, u64)]) -> Result<(), OrderError> {
        let store = store_id(s);
        let mut lines: Vec<(String, i64)> = lines
            .iter()
            .map(|&(p, q)| (product_id(p), q as i64))
            .collect();
        // Every transaction locks rows in the same order: no deadlock between orders.
        lines.sort();
        self.statements().await?;
        let (client, st) = (&self.client, self.statements.as_ref().expect("prepared"));

        // Round trip 1: BEGIN and every guarded UPDATE.
        let params: Vec<[&(dyn ToSql + Sync); 3]> = lines
            .iter()
            .map(|(p, q)| [&store as &(dyn ToSql + Sync), p, q])
            .collect();
        let mut futures: Vec<PgFuture<'_, u64>> = Vec::with_capacity(lines.len() + 1);
        futures.push(Box::pin(client.execute(&st.begin, &[])));
        for p in &params {
            futures.push(Box::pin(client.execute(&st.take, p)));
        }
        let mut taken = true;
        let mut error = None;
        for (i, r) in pipeline(futures).await.into_iter().enumerate() {
            match r {
                Ok(0) if i > 0 => taken = false,
                Ok(_) => {}
                Err(e) => {
                    error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = error {
            let _ = client.execute(&st.rollback, &[]).await;
            return Err(e.into());
        }
        if !taken {
            client.execute(&st.rollback, &[]).await?;
            return Err(OrderError::Short);
        }

        // Round trip 2: the order with its lines, and COMMIT.
        let products: Vec<&str> = lines.iter().map(|(p, _)| p.as_str()).collect();
        let quantities: Vec<i64> = lines.iter().map(|(_, q)| *q).collect();
        let order: [&(dyn ToSql + Sync); 3] = [&store, &products, &quantities];
        let futures: Vec<PgFuture<'_, u64>> = vec![
            Box::pin(client.execute(&st.insert_order, &order)),
            Box::pin(client.execute(&st.commit, &[])),
        ];
        for r in pipeline(futures).await {
            // A failed INSERT turns the COMMIT into a ROLLBACK: nothing was taken.
            r?;
        }
        Ok(())
    }

    async fn read(&mut self, s: usize, p: usize) -> Result<Outcome, tokio_postgres::Error> {
        let (store, product) = (store_id(s), product_id(p));
        self.statements().await?;
        let st = self.statements.as_ref().expect("prepared");
        Ok(
            match self.client.query_opt(&st.read, &[&store, &product]).await? {
                Some(_) => Outcome::Ok,
                // As godown answers for an unknown product.
                None => Outcome::Failed(404),
            },
        )
    }

    async fn restock(
        &mut self,
        s: usize,
        p: usize,
        q: u64,
    ) -> Result<Outcome, tokio_postgres::Error> {
        let (store, product, q) = (store_id(s), product_id(p), q as i64);
        self.statements().await?;
        let st = self.statements.as_ref().expect("prepared");
        Ok(
            match self
                .client
                .execute(&st.restock, &[&store, &product, &q])
                .await?
            {
                0 => Outcome::Failed(404),
                _ => Outcome::Ok,
            },
        )
    }

    async fn health(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        self.statements().await?;
        let st = self.statements.as_ref().expect("prepared");
        self.client.query_one(&st.health, &[]).await?;
        Ok(Outcome::Ok)
    }

    /// Drops and creates the tables, then loads `stores × products` rows of `units` each.
    pub async fn setup(&mut self, plan: &SetupPlan) -> Result<(), String> {
        let err = |what: &str, e: tokio_postgres::Error| format!("postgres set-up, {what}: {e}");
        self.statements = None;
        self.client
            .batch_execute(
                "SET client_min_messages = warning;
                 DROP TABLE IF EXISTS order_lines, orders, stock;
                 CREATE TABLE stock (
                     store_id text NOT NULL,
                     product_id text NOT NULL,
                     on_hand bigint NOT NULL,
                     reserved bigint NOT NULL DEFAULT 0,
                     PRIMARY KEY (store_id, product_id));
                 CREATE TABLE orders (
                     order_id bigserial PRIMARY KEY,
                     store_id text NOT NULL,
                     created_at timestamptz NOT NULL DEFAULT now());
                 CREATE TABLE order_lines (
                     order_id bigint NOT NULL,
                     product_id text NOT NULL,
                     quantity bigint NOT NULL);",
            )
            .await
            .map_err(|e| err("creating the tables", e))?;
        let insert = self
            .client
            .prepare(
                "INSERT INTO stock (store_id, product_id, on_hand, reserved) \
                 SELECT $1, p, $3, 0 FROM unnest($2::text[]) AS p",
            )
            .await
            .map_err(|e| err("preparing the load", e))?;
        let units = plan.units as i64;
        let products: Vec<String> = (0..plan.products).map(product_id).collect();
        // One transaction, 1000 rows a statement: one WAL flush for the whole load.
        self.client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| err("BEGIN", e))?;
        for s in 0..plan.stores {
            let store = store_id(s);
            for chunk in products.chunks(1000) {
                let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
                self.client
                    .execute(&insert, &[&store, &chunk, &units])
                    .await
                    .map_err(|e| err("loading stock", e))?;
            }
        }
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| err("COMMIT", e))?;
        self.client
            .batch_execute("VACUUM ANALYZE stock")
            .await
            .map_err(|e| err("VACUUM ANALYZE", e))?;
        Ok(())
    }

    pub async fn stock_units(&mut self, s: usize, p: usize) -> Result<i64, String> {
        let (store, product) = (store_id(s), product_id(p));
        self.statements()
            .await
            .map_err(|e| format!("postgres: {e}"))?;
        let st = self.statements.as_ref().expect("prepared");
        let row = self
            .client
            .query_opt(&st.on_hand, &[&store, &product])
            .await
            .map_err(|e| format!("postgres: {e}"))?
            .ok_or_else(|| format!("postgres: no stock row for {store}/{product}"))?;
        row.try_get(0).map_err(|e| format!("postgres: {e}"))
    }
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// KEYS: the lines' stock keys. ARGV[1]: the store; ARGV[2..n+1]: the quantities;
/// ARGV[n+2..2n+1]: the product ids. Checks every line before it takes any: all or none.
/// Returns the new order id, or 0 when a line is short (a missing key has no stock).
static ORDER_SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local n = #KEYS
for i = 1, n do
  local have = tonumber(redis.call('GET', KEYS[i]) or '0')
  if have < tonumber(ARGV[i + 1]) then
    return 0
  end
end
for i = 1, n do
  redis.call('DECRBY', KEYS[i], ARGV[i + 1])
end
local id = redis.call('INCR', 'order:seq')
local fields = {'store_id', ARGV[1]}
for i = 1, n do
  fields[#fields + 1] = ARGV[n + 1 + i]
  fields[#fields + 1] = ARGV[i + 1]
end
redis.call('HSET', 'order:' .. id, unpack(fields))
return id
",
    )
});

fn stock_key(s: usize, p: usize) -> String {
    format!("stock:{}:{}", store_id(s), product_id(p))
}

pub struct RedisBackend {
    conn: redis::aio::MultiplexedConnection,
}

impl RedisBackend {
    pub async fn connect(url: &str, allow_remote: bool) -> Result<RedisBackend, String> {
        let client = redis::Client::open(url).map_err(|e| format!("bad Redis url {url}: {e}"))?;
        match client.get_connection_info().addr() {
            redis::ConnectionAddr::Tcp(host, port) => {
                check_target(&host_port(host, *port), allow_remote)?;
            }
            redis::ConnectionAddr::TcpTls { host, port, .. } => {
                check_target(&host_port(host, *port), allow_remote)?;
            }
            // A Unix socket is on this box by definition.
            _ => {}
        }
        // The crate gives up on an answer after 500 ms by default; godown's and PostgreSQL's
        // clients wait, so this one waits too (a slow fsync is latency, not an error).
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(None)
            .set_connection_timeout(Some(std::time::Duration::from_secs(10)));
        let conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        Ok(RedisBackend { conn })
    }

    pub async fn run(&mut self, op: &Op) -> Outcome {
        let result: redis::RedisResult<Outcome> = match op {
            Op::Order(s, lines) => {
                let store = store_id(*s);
                let mut call = ORDER_SCRIPT.prepare_invoke();
                for &(p, _) in lines {
                    call.key(stock_key(*s, p));
                }
                call.arg(&store);
                for &(_, q) in lines {
                    call.arg(q);
                }
                for &(p, _) in lines {
                    call.arg(product_id(p));
                }
                call.invoke_async::<i64>(&mut self.conn)
                    .await
                    .map(|id| if id == 0 { Outcome::Short } else { Outcome::Ok })
            }
            Op::Read(s, p) => redis::cmd("GET")
                .arg(stock_key(*s, *p))
                .query_async::<Option<i64>>(&mut self.conn)
                .await
                .map(|v| match v {
                    Some(_) => Outcome::Ok,
                    // As godown answers for an unknown product.
                    None => Outcome::Failed(404),
                }),
            Op::Restock(s, p, q) => redis::cmd("INCRBY")
                .arg(stock_key(*s, *p))
                .arg(*q)
                .query_async::<i64>(&mut self.conn)
                .await
                .map(|_| Outcome::Ok),
            Op::Health => redis::cmd("PING")
                .query_async::<String>(&mut self.conn)
                .await
                .map(|_| Outcome::Ok),
        };
        result.unwrap_or_else(|e| {
            report_first_error("redis", &e);
            Outcome::Failed(0)
        })
    }

    /// FLUSHDB, then `stores × products` keys of `units` each, 1000 keys an MSET.
    pub async fn setup(&mut self, plan: &SetupPlan) -> Result<(), String> {
        let err = |what: &str, e: redis::RedisError| format!("redis set-up, {what}: {e}");
        redis::cmd("FLUSHDB")
            .query_async::<()>(&mut self.conn)
            .await
            .map_err(|e| err("FLUSHDB", e))?;
        let total = plan.stores * plan.products;
        let mut i = 0;
        while i < total {
            let end = (i + 1000).min(total);
            let mut mset = redis::cmd("MSET");
            for k in i..end {
                mset.arg(stock_key(k / plan.products, k % plan.products))
                    .arg(plan.units);
            }
            mset.query_async::<()>(&mut self.conn)
                .await
                .map_err(|e| err("MSET", e))?;
            i = end;
        }
        // Load the script once here rather than on every connection's first order.
        ORDER_SCRIPT
            .load_async(&mut self.conn)
            .await
            .map_err(|e| err("SCRIPT LOAD", e))?;
        Ok(())
    }

    pub async fn stock_units(&mut self, s: usize, p: usize) -> Result<i64, String> {
        redis::cmd("GET")
            .arg(stock_key(s, p))
            .query_async::<Option<i64>>(&mut self.conn)
            .await
            .map_err(|e| format!("redis: {e}"))?
            .ok_or_else(|| format!("redis: no key {}", stock_key(s, p)))
    }
}
