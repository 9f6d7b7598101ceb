//! CSV import and export of a catalogue, black box (API.md "CSV import and export").

mod common;

use common::*;
use serde_json::json;

const HEADER: &str = "product_id,product_name,unit,unit_price,on_hand,low_stock_threshold,category";

/// A deterministic catalogue of `n` rows (every unit, prices with paise, fractional kg
/// stock, quoted names with commas, some without a category), with its header.
fn catalogue(n: usize) -> String {
    let units = ["pieces", "kg", "g", "litre", "ml", "pack"];
    let mut out = String::from(HEADER);
    for i in 0..n {
        let unit = units[i % units.len()];
        let stock = if unit == "pieces" || unit == "pack" {
            format!("{}", i % 500)
        } else {
            format!("{}.{:03}", i % 90, (i * 7) % 1000)
        };
        let category = if i % 5 == 0 {
            String::new()
        } else {
            format!("Cat {}", i % 17)
        };
        out.push_str(&format!(
            "\nP{i:05},\"Item {i}, {unit} \"\"best\"\"\",{unit},{}.{:02},{stock},{},{category}",
            10 + i % 300,
            i % 100,
            i % 7
        ));
    }
    out.push('\n');
    out
}

async fn post_csv(server: &TestServer, store: &str, body: String) -> godown::client::Response {
    let path = format!("/api/v1/inventory/products/{store}/import");
    let auth = format!("Bearer {ADMIN}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "text/csv"),
    ];
    let mut c = server.conn().await;
    c.send("POST", &path, &headers, Some(bytes::Bytes::from(body)))
        .await
        .expect("request")
}

/// The export's rows as (id, name, unit, price, on_hand, threshold, category), sorted.
fn rows_of(csv_text: &str) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let pick = [
        "product_id",
        "product_name",
        "unit",
        "unit_price",
        "on_hand",
        "low_stock_threshold",
        "category",
    ]
    .map(col);
    let mut rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            pick.iter().map(|&i| r[i].to_string()).collect()
        })
        .collect();
    rows.sort();
    rows
}

