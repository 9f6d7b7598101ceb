//! `/openapi.json` says exactly what the server does, checked by Schemathesis (installed by
//! `scripts/schemathesis.sh`): every check on, against the real binary with the demo data,
//! a bounded number of generated requests per operation (`SCHEMATHESIS_EXAMPLES`, default
//! 25) and a fixed seed (`SCHEMATHESIS_SEED` to change it). A control run against a document
//! that lies about one response shows the run can see a mismatch.
//!
//! Without python3 and PyPI the test says so loudly and passes; with `CI=true` it fails.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const EXAMPLES_DEFAULT: &str = "25";
const SEED_DEFAULT: &str = "1";

/// The Schemathesis command, or `None` (after saying why) when it cannot be installed.
fn schemathesis() -> Option<PathBuf> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis.sh");
    let out = Command::new(&script)
        .output()
        .expect("run scripts/schemathesis.sh");
    if out.status.success() {
        let stdout = String::from_utf8_lossy(&out.stdout);
        return stdout.lines().last().map(PathBuf::from);
    }
    let why = String::from_utf8_lossy(&out.stderr);
    eprintln!("\n*** openapi: SKIPPED: Schemathesis is unavailable: {why}");
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("openapi: Schemathesis is unavailable with CI=true: {why}");
    }
    None
}

/// Runs Schemathesis with every check against `server`, reading the document at `location`.
fn run(bin: &Path, server: &TestServer, location: &str, extra: &[&str]) -> Output {
    let base = format!("http://{}", server.addr);
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/schemathesis.toml");
    let examples =
        std::env::var("SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| EXAMPLES_DEFAULT.into());
    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED_DEFAULT.into());
    let report = server.data_dir.with_extension("schemathesis");
    // Its cache (`.schemathesis/`) goes into the test's temporary directory, not the repo.
    let scratch = server.data_dir.parent().expect("a temporary directory");
    Command::new(bin)
        .current_dir(scratch)
        .arg("--config-file")
        .arg(config)
        .args(["run", location, "--url", &base, "--checks", "all"])
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--max-examples", &examples, "--seed", &seed])
        .args(["--workers", "1", "--no-color", "--report-dir"])
        .arg(report)
        .args(extra)
        .output()
        .expect("run schemathesis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_mismatch_and_sees_a_planted_one() {
    let Some(bin) = schemathesis() else {
        return;
    };
    let dir = temp_dir();
    // Webhooks it registers may point only here: a test talks to 127.0.0.1 alone.
    let env = [("GODOWN_WEBHOOK_HOSTS", "127.0.0.1")];
    let server = TestServer::start_with_env(&dir.path().join("db"), &["--demo"], &env).await;

    // Control: a document that says a store's location is never null. A store created
    // without one answers `"location": null`, so the run must fail on that response.
    let mut lying: Value = server.get("/openapi.json").await.json();
    let location = &mut lying["components"]["schemas"]["Store"]["properties"]["location"];
    location.as_object_mut().unwrap().remove("nullable");
    let lie = dir.path().join("lying-openapi.json");
    std::fs::write(&lie, lying.to_string()).unwrap();
    let only_put_store = ["--include-path", "/api/v1/stores/{store_id}"];
    let out = run(&bin, &server, lie.to_str().unwrap(), &only_put_store);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("Response violates schema"),
        "the control run did not see the planted mismatch:\n{text}"
    );

    let document = format!("http://{}/openapi.json", server.addr);
    let out = run(&bin, &server, &document, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "Schemathesis found mismatches:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Vec<&str> = text.lines().rev().take(12).collect();
    eprintln!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_exists_and_a_405_names_the_allowed_methods() {
    // Goal: each (path, method) of the document reaches a handler (no 404 "Not found", no
    // 405), and a method a path does not have is 405 with `Allow` listing those it has.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    let doc = server.get("/openapi.json").await.json();
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{}", paths.len());
    for (template, ops) in paths {
        let path = template
            .replace("{order_id}", "ORD0000000000000000")
            .replace("{token_id}", "TOK0000000000000000")
            .replace(['{', '}'], "");
        for method in ops.as_object().unwrap().keys() {
            let method = method.to_ascii_uppercase();
            let r = server
                .req(
                    &method,
                    &path,
                    &[("authorization", &format!("Bearer {ADMIN}"))],
                    Some(json!({})),
                )
                .await;
            let error = r.json().get("error").cloned();
            assert!(
                r.status != 405 && error != Some(json!("Not found")),
                "{method} {template}: {} {error:?}",
                r.status
            );
        }
        let r = server.req("PATCH", &path, &[], None).await;
        assert_eq!(r.status, 405, "PATCH {template}");
        let mut allowed: Vec<String> = ops
            .as_object()
            .unwrap()
            .keys()
            .map(|m| m.to_ascii_uppercase())
            .collect();
        allowed.sort();
        let mut allow: Vec<String> = r
            .header("allow")
            .unwrap_or_else(|| panic!("PATCH {template}: no Allow header"))
            .split(", ")
            .map(String::from)
            .collect();
        allow.sort();
        assert_eq!(allow, allowed, "{template}");
    }
}
