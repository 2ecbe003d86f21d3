//! Who may call the server, checked in this order before any handler runs:
//!
//! 1. Host: bound to a loopback address (or given `--allowed-hosts`), a
//!    request whose `Host` is not localhost, 127.0.0.1 or [::1] (with the
//!    bound port, or none) or an allowed name gets 403 — a page on a
//!    rebound DNS name cannot reach the server.
//! 2. CORS: a request with an `Origin` not in `--allowed-origins` gets 403
//!    (none are allowed by default; requests without `Origin`, i.e. not
//!    from a browser page, pass). A preflight (`OPTIONS` with
//!    `Access-Control-Request-Method`) from an allowed origin gets 204 with
//!    the `Access-Control-Allow-*` headers; other answers to an allowed
//!    origin carry `Access-Control-Allow-Origin`.
//! 3. API key: with `--api-key` (or `HEARTH_API_KEY`), every path but
//!    `/health` and `/metrics` needs `Authorization: Bearer KEY` (401 in
//!    OpenAI's shape otherwise); compared in constant time.
//! 4. Content-Type: a POST body must be `application/json` (parameters such
//!    as `charset` allowed), else 415.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::errors::ApiError;

/// Paths open without the API key (liveness probes and scrapers).
pub const OPEN_PATHS: [&str; 2] = ["/health", "/metrics"];

const LOOPBACK_NAMES: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

pub struct Access {
    /// SHA-256 of the key, so that comparing takes the same time whatever the input.
    api_key: Option<[u8; 32]>,
    origins: Vec<String>,
    any_origin: bool,
    /// `None`: no Host check.
    hosts: Option<Vec<String>>,
    port: u16,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

fn normalize_origin(o: &str) -> String {
    o.trim().trim_end_matches('/').to_ascii_lowercase()
}

impl Access {
    pub fn new(
        bound: SocketAddr,
        api_key: Option<String>,
        origins: &[String],
        hosts: &[String],
    ) -> Access {
        let origins: Vec<String> = origins
            .iter()
            .map(|o| normalize_origin(o))
            .filter(|o| !o.is_empty())
            .collect();
        let hosts: Vec<String> = hosts
            .iter()
            .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
            .filter(|h| !h.is_empty())
            .collect();
        let check_hosts =
            !hosts.iter().any(|h| h == "*") && (bound.ip().is_loopback() || !hosts.is_empty());
        Access {
            api_key: api_key.map(|k| digest(k.as_bytes())),
            any_origin: origins.iter().any(|o| o == "*"),
            origins,
            hosts: check_hosts.then_some(hosts),
            port: bound.port(),
        }
    }

    pub fn host_check(&self) -> bool {
        self.hosts.is_some()
    }

    fn host_allowed(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(allowed) = &self.hosts else {
            return Ok(());
        };
        // HTTP/1.0 without a Host: no browser sends that.
        let Some(value) = headers.get(header::HOST) else {
            return Ok(());
        };
        let host = value.to_str().unwrap_or("").trim().to_ascii_lowercase();
        let (name, port) = split_host(&host);
        let name = name.trim_end_matches('.');
        let ok = if LOOPBACK_NAMES.contains(&name) {
            port.is_none_or(|p| p == self.port.to_string())
        } else {
            allowed.iter().any(|a| a == name)
        };
        if ok {
            return Ok(());
        }
        Err(ApiError::forbidden(
            format!(
                "The Host header `{host}` is not this server's name; add it with --allowed-hosts \
                 (a server bound to loopback answers localhost, 127.0.0.1 and [::1] only)."
            ),
            "host_not_allowed",
        ))
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.any_origin || self.origins.contains(&normalize_origin(origin))
    }

