//! Plain HTTP calls a test makes to a service's own API (for example the producer's
//! `POST /mode`), with an optional bearer token. Status codes are returned, never turned into
//! errors, because tests assert on refusals (401, 403) as much as on successes.

use std::time::Duration;

/// POSTs `body` as `application/json` to `url`, with `Authorization: Bearer <token>` when a
/// token is given. Returns (status, body); `None` when nothing answers.
pub fn post_json(url: &str, body: &str, bearer: Option<&str>) -> Option<(u16, String)> {
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .new_agent();
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(token) = bearer {
        req = req.header("Authorization", &format!("Bearer {token}"));
    }
    let mut resp = req.send(body).ok()?;
    let status = resp.status().as_u16();
    let text = resp.body_mut().read_to_string().ok()?;
    Some((status, text))
}
