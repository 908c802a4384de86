//! The web console: static files built from `client-ts/console/` by `npm run build:console`
//! and committed under `server/console/`, embedded in the binary so that `cargo build` needs
//! no Node.js. Served at `/` and `/console/…` without a token — the page asks for it, and
//! every endpoint it calls checks it.
//!
//! Caching: `Cache-Control: no-cache` with an `ETag` (a hash of the file), so a browser
//! revalidates each load with a cheap `304` and never runs a console older than the node.

use super::{error, full, Body};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use hyper::{Method, Request, Response, StatusCode};
use std::sync::OnceLock;

struct Asset {
    name: &'static str,
    body: &'static [u8],
    content_type: &'static str,
}

const ASSETS: &[Asset] = &[
    Asset {
        name: "index.html",
        body: include_bytes!("../../console/index.html"),
        content_type: "text/html; charset=utf-8",
    },
    Asset {
        name: "console.js",
        body: include_bytes!("../../console/console.js"),
        content_type: "text/javascript; charset=utf-8",
    },
    Asset {
        name: "console.css",
        body: include_bytes!("../../console/console.css"),
        content_type: "text/css; charset=utf-8",
    },
];

/// The page may load only its own files and talk only to nodes.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss: http: https:; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'";

/// Whether `path` is one of the console's (served before the token check).
pub fn is_console_path(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// FNV-1a, 64 bits: a stable content hash for the `ETag`.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn etag(i: usize) -> &'static str {
    static TAGS: OnceLock<Vec<String>> = OnceLock::new();
    &TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{:016x}\"", fnv1a(a.body)))
            .collect()
    })[i]
}

/// Answers a request for a console path.
pub fn serve(req: &Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    let name = match path.trim_end_matches('/') {
        "" | "/console" | "/console/index.html" => "index.html",
        p => p.strip_prefix("/console/").unwrap_or(p),
    };
    let Some(i) = ASSETS.iter().position(|a| a.name == name) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no such console file: {path} (the console is at /)"),
        );
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{} is not allowed on {path}; use GET", req.method()),
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let asset = &ASSETS[i];
    let tag = etag(i);
    let fresh = req
        .headers()
        .get(IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = if fresh {
        let mut r = Response::new(full(Vec::new()));
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else if req.method() == Method::HEAD {
        Response::new(full(Vec::new()))
    } else {
        Response::new(full(asset.body))
    };
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(asset.content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ETAG, HeaderValue::from_static(tag));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    if asset.name == "index.html" {
        h.insert("content-security-policy", HeaderValue::from_static(CSP));
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_hashes() {
        assert!(is_console_path("/") && is_console_path("/console/console.js"));
        assert!(!is_console_path("/v1/queries") && !is_console_path("/consoles"));
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(fnv1a(b"a"), fnv1a(b"b"));
        assert!(etag(0).starts_with('"') && etag(0).len() == 18);
    }
}
