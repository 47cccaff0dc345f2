//! Prometheus metrics of a manager: reconcile count, errors by class, reconcile duration, leadership.

use std::sync::Mutex;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use super::errors::ErrorClass;

/// Labels naming the controller (the kind it reconciles, lowercase).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// Controller name, e.g. `kubezeromachine`.
    pub controller: String,
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// Controller name.
    pub controller: String,
    /// Error class (see [`ErrorClass::as_str`]).
    pub class: String,
}

/// All metrics of one manager process, registered under the `kubezero` prefix.
pub struct Metrics {
    registry: Mutex<Registry>,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: Family<ControllerLabels, Histogram>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("kubezero");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        let errors = Family::<ErrorLabels, Counter>::default();
        let duration = Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        let leader = Gauge::default();
        registry.register("reconcile", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by error class",
            errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register(
            "leader",
            "1 while this process holds the leader lease",
            leader.clone(),
        );
        Self {
            registry: Mutex::new(registry),
            reconciles,
            errors,
            duration,
            leader,
        }
    }

    /// Counts a reconcile of `controller` and measures it until the returned guard is dropped.
    pub fn reconcile(&self, controller: &str) -> ReconcileTimer<'_> {
        let labels = ControllerLabels {
            controller: controller.to_string(),
        };
        self.reconciles.get_or_create(&labels).inc();
        ReconcileTimer {
            metrics: self,
            labels,
            started: Instant::now(),
        }
    }

    /// Counts a failed reconcile of `controller`.
    pub fn error(&self, controller: &str, class: ErrorClass) {
        let labels = ErrorLabels {
            controller: controller.to_string(),
            class: class.as_str().to_string(),
        };
        self.errors.get_or_create(&labels).inc();
    }

    /// Registers a metric of the manager's own (e.g. the provider's AWS request counter) under
    /// the `kubezero` prefix.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .register(name, help, metric);
    }

    /// Records whether this process currently leads.
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in Prometheus text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let registry = self
            .registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
        text
    }
}

/// Drop guard that records a reconcile's duration.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    labels: ControllerLabels,
    started: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        let seconds = self.started.elapsed().as_secs_f64();
        self.metrics.duration.get_or_create(&self.labels).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_errors_and_durations_are_exported() {
        let metrics = Metrics::new();
        drop(metrics.reconcile("kubezeromachine"));
        drop(metrics.reconcile("kubezeromachine"));
        metrics.error("kubezeromachine", ErrorClass::Conflict);
        metrics.set_leader(true);
        let text = metrics.encode();
        assert!(
            text.contains(r#"kubezero_reconcile_total{controller="kubezeromachine"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"kubezero_reconcile_errors_total{controller="kubezeromachine",class="conflict"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"kubezero_reconcile_duration_seconds_count{controller="kubezeromachine"} 2"#)
        );
        assert!(text.contains("kubezero_leader 1"), "{text}");
    }

    #[test]
    fn a_manager_registers_its_own_metrics_under_the_prefix() {
        let metrics = Metrics::new();
        let extra = Counter::<u64>::default();
        metrics.register("aws_requests", "AWS requests", extra.clone());
        extra.inc_by(3);
        let text = metrics.encode();
        assert!(text.contains("kubezero_aws_requests_total 3"), "{text}");
    }
}
