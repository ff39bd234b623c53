//! The reconcile pass and the loop that drives it.
//!
//! The snapshot is a function of *all* routes, so reconciling is one level-triggered pass over
//! the whole world rather than one pass per object: any relevant watch event (a route, a
//! Service or Secret a route names, a gateway EndpointSlice, a new gateway `/status` reading, a
//! leadership change) schedules a pass; passes are debounced and never overlap. A deleted route
//! therefore needs no finalizer: it is simply absent from the next pass's world. Each pass:
//!
//! 1. plans every route ([`crate::plan`]),
//! 2. writes the snapshot Secret only when its content changed ([`crate::snapshot`]),
//! 3. patches the status of every route whose conditions changed, and
//! 4. publishes an Event for each significant condition transition.
//!
//! Only the Lease holder runs passes; a failed pass is retried after [`error_policy`]'s
//! jittered exponential back-off, so the process never crash-loops on API errors.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use futures_util::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use serde_json::json;
use switchboard_config::GatewayConfig;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::api::{RealtimeRoute, RealtimeRouteStatus};
use crate::compile::{self, Refs, Verdict};
use crate::conditions::{self, Desired, reasons, types};
use crate::fleet::{self, Fleet};
use crate::leader::{self, LeaseSettings};
use crate::metrics::Metrics;
use crate::plan::{self, Limits};
use crate::snapshot;
use crate::{Error, Result};

/// What a reconcile pass needs besides the world.
#[derive(Clone)]
pub struct Context {
    /// API client (writes only; reads come from the watch caches).
    pub client: Client,
    /// Listeners, admin, limits and drain shared by every gateway.
    pub base: GatewayConfig,
    /// Namespace of the snapshot Secret.
    pub snapshot_namespace: String,
    /// Name of the snapshot Secret.
    pub snapshot_name: String,
    /// The gateway pods' termination grace period, when known.
    pub grace_period: Option<StdDuration>,
    /// Metrics.
    pub metrics: Metrics,
    /// Event publisher.
    pub recorder: Recorder,
    /// The status this replica last wrote per route UID. The watch cache lags behind our own
    /// patches; comparing against it would re-patch (moving `lastTransitionTime`) and repeat
    /// Events. The operator is the only writer of the status, so its own last write is the
    /// truth until leadership changes (then this is cleared).
    pub written: Arc<Mutex<HashMap<String, RealtimeRouteStatus>>>,
}

impl Context {
    /// Forget our own writes (after a leadership change another replica may have written).
    pub fn forget_written(&self) {
        if let Ok(mut w) = self.written.lock() {
            w.clear();
        }
    }

    fn last_written(&self, uid: &str) -> Option<RealtimeRouteStatus> {
        self.written.lock().ok().and_then(|w| w.get(uid).cloned())
    }

    fn remember_written(&self, uid: &str, status: &RealtimeRouteStatus) {
        if let Ok(mut w) = self.written.lock() {
            w.insert(uid.to_owned(), status.clone());
        }
    }

    fn prune_written(&self, live: &HashSet<String>) {
        if let Ok(mut w) = self.written.lock() {
            w.retain(|uid, _| live.contains(uid));
        }
    }
}

/// Everything a pass reads, copied out of the watch caches (or built by a test).
#[derive(Debug, Clone, Default)]
pub struct World {
    /// Every RealtimeRoute in the watched namespaces.
    pub routes: Vec<RealtimeRoute>,
    /// Services and Secrets.
    pub refs: Refs,
    /// The latest gateway `/status` readings.
    pub fleet: Fleet,
}

/// What a pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The snapshot generation gateways must load.
    pub generation: u64,
    /// Whether the snapshot was written.
    pub snapshot_written: bool,
    /// How many route statuses were patched.
    pub statuses_patched: usize,
    /// Whether an accepted route still waits for gateways (poll again soon).
    pub pending: bool,
}

