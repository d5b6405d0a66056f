//! One HTTP client per thread, all built alike (the store's, the model service's).
//!
//! A `reqwest` connection is driven by a task on the runtime that opened it, and a
//! client's idle connections are shared by every thread that uses the client. A serving
//! thread (`serving_threads.rs`) that sent its request on a connection opened by another
//! thread's runtime would wake that thread to write the request and be woken by it with
//! the answer. With a client per thread, a hit's store request stays on the thread that
//! serves it, and no connection is handed to a thread whose runtime ended.

use std::cell::RefCell;
use std::sync::{Arc, Weak};

use reqwest::{Client, IntoUrl, Method, RequestBuilder};

/// Builds a client with the store's settings.
type Build = dyn Fn() -> reqwest::Result<Client> + Send + Sync;

thread_local! {
    /// This thread's clients, by the [`ThreadClient`] that built them.
    static CLIENTS: RefCell<Vec<(Weak<Build>, Client)>> = const { RefCell::new(Vec::new()) };
}

/// A client per thread that uses it, built on first use there with `build`.
pub struct ThreadClient {
    build: Arc<Build>,
    /// Used where a thread's own client cannot be built (the first build succeeded, so
    /// only a resource shortage could make a later one fail).
    fallback: Client,
}

impl ThreadClient {
    /// A client per thread, each from `build`, which runs once here to check the settings.
    ///
    /// Errors: `build`'s (no TLS backend, an invalid setting).
    pub fn new(
        build: impl Fn() -> reqwest::Result<Client> + Send + Sync + 'static,
    ) -> reqwest::Result<Self> {
        let fallback = build()?;
        Ok(Self {
            build: Arc::new(build),
            fallback,
        })
    }

    /// A request with this thread's client (see `reqwest::Client::request`).
    pub fn request(&self, method: Method, url: impl IntoUrl) -> RequestBuilder {
        CLIENTS.with_borrow_mut(|clients| {
            let owner = Arc::as_ptr(&self.build);
            if let Some((_, client)) = clients
                .iter()
                .find(|(built_by, _)| std::ptr::addr_eq(built_by.as_ptr(), owner))
            {
                return client.request(method, url);
            }
            // Clients of stores dropped since (tests make many) leave with the next one.
            clients.retain(|(built_by, _)| built_by.strong_count() > 0);
            let client = (self.build)().unwrap_or_else(|_| self.fallback.clone());
            let request = client.request(method, url);
            clients.push((Arc::downgrade(&self.build), client));
            request
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_thread_builds_its_own_client_once_and_dropped_owners_leave() {
        let built = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = Arc::clone(&built);
        let clients = Arc::new(
            ThreadClient::new(move || {
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Client::builder().build()
            })
            .unwrap(),
        );
        let count = || built.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(count(), 1, "the settings check builds one");
        let _ = clients.request(Method::GET, "http://127.0.0.1:9/");
        let _ = clients.request(Method::GET, "http://127.0.0.1:9/");
        assert_eq!(count(), 2, "this thread built its own once");
        let other = Arc::clone(&clients);
        std::thread::spawn(move || {
            let _ = other.request(Method::GET, "http://127.0.0.1:9/");
        })
        .join()
        .unwrap();
        assert_eq!(count(), 3, "another thread builds its own");
        drop(clients);
        let again = ThreadClient::new(|| Client::builder().build()).unwrap();
        let _ = again.request(Method::GET, "http://127.0.0.1:9/");
        assert_eq!(
            CLIENTS.with_borrow(Vec::len),
            1,
            "the dropped owner's client left when the next one came"
        );
    }
}
