//! Pure: the `route` label of an HTTP request. Paths carrying ids or table names collapse to
//! one pattern each, and unknown paths to `other`, so a client probing random URLs cannot
//! grow the number of time series.

/// The route pattern `path` is counted under.
pub fn route_label(path: &str) -> &'static str {
    let path = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    match path {
        "/v1/transactions" => "/v1/transactions",
        "/v1/queries" => "/v1/queries",
        "/v1/subscriptions" => "/v1/subscriptions",
        "/v1/health" => "/v1/health",
        "/v1/table_stats" => "/v1/table_stats",
        "/v1/ws" => "/v1/ws",
        "/metrics" => "/metrics",
        "/" => "/",
        p if p.starts_with("/v1/subscriptions/") => "/v1/subscriptions/:id",
        p if p.starts_with("/v1/updates/") => "/v1/updates/:table",
        p if p.starts_with("/v1/") => "/v1/other",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::route_label;

    #[test]
    fn ids_and_unknown_paths_collapse() {
        let cases = [
            ("/v1/transactions", "/v1/transactions"),
            ("/v1/transactions/", "/v1/transactions"),
            ("/v1/subscriptions", "/v1/subscriptions"),
            ("/v1/subscriptions/abc-123", "/v1/subscriptions/:id"),
            ("/v1/updates/machines", "/v1/updates/:table"),
            ("/v1/ws", "/v1/ws"),
            ("/metrics", "/metrics"),
            ("/", "/"),
            ("/v1/nope", "/v1/other"),
            ("/favicon.ico", "other"),
            ("", "other"),
        ];
        for (path, want) in cases {
            assert_eq!(route_label(path), want, "{path}");
        }
    }
}
