//! Client-side token buckets, one [`Limiter`] per (credentials, region) shared by every cluster, seeded
//! from the published EC2 request-rate limits so the provider stays under the account's budget
//! instead of finding it by being throttled. A throttling answer empties the bucket it was drawn from.
//!
//! Buckets reserve: a call takes its tokens at once (the balance may go negative) and sleeps until the
//! balance it took would have refilled. Waiters are served in arrival order and a cost larger than the
//! capacity (a big `RunInstances`) waits instead of hanging.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// Capacity and refill rate of one token bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketSpec {
    /// Tokens the bucket holds when full (the burst).
    pub capacity: f64,
    /// Tokens added per second.
    pub refill_per_second: f64,
}

impl BucketSpec {
    const fn new(capacity: f64, refill_per_second: f64) -> Self {
        Self {
            capacity,
            refill_per_second,
        }
    }
}

/// An AWS API rate bucket. EC2 numbers from "Request throttling for the Amazon EC2 API"; ELBv2 and
/// IAM publish no numbers, so they get the EC2 non-mutating / mutating sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Bucket {
    /// EC2 filtered or paginated `Describe*`/`Get*`/`List*`/`Search*`: 100, 20/s.
    Ec2NonMutating,
    /// EC2 mutating calls without their own bucket: 50, 5/s.
    Ec2Mutating,
    /// Security group rule changes, key pairs, spot requests: 50, 5/s.
    Ec2ResourceIntensive,
    /// `RunInstances` requests: 5, 2/s.
    Ec2RunInstances,
    /// Instances launched by `RunInstances` (one token per instance): 1000, 2/s.
    Ec2RunInstancesResource,
    /// `StartInstances` requests: 5, 2/s.
    Ec2StartInstances,
    /// `TerminateInstances` requests: 100, 5/s.
    Ec2TerminateInstances,
    /// Instances terminated or stopped (one token per instance): 1000, 20/s.
    Ec2TerminateInstancesResource,
    /// `CreateTags` / `DeleteTags`: 100, 10/s.
    Ec2Tags,
    /// `CreateNatGateway` / `DeleteNatGateway`: 10, 1/s.
    Ec2NatGateway,
    /// ELBv2 reads: 100, 20/s.
    Elbv2Read,
    /// ELBv2 writes: 50, 5/s.
    Elbv2Write,
    /// IAM reads: 100, 20/s.
    IamRead,
    /// IAM writes: 50, 5/s.
    IamWrite,
}

impl Bucket {
    /// Every bucket, for seeding a limiter.
    pub const ALL: [Bucket; 14] = [
        Bucket::Ec2NonMutating,
        Bucket::Ec2Mutating,
        Bucket::Ec2ResourceIntensive,
        Bucket::Ec2RunInstances,
        Bucket::Ec2RunInstancesResource,
        Bucket::Ec2StartInstances,
        Bucket::Ec2TerminateInstances,
        Bucket::Ec2TerminateInstancesResource,
        Bucket::Ec2Tags,
        Bucket::Ec2NatGateway,
        Bucket::Elbv2Read,
        Bucket::Elbv2Write,
        Bucket::IamRead,
        Bucket::IamWrite,
    ];

    /// The published (or assumed) size of this bucket.
    pub const fn spec(self) -> BucketSpec {
        match self {
            Bucket::Ec2NonMutating => BucketSpec::new(100.0, 20.0),
            Bucket::Ec2Mutating => BucketSpec::new(50.0, 5.0),
            Bucket::Ec2ResourceIntensive => BucketSpec::new(50.0, 5.0),
            Bucket::Ec2RunInstances => BucketSpec::new(5.0, 2.0),
            Bucket::Ec2RunInstancesResource => BucketSpec::new(1000.0, 2.0),
            Bucket::Ec2StartInstances => BucketSpec::new(5.0, 2.0),
            Bucket::Ec2TerminateInstances => BucketSpec::new(100.0, 5.0),
            Bucket::Ec2TerminateInstancesResource => BucketSpec::new(1000.0, 20.0),
            Bucket::Ec2Tags => BucketSpec::new(100.0, 10.0),
            Bucket::Ec2NatGateway => BucketSpec::new(10.0, 1.0),
            Bucket::Elbv2Read | Bucket::IamRead => BucketSpec::new(100.0, 20.0),
            Bucket::Elbv2Write | Bucket::IamWrite => BucketSpec::new(50.0, 5.0),
        }
    }
}

