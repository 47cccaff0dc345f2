//! The EC2 instance calls the launcher makes, behind a trait: [`AwsClients`] sends them to EC2,
//! tests answer them with a fake.

use std::collections::BTreeMap;

use futures::future::BoxFuture;

use crate::aws::clients::AwsClients;
use crate::aws::errors::AwsError;
use crate::aws::instances::{
    Fill, Instance, LaunchSpec, describe_cluster_instances, run_instances, tag_instance, terminate_instances,
};
use crate::aws::tags::ClusterTags;

/// DescribeInstances, RunInstances, CreateTags and TerminateInstances for one region.
pub trait InstanceApi: Send + Sync {
    /// The region the calls go to.
    fn region(&self) -> &str;

    /// The live instances the cluster `tags` names own.
    fn describe<'a>(&'a self, tags: &'a ClusterTags) -> BoxFuture<'a, Result<Vec<Instance>, AwsError>>;

    /// Launches `count` instances of `spec` into `subnet_id` with one call, idempotent by `token`;
    /// the instances in launch-index order.
    fn run<'a>(&'a self, launch: RunRequest<'a>) -> BoxFuture<'a, Result<Vec<Instance>, AwsError>>;

    /// Sets `tags` on instance `id`.
    fn tag<'a>(
        &'a self,
        id: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), AwsError>>;

    /// Terminates `ids` (at most [`crate::aws::instances::TERMINATE_CHUNK`]) with one call.
    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), AwsError>>;
}

/// One RunInstances: what, where, how many, its ClientToken and its extra tags.
#[derive(Clone, Copy, Debug)]
pub struct RunRequest<'a> {
    /// What to launch.
    pub spec: &'a LaunchSpec,
    /// Where.
    pub subnet_id: &'a str,
    /// How many.
    pub count: i32,
    /// All of them, or as many as there is capacity for.
    pub fill: Fill,
    /// The ClientToken.
    pub token: &'a str,
    /// Tags besides the cluster's (the launch-spec tag, a single member's machine tags).
    pub tags: &'a BTreeMap<String, String>,
}

impl InstanceApi for AwsClients {
    fn region(&self) -> &str {
        AwsClients::region(self)
    }

    fn describe<'a>(&'a self, tags: &'a ClusterTags) -> BoxFuture<'a, Result<Vec<Instance>, AwsError>> {
        Box::pin(describe_cluster_instances(self, tags))
    }

    fn run<'a>(&'a self, launch: RunRequest<'a>) -> BoxFuture<'a, Result<Vec<Instance>, AwsError>> {
        Box::pin(run_instances(
            self,
            launch.spec,
            launch.subnet_id,
            launch.count,
            launch.fill,
            launch.token,
            launch.tags,
        ))
    }

    fn tag<'a>(
        &'a self,
        id: &'a str,
        tags: &'a BTreeMap<String, String>,
    ) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(tag_instance(self, id, tags))
    }

    fn terminate<'a>(&'a self, ids: &'a [String]) -> BoxFuture<'a, Result<(), AwsError>> {
        Box::pin(terminate_instances(self, ids))
    }
}
