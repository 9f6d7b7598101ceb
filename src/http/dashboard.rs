//! The dashboard (API.md "Dashboard"): `GET /` and its two assets, compiled into the binary.
//! The page calls the API like any client; its Content-Security-Policy lets it load and
//! connect to this origin only, run no inline script or style, and be framed by nobody.

use actix_web::HttpResponse;
use actix_web::http::header;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");

/// Everything from this origin only; no inline code, no plugins, no framing, no `<base>`.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn asset(content_type: &str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

pub async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

pub async fn css() -> HttpResponse {
    asset("text/css; charset=utf-8", DASHBOARD_CSS)
}

pub async fn js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", DASHBOARD_JS)
}