/// The AWS service an operation belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Service {
    /// Amazon EC2.
    Ec2,
    /// Elastic Load Balancing v2.
    Elbv2,
    /// IAM.
    Iam,
}

impl Service {
    /// The service's endpoint prefix: `ec2`, `elasticloadbalancing`, `iam`.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ec2 => "ec2",
            Service::Elbv2 => "elasticloadbalancing",
            Service::Iam => "iam",
        }
    }
}

/// What one call draws: a request token from one bucket, plus `resource_cost` tokens from a
/// resource bucket for calls that launch or terminate instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Draw {
    /// The request bucket.
    pub request: Bucket,
    /// The resource bucket and its cost (instances), if any.
    pub resource: Option<(Bucket, u32)>,
}

fn is_read(operation: &str) -> bool {
    ["Describe", "Get", "List", "Search"]
        .iter()
        .any(|p| operation.starts_with(p))
}

/// The buckets an operation draws from. `instances` is the instance count for launches and
/// terminations (ignored otherwise). Pure.
pub fn draw_for(service: Service, operation: &str, instances: u32) -> Draw {
    let request = |request| Draw {
        request,
        resource: None,
    };
    match service {
        Service::Elbv2 if is_read(operation) => request(Bucket::Elbv2Read),
        Service::Elbv2 => request(Bucket::Elbv2Write),
        Service::Iam if is_read(operation) => request(Bucket::IamRead),
        Service::Iam => request(Bucket::IamWrite),
        Service::Ec2 => match operation {
            "RunInstances" => Draw {
                request: Bucket::Ec2RunInstances,
                resource: Some((Bucket::Ec2RunInstancesResource, instances.max(1))),
            },
            "StartInstances" => Draw {
                request: Bucket::Ec2StartInstances,
                resource: Some((Bucket::Ec2RunInstancesResource, instances.max(1))),
            },
            "TerminateInstances" | "StopInstances" => Draw {
                request: if operation == "TerminateInstances" {
                    Bucket::Ec2TerminateInstances
                } else {
                    Bucket::Ec2Mutating
                },
                resource: Some((Bucket::Ec2TerminateInstancesResource, instances.max(1))),
            },
            "CreateTags" | "DeleteTags" => request(Bucket::Ec2Tags),
            "CreateNatGateway" | "DeleteNatGateway" => request(Bucket::Ec2NatGateway),
            "AuthorizeSecurityGroupIngress"
            | "AuthorizeSecurityGroupEgress"
            | "RevokeSecurityGroupIngress"
            | "RevokeSecurityGroupEgress"
            | "CreateKeyPair"
            | "RequestSpotInstances"
            | "CancelSpotInstanceRequests" => request(Bucket::Ec2ResourceIntensive),
            op if is_read(op) => request(Bucket::Ec2NonMutating),
            _ => request(Bucket::Ec2Mutating),
        },
    }
}

#[derive(Debug)]
struct BucketState {
    spec: BucketSpec,
    tokens: f64,
    updated: Instant,
    acquired: u64,
    drained: u64,
    waited: Duration,
}

impl BucketState {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.spec.refill_per_second).min(self.spec.capacity);
        self.updated = now;
    }
}

/// Counters of one bucket, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BucketStats {
    /// Calls (or instances, for resource buckets) that drew from the bucket.
    pub acquired: u64,
    /// Times a throttling answer emptied the bucket.
    pub drained: u64,
    /// Total time callers slept waiting for tokens.
    pub waited: Duration,
    /// Tokens now (negative: reserved by waiting callers).
    pub tokens: f64,
}

