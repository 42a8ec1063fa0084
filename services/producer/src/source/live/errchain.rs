//! An error with its whole cause chain on one line, each cause once.
//!
//! reqwest's own message for a failed request is only `error sending request`; the part an
//! operator needs (`dns error: failed to lookup address information: Name or service not
//! known`, `tcp connect error: Connection refused`) is in its sources. Printing every source
//! repeats text, because many errors include their source's message in their own
//! (`tcp connect error: Connection refused (os error 111)`, then the io error
//! `Connection refused (os error 111)`), so a cause whose text is already on the line is
//! left out.

use std::error::Error;

/// `error: cause: cause's cause…`, skipping causes already said.
pub(crate) fn chain(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);
    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as _)
        }
    }

    #[test]
    fn every_cause_once() {
        let e = Layer(
            "error sending request",
            Some(Box::new(Layer(
                "client error (Connect)",
                Some(Box::new(Layer(
                    "tcp connect error: Connection refused (os error 111)",
                    Some(Box::new(Layer("Connection refused (os error 111)", None))),
                ))),
            ))),
        );
        assert_eq!(
            chain(&e),
            "error sending request: client error (Connect): tcp connect error: Connection refused (os error 111)"
        );
    }

    #[tokio::test]
    async fn a_host_that_does_not_resolve_says_so() {
        let e = reqwest::Client::new()
            .get("http://nohost.invalid/")
            .send()
            .await
            .unwrap_err();
        let line = chain(&e.without_url());
        assert!(line.contains("dns error"), "{line}");
        assert_eq!(line.matches("dns error").count(), 1, "{line}");
    }
}
