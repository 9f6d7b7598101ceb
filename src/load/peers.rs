//! The peers of the benchmark, driven over their native protocols by the same scenarios as
//! godown: PostgreSQL (tokio-postgres) and Redis (a Lua script per order).
//!
//! Both models hold the same rule as godown — an order takes all its lines or none, and
//! stock never goes below zero — and each is written the way a competent user of that
//! engine would write it, so that what is compared is what each engine pays for the rule.
//!
//! * PostgreSQL: one round trip per order. The set-up creates a PL/pgSQL function,
//!   `place_order(store, products, quantities)` ([`PLACE_ORDER`]); the client calls it
//!   with one prepared `SELECT place_order($1, $2, $3)` in autocommit, so the function
//!   runs as its own transaction. It locks the order's stock rows in product-id order
//!   (no deadlocks between orders), checks that every line has `on_hand - reserved >=
//!   quantity`, and only then takes the stock and inserts the order and its lines,
//!   returning the order id. If a line is short it raises a dedicated SQLSTATE: the
//!   transaction rolls back, nothing changes, and the client counts a refusal, not an
//!   error. This is the strongest form of the peer: a transaction driven from the client
//!   needs at least two round trips (the check's answer must come back before COMMIT or
//!   ROLLBACK is chosen) and holds its row locks across them, while here the locks are
//!   held only for the server-side work and the commit. With `synchronous_commit = on`
//!   each order still waits for its WAL flush, shared with concurrent commits (group
//!   commit). Stock reads and restocks are single prepared statements, one round trip each.
//! * Redis: one `EVALSHA` per order; the script checks every line, then takes them all and
//!   records the order under `order:{id}`.

use super::{Op, Outcome, SetupPlan, check_target, product_id, store_id};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio_postgres::error::SqlState;
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

/// The tables of the PostgreSQL model (dropped and created again by every set-up).
const SCHEMA: &str = "
DROP TABLE IF EXISTS order_lines, orders, stock;
CREATE TABLE stock (
    store_id   text   NOT NULL,
    product_id text   NOT NULL,
    on_hand    bigint NOT NULL,
    reserved   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (store_id, product_id));