fn desired_conditions(plan: &plan::RoutePlan, programmed: &Verdict) -> Vec<Desired> {
    let mut d = vec![
        Desired::new(
            types::ACCEPTED,
            plan.accepted.ok,
            plan.accepted.reason,
            plan.accepted.message.clone(),
        ),
        Desired::new(
            types::RESOLVED_REFS,
            plan.resolved_refs.ok,
            plan.resolved_refs.reason,
            plan.resolved_refs.message.clone(),
        ),
        Desired::new(
            types::PROGRAMMED,
            programmed.ok,
            programmed.reason,
            programmed.message.clone(),
        ),
    ];
    if let Some(v) = &plan.drain_fits {
        d.push(Desired::new(
            types::DRAIN_FITS,
            v.ok,
            v.reason,
            v.message.clone(),
        ));
    }
    d
}

/// The status a route should have now.
pub fn desired_status(
    rt: &RealtimeRoute,
    existing: Option<&RealtimeRouteStatus>,
    plan: &plan::RoutePlan,
    since: Option<u64>,
    fleet: &Fleet,
    now: &Time,
) -> RealtimeRouteStatus {
    let since = since.filter(|_| plan.accepted.ok);
    let programmed = match since {
        Some(s) => fleet.programmed(s, &rt.key()),
        None => Verdict::no(
            reasons::NOT_ACCEPTED,
            "not in the gateway snapshot (see the Accepted condition)",
        ),
    };
    let existing = existing.map(|s| s.conditions.clone()).unwrap_or_default();
    RealtimeRouteStatus {
        conditions: conditions::merge(
            &existing,
            &desired_conditions(plan, &programmed),
            rt.metadata.generation,
            now,
        ),
        observed_generation: rt.metadata.generation,
        snapshot_generation: since.and_then(|s| i64::try_from(s).ok()),
    }
}