/// A number as godown writes it: no trailing zeros after the point.
fn canonical(n: &str) -> String {
    if n.contains('.') {
        n.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        n.to_string()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rows_go_in_and_come_back_out_the_same() {
    // Goal: importing 10,000 rows creates them all; the export gives back the same
    // catalogue and stock; importing the export again changes nothing.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("C").await;
    let input = catalogue(10_000);
    let r = post_csv(&server, "C", input.clone()).await;
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(
        r.json(),
        json!({"created": 10000, "updated": 0, "unchanged": 0})
    );

    let r = server.get("/api/v1/inventory/products/C/export").await;
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/csv"));
    let exported = String::from_utf8(r.body.to_vec()).unwrap();
    assert!(exported.starts_with(
        "product_id,product_name,unit,unit_price,on_hand,reserved,current_stock,low_stock_threshold,category\n"
    ));
    let want: Vec<Vec<String>> = rows_of(&input)
        .into_iter()
        .map(|mut r| {
            for i in [3, 4, 5] {
                r[i] = canonical(&r[i]);
            }
            r
        })
        .collect();
    assert_eq!(rows_of(&exported), want);

    let r = post_csv(&server, "C", exported).await;
    assert_eq!(
        r.json(),
        json!({"created": 0, "updated": 0, "unchanged": 10000})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_row_changes_nothing_and_names_its_line() {
    // Goal: a bad cell, a repeated product, and a stock below what is held are each refused
    // with their line (the header is line 1) and nothing of the file is applied; a missing
    // column is line 1; CSV must say it is CSV.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("C").await;
    server
        .put_product("C", "HELD", "pieces", json!(10), json!(10))
        .await;
    let hold = server
        .post(
            "/api/v1/stores/C/reservations",
            json!({"items": [{"product_id": "HELD", "quantity": 5}]}),
        )
        .await;
    assert_eq!(hold.status, 201, "{:?}", hold.json());
    let before = server.get("/api/v1/inventory/products/C/export").await.body;

    let bad_unit = catalogue(6_000).replacen(",ml,", ",millilitre,", 1); // P00004: line 6
    let two = format!("{HEADER}\nA,Apple,kg,10,1,,\nA,Apple again,kg,10,1,,\n");
    let below_held = format!("{HEADER}\nNEW,New,pieces,5,3,,\nHELD,Held,pieces,10,2,,\n");
    let fraction = format!("{HEADER}\nB,Bread,pieces,30,2.5,,\n");
    for (body, line, says) in [
        (bad_unit, 6, "`unit`"),
        (two, 3, "appears twice"),
        (below_held, 3, ""),
        (fraction, 2, ""),
        (
            "product_id,product_name,unit\nX,X,kg\n".to_string(),
            1,
            "unit_price",
        ),
    ] {
        let r = post_csv(&server, "C", body).await;
        let b = r.json();
        assert_eq!((r.status, &b["error"]), (400, &json!("Invalid CSV")), "{b}");
        let errors = b["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{b}");
        assert_eq!(errors[0]["line"], json!(line), "{b}");
        assert!(errors[0]["error"].as_str().unwrap().contains(says), "{b}");
    }
    let after = server.get("/api/v1/inventory/products/C/export").await.body;
    assert_eq!(after, before, "nothing was applied");

    // (The import's callers, as `tests/auth.rs` checks the JSON routes: none 401, another
    // store's token 403, the store's own 200.)
    server.put_store("D").await;
    let path = "/api/v1/inventory/products/C/import";
    let csv_body = || {
        Some(bytes::Bytes::from(format!(
            "{HEADER}\nT,Tea,pack,120,3,,\n"
        )))
    };
    let mut answers = Vec::new();
    for store in ["", "D", "C"] {
        let mut headers = vec![("content-type", "text/csv".to_string())];
        if !store.is_empty() {
            let t = server
                .admin("POST", &format!("/api/v1/stores/{store}/tokens"), json!({}))
                .await
                .json();
            let token = t["token"].as_str().unwrap().to_string();
            headers.push(("authorization", format!("Bearer {token}")));
        }
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut c = server.conn().await;
        answers.push(
            c.send("POST", path, &headers, csv_body())
                .await
                .unwrap()
                .status,
        );
    }
    assert_eq!(answers, [401, 403, 200]);
    let r = server.admin("POST", path, json!({})).await;
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (415, json!("Unsupported media type"))
    );
}

/// Runs `godown <args>` with the admin's token; (exit code, stdout, stderr).
fn godown(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_godown"))
        .args(args)
        .env("GODOWN_TOKEN", ADMIN)
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).to_string();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_moves_a_catalogue_both_ways() {
    // Goal: `godown import` uploads a 10,000-row file and prints the summary; `godown
    // export` writes the same catalogue back (to a file and to stdout); a bad file exits 1
    // naming its line and changes nothing.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("C").await;
    let target = format!("http://{}", server.addr);
    let common = ["--target", target.as_str(), "--store", "C"];
    let input = dir.path().join("in.csv");
    std::fs::write(&input, catalogue(10_000)).unwrap();
    let input_arg = input.to_str().unwrap();

    let (code, out, err) = godown(&[&["import"], &common[..], &[input_arg]].concat());
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), r#"{"created":10000,"unchanged":0,"updated":0}"#);

    let output = dir.path().join("out.csv");
    let output_arg = output.to_str().unwrap();
    let (code, _, err) = godown(&[&["export"], &common[..], &[output_arg]].concat());
    assert_eq!(code, 0, "{err}");
    let exported = std::fs::read_to_string(&output).unwrap();
    let api = server.get("/api/v1/inventory/products/C/export").await.body;
    assert_eq!(exported.as_bytes(), &api[..]);
    assert_eq!(rows_of(&exported).len(), 10_000);
    let (code, stdout, _) = godown(&[&["export"], &common[..]].concat());
    assert_eq!((code, stdout), (0, exported.clone()));

    let bad = dir.path().join("bad.csv");
    std::fs::write(
        &bad,
        format!("{HEADER}\nZ,Zinc,pieces,1,1,,\nY,Yam,kilo,1,1,,\n"),
    )
    .unwrap();
    let (code, _, err) = godown(&[&["import"], &common[..], &[bad.to_str().unwrap()]].concat());
    assert_eq!(code, 1);
    assert!(
        err.contains("Invalid CSV") && err.contains("line 3:"),
        "{err}"
    );
    let after = server.get("/api/v1/inventory/products/C/export").await.body;
    assert_eq!(&after[..], exported.as_bytes(), "nothing was applied");
}

/// Cells for generated imports: good ones, and the ways a spreadsheet goes wrong.
const CELLS: &[&str] = &[
    "A1",
    "B2",
    "rice",
    "",
    " ",
    "kg",
    "pieces",
    "pack",
    "kilo",
    "10",
    "10.50",
    "0.001",
    "1e3",
    "-1",
    "abc",
    "99999999999",
    "\"quoted, with comma\"",
    "\"unclosed",
    "ü",
    "\u{feff}x",
    "a*b",
    "2.5",
    "0",
    "NaN",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_imports_get_200_or_a_named_400_and_a_refusal_changes_nothing() {
    // Goal: 300 generated files (columns shuffled, sometimes missing; good cells with some
    // from `CELLS`; stray bytes) each get 200 or 400 "Invalid CSV" with lines, never a 5xx or
    // another shape; after every 400 the catalogue is byte-for-byte what it was.
    let dir = temp_dir();
    let server = TestServer::start(&dir.path().join("db"), &[]).await;
    server.put_store("G").await;
    let columns = [
        "product_id",
        "product_name",
        "unit",
        "unit_price",
        "on_hand",
        "category",
    ];
    // A good cell for each column, used most of the time so that some files pass.
    let good = |column: &str, n: usize| -> String {
        match column {
            "product_id" => format!("P{n}"),
            "product_name" => format!("Name {n}"),
            "unit" => "kg".into(),
            "unit_price" => "10.50".into(),
            "on_hand" => "3".into(),
            _ => "Cat".into(),
        }
    };
    let mut rng = fastrand::Rng::with_seed(7);
    let (mut accepted, mut refused) = (0, 0);
    for _ in 0..300 {
        let mut header: Vec<&str> = columns.to_vec();
        rng.shuffle(&mut header);
        if rng.u8(..5) == 0 {
            header.truncate(rng.usize(1..columns.len()));
        }
        let mut file = header.join(",");
        for n in 0..rng.usize(0..6) {
            let row: Vec<String> = header
                .iter()
                .map(|c| match rng.u8(..12) {
                    0 => CELLS[rng.usize(..CELLS.len())].to_string(),
                    _ => good(c, n),
                })
                .collect();
            file.push('\n');
            file.push_str(&row.join(","));
        }
        let mut body = file.into_bytes();
        if rng.u8(..10) == 0 {
            body.insert(rng.usize(..=body.len()), 0xff);
        }
        let before = server.get("/api/v1/inventory/products/G/export").await.body;
        let path = "/api/v1/inventory/products/G/import";
        let auth = format!("Bearer {ADMIN}");
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "text/csv"),
        ];
        let mut c = server.conn().await;
        let r = c
            .send("POST", path, &headers, Some(bytes::Bytes::from(body)))
            .await
            .unwrap();
        let answer = r.json();
        match r.status {
            200 => accepted += 1,
            400 => {
                refused += 1;
                assert_eq!(answer["error"], json!("Invalid CSV"), "{answer}");
                assert!(answer["errors"][0]["line"].as_u64().is_some(), "{answer}");
                let after = server.get("/api/v1/inventory/products/G/export").await.body;
                assert_eq!(after, before, "a refused import changed nothing");
            }
            other => panic!("{other}: {answer}"),
        }
    }
    assert!(
        accepted > 30 && refused > 30,
        "{accepted} accepted, {refused} refused"
    );
}
