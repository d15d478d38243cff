//! Running the daemon: in the foreground until a signal ([`run`]), until a future completes
//! ([`run_until`]), or on its own thread for embedding and tests ([`spawn`], [`Handle`]).

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use schemas::config::ConfigError;
use triggers::governor::Governor;
use triggers::group::GroupForwarder;

use super::caps;
use super::control::{Bound, bind_socket, handle};
use super::rule_hits::read_rule_hits;
use super::snapshots::States;
use super::{CollectorGroup, HookService, Shared, group_trigger};
use crate::config::Config;
use crate::error::SetupError;
use crate::rings::Rings;
use crate::snapshot;

/// Why the daemon could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The configuration is not usable (rules, hook token or address).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The kernel or system refused the rings.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// Another daemon serves the control socket.
    #[error(
        "another flightrec daemon is listening on {0} (stop it, or set recorder.control_socket)"
    )]
    SocketInUse(PathBuf),
    /// Something that is not a socket is where the control socket goes.
    #[error(
        "{0} exists and is not a socket: refusing to replace it (only a stale control socket \
         is replaced); set recorder.control_socket or --socket to another path"
    )]
    NotASocket(PathBuf),
    /// Every user may write into the socket's directory.
    #[error(
        "the control socket's directory {0} is writable by every user without the sticky bit: \
         another user could replace the socket"
    )]
    SocketDirUnsafe(PathBuf),
    /// The control socket could not be made.
    #[error("control socket {path}: {what}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The trigger hook could not listen.
    #[error("binding the trigger hook on {addr}")]
    Hook {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// `GET /metrics` could not listen.
    #[error("binding the metrics endpoint on {addr}")]
    Metrics {
        /// The configured address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The collector link could not start (bad CA file...).
    #[error("starting the collector link")]
    Collector(#[from] flightrec_uplink::UploadError),
    /// Dropping capabilities after attaching failed.
    #[error("dropping capabilities after attaching the programs")]
    Capabilities(#[source] std::io::Error),
    /// The async runtime or a socket address failed.
    #[error("the daemon's runtime")]
    Runtime(#[source] std::io::Error),
    /// The thread running an embedded daemon panicked.
    #[error("the daemon thread panicked")]
    Panicked,
    /// An embedded daemon ended before its rings were up, without saying why.
    #[error("the daemon stopped before it started recording")]
    NotStarted,
}

/// Runs the daemon until SIGINT or SIGTERM. Recording continues in the kernel after it exits
/// (the programs are pinned); `flightrec teardown` stops it.
pub fn run(config: Config, ready: impl FnOnce(&Rings)) -> Result<(), DaemonError> {
    run_until(config, ready, async {
        use tokio::signal::unix::{SignalKind, signal};
        // Listeners made once: a signal that arrives while a connection is being accepted is
        // kept for the next turn of the accept loop instead of being missed.
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => std::future::pending().await,
        }
    })
}

/// Binds the hook's listener when a token is configured.
fn bind_hook(config: &Config) -> Result<Option<(std::net::TcpListener, String)>, DaemonError> {
    if !config.hook.enabled() {
        return Ok(None);
    }
    let token = config.hook.load_token()?;
    let addr = config.hook.listen_addr()?;
    let hook_err = |source| DaemonError::Hook {
        addr: addr.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(hook_err)?;
    listener.set_nonblocking(true).map_err(hook_err)?;
    Ok(Some((listener, token)))
}

/// Binds `GET /metrics`'s listener when `[metrics] listen` is set; with the token to ask for.
fn bind_metrics(
    config: &Config,
) -> Result<Option<(std::net::TcpListener, Option<String>)>, DaemonError> {
    if !config.metrics.enabled() {
        return Ok(None);
    }
    let token = config.metrics.load_token()?;
    let addr = config.metrics.listen_addr()?;
    let err = |source| DaemonError::Metrics {
        addr: addr.to_string(),
        source,
    };
    let listener = std::net::TcpListener::bind(addr).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(Some((listener, token)))
}

/// What the privileged part of the start made.
struct SetUp {
    bound: Bound,
    access: super::Access,
    hook: Option<(std::net::TcpListener, String)>,
    metrics: Option<(std::net::TcpListener, Option<String>)>,
    rings: Rings,
}

/// Everything that needs privilege, on the calling thread: the control socket, the hook's
/// port, the rings; then the capabilities the daemon no longer needs are dropped.
fn set_up(config: &Config) -> Result<SetUp, DaemonError> {
    let access = super::Access::from_config(&config.recorder)?;
    let bound = bind_socket(&config.recorder.control_socket, &access)?;
    let rest = (|| {
        bound
            .listener
            .set_nonblocking(true)
            .map_err(DaemonError::Runtime)?;
        let hook = bind_hook(config)?;
        let metrics = bind_metrics(config)?;
        let rings = Rings::start(config)?;
        let keep = caps::needed(config.statedump.fds);
        let codes: Vec<u32> = keep.iter().map(|(c, _)| *c).collect();
        caps::drop_all_but(&codes).map_err(DaemonError::Capabilities)?;
        let why: Vec<&str> = keep.iter().map(|(_, why)| *why).collect();
        eprintln!(
            "flightrec: programs attached; capabilities dropped (kept: {}{})",
            caps::names(&keep),
            if why.is_empty() {
                String::new()
            } else {
                format!(": {}", why.join("; "))
            }
        );
        Ok((hook, metrics, rings))
    })();
    match rest {
        Ok((hook, metrics, rings)) => Ok(SetUp {
            bound,
            access,
            hook,
            metrics,
            rings,
        }),
        Err(e) => {
            bound.remove();
            Err(e)
        }
    }
}

/// Samples every CPU's event count once a second, for the rates `status` shows.
async fn sample_rates(sampler: Arc<Shared>) {
    let mut last: Option<(Instant, Vec<u64>)> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let r = &sampler.rings;
        let totals: Vec<u64> = (0..r.ncpu()).map(|cpu| r.total(cpu)).collect();
        let now = Instant::now();
        if let Some((t, prev)) = &last {
            let dt = now.duration_since(*t).as_secs_f64();
            let rates = totals
                .iter()
                .zip(prev)
                .map(|(a, b)| a.saturating_sub(*b) as f64 / dt)
                .collect();
            *sampler.rates.lock().unwrap_or_else(|e| e.into_inner()) = rates;
        }
        last = Some((now, totals));
    }
}

/// [`run`] until `shutdown` completes instead of a signal (for embedding and tests).
///
/// Once the programs are attached the calling thread drops its capabilities for good (the
/// daemon's own threads are made after, and inherit the drop); other threads of the process
/// keep theirs. [`spawn`] runs it on a thread of its own for that reason.
pub fn run_until(
    config: Config,
    ready: impl FnOnce(&Rings),
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let rules = triggers::rules::check_rules(&config.rules)?;
    let SetUp {
        bound,
        access,
        hook,
        metrics,
        mut rings,
    } = set_up(&config)?;
    ready(&rings);
    // Built after the drop, so its threads inherit it.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(async move {
        let listener = tokio::net::UnixListener::from_std(
            bound.listener.try_clone().map_err(DaemonError::Runtime)?,
        )
        .map_err(DaemonError::Runtime)?;
        let hook = match hook {
            Some((l, token)) => Some((
                tokio::net::TcpListener::from_std(l).map_err(DaemonError::Runtime)?,
                token,
            )),
            None => None,
        };
        let metrics = match metrics {
            Some((l, token)) => Some((
                tokio::net::TcpListener::from_std(l).map_err(DaemonError::Runtime)?,
                token,
            )),
            None => None,
        };
        let metrics_listen = match &metrics {
            Some((l, _)) => Some(l.local_addr().map_err(DaemonError::Runtime)?.to_string()),
            None => None,
        };
        let hits = rings.take_rule_hits();
        let hook_listen = match &hook {
            Some((l, _)) => Some(l.local_addr().map_err(DaemonError::Runtime)?.to_string()),
            None => None,
        };
        let governor = Governor::new(
            config.governor.clone(),
            crate::rings::monotonic_ns(),
            snapshot::random_id,
        );
        let host_id = crate::statedump::host_info(&config.recorder.host_id, rings.ncpu()).host_id;
        let (collector, mut group_triggers) = flightrec_uplink::Collector::start(
            &config.collector,
            &config.recorder.spool_dir,
            &host_id,
        )?;
        let shared = Arc::new(Shared {
            rings,
            config,
            access,
            started: Instant::now(),
            rates: Mutex::new(Vec::new()),
            taken: Default::default(),
            failed: Default::default(),
            governor: Mutex::new(governor),
            states: Mutex::new(States::default()),
            rules,
            rule_hits: Default::default(),
            hook_listen,
            hook_requests: Default::default(),
            metrics_listen,
            group: collector.has_group().then(|| {
                Arc::new(CollectorGroup {
                    collector: collector.clone(),
                    runtime: tokio::runtime::Handle::current(),
                }) as Arc<dyn GroupForwarder>
            }),
            collector,
        });
        // Group triggers fanned out by the collector go through the governor like any other.
        let on_group = shared.clone();
        tokio::spawn(async move {
            while let Some(info) = group_triggers.recv().await {
                let _ = on_group.trigger(group_trigger(info));
            }
        });
        // Triggered snapshots the collector acknowledged become `uploaded`.
        if let Some(mut uploaded) = shared.collector.uploaded() {
            let s = shared.clone();
            tokio::spawn(async move {
                use tokio::sync::broadcast::error::RecvError;
                loop {
                    match uploaded.recv().await {
                        Ok(path) => s.mark_uploaded(&path),
                        Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => break,
                    }
                }
            });
        }
        if let Some(hits) = hits {
            let s = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = read_rule_hits(s, hits).await {
                    eprintln!("flightrec: reading kernel rule hits stopped: {e}");
                }
            });
        }
        let (stop_hook, hook_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some((listener, token)) = hook {
            let addr = listener.local_addr().map_err(DaemonError::Runtime)?;
            let hook_config = shared.config.hook.clone();
            let state = triggers::hook::HookState::new(
                Arc::new(HookService(shared.clone())),
                &token,
                &hook_config,
            );
            let app = triggers::hook::app(state.with_requests(shared.hook_requests.clone()));
            eprintln!("flightrec: trigger hook listening on http://{addr}/v1/trigger");
            tokio::spawn(async move {
                triggers::hook::serve(listener, app, &hook_config, async {
                    let _ = hook_stopped.await;
                })
                .await;
            });
        }
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        if let Some((listener, token)) = metrics {
            let addr = listener.local_addr().map_err(DaemonError::Runtime)?;
            let app = super::scrape::app(shared.clone(), token);
            eprintln!("flightrec: metrics on http://{addr}/metrics");
            // The hook's connection guards (header timeout, lifetime, cap) with its defaults.
            let limits = triggers::hook::HookConfig::default();
            tokio::spawn(async move {
                triggers::hook::serve(listener, app, &limits, async {
                    let _ = metrics_stopped.await;
                })
                .await;
            });
        }
        tokio::spawn(sample_rates(shared.clone()));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        tokio::spawn(handle(shared.clone(), stream));
                    }
                }
                () = &mut shutdown => break,
            }
        }
        let _ = stop_hook.send(());
        let _ = stop_metrics.send(());
        bound.remove();
        Ok(())
    })
}

/// A daemon running on its own thread, for embedding (and tests): [`spawn`] starts it,
/// [`Handle::stop`] ends it.
pub struct Handle {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), DaemonError>>>,
}

/// Starts the daemon on a thread and returns once it serves its control socket (or failed).
pub fn spawn(config: Config) -> Result<Handle, DaemonError> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (up, is_up) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        run_until(
            config,
            move |_| {
                let _ = up.send(());
            },
            async {
                let _ = stopped.await;
            },
        )
    });
    let mut handle = Handle {
        stop: Some(stop),
        thread: Some(thread),
    };
    if is_up.recv().is_err() {
        // The thread ended before the rings were up: its error says why.
        return Err(handle.join().err().unwrap_or(DaemonError::NotStarted));
    }
    Ok(handle)
}

impl Handle {
    /// Stops the daemon and waits for it; returns its result.
    pub fn stop(mut self) -> Result<(), DaemonError> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        self.join()
    }

    fn join(&mut self) -> Result<(), DaemonError> {
        match self.thread.take().map(|t| t.join()) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(DaemonError::Panicked),
            None => Ok(()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.join();
    }
}
