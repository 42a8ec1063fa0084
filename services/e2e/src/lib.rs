//! # candlepipe-e2e
//!
//! Helpers for the cross-service tests in `tests/`: reading the Grafana dashboards and
//! turning every panel's query into one a real InfluxDB or Prometheus can answer.

pub mod grafana;
