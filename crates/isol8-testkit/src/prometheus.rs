//! Reading `GET /metrics` in tests: samples of a Prometheus text exposition looked up by
//! metric name and exact label set.
//!
//! Our own small reader rather than the `prometheus-parse` crate: that one cuts a sample
//! at the first `}`, so it misreads our route labels (`route="/session/{id}"`).

use std::collections::{BTreeMap, HashMap};

/// One scrape: every sample, keyed by name and sorted labels (`name{a="x",b="y"}`).
#[derive(Debug)]
pub struct Scrape(HashMap<String, f64>);

/// The key of a sample of `name` with these labels.
fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let sorted: BTreeMap<&str, &str> = labels.iter().copied().collect();
    let inner: Vec<String> = sorted.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    format!("{name}{{{}}}", inner.join(","))
}

impl Scrape {
    /// Parses a text exposition (format 0.0.4): comments skipped; label values must not
    /// contain `",` or escaped quotes (ours never do).
    ///
    /// # Panics
    /// On a line that is not a sample (a test failure).
    pub fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => {
                    let body = rest.strip_suffix('}').expect("closing brace");
                    let labels: Vec<(&str, &str)> = body
                        .split("\",")
                        .filter(|p| !p.is_empty())
                        .map(|p| {
                            let (k, v) = p.split_once("=\"").expect("label");
                            (k, v.trim_end_matches('"'))
                        })
                        .collect();
                    (name, labels)
                }
                None => (series, Vec::new()),
            };
            samples.insert(key(name, &labels), value);
        }
        Scrape(samples)
    }

    /// The value of the sample `name` whose labels are exactly `labels` (any order); 0
    /// when there is none (a series nothing has touched yet). For a histogram, ask for
    /// its `_count` or `_sum` series.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0.get(&key(name, labels)).copied().unwrap_or(0.0)
    }

    /// Every sample's key (`name{a="x",b="y"}`, labels sorted).
    pub fn series(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_histogram_counts_by_exact_labels() {
        let s = Scrape::parse(
            "# HELP x_total X.\n# TYPE x_total counter\n\
             x_total{route=\"/session/{id}\",status=\"200\"} 3\n\
             x_total{route=\"/execute\",status=\"200\"} 5\n\
             # TYPE g gauge\ng 7\n\
             # TYPE h_seconds histogram\n\
             h_seconds_bucket{le=\"0.5\"} 1\nh_seconds_bucket{le=\"+Inf\"} 2\n\
             h_seconds_sum 0.75\nh_seconds_count 2\n",
        );
        assert_eq!(
            s.get("x_total", &[("status", "200"), ("route", "/execute")]),
            5.0
        );
        assert_eq!(
            s.get("x_total", &[("route", "/session/{id}"), ("status", "200")]),
            3.0
        );
        assert_eq!(
            s.get("x_total", &[("route", "/execute")]),
            0.0,
            "labels must match exactly"
        );
        assert_eq!(s.get("g", &[]), 7.0);
        assert_eq!(s.get("h_seconds_count", &[]), 2.0);
        assert_eq!(s.get("h_seconds_bucket", &[("le", "+Inf")]), 2.0);
        assert_eq!(s.get("h_seconds_sum", &[]), 0.75);
        assert_eq!(s.get("absent", &[]), 0.0);
    }
}