async fn patch_status(
    client: &Client,
    rt: &RealtimeRoute,
    status: &RealtimeRouteStatus,
) -> Result<()> {
    let ns = rt.metadata.namespace.clone().unwrap_or_default();
    let name = rt.metadata.name.clone().unwrap_or_default();
    let api: Api<RealtimeRoute> = Api::namespaced(client.clone(), &ns);
    // A JSON merge patch replaces the conditions list whole; explicit nulls clear fields.
    let patch = json!({
        "status": {
            "conditions": status.conditions,
            "observedGeneration": status.observed_generation,
            "snapshotGeneration": status.snapshot_generation,
        }
    });
    let pp = PatchParams {
        field_manager: Some(crate::FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    match api.patch_status(&name, &pp, &Patch::Merge(&patch)).await {
        Ok(_) => Ok(()),
        // Deleted since the cache saw it: nothing to report on.
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// Whether a transition deserves an Event. `Programmed=False` is either the normal state
/// between an edit and the gateways catching up (`Pending`) or a consequence already reported
/// by `Accepted` (`NotAccepted`), so only `Programmed=True` makes an Event; every other
/// transition does.
fn event_for(t: &conditions::Transition) -> Option<Event> {
    if t.type_ == types::PROGRAMMED && !t.status {
        return None;
    }
    let type_ = if t.status || t.type_ == types::PROGRAMMED {
        EventType::Normal
    } else {
        EventType::Warning
    };
    let mut note = t.message.clone();
    if note.len() > 1000 {
        let mut cut = 1000;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
    }
    Some(Event {
        type_,
        reason: t.reason.clone(),
        note: Some(note),
        action: t.type_.clone(),
        secondary: None,
    })
}

/// One reconcile pass over the whole world. Writes nothing that is already as desired.
pub async fn reconcile(ctx: &Context, world: &World, now: Timestamp) -> Result<Report> {
    let _timer = ctx.metrics.reconcile_duration.start_timer();
    ctx.metrics.reconciles.inc();
    let plan = plan::plan(
        &ctx.base,
        &world.routes,
        &world.refs,
        Limits {
            grace_period: ctx.grace_period,
        },
    );
    for p in &plan.base_problems {
        warn!(problem = %p, "base config problem in the planned snapshot");
    }

    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.snapshot_namespace);
    let current = secrets
        .get_opt(&ctx.snapshot_name)
        .await
        .map_err(Error::Kube)?;
    let decision = snapshot::decide(
        current.as_ref(),
        &plan.config,
        &ctx.snapshot_name,
        &ctx.snapshot_namespace,
        world.fleet.max_generation(),
    )?;
    if let Some(secret) = &decision.write {
        snapshot::write(&secrets, secret).await?;
        ctx.metrics.snapshot_writes.inc();
        info!(
            generation = decision.generation,
            routes = plan.config.routes.len(),
            bytes = decision.bytes,
            "gateway snapshot written"
        );
    }
    ctx.metrics
        .snapshot_generation
        .set(i64::try_from(decision.generation).unwrap_or(i64::MAX));
    ctx.metrics
        .snapshot_bytes
        .set(i64::try_from(decision.bytes).unwrap_or(i64::MAX));

    let now = Time(now);
    let mut routes: Vec<&RealtimeRoute> = world.routes.iter().collect();
    routes.sort_by_key(|r| r.key());
    let mut patched = 0;
    let mut pending = false;
    let mut first_error = None;
    let mut by_reason: BTreeMap<&'static str, i64> = BTreeMap::new();
    for rt in routes {
        let key = rt.key();
        let Some(rp) = plan.routes.get(&key) else {
            continue;
        };
        *by_reason.entry(rp.accepted.reason).or_default() += 1;
        let since = decision.index.get(&key).map(|e| e.since);
        let uid = rt.metadata.uid.clone().unwrap_or_default();
        let current = ctx.last_written(&uid).or_else(|| rt.status.clone());
        let status = desired_status(rt, current.as_ref(), rp, since, &world.fleet, &now);
        if rp.accepted.ok && !conditions::is_true(&status.conditions, types::PROGRAMMED) {
            pending = true;
        }
        if current.as_ref() == Some(&status) {
            continue;
        }
        if let Err(e) = patch_status(&ctx.client, rt, &status).await {
            warn!(route = %key, error = %e, "status update failed");
            first_error.get_or_insert(e);
            continue;
        }
        ctx.remember_written(&uid, &status);
        patched += 1;
        ctx.metrics.status_updates.inc();
        let old = current.map(|s| s.conditions).unwrap_or_default();
        for t in conditions::transitions(&old, &status.conditions) {
            info!(route = %key, condition = %t.type_, status = t.status, reason = %t.reason, message = %t.message, "condition changed");
            if let Some(ev) = event_for(&t) {
                // Events are best effort: a failure is logged, never retried.
                if let Err(e) = ctx.recorder.publish(&ev, &rt.object_ref(&())).await {
                    debug!(route = %key, error = %e, "event not published");
                }
            }
        }
    }
    ctx.prune_written(
        &world
            .routes
            .iter()
            .filter_map(|r| r.metadata.uid.clone())
            .collect(),
    );
    ctx.metrics.routes.reset();
    for (reason, n) in by_reason {
        ctx.metrics.routes.with_label_values(&[reason]).set(n);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Report {
        generation: decision.generation,
        snapshot_written: decision.write.is_some(),
        statuses_patched: patched,
        pending,
    })
}

/// How long to wait before retrying after the `failures`-th consecutive failed pass:
/// exponential from 1s (250ms for write conflicts, which usually clear at once), capped at
/// 5 minutes, with +-20% jitter so replicas and retries do not march in step.
pub fn error_policy(error: &Error, failures: u32) -> StdDuration {
    let base = match error {
        Error::Kube(kube::Error::Api(s)) if s.code == 409 => StdDuration::from_millis(250),
        _ => StdDuration::from_secs(1),
    };
    let exp = base.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1).min(16)));
    let capped = exp.min(StdDuration::from_secs(300));
    let jitter = rand::random_range(0.8..1.2);
    capped.mul_f64(jitter)
}

