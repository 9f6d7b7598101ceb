//! CSV import and export of a store's catalogue (API.md "CSV import and export"): the admin
//! or the store's token. An import is checked row by row first and applied as one store
//! command (one durable record), so a bad row changes nothing.

use super::AppState;
use super::error::ApiError;
use super::handlers::exec;
use super::json::{parse_name, require_media_type};
use crate::actor::ListProducts;
use crate::domain::*;
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use serde_json::json;

/// Largest import body: 50 MiB holds 100,000 rows of long names with room to spare.
pub const IMPORT_BYTES_MAX: usize = 50 << 20;
/// Most data rows in one import: a big store's whole catalogue, applied as one record.
pub const IMPORT_ROWS_MAX: usize = 100_000;
/// Most row errors reported: enough to fix a file in a few rounds, bounded in size.
const ERRORS_MAX: usize = 100;
/// Products read from the store per call while exporting.
const EXPORT_PAGE: usize = 1000;

/// The export's columns, in order.
pub const EXPORT_HEADER: [&str; 9] = [
    "product_id",
    "product_name",
    "unit",
    "unit_price",
    "on_hand",
    "reserved",
    "current_stock",
    "low_stock_threshold",
    "category",
];

/// `GET /api/v1/inventory/products/{store_id}/export` → every product, as CSV.
pub async fn export(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let mut out = csv_writer();
    out.write_record(EXPORT_HEADER).map_err(csv_failed)?;
    let mut after = None;
    loop {
        let limit = EXPORT_PAGE;
        let (products, more) = dir.call(&store_id, ListProducts { after, limit }).await?;
        for p in &products {
            let i = &p.info;
            out.write_record([
                i.product_id.as_str(),
                &i.name,
                i.unit.as_str(),
                &i.unit_price.to_string(),
                &p.on_hand.to_string(),
                &p.reserved.to_string(),
                &p.current_stock().to_string(),
                &i.low_stock_threshold.to_string(),
                i.category.as_deref().unwrap_or(""),
            ])
            .map_err(csv_failed)?;
        }
        match (more, products.last()) {
            (true, Some(last)) => after = Some(last.info.product_id.clone()),
            _ => break,
        }
    }
    csv_response(out)
}

/// A CSV being written in memory, for the rows of an answer.
pub(super) fn csv_writer() -> ::csv::Writer<Vec<u8>> {
    ::csv::Writer::from_writer(Vec::new())
}

/// What writing CSV into memory can fail with (nothing but a bug).
pub(super) fn csv_failed(e: impl std::fmt::Display) -> ApiError {
    ApiError::storage(format!("writing CSV: {e}"))
}

/// 200 with the CSV written, as `text/csv`.
pub(super) fn csv_response(out: ::csv::Writer<Vec<u8>>) -> Result<HttpResponse, ApiError> {
    let body = out.into_inner().map_err(csv_failed)?;
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .body(body))
}

/// `POST /api/v1/inventory/products/{store_id}/import` (`text/csv`) → 200
/// `{created, updated, unchanged}`, or 400 "Invalid CSV" naming each bad line.
pub async fn import(
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<String>,
    body: Bytes,
) -> Result<HttpResponse, ApiError> {
    let (dir, store_id) = state.store_route(&req, &path)?;
    let hint = "Send the catalogue as CSV with `Content-Type: text/csv`.";
    require_media_type(&req, "text/csv", hint)?;
    let (rows, lines) = web::block(move || parse_rows(&body))
        .await
        .map_err(ApiError::storage)?
        .map_err(invalid_csv)?;
    let applied = exec(dir, &store_id, Command::Import(rows), None)
        .await
        .map_err(|e| match e.extra.get("row").and_then(|r| r.as_u64()) {
            // A row the store refused (stock below what is reserved, …): name its line.
            Some(row) => {
                let line = lines.get(row as usize).copied().unwrap_or(0);
                invalid_csv(vec![(line, e.message.to_string())])
            }
            None => e,
        })?;
    match applied.outcome {
        Outcome::Imported {
            created,
            updated,
            unchanged,
        } => Ok(HttpResponse::Ok().json(json!({
            "created": created, "updated": updated, "unchanged": unchanged
        }))),
        _ => Err(ApiError::storage("unexpected reply")),
    }
}

fn invalid_csv(errors: LineErrors) -> ApiError {
    let items: Vec<_> = errors
        .iter()
        .map(|(line, error)| json!({"line": line, "error": error}))
        .collect();
    ApiError::bad_request(
        "Invalid CSV",
        format!(
            "{} line(s) could not be imported; nothing was changed.",
            errors.len()
        ),
    )
    .with("errors", items)
}

