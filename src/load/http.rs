//! The HTTP backend: godown's own API.

use super::{Op, Outcome, SetupPlan, product_id, store_id};
use crate::client::Conn;
use bytes::Bytes;
use std::fmt::Write;
use std::net::SocketAddr;

/// Appends a cod order's JSON body (naming its store, if given) to `out`.
fn write_order(out: &mut String, store: Option<usize>, lines: &[(usize, u64)]) {
    out.push('{');
    if let Some(s) = store {
        let _ = write!(out, r#""store_id":"{}","#, store_id(s));
    }
    out.push_str(r#""customer_phone":"9876543210","customer_name":"Load","delivery_address":"Loopback","payment_method":"cod","items":["#);
    for (i, (p, q)) in lines.iter().enumerate() {
        let comma = if i == 0 { "" } else { "," };
        let _ = write!(
            out,
            r#"{comma}{{"product_id":"{}","quantity":{q}}}"#,
            product_id(*p)
        );
    }
    out.push_str("]}");
}

pub struct HttpBackend {
    conn: Conn,
    auth: Option<String>,
    body: String,
}

impl HttpBackend {
    pub async fn connect(
        addr: SocketAddr,
        admin_token: Option<String>,
    ) -> Result<HttpBackend, String> {
        let conn = Conn::connect(addr).await.map_err(|e| e.to_string())?;
        Ok(HttpBackend {
            conn,
            auth: admin_token.map(|t| format!("Bearer {t}")),
            body: String::with_capacity(512),
        })
    }

    async fn send(
        &mut self,
        method: &str,
        path: &str,
        body: Option<Bytes>,
        admin: bool,
    ) -> Result<crate::client::Response, u16> {
        let auth;
        let headers: &[(&str, &str)] = match (&self.auth, admin) {
            (Some(a), true) => {
                auth = a.clone();
                &[("authorization", auth.as_str())]
            }
            _ => &[],
        };
        self.conn
            .send(method, path, headers, body)
            .await
            .map_err(|_| 0u16)
    }

    pub async fn run(&mut self, op: &Op) -> Outcome {
        let result = match op {
            Op::Health => self.send("GET", "/health", None, false).await,
            Op::Order(store, lines) => {
                self.body.clear();
                write_order(&mut self.body, Some(*store), lines);
                let body = Bytes::from(self.body.clone());
                self.send("POST", "/api/v1/orders/", Some(body), false)
                    .await
            }
            Op::Batch(store, orders) => {
                self.body.clear();
                self.body.push_str(r#"{"orders":["#);
                for (k, lines) in orders.iter().enumerate() {
                    if k > 0 {
                        self.body.push(',');
                    }
                    write_order(&mut self.body, None, lines);
                }
                self.body.push_str("]}");
                let path = format!("/api/v1/stores/{}/orders/batch", store_id(*store));
                let body = Bytes::from(self.body.clone());
                self.send("POST", &path, Some(body), false).await
            }
            Op::Read(s, p) => {
                let path = format!(
                    "/api/v1/inventory/products/{}/{}",
                    store_id(*s),
                    product_id(*p)
                );
                self.send("GET", &path, None, false).await
            }
            Op::Restock(s, p, q) => {
                let path = format!(
                    "/api/v1/inventory/products/{}/{}/adjustments",
                    store_id(*s),
                    product_id(*p)
                );
                let body = Bytes::from(format!(r#"{{"quantity_change":{q},"reason":"restock"}}"#));
                self.send("POST", &path, Some(body), true).await
            }
        };
        match result {
            Ok(r) if r.status == 200 => Outcome::Ok,
            Ok(r) if r.status == 400 && r.body.windows(18).any(|w| w == b"Insufficient stock") => {
                Outcome::Short
            }
            Ok(r) => Outcome::Failed(r.status),
            Err(_) => Outcome::Failed(0),
        }
    }

    pub async fn setup_stores(&mut self, plan: &SetupPlan) -> Result<(), String> {
        for s in 0..plan.stores {
            let body = Bytes::from(format!(r#"{{"name":"Load store {s}"}}"#));
            let r = self
                .send(
                    "PUT",
                    &format!("/api/v1/stores/{}", store_id(s)),
                    Some(body),
                    true,
                )
                .await
                .map_err(|_| "connection lost")?;
            if r.status != 200 {
                return Err(format!(
                    "creating store {s}: {} {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
        Ok(())
    }

    pub async fn setup_product(
        &mut self,
        plan: &SetupPlan,
        s: usize,
        p: usize,
    ) -> Result<(), String> {
        let body = Bytes::from(format!(
            r#"{{"product_name":"Load product {p}","unit":"pieces","unit_price":{},"stock":{}}}"#,
            10 + p % 90,
            plan.units
        ));
        let path = format!(
            "/api/v1/inventory/products/{}/{}",
            store_id(s),
            product_id(p)
        );
        let r = self
            .send("PUT", &path, Some(body), true)
            .await
            .map_err(|_| "connection lost")?;
        if r.status != 200 {
            return Err(format!(
                "creating product {s}/{p}: {} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        Ok(())
    }

    pub async fn stock_units(&mut self, s: usize, p: usize) -> Result<i64, String> {
        let path = format!(
            "/api/v1/inventory/products/{}/{}",
            store_id(s),
            product_id(p)
        );
        let r = self
            .send("GET", &path, None, false)
            .await
            .map_err(|_| "connection lost")?;
        r.json()["on_hand"]
            .as_i64()
            .ok_or_else(|| format!("no stock in {}", String::from_utf8_lossy(&r.body)))
    }
}