/// Settings for [`run`], built by `main` from the flags.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// Route namespaces to watch; empty for all.
    pub namespaces: Vec<String>,
    /// Namespace of the snapshot Secret and the Lease.
    pub namespace: String,
    /// Name of the snapshot Secret.
    pub snapshot_name: String,
    /// Gateway admin Service `(namespace, name)`.
    pub gateway_admin_service: Option<(String, String)>,
    /// Admin port name in its EndpointSlices.
    pub gateway_admin_port_name: String,
    /// Fixed gateway status URLs.
    pub gateway_status_urls: Vec<String>,
    /// Gateway pods' termination grace period.
    pub grace_period: Option<StdDuration>,
    /// Gateway poll interval.
    pub poll_interval: StdDuration,
    /// Full resync interval.
    pub resync_interval: StdDuration,
    /// Lease settings.
    pub lease: LeaseSettings,
    /// Field selector for the Secret watch.
    pub secret_field_selector: String,
}

/// Trigger a pass when a watch event arrives (and the caches have seen the whole list).
async fn drive<K>(
    name: &'static str,
    stream: impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    relevant: impl Fn(&K) -> bool,
    trigger: Arc<Notify>,
) where
    K: Clone,
{
    let mut stream = std::pin::pin!(stream);
    while let Some(ev) = stream.next().await {
        match ev {
            Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => {
                if relevant(&o) {
                    trigger.notify_one();
                }
            }
            Ok(watcher::Event::InitDone) => trigger.notify_one(),
            Ok(_) => {}
            Err(e) => warn!(watch = name, error = %e, "watch error (retrying with back-off)"),
        }
    }
}

fn apis<K>(client: &Client, namespaces: &[String]) -> Vec<Api<K>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    K::DynamicType: Default,
{
    if namespaces.is_empty() {
        vec![Api::all(client.clone())]
    } else {
        namespaces
            .iter()
            .map(|ns| Api::namespaced(client.clone(), ns))
            .collect()
    }
}

/// Watch every API in `apis` into a cache of its own, each watch driven by a task in `tasks`
/// that triggers a pass on events `relevant` says matter (and once the cache has listed).
fn watch<K>(
    tasks: &mut JoinSet<()>,
    apis: Vec<Api<K>>,
    config: &watcher::Config,
    kind: &'static str,
    relevant: impl Fn(&K) -> bool + Clone + Send + 'static,
    trigger: &Arc<Notify>,
) -> Vec<Store<K>>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    apis.into_iter()
        .map(|api| {
            let (reader, writer) = reflector::store();
            let stream =
                reflector::reflector(writer, watcher(api, config.clone()).default_backoff());
            tasks.spawn(
                drive(kind, stream, relevant.clone(), trigger.clone())
                    .instrument(info_span!("watch", kind)),
            );
            reader
        })
        .collect()
}

fn collect<K>(stores: &[Store<K>]) -> Vec<K>
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    stores
        .iter()
        .flat_map(|s| s.state())
        .map(|o| (*o).clone())
        .collect()
}

/// The watch caches a pass reads its world from.
struct Caches {
    routes: Vec<Store<RealtimeRoute>>,
    services: Vec<Store<Service>>,
    secrets: Vec<Store<Secret>>,
    /// The gateway admin Service's EndpointSlices, when one is configured.
    slices: Option<Store<EndpointSlice>>,
}

impl Caches {
    /// Start the watches: routes, the Services and Secrets routes name (an event for one no
    /// route names triggers nothing), and the gateway admin Service's EndpointSlices.
    fn start(
        client: &Client,
        s: &RunSettings,
        tasks: &mut JoinSet<()>,
        trigger: &Arc<Notify>,
    ) -> Self {
        let all = watcher::Config::default();
        let routes = watch(
            tasks,
            apis::<RealtimeRoute>(client, &s.namespaces),
            &all,
            "RealtimeRoute",
            |_| true,
            trigger,
        );
        let named_by = |pick: fn(&RealtimeRoute, &(String, String)) -> bool| {
            let routes = routes.clone();
            move |meta: &ObjectMeta| {
                let key = (
                    meta.namespace.clone().unwrap_or_default(),
                    meta.name.clone().unwrap_or_default(),
                );
                routes
                    .iter()
                    .flat_map(|r| r.state())
                    .any(|rt| pick(&rt, &key))
            }
        };
        let service_named =
            named_by(|rt, key| compile::referenced_service(rt).as_ref() == Some(key));
        let services = watch(
            tasks,
            apis::<Service>(client, &s.namespaces),
            &all,
            "Service",
            move |svc: &Service| service_named(&svc.metadata),
            trigger,
        );
        let secret_named = named_by(|rt, key| compile::referenced_secrets(rt).contains(key));
        let secrets = watch(
            tasks,
            apis::<Secret>(client, &s.namespaces),
            &all.clone().fields(&s.secret_field_selector),
            "Secret",
            move |sec: &Secret| secret_named(&sec.metadata),
            trigger,
        );
        // Gateways come and go: the poller notices through the cache; no pass needed here.
        let slices = s.gateway_admin_service.as_ref().and_then(|(ns, name)| {
            let labels = format!("kubernetes.io/service-name={name}");
            watch(
                tasks,
                vec![Api::<EndpointSlice>::namespaced(client.clone(), ns)],
                &all.clone().labels(&labels),
                "EndpointSlice",
                |_| false,
                trigger,
            )
            .pop()
        });
        Self {
            routes,
            services,
            secrets,
            slices,
        }
    }