/// The columns an import reads, by position in its header.
struct Columns {
    product_id: usize,
    product_name: usize,
    unit: usize,
    unit_price: usize,
    on_hand: Option<usize>,
    low_stock_threshold: Option<usize>,
    category: Option<usize>,
}

impl Columns {
    fn of(header: &::csv::StringRecord) -> Result<Columns, LineErrors> {
        let find = |name: &str| header.iter().position(|h| h.trim() == name);
        let need = |name: &str| find(name).ok_or_else(|| vec![(1, format!("no `{name}` column"))]);
        Ok(Columns {
            product_id: need("product_id")?,
            product_name: need("product_name")?,
            unit: need("unit")?,
            unit_price: need("unit_price")?,
            on_hand: find("on_hand"),
            low_stock_threshold: find("low_stock_threshold"),
            category: find("category"),
        })
    }
}

/// Bad lines of a CSV: (line, what is wrong), the header being line 1.
type LineErrors = Vec<(u64, String)>;

/// Every row checked, with the line each starts on; or up to [`ERRORS_MAX`] errors.
fn parse_rows(body: &[u8]) -> Result<(Vec<ImportRow>, Vec<u64>), LineErrors> {
    let mut reader = ::csv::ReaderBuilder::new().flexible(true).from_reader(body);
    let header = reader
        .headers()
        .map_err(|e| vec![(1, format!("the header cannot be read: {e}"))])?
        .clone();
    let columns = Columns::of(&header)?;
    let (mut rows, mut lines, mut errors) = (Vec::new(), Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for record in reader.records() {
        if errors.len() == ERRORS_MAX {
            break;
        }
        let (line, parsed) = match record {
            Ok(r) => {
                let line = r.position().map_or(0, |p| p.line());
                (line, parse_row(&r, &columns))
            }
            Err(e) => {
                let line = e.position().map_or(0, |p| p.line());
                (line, Err(format!("unreadable: {e}")))
            }
        };
        if rows.len() + errors.len() == IMPORT_ROWS_MAX {
            errors.push((line, format!("more than {IMPORT_ROWS_MAX} rows")));
            break;
        }
        match parsed {
            Ok(row) if !seen.insert(row.product_id.clone()) => {
                errors.push((line, format!("product {} appears twice", row.product_id)));
            }
            Ok(row) => {
                rows.push(row);
                lines.push(line);
            }
            Err(why) => errors.push((line, why)),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    if rows.is_empty() {
        return Err(vec![(1, "no rows after the header".into())]);
    }
    Ok((rows, lines))
}

/// One row, checked as a product update's fields are.
fn parse_row(r: &::csv::StringRecord, c: &Columns) -> Result<ImportRow, String> {
    let cell = |i: usize| r.get(i).unwrap_or("").trim();
    let optional = |i: Option<usize>| i.map(cell);
    let product_id = ProductId::parse(cell(c.product_id))
        .ok_or_else(|| format!("`product_id` {:?} is not a valid id", cell(c.product_id)))?;
    let text = |e: ApiError| e.message.to_string();
    let name = parse_name(Some(cell(c.product_name)), "product_name").map_err(text)?;
    let unit =
        Unit::parse(cell(c.unit)).ok_or("`unit` must be one of pieces, kg, g, litre, ml, pack")?;
    let unit_price = Paise::parse(cell(c.unit_price), number::PRICE_PAISE_MAX)
        .map_err(|_| "`unit_price` must be rupees with at most 2 decimals, from 0 to 10,000,000")?;
    let quantity = |field: &str, text: &str| -> Result<Option<Qty>, String> {
        match text {
            "" => Ok(None),
            t => Qty::parse(t).map(Some).map_err(|_| {
                format!(
                    "`{field}` must be a number with at most 3 decimals, from 0 to 1,000,000,000"
                )
            }),
        }
    };
    let on_hand = quantity("on_hand", optional(c.on_hand).unwrap_or(""))?;
    let low_stock_threshold = match optional(c.low_stock_threshold) {
        None => None,
        Some(t) => Some(quantity("low_stock_threshold", t)?.unwrap_or(Qty::ZERO)),
    };
    let category = match optional(c.category) {
        None => None,
        Some("") => Some(None),
        Some(t) => Some(Some(parse_name(Some(t), "category").map_err(text)?)),
    };
    Ok(ImportRow {
        product_id,
        name,
        unit,
        unit_price,
        on_hand,
        low_stock_threshold,
        category,
    })
}
