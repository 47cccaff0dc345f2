//! Benchmark of bootstrap data rendering (prints numbers; asserts nothing).
//!
//! `cargo run --release -p kubezero-bootstrap --bin bench-render [-- ITERATIONS]` (default 200):
//! for each role (init, control-plane join, worker join) and format (`alpine-config`,
//! `cloud-config`) renders the kubeadm documents and the user data the controller writes, with real
//! RSA-2048 cluster certificates for the control-plane roles, and reports the median render time,
//! the raw size, the stored size (gzipped when smaller) and the headroom to the 16 KiB user-data
//! limit, which applies to the stored size.

use std::time::Instant;

use kubezero_bootstrap::api::KubeZeroConfigSpec;
use kubezero_bootstrap::controller::build::render_data;
use kubezero_bootstrap::pki::ClusterCertificates;
use kubezero_bootstrap::render::kubeadm::{JoinDiscovery, KubeadmInputs, KubeadmRole};
use kubezero_bootstrap::render::{MAX_USER_DATA_SIZE, ProviderIdSource};
use kubezero_bootstrap::tokens::BootstrapToken;

fn main() {
    let iterations: usize = std::env::args()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let certificates = ClusterCertificates::generate().expect("cluster certificates");
    let token = BootstrapToken::generate();
    let pin = certificates.discovery_pin().expect("CA pin");
    println!("kubezero bootstrap render benchmark ({iterations} renders per case, RSA-2048 cluster PKI)");
    println!(
        "  {:<20} {:<14} {:>12} {:>10} {:>10} {:>10}",
        "role", "format", "median µs", "raw B", "stored B", "headroom B"
    );
    for format in ["alpine-config", "cloud-config"] {
        let spec: KubeZeroConfigSpec =
            serde_json::from_value(serde_json::json!({"format": format})).expect("a valid spec");
        for (name, role) in [
            ("init", KubeadmRole::Init),
            ("control-plane join", KubeadmRole::ControlPlaneJoin),
            ("worker join", KubeadmRole::WorkerJoin),
        ] {
            let inputs = KubeadmInputs {
                cluster_name: "demo".into(),
                kubernetes_version: "v1.34.2".into(),
                control_plane_endpoint: "demo-apiserver-0123456789.elb.eu-central-1.amazonaws.com:6443"
                    .into(),
                pod_cidrs: vec!["10.244.0.0/16".into()],
                service_cidrs: vec!["10.96.0.0/12".into()],
                service_domain: None,
                discovery: (role != KubeadmRole::Init).then(|| JoinDiscovery {
                    token: token.to_string(),
                    ca_cert_hashes: vec![pin.clone()],
                }),
                provider_id: None,
                skip_kube_proxy: false,
            };
            let pki = (role != KubeadmRole::WorkerJoin).then_some(&certificates);
            let mut times = Vec::with_capacity(iterations);
            let mut last = None;
            for _ in 0..iterations {
                let started = Instant::now();
                let rendered =
                    render_data(&spec, role, &inputs, Vec::new(), pki, ProviderIdSource::Aws, None);
                times.push(started.elapsed().as_secs_f64() * 1e6);
                last = Some(rendered);
            }
            times.sort_by(|a, b| a.total_cmp(b));
            let median = times[times.len() / 2];
            match last.expect("at least one render") {
                Ok(rendered) => println!(
                    "  {name:<20} {format:<14} {median:>12.0} {:>10} {:>10} {:>10}",
                    rendered.raw_size,
                    rendered.value.len(),
                    MAX_USER_DATA_SIZE as i64 - rendered.value.len() as i64
                ),
                Err(failure) => println!("  {name:<20} {format:<14} {median:>12.0} refused: {failure:?}"),
            }
        }
    }
}
