//! `godown import` and `godown export`: a store's catalogue as CSV, to and from a running
//! server (API.md "CSV import and export"), with a progress bar on a terminal.

use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::net::ToSocketAddrs;
use std::path::Path;
use std::time::Duration;

/// The server refuses larger imports (`http::catalogue_csv::IMPORT_BYTES_MAX`); checked
/// here first so that a too-large file is not sent at all.
const IMPORT_BYTES_MAX: u64 = 50 << 20;
/// Bytes per piece of an upload: the progress bar moves as each is written.
const CHUNK_BYTES: usize = 256 << 10;

/// Where to send, and as whom.
pub struct Target {
    /// `http://host:port` (a trailing `/` is fine).
    pub url: String,
    pub store: String,
    pub token: Option<String>,
}

impl Target {
    fn host_port(&self) -> Result<&str, String> {
        let rest = self
            .url
            .strip_prefix("http://")
            .ok_or_else(|| format!("{}: the target must start with http://", self.url))?;
        Ok(rest.trim_end_matches('/'))
    }

    fn path(&self, action: &str) -> String {
        format!("/api/v1/inventory/products/{}/{action}", self.store)
    }
}

type Body = StreamBody<
    futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, std::convert::Infallible>>,
>;

/// Sends one request and returns the response, its body still to be read.
async fn send(
    target: &Target,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: Body,
    length: u64,
) -> Result<hyper::Response<hyper::body::Incoming>, String> {
    let host_port = target.host_port()?;
    let addr = host_port
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host_port}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host_port} resolves to nothing"))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {host_port}: {e}"))?;
    let (mut sender, connection) = http1::handshake::<_, Body>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("{host_port}: {e}"))?;
    tokio::spawn(connection);
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", host_port)
        .header("content-length", length);
    if let Some(t) = content_type {
        request = request.header("content-type", t);
    }
    if let Some(token) = &target.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("{host_port}: {e}"))
}

fn bar(length: u64, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(length);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:40}] {binary_bytes}/{binary_total_bytes} ({eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what.to_string());
    bar
}

/// Reads a whole response body.
async fn read_all(response: hyper::Response<hyper::body::Incoming>) -> Result<Bytes, String> {
    let body = response.into_body().collect().await;
    Ok(body.map_err(|e| e.to_string())?.to_bytes())
}

/// Uploads `file` as the store's catalogue; `Ok` is the server's summary
/// (`{created, updated, unchanged}`), `Err` what went wrong (each bad line of the file).
pub async fn import(target: &Target, file: &Path) -> Result<String, String> {
    // (A command-line tool: reading the file before any network work blocks nothing.)
    let bytes = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let length = bytes.len() as u64;
    if length > IMPORT_BYTES_MAX {
        return Err(format!(
            "{}: {length} bytes; an import takes at most 50 MiB",
            file.display()
        ));
    }
    let progress = bar(length, "uploading");
    let bytes = Bytes::from(bytes);
    let pieces: Vec<Bytes> = (0..bytes.len())
        .step_by(CHUNK_BYTES)
        .map(|at| bytes.slice(at..(at + CHUNK_BYTES).min(bytes.len())))
        .collect();
    let counted = progress.clone();
    let stream = futures_util::stream::iter(pieces).map(move |piece| {
        counted.inc(piece.len() as u64);
        Ok(Frame::data(piece))
    });
    let path = target.path("import");
    let body = StreamBody::new(stream.boxed());
    let sent = send(target, "POST", &path, Some("text/csv"), body, length);
    let response = sent.await?;
    progress.set_message("checked and applied");
    progress.finish();
    let status = response.status().as_u16();
    let body = read_all(response).await?;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status == 200 {
        return Ok(json.to_string());
    }
    let mut why = format!(
        "{status} {}: {}",
        json["error"].as_str().unwrap_or("?"),
        json["message"].as_str().unwrap_or("")
    );
    for e in json["errors"].as_array().into_iter().flatten() {
        why.push_str(&format!(
            "\n  line {}: {}",
            e["line"],
            e["error"].as_str().unwrap_or("")
        ));
    }
    Err(why)
}

/// Downloads the store's catalogue into `out` (standard output when `None`); `Ok` is how
/// many bytes were written.
pub async fn export(target: &Target, out: Option<&Path>) -> Result<u64, String> {
    let path = target.path("export");
    let empty = StreamBody::new(futures_util::stream::empty().boxed());
    let response = send(target, "GET", &path, None, empty, 0).await?;
    let status = response.status().as_u16();
    if status != 200 {
        let body = read_all(response).await?;
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let length = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .unwrap_or(0);
    let progress = bar(length, "downloading");
    progress.enable_steady_tick(Duration::from_millis(200));
    let mut writer: Box<dyn Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()))?,
        )),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut body = response.into_body();
    let mut written = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            writer.write_all(data).map_err(|e| e.to_string())?;
            written += data.len() as u64;
            progress.inc(data.len() as u64);
        }
    }
    writer.flush().map_err(|e| e.to_string())?;
    progress.finish_and_clear();
    Ok(written)
}