    /// Resolves once every cache has listed.
    fn ready(&self) -> impl Future<Output = ()> + Send + 'static {
        async fn all<K>(stores: Vec<Store<K>>)
        where
            K: Resource + Clone + 'static,
            K::DynamicType: Eq + std::hash::Hash + Clone,
        {
            for st in &stores {
                st.wait_until_ready().await.ok();
            }
        }
        let (routes, services, secrets) = (
            self.routes.clone(),
            self.services.clone(),
            self.secrets.clone(),
        );
        let slices: Vec<_> = self.slices.iter().cloned().collect();
        async move {
            all(routes).await;
            all(services).await;
            all(secrets).await;
            all(slices).await;
        }
    }

    /// What a pass plans from: the cached routes and the objects they name, and `fleet`.
    fn world(&self, fleet: Fleet) -> World {
        World {
            routes: collect(&self.routes),
            refs: refs_from(&collect(&self.services), &collect(&self.secrets)),
            fleet,
        }
    }
}

/// Copy Services and Secrets out of the caches.
pub fn refs_from(services: &[Service], secrets: &[Secret]) -> Refs {
    let mut refs = Refs::default();
    for s in services {
        let ports = s
            .spec
            .as_ref()
            .and_then(|sp| sp.ports.as_ref())
            .map(|ps| ps.iter().map(|p| p.port).collect())
            .unwrap_or_default();
        refs.services.insert(
            (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            ),
            ports,
        );
    }
    for s in secrets {
        let data = s
            .data
            .as_ref()
            .map(|d| d.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect())
            .unwrap_or_default();
        refs.secrets.insert(
            (
                s.metadata.namespace.clone().unwrap_or_default(),
                s.metadata.name.clone().unwrap_or_default(),
            ),
            data,
        );
    }
    refs
}

/// What wakes the pass loop.
struct Signals {
    /// A relevant watch event, or the caches becoming ready.
    trigger: Arc<Notify>,
    /// New gateway readings.
    fleet: watch::Receiver<Fleet>,
    /// Leadership gained or lost.
    leader: watch::Receiver<bool>,
    /// The shutdown root.
    shutdown: watch::Receiver<bool>,
}

