//! One HTTP client per thread, all built alike (the store's, the model service's).
//!
//! A pooled connection of `hyper` (and of `reqwest`, over it) is driven by a task on the
//! runtime that opened it, and a client's idle connections are shared by every thread
//! that uses the client. A serving thread (`serving_threads.rs`) that sent its request
//! on a connection opened by another thread's runtime would wake that thread to write
//! the request and be woken by it with the answer. With a client per thread, a hit's
//! store request stays on the thread that serves it, and no connection is handed to a
//! thread whose runtime ended.

use std::any::Any;
use std::cell::RefCell;
use std::sync::{Arc, Weak};

/// Builds a client with its settings.
type Build<C, E> = dyn Fn() -> Result<C, E> + Send + Sync;

/// A client per thread that uses it, built there on first use. `C` is a cheap handle
/// (`Clone` shares its pool).
pub struct ThreadClient<C, E> {
    build: Arc<Build<C, E>>,
    /// Used where a thread's own client cannot be built (the first build succeeded, so
    /// only a resource shortage could make a later one fail).
    fallback: C,
}

/// This thread's clients of one type, each beside the builder that made it (one builder
/// per [`ThreadClient`]).
type Clients<C, E> = Vec<(Weak<Build<C, E>>, C)>;

thread_local! {
    /// This thread's [`Clients`] of every client type (a `thread_local!` cannot be generic).
    static BY_TYPE: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

impl<C: Clone + 'static, E: 'static> ThreadClient<C, E> {
    /// A client per thread, each from `build`, which runs once here to check the settings.
    ///
    /// Errors: `build`'s.
    pub fn new(build: impl Fn() -> Result<C, E> + Send + Sync + 'static) -> Result<Self, E> {
        let fallback = build()?;
        Ok(Self {
            build: Arc::new(build),
            fallback,
        })
    }

    /// `use_client` applied to this thread's client (lent, not cloned: a request clones
    /// what it keeps).
    pub fn with<R>(&self, use_client: impl FnOnce(&C) -> R) -> R {
        BY_TYPE.with_borrow_mut(|by_type| {
            let index = match by_type
                .iter()
                .position(|clients| clients.is::<Clients<C, E>>())
            {
                Some(index) => index,
                None => {
                    by_type.push(Box::new(Clients::<C, E>::new()));
                    by_type.len() - 1
                }
            };
            let clients = by_type[index]
                .downcast_mut::<Clients<C, E>>()
                .expect("found by its type");
            use_client(self.find_or_build(clients))
        })
    }

    fn find_or_build<'a>(&self, clients: &'a mut Clients<C, E>) -> &'a C {
        let owner = Arc::as_ptr(&self.build);
        let position = clients
            .iter()
            .position(|(built_by, _)| std::ptr::addr_eq(built_by.as_ptr(), owner));
        let index = match position {
            Some(index) => index,
            None => {
                // Clients of stores dropped since (tests make many) leave with the next one.
                clients.retain(|(built_by, _)| built_by.strong_count() > 0);
                let client = (self.build)().unwrap_or_else(|_| self.fallback.clone());
                clients.push((Arc::downgrade(&self.build), client));
                clients.len() - 1
            }
        };
        &clients[index].1
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A client that says which build made it.
    type Numbered = ThreadClient<usize, ()>;

    fn numbered(builds: &Arc<AtomicUsize>) -> Numbered {
        let builds = Arc::clone(builds);
        ThreadClient::new(move || Ok(builds.fetch_add(1, Ordering::Relaxed))).unwrap()
    }

    #[test]
    fn each_thread_builds_its_own_client_once() {
        let builds = Arc::new(AtomicUsize::new(0));
        let clients = Arc::new(numbered(&builds));

        let here = (clients.with(|c| *c), clients.with(|c| *c));
        let there = {
            let clients = Arc::clone(&clients);
            std::thread::spawn(move || clients.with(|c| *c))
                .join()
                .unwrap()
        };

        assert_eq!(
            here,
            (1, 1),
            "built once here, after the settings check (0)"
        );
        assert_eq!(there, 2, "another thread builds its own");
    }

    #[test]
    fn a_dropped_owners_client_leaves_with_the_next_one() {
        let marker = || ThreadClient::new(|| Ok::<_, ()>(Arc::new(()))).unwrap();
        let first = marker();
        let firsts_client = first.with(Arc::downgrade);
        drop(first);
        assert!(
            firsts_client.upgrade().is_some(),
            "still held by this thread"
        );

        marker().with(|_| ());

        assert!(
            firsts_client.upgrade().is_none(),
            "dropped when the next client of its type was built"
        );
    }
}
