//! # An alert of rules.yml reaches someone: Prometheus → Alertmanager → a webhook
//!
//! promtool's unit tests (prometheus/tests/rules_test.yml) prove when each rule fires; this
//! test proves that a firing alert leaves the building. A real Prometheus loads the repo's
//! `prometheus.yml` (its `global` section with the `stack` external label, its `alerting`
//! section) and `rules.yml`; a real Alertmanager loads the repo's
//! `alertmanager/alertmanager.yml`; the "someone" is a webhook receiver in this test.
//!
//! What the test changes in the shipped files, and only that:
//! * Alertmanager: the `default` receiver (the one the shipped route ends at, which pages
//!   nobody out of the box) gets a `webhook_configs` entry with the local URL, and the
//!   route's `group_wait` drops from 30 s to 1 s;
//! * Prometheus: the alerting target becomes the test's Alertmanager, rules are evaluated
//!   every second, and nothing is scraped.
//!
//! With nothing scraped there is no consumer target, which is the situation
//! `CandlepipeTargetDown` reports through `absent(up{job="consumer"})`: after its `for: 1m`
//! it fires, and the webhook must get it with its labels (severity, job, the external label)
//! and its rendered annotations. Meanwhile `CandlepipeNoCandlesWritten` must not even be
//! pending: no consumer was ever scraped, so its start grace holds it back (before the
//! grace, it fired on every fresh start).

use candlepipe_e2e::grafana::repo_root;
use candlepipe_testkit::webhook::{WebhookCall, WebhookReceiver};
use candlepipe_testkit::{Alertmanager, Prometheus};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

/// Longest wait for the notification: the rule's `for: 1m`, plus evaluation, group_wait and
/// a loaded machine.
const NOTIFY_TIMEOUT: Duration = Duration::from_secs(180);

fn repo_yaml(rel: &str) -> Yaml {
    let path = repo_root().join(rel);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"))
        .remove(0)
}

fn emit(doc: &Yaml) -> String {
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(doc).expect("emit YAML");
    out
}

fn s(v: &str) -> Yaml {
    Yaml::String(v.to_owned())
}

fn map(pairs: Vec<(&str, Yaml)>) -> Yaml {
    Yaml::Hash(pairs.into_iter().map(|(k, v)| (s(k), v)).collect())
}

/// The repo's alertmanager.yml with the webhook added to the receiver the root route ends
/// at (whose name is returned too), and a 1 s group_wait.
fn alertmanager_config(webhook: &str) -> (String, String) {
    let mut doc = repo_yaml("alertmanager/alertmanager.yml");
    let name = doc["route"]["receiver"]
        .as_str()
        .expect("alertmanager.yml: route.receiver")
        .to_owned();
    doc["route"]["group_wait"] = s("1s");
    let receivers = doc["receivers"]
        .as_mut_vec()
        .expect("alertmanager.yml: receivers");
    let receiver = receivers
        .iter_mut()
        .find(|r| r["name"].as_str() == Some(&name))
        .unwrap_or_else(|| panic!("alertmanager.yml has no receiver {name:?}"));
    let webhook = map(vec![
        ("url", s(webhook)),
        ("send_resolved", Yaml::Boolean(true)),
    ]);
    receiver
        .as_mut_hash()
        .expect("a receiver is a mapping")
        .insert(s("webhook_configs"), Yaml::Array(vec![webhook]));
    (emit(&doc), name)
}

/// The repo's prometheus.yml sending to `alertmanager`, evaluating every second, scraping
/// nothing.
fn prometheus_config(alertmanager: &str) -> String {
    let mut doc = repo_yaml("prometheus/prometheus.yml");
    doc["global"]["evaluation_interval"] = s("1s");
    let targets = &mut doc["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    assert_eq!(
        targets.as_vec().map(Vec::len),
        Some(1),
        "prometheus.yml sends to one Alertmanager"
    );
    *targets = Yaml::Array(vec![s(alertmanager)]);
    doc["scrape_configs"] = Yaml::Array(Vec::new());
    emit(&doc)
}

