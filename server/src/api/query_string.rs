//! Query-string parameters, percent-decoded (`form_urlencoded`), with 400s that name the
//! parameter.

use super::{error, Body};
use hyper::{Request, Response, StatusCode};
use std::str::FromStr;

/// The decoded `name=value` pairs of a request's query string.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse<B>(req: &Request<B>) -> Query {
        Query::decode(req.uri().query().unwrap_or(""))
    }

    fn decode(q: &str) -> Query {
        Query(
            form_urlencoded::parse(q.as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        )
    }

    /// The first value of `name`, if present.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// An optional number.
    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, Response<Body>> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.trim().parse().map(Some).map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("query parameter {name}={v:?} is not a valid number"),
                )
            }),
        }
    }

    /// An optional boolean: `true`/`1`/empty or `false`/`0`; absent is false.
    pub fn flag(&self, name: &str) -> Result<bool, Response<Body>> {
        match self.get(name) {
            None | Some("false") | Some("0") => Ok(false),
            Some("true") | Some("1") | Some("") => Ok(true),
            Some(v) => Err(error(
                StatusCode::BAD_REQUEST,
                format!("{name}={v:?} must be true or false"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoded_values_decode() {
        let q = Query::decode("from=%31%32&token=a%2Bb&x=a+b&skip_rows");
        assert_eq!(q.get("from"), Some("12"));
        assert_eq!(q.get("token"), Some("a+b"));
        assert_eq!(q.get("x"), Some("a b"));
        assert_eq!(q.get("skip_rows"), Some(""));
        assert!(q.flag("skip_rows").unwrap());
        assert_eq!(q.number::<u64>("from").unwrap(), Some(12));
        assert!(q.number::<u64>("token").is_err());
        assert!(q.flag("x").is_err());
        assert_eq!(q.get("missing"), None);
    }
}
