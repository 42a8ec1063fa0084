//! Plain HTTP calls a test makes: to a service's own API (for example the producer's
//! `POST /mode`) and to the servers the harness runs (InfluxDB, Prometheus). Status codes are
//! returned, never turned into errors, because tests assert on refusals (401, 403) as much as
//! on successes; `None` means nothing answered.

use std::time::Duration;

fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(timeout))
        .build()
        .new_agent()
}

fn answer(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Option<(u16, String)> {
    let mut resp = resp.ok()?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().read_to_string().ok()?;
    Some((status, body))
}

/// Plain HTTP GET (status, body); `None` when nothing answers.
pub fn get(url: &str) -> Option<(u16, String)> {
    answer(agent(Duration::from_secs(10)).get(url).call())
}

/// The `/metrics` text of a service on a loopback port; empty when nothing answers.
pub fn metrics_text(port: u16) -> String {
    get(&format!("http://127.0.0.1:{port}/metrics"))
        .map(|(_, body)| body)
        .unwrap_or_default()
}

/// GET with extra headers (e.g. `Authorization: Token …`).
pub fn get_with(url: &str, headers: &[(&str, &str)]) -> Option<(u16, String)> {
    let mut req = agent(Duration::from_secs(30)).get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.call())
}

/// POSTs a URL-encoded form, with extra headers.
pub fn post_form(
    url: &str,
    form: &[(&str, &str)],
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut req = agent(Duration::from_secs(60)).post(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send_form(form.iter().copied()))
}

/// POSTs `body` with a content type and extra headers.
pub fn post_body(
    url: &str,
    content_type: &str,
    body: &[u8],
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    let mut req = agent(Duration::from_secs(120))
        .post(url)
        .header("Content-Type", content_type);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    answer(req.send(body))
}

/// POSTs `body` as `application/json` to `url`, with `Authorization: Bearer <token>` when a
/// token is given.
pub fn post_json(url: &str, body: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    let auth = bearer.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    post_body(url, "application/json", body.as_bytes(), &headers)
}

/// `k=v&…` with the values percent-encoded (RFC 3986 unreserved characters kept).
pub fn encode_query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
