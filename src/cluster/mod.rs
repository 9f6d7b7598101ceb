//! Several godown processes behind nginx: the nodes file, and the nginx configuration
//! `godown cluster nginx --nodes FILE` writes from it.
//!
//! nginx is the routing table (Shopify's "Sorting Hat"): a call that names its store in
//! the path (`/api/v1/stores/{id}/…`, `/api/v1/inventory/products/{id}/…`) goes to the
//! store's node, from the file's `stores` lists (a `map`), or for a store not listed, by
//! consistent hashing of its id. A call that names only an order (`/api/v1/orders/{id}/…`,
//! what a payment provider knows) or names its store in the body (`POST /api/v1/orders`,
//! `/api/v1/inventory/availability`) is searched for: nginx asks each node in turn with
//! the header [`SEARCH_HEADER`], a node that holds no such store or order answers 421 (see
//! `http::cluster_search`), and nginx moves on to the next; the last node answers as it
//! would alone (404). Regions and transfers go to the first node, which keeps the regions.
//!
//! [`mover`] moves a store from one node to another while it takes orders (`godown
//! cluster move`), and pins it to its new node in the file.

pub mod mover;

use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::fmt::Write;
use std::net::SocketAddr;

/// Sent by the proxy while it searches for the node that holds an order or a store: such
/// a node answers normally, any other 421 ("not here") instead of 404.
pub const SEARCH_HEADER: &str = "x-godown-search";
/// Sent by the mover to learn which process answered: the answer then carries
/// [`INSTANCE_HEADER`], a random id each process draws at its start.
pub const PROBE_HEADER: &str = "x-godown-probe";
pub const INSTANCE_HEADER: &str = "x-godown-instance";
/// Most nodes in one file: each id-routed call may ask every node once.
pub const NODES_MAX: usize = 64;
/// What nginx answers when the node that holds a store does not answer (503, JSON).
pub const UNAVAILABLE: &str = r#"{"error":"Store unavailable","message":"The process that holds this store is not answering; retry shortly."}"#;
/// Requests over one keep-alive connection (client or upstream) before nginx closes it.
const KEEPALIVE_REQUESTS: u32 = 1_000_000;
/// Idle keep-alive connections nginx keeps to each node.
const KEEPALIVE: u32 = 32;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodesFile {
    /// Where nginx listens.
    pub listen: SocketAddr,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    /// A name for logs and the upstream (letters, digits, `_`).
    pub name: String,
    /// Where this godown process listens.
    pub addr: SocketAddr,
    /// Stores pinned to this node (others are placed by consistent hashing).
    #[serde(default)]
    pub stores: Vec<String>,
    /// The node's data directory (for `scripts/cluster.sh`; nginx does not need it).
    #[serde(default)]
    pub data_dir: Option<String>,
}

impl NodesFile {
    /// Reads and checks a nodes file.
    pub fn parse(text: &str) -> Result<NodesFile, String> {
        let file: NodesFile = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if file.nodes.is_empty() || file.nodes.len() > NODES_MAX {
            return Err(format!("1 to {NODES_MAX} nodes"));
        }
        let (mut names, mut stores) = (HashSet::new(), HashSet::new());
        for n in &file.nodes {
            if n.name.is_empty()
                || !n
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(format!(
                    "node name {:?}: letters, digits and _ only",
                    n.name
                ));
            }
            if !names.insert(&n.name) {
                return Err(format!("node {} is named twice", n.name));
            }
            for s in &n.stores {
                if crate::domain::StoreId::parse(s).is_none() {
                    return Err(format!("store id {s:?} is not valid"));
                }
                if !stores.insert(s) {
                    return Err(format!("store {s} is pinned to two nodes"));
                }
            }
        }
        Ok(file)
    }

    /// The node a store's calls go to, when it is pinned.
    pub fn pinned(&self, store: &str) -> Option<&Node> {
        self.nodes
            .iter()
            .find(|n| n.stores.iter().any(|s| s == store))
    }
}

/// The whole nginx configuration for `file` (run it with `nginx -p DIR -c FILE`: logs,
/// the pid file and temporary files go under DIR).
pub fn nginx_config(file: &NodesFile) -> String {
    let mut c = String::new();
    let w = &mut c;
    let _ = writeln!(
        w,
        "# Written by `godown cluster nginx`: edit the nodes file, not this."
    );
    let _ = writeln!(
        w,
        "worker_processes 1;\npid nginx.pid;\nerror_log error.log warn;"
    );
    // After a reload, old workers end their open calls (event streams never end by
    // themselves) within this; a store move waits for them (`mover::SWITCH_WAIT`).
    let _ = writeln!(
        w,
        "worker_shutdown_timeout {}s;",
        mover::SWITCH_WAIT.as_secs()
    );
    let _ = writeln!(w, "events {{ worker_connections 4096; }}\n\nhttp {{");
    let _ = writeln!(w, "    access_log off;");
    for dir in ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"] {
        let _ = writeln!(w, "    {dir}_temp_path tmp_{dir};");
    }
    // A CSV import takes up to 50 MiB; event streams stay open; answers stream through.
    let _ = writeln!(w, "    client_max_body_size 51m;\n    proxy_buffering off;");
    // Keep-alive connections live on (nginx closes one after 1,000 requests by default,
    // which a client pipelining orders over a few connections feels as errors).
    let _ = writeln!(w, "    keepalive_requests {KEEPALIVE_REQUESTS};");
    let _ = writeln!(w, "    proxy_read_timeout 1h;\n    proxy_http_version 1.1;");
    let _ = writeln!(
        w,
        "    proxy_set_header Connection \"\";\n    recursive_error_pages on;"
    );
    // A store's calls go to its node or nowhere: never to another node because its own is
    // down (a store created there would be a second copy of it).
    let _ = writeln!(w, "    proxy_next_upstream off;\n");
    upstreams(w, file);
    server(w, file);
    let _ = writeln!(w, "}}");
    c
}

