//! The servers' config files, one copy each in the repo's `scripts/lib/`: the native stack
//! (`scripts/stack.sh`) renders the same templates, so the tests' Kafka and InfluxDB and the
//! stack's cannot drift apart. A template names each value it needs as `@NAME@`.

use std::fmt::Display;

/// A KRaft node's `server.properties`: `@NODE_ID@`, `@VOTERS@`, `@PORT@`,
/// `@CONTROLLER_PORT@`, `@LOG_DIRS@`, `@REPLICAS@`, `@MIN_ISR@`.
pub(crate) const KAFKA_SERVER_PROPERTIES: &str =
    include_str!("../../../../scripts/lib/kafka/server.properties.template");

/// Kafka's `log4j.properties` (no values to fill in).
pub(crate) const KAFKA_LOG4J_PROPERTIES: &str =
    include_str!("../../../../scripts/lib/kafka/log4j.properties");

/// influxd 2's `config.toml`: `@DIR@` (its state folder) and `@PORT@`.
pub(crate) const INFLUXD_CONFIG_TOML: &str =
    include_str!("../../../../scripts/lib/influxdb/config.toml.template");

/// `template` with every `@NAME@` replaced by its value. Panics naming the placeholder when
/// one is left (the template gained a value the harness does not give).
pub(crate) fn render(template: &str, values: &[(&str, &dyn Display)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("@{name}@"), &value.to_string());
    }
    if let Some(left) = placeholder(&out) {
        panic!("a server config template needs @{left}@, which the test harness does not give");
    }
    out
}

/// The first `@NAME@` (upper case, digits, `_`) in `text`, outside `#` comments.
fn placeholder(text: &str) -> Option<&str> {
    let is_name = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
    };
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let mut rest = line;
        while let Some(at) = rest.find('@') {
            rest = &rest[at + 1..];
            if let Some(name) = rest.split_once('@').map(|(n, _)| n).filter(|n| is_name(n)) {
                return Some(name);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_placeholder_is_replaced_everywhere() {
        let out = render(
            "a=@PORT@\nb=127.0.0.1:@PORT@,@ID@\n",
            &[("PORT", &9092), ("ID", &"n1")],
        );
        assert_eq!(out, "a=9092\nb=127.0.0.1:9092,n1\n");
    }

    #[test]
    #[should_panic(expected = "@LOG_DIRS@")]
    fn a_value_the_harness_does_not_give_is_named() {
        render("port=@PORT@\nlog.dirs=@LOG_DIRS@\n", &[("PORT", &9092)]);
    }

    #[test]
    fn comments_and_addresses_are_not_placeholders() {
        assert_eq!(placeholder("# replacing each @NAME@\nx=a@b.c\n"), None);
        assert_eq!(placeholder("voters=1@127.0.0.1:9093\n"), None);
        assert_eq!(placeholder("dir=\"@DIR@/x\"\n"), Some("DIR"));
        assert_eq!(placeholder("v=1@x@PORT@\n"), Some("PORT"));
    }

    #[test]
    fn the_repo_templates_render_with_what_the_servers_give() {
        let kafka = render(
            KAFKA_SERVER_PROPERTIES,
            &[
                ("NODE_ID", &1),
                ("VOTERS", &"1@127.0.0.1:9093"),
                ("PORT", &9092),
                ("CONTROLLER_PORT", &9093),
                ("LOG_DIRS", &"/tmp/k"),
                ("REPLICAS", &1),
                ("MIN_ISR", &1),
            ],
        );
        assert!(
            kafka.contains("\nlisteners=PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093\n")
        );
        let influxd = render(INFLUXD_CONFIG_TOML, &[("DIR", &"/tmp/i"), ("PORT", &8086)]);
        assert!(influxd.contains("\nbolt-path = \"/tmp/i/influxd.bolt\"\n"));
        assert!(influxd.contains("\nhttp-bind-address = \"127.0.0.1:8086\"\n"));
        assert_eq!(placeholder(KAFKA_LOG4J_PROPERTIES), None);
    }
}
