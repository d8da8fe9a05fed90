//! Tasks whose panic ends only themselves, not the worker they run on.
//!
//! monoio polls its tasks without catching panics ("for efficiency", its harness says): one
//! task's panic unwinds through the runtime, and the worker thread ends with every connection it
//! held. Its listener closes, and the node serves on with one core fewer, with a line on stderr
//! for all notice; with `workers = 1` it serves nothing more. A bug in the TLS driver the node
//! once used did exactly that (bench/RESULTS.md, "Issue 14, twelfth pass").
//!
//! [`spawn`] runs a task under a guard: a panic while it is polled ends that task alone. It is
//! logged with what the task was (the default hook has already printed the message and where),
//! counted (`edgemirror_task_panics_total`), and the task's future is dropped, so its guards clean
//! up as on any other early end: a connection closes, a fill ends broken (its followers are cut
//! short, its record abandoned, its key free for the next miss). The worker goes on with its
//! other tasks. A loop whose end would leave the node half-working (an accept loop) is not
//! spawned here: a panic there stops the node, flushed, with exit status 70 for its supervisor
//! to restart (`server.rs`, `run_runtime`). The multipart reclaimer's loop runs each pass as a
//! task of its own, so a pass that panics leaves the next to run as usual.

use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use crate::worker::Worker;

/// Spawns `fut` on this worker's runtime under the guard. `what` names the task in the log.
/// The handle gives `None` when the task panicked.
pub fn spawn<F>(worker: &Rc<Worker>, what: &'static str, fut: F) -> monoio::task::JoinHandle<Option<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let worker = worker.clone();
    spawn_reporting(fut, move |message: String| {
        worker.metrics().task_panics.inc();
        tracing::error!(worker = worker.id, task = what, panic = %message, "a task panicked; it was ended, and the worker goes on");
    })
}

/// [`spawn`], with `report` called with the panic's message (after the future is dropped).
fn spawn_reporting<F, R>(fut: F, report: R) -> monoio::task::JoinHandle<Option<F::Output>>
where
    F: Future + 'static,
    F::Output: 'static,
    R: FnOnce(String) + 'static,
{
    monoio::spawn(Guarded { fut: Some(fut), report: Some(report) })
}

/// The message a panic was raised with (`panic!`'s text), for the log.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

pin_project_lite::pin_project! {
    /// A task's future, dropped (and reported) when a poll panics.
    struct Guarded<F, R> {
        // `None` once the future has panicked (dropped in place, as pinning allows).
        #[pin]
        fut: Option<F>,
        report: Option<R>,
    }
}

impl<F: Future, R: FnOnce(String)> Future for Guarded<F, R> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let Some(fut) = this.fut.as_mut().as_pin_mut() else { return Poll::Ready(None) };
        // AssertUnwindSafe: after a panic the future is only dropped, never polled again.
        match catch_unwind(AssertUnwindSafe(|| fut.poll(cx))) {
            Ok(Poll::Ready(out)) => Poll::Ready(Some(out)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => {
                let mut message = panic_message(&*payload);
                // What the future held is dropped here, as on any early end (an `async` block's
                // live locals were dropped already, by the unwinding; a destructor that panics
                // during that unwinding aborts the process, as anywhere in Rust). A hand-written
                // future may still hold state: its drop panicking is reported with the first.
                if catch_unwind(AssertUnwindSafe(|| this.fut.set(None))).is_err() {
                    message.push_str("; dropping the task panicked too");
                }
                if let Some(report) = this.report.take() {
                    report(message);
                }
                Poll::Ready(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A panicking task ends alone: the runtime goes on polling the others (one already waiting,
    /// one spawned after), the panic is counted, and what the task held is dropped.
    #[test]
    fn a_panicking_task_ends_alone_and_its_guards_run() {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().unwrap();
        rt.block_on(async move {
            struct Dropped(Rc<Cell<bool>>);
            impl Drop for Dropped {
                fn drop(&mut self) {
                    self.0.set(true);
                }
            }
            let dropped = Rc::new(Cell::new(false));
            let reported = Rc::new(std::cell::RefCell::new(Vec::<String>::new()));
            let report = |r: &Rc<std::cell::RefCell<Vec<String>>>| {
                let r = r.clone();
                move |message: String| r.borrow_mut().push(message)
            };
            let held = Dropped(dropped.clone());
            let waiting = spawn_reporting(
                async {
                    monoio::time::sleep(std::time::Duration::from_millis(20)).await;
                    7
                },
                report(&reported),
            );
            let panicking = spawn_reporting(
                async move {
                    let _held = held;
                    monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                    panic!("a bug");
                },
                report(&reported),
            );
            assert_eq!(panicking.await, None);
            assert!(dropped.get(), "the panicked task's state was not dropped");
            assert_eq!(*reported.borrow(), ["a bug"]);
            assert_eq!(waiting.await, Some(7));
            let after = spawn_reporting(async { "served" }, report(&reported));
            assert_eq!(after.await, Some("served"));
            assert_eq!(reported.borrow().len(), 1, "a task that did not panic was reported");
        });
    }
}