/// Token buckets of one (credentials, region): every AWS call of every cluster in that account and
/// region draws from here before it is sent.
#[derive(Debug)]
pub struct Limiter {
    buckets: Mutex<BTreeMap<Bucket, BucketState>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The state of `bucket`, refilled up to `now`.
fn refilled(buckets: &mut BTreeMap<Bucket, BucketState>, bucket: Bucket, now: Instant) -> &mut BucketState {
    let state = buckets.get_mut(&bucket).expect("every bucket is seeded");
    state.refill(now);
    state
}

impl Limiter {
    /// A limiter with every bucket full, sized from [`Bucket::spec`].
    pub fn new() -> Self {
        Self::with_specs(|bucket| bucket.spec())
    }

    /// A limiter with custom bucket sizes (tests, or an account with raised limits).
    pub fn with_specs(spec: impl Fn(Bucket) -> BucketSpec) -> Self {
        let now = Instant::now();
        let buckets = Bucket::ALL
            .into_iter()
            .map(|bucket| {
                let spec = spec(bucket);
                let state = BucketState {
                    spec,
                    tokens: spec.capacity,
                    updated: now,
                    acquired: 0,
                    drained: 0,
                    waited: Duration::ZERO,
                };
                (bucket, state)
            })
            .collect();
        Self {
            buckets: Mutex::new(buckets),
        }
    }

    /// The buckets, locked (a poisoned lock is taken over).
    fn lock(&self) -> MutexGuard<'_, BTreeMap<Bucket, BucketState>> {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reserve(&self, bucket: Bucket, cost: f64) -> Duration {
        let now = Instant::now();
        let mut buckets = self.lock();
        let state = refilled(&mut buckets, bucket, now);
        state.tokens -= cost;
        state.acquired += cost as u64;
        if state.tokens >= 0.0 || state.spec.refill_per_second <= 0.0 {
            return Duration::ZERO;
        }
        let wait = Duration::from_secs_f64(-state.tokens / state.spec.refill_per_second);
        state.waited += wait;
        wait
    }

    /// Takes the tokens of `draw`, sleeping until they are available. Tokens of an acquire that is
    /// dropped while sleeping stay taken (the limiter errs on the slow side).
    pub async fn acquire(&self, draw: Draw) {
        let mut wait = self.reserve(draw.request, 1.0);
        if let Some((bucket, cost)) = draw.resource {
            wait = wait.max(self.reserve(bucket, f64::from(cost)));
        }
        if !wait.is_zero() {
            tracing::debug!(bucket = ?draw.request, wait_ms = wait.as_millis() as u64, "waiting for AWS rate tokens");
            tokio::time::sleep(wait).await;
        }
    }

    /// Empties the buckets of `draw` after AWS throttled it: callers wait a full refill from zero.
    pub fn drain(&self, draw: Draw) {
        let now = Instant::now();
        let mut buckets = self.lock();
        for bucket in std::iter::once(draw.request).chain(draw.resource.map(|(b, _)| b)) {
            let state = refilled(&mut buckets, bucket, now);
            state.tokens = state.tokens.min(0.0);
            state.drained += 1;
        }
        tracing::warn!(bucket = ?draw.request, "AWS throttled a call; bucket emptied");
    }