    fn key_ok(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(want) = &self.api_key else {
            return Ok(());
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .and_then(|v| {
                let (scheme, rest) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
            });
        let Some(given) = given else {
            return Err(ApiError::invalid_api_key(None));
        };
        let got = digest(given.as_bytes());
        let diff = want
            .iter()
            .zip(got.iter())
            .fold(0u8, |d, (a, b)| d | (a ^ b));
        if diff == 0 {
            Ok(())
        } else {
            Err(ApiError::invalid_api_key(Some(given)))
        }
    }
}

/// `host[:port]` or `[v6]:port` into the name and the port.
fn split_host(host: &str) -> (&str, Option<&str>) {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => (&host[..=i], host[i + 1..].strip_prefix(':')),
            None => (host, None),
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    }
}

fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

fn forbidden_origin(origin: &str) -> ApiError {
    ApiError::forbidden(
        format!(
            "Cross-origin requests from `{origin}` are not allowed; start the server with \
             --allowed-origins to allow a web page's origin."
        ),
        "origin_not_allowed",
    )
}

fn set(headers: &mut HeaderMap, name: header::HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// The middleware: every check above, then the request.
pub async fn check(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    if let Err(e) = access.host_allowed(req.headers()) {
        return e.into_response();
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("<not text>").to_string());
    if let Some(origin) = &origin {
        if !access.origin_allowed(origin) {
            return forbidden_origin(origin).into_response();
        }
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        if preflight {
            return preflight_response(origin, req.headers());
        }
    }
    let path = req.uri().path();
    let resp = if !OPEN_PATHS.contains(&path) {
        access.key_ok(req.headers()).err()
    } else {
        None
    };
    let resp = match resp {
        Some(e) => {
            let mut r = e.into_response();
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            r
        }
        None => {
            let ct = req
                .headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.to_str().unwrap_or("<not text>").to_string());
            if req.method() == Method::POST && !ct.as_deref().is_some_and(is_json) {
                ApiError::unsupported_media_type(ct.as_deref()).into_response()
            } else {
                next.run(req).await
            }
        }
    };
    with_cors(resp, origin.as_deref())
}

fn with_cors(mut resp: Response, origin: Option<&str>) -> Response {
    if let Some(origin) = origin {
        let h = resp.headers_mut();
        set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    resp
}

fn preflight_response(origin: &str, req: &HeaderMap) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    let h = resp.headers_mut();
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, OPTIONS"),
    );
    // The origin is trusted: allow the headers it asks for (OpenAI's SDKs
    // send some of their own) besides the two every client needs.
    let mut allow = String::from("Authorization, Content-Type");
    if let Some(asked) = req
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .and_then(|v| v.to_str().ok())
    {
        for name in asked.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            if !["authorization", "content-type"].contains(&name.to_ascii_lowercase().as_str()) {
                allow.push_str(", ");
                allow.push_str(name);
            }
        }
    }
    set(h, header::ACCESS_CONTROL_ALLOW_HEADERS, &allow);
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(key: Option<&str>, origins: &[&str], hosts: &[&str]) -> Access {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        Access::new(
            "127.0.0.1:8080".parse().unwrap(),
            key.map(String::from),
            &s(origins),
            &s(hosts),
        )
    }

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn hosts_on_loopback() {
        let a = access(None, &[], &["myhost.lan"]);
        let ok = |h: &str| a.host_allowed(&headers(&[(header::HOST, h)])).is_ok();
        assert!(ok("127.0.0.1:8080") && ok("localhost:8080") && ok("[::1]:8080"));
        assert!(ok("LOCALHOST") && ok("myhost.lan:9999"));
        assert!(!ok("127.0.0.1:8081") && !ok("evil.example:8080") && !ok("evil.example"));
        assert!(a.host_allowed(&HeaderMap::new()).is_ok());
        let open = Access::new("0.0.0.0:8080".parse().unwrap(), None, &[], &[]);
        assert!(!open.host_check());
        assert!(!access(None, &[], &["*"]).host_check());
    }

    #[test]
    fn api_keys_and_content_types() {
        let a = access(Some("sk-secret"), &[], &[]);
        let auth = |v: &str| a.key_ok(&headers(&[(header::AUTHORIZATION, v)]));
        assert!(auth("Bearer sk-secret").is_ok() && auth("bearer  sk-secret ").is_ok());
        assert!(auth("Bearer sk-secreT").is_err() && auth("sk-secret").is_err());
        assert_eq!(a.key_ok(&HeaderMap::new()).unwrap_err().status, 401);
        assert!(access(None, &[], &[]).key_ok(&HeaderMap::new()).is_ok());
        assert!(is_json("application/json") && is_json("Application/JSON; charset=utf-8"));
        assert!(!is_json("text/plain") && !is_json("application/jsonx"));
        assert!(access(None, &["https://app.example/"], &[]).origin_allowed("https://APP.example"));
        assert!(!access(None, &[], &[]).origin_allowed("https://app.example"));
        assert_eq!(split_host("[::1]:80"), ("[::1]", Some("80")));
    }
}