/// Run reconcile passes until shutdown: after a trigger, a fleet or leadership change (each
/// debounced) or the resync interval; only while leading and once the caches are ready. A
/// failed pass is retried after [`error_policy`]'s back-off.
async fn passes(
    ctx: &Context,
    caches: &Caches,
    signals: Signals,
    health: &crate::admin::Health,
    s: &RunSettings,
) {
    let Signals {
        trigger,
        fleet: mut fleet_rx,
        leader: mut leader_rx,
        mut shutdown,
    } = signals;
    let mut failures: u32 = 0;
    let mut was_leader = false;
    let mut next = tokio::time::Instant::now() + s.resync_interval;
    loop {
        tokio::select! {
            _ = trigger.notified() => {}
            Ok(()) = fleet_rx.changed() => {}
            Ok(()) = leader_rx.changed() => {}
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.changed() => break,
        }
        // Debounce: let a burst of events (a list, a kubectl apply of many objects) settle.
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_millis(100)) => {}
            _ = shutdown.changed() => break,
        }
        next = tokio::time::Instant::now() + s.resync_interval;
        let is_leader = *leader_rx.borrow_and_update();
        if is_leader != was_leader {
            was_leader = is_leader;
            ctx.metrics.leader.set(i64::from(is_leader));
            // Another replica may have written statuses while we were not leading.
            ctx.forget_written();
            info!(leader = is_leader, "leadership changed");
        }
        if !is_leader || !health.is_ready() {
            continue;
        }
        let world = caches.world(fleet_rx.borrow().clone());
        match reconcile(ctx, &world, Timestamp::now())
            .instrument(info_span!("reconcile", routes = world.routes.len()))
            .await
        {
            Ok(report) => {
                failures = 0;
                debug!(?report, "reconciled");
                if report.pending {
                    next = tokio::time::Instant::now() + s.poll_interval;
                }
            }
            Err(e) => {
                failures = failures.saturating_add(1);
                ctx.metrics
                    .reconcile_errors
                    .with_label_values(&[e.metric_label()])
                    .inc();
                let delay = error_policy(&e, failures);
                warn!(error = %e, failures, retry_in = ?delay, "reconcile failed");
                next = tokio::time::Instant::now() + delay;
            }
        }
    }
}

/// Run the operator until `shutdown` fires: watches, leader election, gateway polling and the
/// reconcile loop. Returns after releasing the Lease.
pub async fn run(
    client: Client,
    base: GatewayConfig,
    s: RunSettings,
    metrics: Metrics,
    health: crate::admin::Health,
    shutdown: watch::Receiver<bool>,
) -> Result<()> {
    let trigger = Arc::new(Notify::new());
    let mut tasks = JoinSet::new();
    let caches = Caches::start(&client, &s, &mut tasks, &trigger);

    let (leader_tx, leader_rx) = watch::channel(false);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &s.lease.namespace);
    let leader_task = tokio::spawn(
        leader::run(leases, s.lease.clone(), leader_tx, shutdown.clone())
            .instrument(info_span!("leader")),
    );

    let gateways = fleet::Sources {
        urls: s.gateway_status_urls.clone(),
        slices: caches.slices.clone(),
        port_name: s.gateway_admin_port_name.clone(),
    };
    let (fleet_tx, fleet_rx) = watch::channel(Fleet {
        configured: s.gateway_admin_service.is_some() || !s.gateway_status_urls.is_empty(),
        gateways: BTreeMap::new(),
    });
    tasks.spawn(
        fleet::poll(
            gateways,
            s.poll_interval,
            metrics.clone(),
            fleet_tx,
            shutdown.clone(),
        )
        .instrument(info_span!("gateway_poller")),
    );

    {
        let (ready, health, trigger) = (caches.ready(), health.clone(), trigger.clone());
        tasks.spawn(async move {
            ready.await;
            info!("watch caches synced");
            health.set_ready(true);
            trigger.notify_one();
        });
    }

    let ctx = Context {
        client: client.clone(),
        base,
        snapshot_namespace: s.namespace.clone(),
        snapshot_name: s.snapshot_name.clone(),
        grace_period: s.grace_period,
        metrics: metrics.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "switchboard-operator".into(),
                instance: Some(s.lease.identity.clone()),
            },
        ),
        written: Arc::default(),
    };

    let signals = Signals {
        trigger,
        fleet: fleet_rx,
        leader: leader_rx,
        shutdown,
    };
    passes(&ctx, &caches, signals, &health, &s).await;

    info!("shutting down: releasing leadership and stopping watches");
    // The leader task releases the Lease when it sees the shutdown signal; wait for that (an
    // unreachable API server must not hold the exit up for long), then stop everything else.
    match tokio::time::timeout(StdDuration::from_secs(5), leader_task).await {
        Ok(Err(e)) if e.is_panic() => warn!(error = %e, "the leader election task panicked"),
        Ok(_) => {}
        Err(_) => warn!("leader election did not stop within 5s; the Lease will expire on its own"),
    }
    tasks.abort_all();
    Ok(())
}

#[cfg(test)]
mod tests;
