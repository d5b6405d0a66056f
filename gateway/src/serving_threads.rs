//! Serving threads: client connections are served on a few threads, each running a
//! single-threaded tokio runtime of its own and its own accept loop on the shared
//! listener, as nginx's and Envoy's workers do.
//!
//! Why not tokio's work-stealing runtime for this: on a hit, the connection's task parks
//! while the store answers, and an idle worker wakes to steal it or its store
//! connection's task, so a hit's work hops between threads. Measured on the 2-core bench
//! bed (`bench/ab.py`, 64 connections, every request a hit, 6 rounds), two serving
//! threads served 1.26x the requests per second at 0.75x the gateway's CPU per hit of a
//! two-worker work-stealing runtime (`bench/RESULTS.md`). With a runtime per thread and
//! an HTTP client per thread ([`crate::thread_client`]), a hit stays on the thread that
//! accepted its connection, and more threads add cores.
//!
//! Work that must outlive a request (a shared model computation, write-behind, the
//! telemetry exporters) runs on the process's main runtime instead, which lives until
//! the process ends.

use std::io;
use std::num::NonZeroUsize;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::server::{self, ConnectionLimits, Registry, Shutdown};

/// What a serving thread is given to serve once the application runs.
struct Assignment {
    router: Router,
    limits: ConnectionLimits,
    shutdown: Shutdown,
    registry: Registry,
}

/// One serving thread: its runtime is built and it waits for its [`Assignment`].
struct ServingThread {
    assign: oneshot::Sender<Assignment>,
    finished: oneshot::Receiver<()>,
}

/// The serving threads, started (runtimes built) and waiting for [`Self::serve`]. Dropped
/// without serving, each thread ends.
pub struct ServingThreads {
    threads: Vec<ServingThread>,
}

impl ServingThreads {
    /// `configured` threads, or with 0 one per core the process may use
    /// ([`std::thread::available_parallelism`], which reads a cgroup CPU quota, so a
    /// Kubernetes replica limited to one CPU serves on one thread).
    pub fn count(configured: usize) -> usize {
        if configured > 0 {
            return configured;
        }
        std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
    }

    /// Starts `count` threads, builds each one's runtime and gives each its own
    /// descriptor of `listener` (a bound, non-blocking socket).
    ///
    /// Errors: the operating system refused a thread, a runtime's I/O driver or a
    /// descriptor (out of threads, memory or file descriptors).
    pub async fn start(count: usize, listener: std::net::TcpListener) -> io::Result<Self> {
        let mut threads = Vec::with_capacity(count);
        for index in 0..count {
            // Each thread registers its own descriptor of the one socket with its runtime;
            // the kernel wakes them all on a new connection and one accepts it.
            let listener = listener.try_clone()?;
            let (built_sender, built) = oneshot::channel();
            let (assign, assigned) = oneshot::channel::<Assignment>();
            let (finished_sender, finished) = oneshot::channel();
            std::thread::Builder::new()
                // At most 15 bytes: Linux cuts longer names in `/proc`, `ps` and `top`.
                .name(format!("gateway-srv-{index}"))
                .spawn(move || {
                    let runtime = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(runtime) => runtime,
                        Err(error) => {
                            let _ = built_sender.send(Err(error));
                            return;
                        }
                    };
                    let listener = {
                        let _entered = runtime.enter();
                        TcpListener::from_std(listener)
                    };
                    let listener = match listener {
                        Ok(listener) => listener,
                        Err(error) => {
                            let _ = built_sender.send(Err(error));
                            return;
                        }
                    };
                    let _ = built_sender.send(Ok(()));
                    let Ok(assignment) = assigned.blocking_recv() else {
                        return;
                    };
                    runtime.block_on(server::serve(
                        listener,
                        assignment.router,
                        assignment.limits,
                        assignment.shutdown,
                        assignment.registry,
                    ));
                    let _ = finished_sender.send(());
                })?;
            built
                .await
                .unwrap_or_else(|_| Err(io::Error::other("a serving thread ended at start")))?;
            threads.push(ServingThread { assign, finished });
        }
        Ok(Self { threads })
    }

    /// Serves `router` from every thread, sharing the connection cap, until
    /// [`Shutdown::stop_accepting`]; returns once every thread finished its connections
    /// (see [`server::serve`]).
    pub async fn serve(self, router: Router, limits: ConnectionLimits, shutdown: Shutdown) {
        let registry = Registry::default();
        let mut finished = Vec::with_capacity(self.threads.len());
        for thread in self.threads {
            let assignment = Assignment {
                router: router.clone(),
                limits,
                shutdown: shutdown.clone(),
                registry: registry.clone(),
            };
            if thread.assign.send(assignment).is_ok() {
                finished.push(thread.finished);
            }
        }
        for thread in finished {
            // An error means the thread ended early (a panic); it serves nothing either way.
            let _ = thread.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// The body of `GET /` on a new connection.
    async fn get(address: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[tokio::test]
    async fn requests_are_served_on_the_serving_threads_until_they_stop_accepting() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let threads = ServingThreads::start(2, listener).await.unwrap();
        let router = Router::new().route(
            "/",
            axum::routing::get(|| async {
                std::thread::current().name().unwrap_or_default().to_owned()
            }),
        );
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(5),
            max_connections: 16,
        };
        let shutdown = Shutdown::default();
        let serving = tokio::spawn(threads.serve(router, limits, shutdown.clone()));

        let mut served_on = Vec::new();
        for _ in 0..6 {
            let answer = get(address).await;
            served_on.push(
                answer
                    .rsplit("\r\n\r\n")
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        shutdown.stop_accepting(Duration::ZERO);
        let stopped = tokio::time::timeout(Duration::from_secs(5), serving).await;

        assert!(
            served_on
                .iter()
                .all(|name| name == "gateway-srv-0" || name == "gateway-srv-1"),
            "{served_on:?}"
        );
        assert!(stopped.is_ok(), "every serving thread ended");
        assert!(
            TcpStream::connect(address).await.is_err(),
            "nobody listens any more"
        );
    }

    #[test]
    fn a_configured_count_wins_and_0_means_one_per_core() {
        let cores = std::thread::available_parallelism().unwrap().get();

        assert_eq!(ServingThreads::count(3), 3);
        assert_eq!(ServingThreads::count(0), cores);
    }
}