CREATE TABLE orders (
    order_id   bigserial   PRIMARY KEY,
    store_id   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE order_lines (
    order_id   bigint NOT NULL,
    product_id text   NOT NULL,
    quantity   bigint NOT NULL);
";

/// The SQLSTATE with which `place_order` refuses an order for lack of stock.
const SHORT_SQLSTATE: &str = "IS001";

/// One order, all lines or none, in one call: one round trip, and one transaction when
/// called in autocommit. `p_products` must be distinct (the client merges a repeated
/// product's lines). Returns the new order id; when a line is short of stock or has no
/// stock row it raises SQLSTATE `IS001` ([`SHORT_SQLSTATE`]), so the transaction rolls
/// back and nothing has changed.
///
/// Why an error and not a NULL: the check may have locked rows (those that cover their
/// line), and locking a row gives the transaction an id and writes WAL, so a function that
/// returned NULL would commit and wait for a WAL flush while holding the locks (a sold-out
/// flash sale refused only about 400 orders/s with an earlier check that locked every
/// row and returned NULL). An aborted transaction does not wait for the flush.
///
/// Read committed is enough: a row locked `FOR UPDATE` is read at its newest committed
/// version, and once locked nobody else can change it until the function's commit.
/// `plan_cache_mode = force_generic_plan`: with an array parameter the planner would
/// otherwise keep planning every statement afresh on every call (a custom plan looks
/// cheaper than the generic one, which assumes 10 elements), about a quarter more server
/// CPU per order; the generic plans are the right ones (index lookups on the primary key).
const PLACE_ORDER: &str = "
CREATE OR REPLACE FUNCTION place_order(p_store text, p_products text[], p_quantities bigint[])
RETURNS bigint
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_covered  integer;
    v_order_id bigint;
BEGIN
    -- Lock, in product-id order, the order's stock rows that cover their line: every
    -- order takes its locks in the same order, so two orders cannot deadlock. A row that
    -- another order changed meanwhile is checked again at its newest version; a row that
    -- does not cover its line is not locked (so a sold-out product refuses without
    -- waiting for its lock).
    SELECT count(*)
      INTO v_covered
      FROM (SELECT
              FROM stock s
              JOIN unnest(p_products, p_quantities) AS l (product_id, quantity)
                ON s.product_id = l.product_id
             WHERE s.store_id = p_store AND s.on_hand - s.reserved >= l.quantity
             ORDER BY s.product_id
               FOR UPDATE OF s) AS covered;

    -- A line short of stock, or without a stock row: refuse, and change nothing.
    IF v_covered < cardinality(p_products) THEN
        RAISE EXCEPTION 'insufficient stock' USING ERRCODE = 'IS001';
    END IF;

    UPDATE stock s
       SET on_hand = s.on_hand - l.quantity
      FROM unnest(p_products, p_quantities) AS l (product_id, quantity)
     WHERE s.store_id = p_store AND s.product_id = l.product_id;

    INSERT INTO orders (store_id) VALUES (p_store)
    RETURNING order_id INTO v_order_id;

    INSERT INTO order_lines (order_id, product_id, quantity)
    SELECT v_order_id, l.product_id, l.quantity
      FROM unnest(p_products, p_quantities) AS l (product_id, quantity);

    RETURN v_order_id;
END
$$;
";

/// Many orders of one store in one call (the `batch` scenario): `p_counts[i]` lines each,
/// laid end to end in `p_products` / `p_quantities`. Each order runs in its own
/// subtransaction (`BEGIN … EXCEPTION`), so each is all or nothing on its own, and the call
/// commits once: one round trip and one WAL flush for the batch, as godown's batch route
/// makes one log record. The batch's rows are locked up front, in one order (no deadlock
/// between batches). Returns how many were placed.
const PLACE_ORDERS: &str = "
CREATE OR REPLACE FUNCTION place_orders(p_store text, p_counts int[], p_products text[], p_quantities bigint[])
RETURNS integer
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_placed integer := 0;
    v_from   integer := 1;
    v_n      integer;
BEGIN
    -- Every stock row of the batch locked first, in product-id order: two batches (whose
    -- orders would otherwise lock rows in their own order, holding the earlier orders'
    -- locks) cannot deadlock.
    PERFORM 1 FROM stock
      WHERE store_id = p_store AND product_id = ANY (p_products)
      ORDER BY product_id
        FOR UPDATE;
    FOREACH v_n IN ARRAY p_counts LOOP
        BEGIN
            PERFORM place_order(p_store, p_products[v_from:v_from + v_n - 1],
                                p_quantities[v_from:v_from + v_n - 1]);
            v_placed := v_placed + 1;
        EXCEPTION WHEN SQLSTATE 'IS001' THEN
            NULL; -- this order is refused; the others stand
        END;
        v_from := v_from + v_n;
    END LOOP;
    RETURN v_placed;
END
$$;
";

struct PgStatements {
    place_order: Statement,
    place_orders: Statement,
    read: Statement,
    restock: Statement,
    health: Statement,
    on_hand: Statement,
}

impl PgStatements {
    async fn prepare(client: &Client) -> Result<PgStatements, tokio_postgres::Error> {
        // Joined futures share the connection: the preparations go out together.
        let (place_order, place_orders, read, restock, health, on_hand) = tokio::try_join!(
            client.prepare("SELECT place_order($1, $2, $3)"),
            client.prepare("SELECT place_orders($1, $2, $3, $4)"),
            client.prepare(
                "SELECT on_hand - reserved FROM stock WHERE store_id = $1 AND product_id = $2"
            ),
            client.prepare(
                "UPDATE stock SET on_hand = on_hand + $3 WHERE store_id = $1 AND product_id = $2"
            ),
            client.prepare("SELECT 1"),
            client.prepare("SELECT on_hand FROM stock WHERE store_id = $1 AND product_id = $2"),
        )?;
        Ok(PgStatements {
            place_order,
            place_orders,
            read,
            restock,
            health,
            on_hand,
        })
    }
}

pub struct PgBackend {
    client: Client,
    /// Prepared at connect when the schema exists, else at the first request (the
    /// connection that runs the set-up creates it).
    statements: Option<PgStatements>,
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
        // Before the set-up has made the schema there is nothing to prepare yet. (With
        // --skip-setup against a schema without place_order(), preparing at the first
        // request fails and the run counts errors, the first one saying why.)
        let schema = client
            .query_one(
                "SELECT to_regclass('stock') IS NOT NULL AND to_regclass('orders') IS NOT NULL \
                 AND to_regclass('order_lines') IS NOT NULL \
                 AND to_regprocedure('place_order(text, text[], bigint[])') IS NOT NULL",
                &[],
            )
            .await
            .and_then(|row| row.try_get::<_, bool>(0))
            .map_err(|e| format!("postgres: {e}"))?;
        let statements = if schema {
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

    /// The prepared statements (prepared now if the connection came before the schema).
    async fn statements(&mut self) -> Result<&PgStatements, tokio_postgres::Error> {
        match self.statements {
            Some(ref st) => Ok(st),
            None => Ok(self
                .statements
                .insert(PgStatements::prepare(&self.client).await?)),
        }
    }

    pub async fn run(&mut self, op: &Op) -> Outcome {
        let result = match op {
            Op::Order(s, lines) => self.order(*s, lines).await,
            Op::Batch(s, orders) => self.batch(*s, orders).await,
            Op::Read(s, p) => self.read(*s, *p).await,
            Op::Restock(s, p, q) => self.restock(*s, *p, *q).await,
            Op::Health => self.health().await,
        };
        result.unwrap_or_else(|e| {
            report_first_error("postgres", &e);
            Outcome::Failed(0)
        })
    }

    /// One round trip: `place_order` decides and commits (or refuses) on the server.
    async fn order(
        &mut self,
        s: usize,
        lines: &[(usize, u64)],
    ) -> Result<Outcome, tokio_postgres::Error> {
        let store = store_id(s);
        // One line per product, as `place_order` takes them (a repeated product's
        // quantities summed; the scenarios never repeat one).
        let mut lines: Vec<(usize, i64)> = lines.iter().map(|&(p, q)| (p, q as i64)).collect();
        lines.sort_unstable_by_key(|&(p, _)| p);
        lines.dedup_by(|next, kept| {
            let same = next.0 == kept.0;
            if same {
                kept.1 += next.1;
            }
            same
        });
        let products: Vec<String> = lines.iter().map(|&(p, _)| product_id(p)).collect();
        let quantities: Vec<i64> = lines.iter().map(|&(_, q)| q).collect();
        let st = self.statements().await?.place_order.clone();
        match self
            .client
            .query_one(&st, &[&store, &products, &quantities])
            .await
        {
            Ok(_order_id) => Ok(Outcome::Ok),
            Err(e) if e.code().map(SqlState::code) == Some(SHORT_SQLSTATE) => Ok(Outcome::Short),
            Err(e) => Err(e),
        }
    }

    async fn batch(
        &mut self,
        s: usize,
        orders: &[Vec<(usize, u64)>],
    ) -> Result<Outcome, tokio_postgres::Error> {
        let store = store_id(s);
        let (mut counts, mut products, mut quantities) = (Vec::new(), Vec::new(), Vec::new());
        for lines in orders {
            // Each order's lines sorted by product (the scenarios never repeat one).
            let mut lines = lines.clone();
            lines.sort_unstable_by_key(|&(p, _)| p);
            counts.push(lines.len() as i32);
            for (p, q) in lines {
                products.push(product_id(p));
                quantities.push(q as i64);
            }
        }
        let st = self.statements().await?.place_orders.clone();
        self.client
            .query_one(&st, &[&store, &counts, &products, &quantities])
            .await?;
        Ok(Outcome::Ok)
    }

    async fn read(&mut self, s: usize, p: usize) -> Result<Outcome, tokio_postgres::Error> {
        let (store, product) = (store_id(s), product_id(p));
        let st = self.statements().await?.read.clone();
        Ok(
            match self.client.query_opt(&st, &[&store, &product]).await? {
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
        let st = self.statements().await?.restock.clone();
        Ok(
            match self.client.execute(&st, &[&store, &product, &q]).await? {
                0 => Outcome::Failed(404),
                _ => Outcome::Ok,
            },
        )
    }

    async fn health(&mut self) -> Result<Outcome, tokio_postgres::Error> {
        let st = self.statements().await?.health.clone();
        self.client.query_one(&st, &[]).await?;
        Ok(Outcome::Ok)
    }

    /// Drops and creates the tables and `place_order`, then loads `stores × products` rows
    /// of `units` each.
    pub async fn setup(&mut self, plan: &SetupPlan) -> Result<(), String> {
        let err = |what: &str, e: tokio_postgres::Error| format!("postgres set-up, {what}: {e}");
        self.statements = None;
        self.client
            .batch_execute("SET client_min_messages = warning")
            .await
            .map_err(|e| err("client_min_messages", e))?;
        self.client
            .batch_execute(SCHEMA)
            .await
            .map_err(|e| err("creating the tables", e))?;
        self.client
            .batch_execute(PLACE_ORDER)
            .await
            .map_err(|e| err("creating place_order()", e))?;
        self.client
            .batch_execute(PLACE_ORDERS)
            .await
            .map_err(|e| err("creating place_orders()", e))?;
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
        let st = self
            .statements()
            .await
            .map_err(|e| format!("postgres: {e}"))?
            .on_hand
            .clone();
        let row = self
            .client
            .query_opt(&st, &[&store, &product])
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
    /// Whether the order script is loaded (a pipeline calls it by hash, with no retry).
    script_loaded: bool,
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
        Ok(RedisBackend {
            conn,
            script_loaded: false,
        })
    }

    /// The batch: one pipeline of the order script, once per order (with `appendfsync
    /// always` Redis writes and syncs the pipeline's effects before it answers).
    async fn batch(
        &mut self,
        s: usize,
        orders: &[Vec<(usize, u64)>],
    ) -> redis::RedisResult<Outcome> {
        if !self.script_loaded {
            ORDER_SCRIPT
                .prepare_invoke()
                .load_async(&mut self.conn)
                .await?;
            self.script_loaded = true;
        }
        let store = store_id(s);
        let mut pipe = redis::pipe();
        for lines in orders {
            let call = pipe
                .cmd("EVALSHA")
                .arg(ORDER_SCRIPT.get_hash())
                .arg(lines.len());
            for &(p, _) in lines {
                call.arg(stock_key(s, p));
            }
            call.arg(&store);
            for &(_, q) in lines {
                call.arg(q);
            }
            for &(p, _) in lines {
                call.arg(product_id(p));
            }
        }
        let _ids: Vec<i64> = pipe.query_async(&mut self.conn).await?;
        Ok(Outcome::Ok)
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
            Op::Batch(s, orders) => self.batch(*s, orders).await,
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