    /// Counters and current balance of `bucket`.
    pub fn stats(&self, bucket: Bucket) -> BucketStats {
        let now = Instant::now();
        let mut buckets = self.lock();
        let state = refilled(&mut buckets, bucket, now);
        BucketStats {
            acquired: state.acquired,
            drained: state.drained,
            waited: state.waited,
            tokens: state.tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ec2(operation: &str) -> Draw {
        draw_for(Service::Ec2, operation, 1)
    }

    /// Asserts that `millis` ms (to within 10 ms) have passed since `start`.
    #[track_caller]
    fn assert_elapsed_about(start: Instant, millis: u64) {
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(millis - 10) && elapsed <= Duration::from_millis(millis + 10),
            "{elapsed:?}"
        );
    }

    #[test]
    fn operations_map_onto_the_ec2_limit_table() {
        assert_eq!(ec2("DescribeVpcs").request, Bucket::Ec2NonMutating);
        assert_eq!(ec2("CreateVpc").request, Bucket::Ec2Mutating);
        assert_eq!(
            ec2("AuthorizeSecurityGroupIngress").request,
            Bucket::Ec2ResourceIntensive
        );
        assert_eq!(ec2("CreateNatGateway").request, Bucket::Ec2NatGateway);
        assert_eq!(ec2("CreateTags").request, Bucket::Ec2Tags);
        let run = draw_for(Service::Ec2, "RunInstances", 40);
        assert_eq!(run.request, Bucket::Ec2RunInstances);
        assert_eq!(run.resource, Some((Bucket::Ec2RunInstancesResource, 40)));
        let terminate = draw_for(Service::Ec2, "TerminateInstances", 3);
        assert_eq!(
            terminate.resource,
            Some((Bucket::Ec2TerminateInstancesResource, 3))
        );
        assert_eq!(
            draw_for(Service::Elbv2, "DescribeTargetHealth", 0).request,
            Bucket::Elbv2Read
        );
        assert_eq!(
            draw_for(Service::Elbv2, "RegisterTargets", 0).request,
            Bucket::Elbv2Write
        );
        assert_eq!(draw_for(Service::Iam, "GetRole", 0).request, Bucket::IamRead);
        assert_eq!(draw_for(Service::Iam, "CreateRole", 0).request, Bucket::IamWrite);
        assert_eq!(Bucket::Ec2RunInstances.spec(), BucketSpec::new(5.0, 2.0));
        assert_eq!(Bucket::Ec2NonMutating.spec(), BucketSpec::new(100.0, 20.0));
        assert_eq!(Bucket::Ec2Mutating.spec(), BucketSpec::new(50.0, 5.0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_bucket_serves_its_burst_at_once_then_the_refill_rate() {
        let limiter = Limiter::new();
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire(ec2("RunInstances")).await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst of 5 is free");
        // The next 4 come at 2/s.
        for _ in 0..4 {
            limiter.acquire(ec2("RunInstances")).await;
        }
        assert_elapsed_about(start, 2000);
        assert_eq!(limiter.stats(Bucket::Ec2RunInstances).acquired, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn the_describe_bucket_allows_100_then_20_per_second() {
        let limiter = Limiter::new();
        let start = Instant::now();
        for _ in 0..120 {
            limiter.acquire(ec2("DescribeInstances")).await;
        }
        assert_elapsed_about(start, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_empties_the_bucket_so_the_next_call_waits_a_refill() {
        let limiter = Limiter::new();
        limiter.acquire(ec2("CreateVpc")).await;
        assert!(limiter.stats(Bucket::Ec2Mutating).tokens > 48.0);
        limiter.drain(ec2("CreateVpc"));
        let stats = limiter.stats(Bucket::Ec2Mutating);
        assert_eq!(stats.tokens, 0.0);
        assert_eq!(stats.drained, 1);
        let start = Instant::now();
        limiter.acquire(ec2("CreateSubnet")).await;
        assert_elapsed_about(start, 200);
        // Other buckets are untouched.
        let start = Instant::now();
        limiter.acquire(ec2("DescribeVpcs")).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_launch_of_many_instances_draws_the_resource_bucket() {
        let limiter = Limiter::new();
        let start = Instant::now();
        limiter
            .acquire(draw_for(Service::Ec2, "RunInstances", 1000))
            .await;
        assert_eq!(start.elapsed(), Duration::ZERO, "1000 instances launch at once");
        limiter.acquire(draw_for(Service::Ec2, "RunInstances", 10)).await;
        assert_elapsed_about(start, 5000);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_callers_share_one_budget() {
        let limiter = std::sync::Arc::new(Limiter::new());
        let start = Instant::now();
        let tasks: Vec<_> = (0..15)
            .map(|_| {
                let limiter = limiter.clone();
                tokio::spawn(async move { limiter.acquire(draw_for(Service::Ec2, "RunInstances", 1)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        // 5 at once, 10 more at 2/s.
        assert_elapsed_about(start, 5000);
    }
}
