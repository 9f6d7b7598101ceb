//! Analytics routes (API.md "Analytics"; admin or the store's token): a product's sales,
//! velocity, reorder point and forecast; a store's totals and best sellers; the reorder
//! list, as JSON or as CSV for the supplier. The numbers are `domain::analytics`'s.

use super::AppState;
use super::catalogue_csv::{csv_failed, csv_response, csv_writer};
use super::error::ApiError;
use super::json::parse_query;
use super::json::{paise_json, parse_product_id, qty_json, signed_milli_json};
use crate::actor::{Analytics, AnalyticsReply, GetStore};
use crate::domain::analytics::{MS_PER_DAY, qty};
use crate::domain::{Paise, Qty};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::{Value, json};

/// The longest window of the store report (API.md: 1 to 365 days).
pub const STORE_DAYS_MAX: i32 = 365;
/// The store report's window when none is asked for.
const STORE_DAYS_DEFAULT: i32 = 28;

/// `YYYY-MM-DD` of a store-local day number.
fn date(day: i32) -> String {
    let mut s = super::json::rfc3339(i64::from(day) * MS_PER_DAY);
    s.truncate(10);
    s
}

fn money(paise: i64) -> Value {
    paise_json(Paise(paise))
}

/// `GET /api/v1/inventory/products/{store_id}/{product_id}/analytics`.
pub async fn product(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (dir, store_id) = state.store_route(&req, &path.0)?;
    let product_id = parse_product_id(Some(&path.1), "product_id")?;
    let ask = Analytics::Product(product_id.clone());
    let AnalyticsReply::Product(found) = dir.call(&store_id, ask).await? else {
        return Err(ApiError::storage("unexpected reply"));
    };
    let Some(found) = found else {
        return Err(crate::domain::DomainError::ProductNotFound(product_id).into());
    };
    let (p, r, _today) = *found;
    let daily: Vec<Value> = r
        .daily
        .iter()
        .map(|(day, s)| {
            json!({"date": date(*day), "units": signed_milli_json(s.units), "revenue": money(s.revenue)})
        })
        .collect();
    // Hundredths of a day, written as money is (2 decimals).
    let days_of_cover = r
        .days_of_cover
        .map_or(Value::Null, |hundredths| paise_json(Paise(hundredths)));
    Ok(HttpResponse::Ok().json(json!({
        "store_id": store_id.as_str(),
        "product_id": p.info.product_id.as_str(),
        "current_stock": qty_json(p.current_stock()),
        "units_sold_7d": signed_milli_json(r.units_sold_7d),
        "units_sold_28d": signed_milli_json(r.units_sold_28d),
        "revenue_28d": money(r.revenue_28d),
        "velocity_per_day": qty_json(qty(r.velocity_per_day)),
        "days_of_cover": days_of_cover,
        "lead_time_days": p.info.lead_time_days,
        "safety_stock_days": p.info.safety_stock_days,
        "reorder_point": qty_json(qty(r.reorder_point)),
        "suggested_reorder_quantity": qty_json(qty(r.suggested_reorder_quantity)),
        "forecast_next_7d": qty_json(qty(r.forecast_next_7d)),
        "daily": daily,
    })))
}

#[derive(serde::Deserialize)]
struct StoreQuery {
    days: Option<String>,
}

/// `GET /api/v1/stores/{store_id}/analytics?days=28`.
pub async fn store(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let q = parse_query::<StoreQuery>(&req)?;
    let days = match q.days.as_deref() {
        None | Some("") => STORE_DAYS_DEFAULT,
        Some(s) => s
            .parse::<i32>()
            .ok()
            .filter(|d| (1..=STORE_DAYS_MAX).contains(d))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "Invalid days",
                    "`days` must be a whole number from 1 to 365.",
                )
            })?,
    };
    let AnalyticsReply::Store(r, names) = dir.call(&store_id, Analytics::Store { days }).await?
    else {
        return Err(ApiError::storage("unexpected reply"));
    };
    let top: Vec<Value> = r
        .top_sellers
        .iter()
        .zip(&names)
        .map(|((id, units, revenue), name)| {
            json!({"product_id": id.as_str(), "product_name": &**name,
                   "units": signed_milli_json(*units), "revenue": money(*revenue)})
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "store_id": store_id.as_str(),
        "days": days,
        "orders": r.orders,
        "units": signed_milli_json(r.units),
        "revenue": money(r.revenue),
        "top_sellers": top,
    })))
}

/// `GET /api/v1/stores/{store_id}/reorder`: JSON, or CSV with `Accept: text/csv`.
pub async fn reorder(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (dir, store_id) = state.store_route(&req, &path)?;
    dir.call(&store_id, GetStore).await?;
    let AnalyticsReply::Reorder(items) = dir.call(&store_id, Analytics::Reorder).await? else {
        return Err(ApiError::storage("unexpected reply"));
    };
    let wants_csv = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.split(',').any(|t| t.trim().starts_with("text/csv")));
    if wants_csv {
        let mut out = csv_writer();
        let header = [
            "product_id",
            "product_name",
            "current_stock",
            "reorder_point",
            "suggested_reorder_quantity",
        ];
        out.write_record(header).map_err(csv_failed)?;
        for (p, point, suggested) in &items {
            out.write_record([
                p.info.product_id.as_str(),
                &p.info.name,
                &p.current_stock().to_string(),
                &Qty(*point as u64).to_string(),
                &Qty(*suggested as u64).to_string(),
            ])
            .map_err(csv_failed)?;
        }
        return csv_response(out);
    }
    let items: Vec<Value> = items
        .iter()
        .map(|(p, point, suggested)| {
            json!({
                "product_id": p.info.product_id.as_str(),
                "product_name": &*p.info.name,
                "current_stock": qty_json(p.current_stock()),
                "reorder_point": qty_json(qty(*point)),
                "suggested_reorder_quantity": qty_json(qty(*suggested)),
            })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({"store_id": store_id.as_str(), "items": items})))
}