/// One upstream per node, the consistent-hash group, and the map of pinned stores.
fn upstreams(w: &mut String, file: &NodesFile) {
    for n in &file.nodes {
        let _ = writeln!(
            w,
            "    upstream node_{} {{ server {}; keepalive {KEEPALIVE}; keepalive_requests {KEEPALIVE_REQUESTS}; }}",
            n.name, n.addr
        );
    }
    let _ = writeln!(
        w,
        "    upstream by_hash {{\n        hash $store_key consistent;"
    );
    for n in &file.nodes {
        // max_fails=0: a node that fails is never taken out, so its stores never move.
        let _ = writeln!(w, "        server {} max_fails=0;", n.addr);
    }
    let _ = writeln!(w, "        keepalive {KEEPALIVE};");
    let _ = writeln!(
        w,
        "        keepalive_requests {KEEPALIVE_REQUESTS};\n    }}\n"
    );
    let _ = writeln!(
        w,
        "    map $store_key $store_node {{\n        default by_hash;"
    );
    for n in &file.nodes {
        for s in &n.stores {
            let _ = writeln!(w, "        \"{s}\" node_{};", n.name);
        }
    }
    let _ = writeln!(w, "    }}\n");
}

/// The server: routes by the store in the path, the search, the first node for the rest.
fn server(w: &mut String, file: &NodesFile) {
    let _ = writeln!(w, "    server {{\n        listen {};", file.listen);
    // A node that does not answer: the contract's JSON, and a hint to retry.
    let _ = writeln!(w, "        error_page 502 504 = @unavailable;");
    let _ = writeln!(
        w,
        "        location @unavailable {{\n            default_type application/json;"
    );
    let _ = writeln!(w, "            add_header Retry-After 1 always;");
    let _ = writeln!(w, "            return 503 '{UNAVAILABLE}';\n        }}");
    for prefix in ["/api/v1/stores/", "/api/v1/inventory/products/"] {
        let _ = writeln!(
            w,
            "        location ~ ^{prefix}(?<store_key>[A-Za-z0-9_.:-]+) {{"
        );
        let _ = writeln!(w, "            proxy_pass http://$store_node;\n        }}");
    }
    let first = &file.nodes[0].name;
    for path in ["/api/v1/regions", "/api/v1/transfers"] {
        let _ = writeln!(
            w,
            "        location {path} {{ proxy_pass http://node_{first}; }}"
        );
    }
    let _ = writeln!(
        w,
        "        location ~ ^/api/v1/(orders|inventory/availability) {{"
    );
    search_hop(w, file, 0);
    let _ = writeln!(w, "        }}");
    for i in 1..file.nodes.len() {
        let _ = writeln!(w, "        location @search_{i} {{");
        search_hop(w, file, i);
        let _ = writeln!(w, "        }}");
    }
    let _ = writeln!(
        w,
        "        location / {{ proxy_pass http://node_{first}; }}"
    );
    let _ = writeln!(w, "    }}");
}

/// One step of the search: ask node `i`; on 421, the next (the last is asked plainly).
fn search_hop(w: &mut String, file: &NodesFile, i: usize) {
    let node = &file.nodes[i].name;
    let _ = writeln!(w, "            proxy_pass http://node_{node};");
    if i + 1 < file.nodes.len() {
        let _ = writeln!(w, "            proxy_set_header {SEARCH_HEADER} 1;");
        let _ = writeln!(w, "            proxy_set_header Connection \"\";");
        let _ = writeln!(w, "            proxy_intercept_errors on;");
        // 502: the node is down; what it holds cannot answer, the others still can.
        let _ = writeln!(w, "            error_page 421 502 = @search_{};", i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"{"listen": "127.0.0.1:8080", "nodes": [
        {"name": "n1", "addr": "127.0.0.1:8101", "stores": ["A", "B"]},
        {"name": "n2", "addr": "127.0.0.1:8102"},
        {"name": "n3", "addr": "127.0.0.1:8103", "stores": ["C"]}]}"#;

    #[test]
    fn the_config_pins_stores_and_searches_the_nodes_in_turn() {
        let file = NodesFile::parse(FILE).unwrap();
        assert_eq!(file.pinned("C").unwrap().name, "n3");
        assert!(file.pinned("D").is_none());
        let c = nginx_config(&file);
        assert!(
            c.contains("\"A\" node_n1;") && c.contains("\"C\" node_n3;"),
            "{c}"
        );
        assert!(c.contains("hash $store_key consistent;"));
        assert!(c.contains("error_page 421 502 = @search_1;"), "{c}");
        assert!(c.contains("error_page 421 502 = @search_2;"));
        assert!(c.contains("max_fails=0") && c.contains("proxy_next_upstream off;"));
        assert!(!c.contains("@search_3"), "the last node is asked plainly");
        assert!(
            c.contains("worker_shutdown_timeout 10s;"),
            "old workers end"
        );
        assert!(c.contains("location /api/v1/transfers { proxy_pass http://node_n1; }"));
    }

    #[test]
    fn bad_files_are_refused_with_a_reason() {
        let dup = FILE.replace("\"C\"", "\"A\"");
        assert!(NodesFile::parse(&dup).unwrap_err().contains("two nodes"));
        let bad = FILE.replace("n2", "n 2");
        assert!(NodesFile::parse(&bad).is_err());
        assert!(NodesFile::parse(r#"{"listen": "127.0.0.1:1", "nodes": []}"#).is_err());
        assert!(NodesFile::parse("{}").is_err());
    }
}