/// Names of the alerts Prometheus has pending or firing now.
fn active_alerts(prometheus: &Prometheus) -> BTreeSet<String> {
    prometheus.api("alerts")["alerts"]
        .as_array()
        .expect("data.alerts")
        .iter()
        .filter_map(|a| a["labels"]["alertname"].as_str().map(str::to_owned))
        .collect()
}

/// Waits for the first notification, failing with what each hop holds.
fn first_notification(
    webhook: &WebhookReceiver,
    prometheus: &Prometheus,
    alertmanager: &Alertmanager,
) -> WebhookCall {
    let start = Instant::now();
    loop {
        if let Some(call) = webhook.calls().into_iter().next() {
            return call;
        }
        if start.elapsed() > NOTIFY_TIMEOUT {
            panic!(
                "no notification reached the webhook in {NOTIFY_TIMEOUT:?}.\n\
                 Prometheus' alerts: {}\nAlertmanager's alerts: {}\nAlertmanager's log:\n{}",
                prometheus.api("alerts"),
                alertmanager.alerts(),
                alertmanager.log_tail()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_firing_rule_reaches_the_webhook_through_the_shipped_alertmanager_route() {
    let webhook = WebhookReceiver::start();
    let (am_config, receiver) = alertmanager_config(&format!("{}/alerts", webhook.url()));
    let alertmanager = Alertmanager::start(&am_config);
    let rules = std::fs::read_to_string(repo_root().join("prometheus/rules.yml")).unwrap();
    let prometheus = Prometheus::start(
        &prometheus_config(&alertmanager.address),
        &[("rules.yml", &rules)],
    );

    // Prometheus found the Alertmanager the config names.
    candlepipe_testkit::wait_until(
        Duration::from_secs(30),
        "Prometheus to list the Alertmanager",
        || {
            prometheus.api("alertmanagers")["activeAlertmanagers"]
                .as_array()
                .is_some_and(|a| {
                    a.iter().any(|m| {
                        m["url"]
                            .as_str()
                            .is_some_and(|u| u.contains(&alertmanager.address))
                    })
                })
        },
    );

    let call = first_notification(&webhook, &prometheus, &alertmanager);
    println!(
        "the webhook received (POST {}):\n{}",
        call.path,
        serde_json::to_string_pretty(&call.body).unwrap()
    );
    let body = &call.body;
    assert_eq!(call.path, "/alerts");
    assert_eq!(
        body["version"], "4",
        "Alertmanager's webhook payload version"
    );
    assert_eq!(body["receiver"], receiver.as_str());
    assert_eq!(body["status"], "firing");
    assert_eq!(
        body["groupLabels"],
        json!({"alertname": "CandlepipeTargetDown"}),
        "alertmanager.yml groups by alertname"
    );
    let alerts = body["alerts"].as_array().expect("alerts[]");
    assert_eq!(alerts.len(), 1, "one consumer job is missing: {alerts:?}");
    let alert = &alerts[0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(
        alert["labels"],
        json!({
            "alertname": "CandlepipeTargetDown",
            "job": "consumer",
            "severity": "critical",
            // prometheus.yml's external label
            "stack": "candlepipe",
        })
    );
    assert_eq!(
        alert["annotations"],
        json!({
            "summary": "consumer is down",
            "description": "Prometheus could not scrape consumer (no instance discovered) \
                for 1 minute. Its metrics are missing; check the process or container logs \
                and its health endpoint.",
        })
    );
    assert!(
        alert["startsAt"].as_str().is_some_and(|t| !t.is_empty()),
        "the alert carries its start time: {alert}"
    );

    // The fresh-start grace: CandlepipeTargetDown fires after a minute without a consumer,
    // CandlepipeNoCandlesWritten (whose `for` is also a minute) is not even pending.
    let active = active_alerts(&prometheus);
    assert!(
        active.contains("CandlepipeTargetDown") && !active.contains("CandlepipeNoCandlesWritten"),
        "on a fresh start only CandlepipeTargetDown may be active; Prometheus has {active:?}"
    );
    assert!(
        alertmanager.alerts().as_array().is_some_and(|a| a
            .iter()
            .any(|x| x["labels"]["alertname"] == "CandlepipeTargetDown")),
        "Alertmanager lists the alert it notified about"
    );
}
