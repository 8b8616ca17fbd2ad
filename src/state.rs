//! What the request handlers share: the visit store and whether the process is stopping.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::visits::VisitStore;

#[derive(Debug)]
pub struct AppState {
    pub visits: Arc<VisitStore>,
    stopping: AtomicBool,
}

impl AppState {
    pub fn new(visits: Arc<VisitStore>) -> Arc<AppState> {
        Arc::new(AppState {
            visits,
            stopping: AtomicBool::new(false),
        })
    }

    /// `/readyz`: not ready once stopping, or while the visit store reports a problem.
    pub fn readiness(&self) -> Result<(), String> {
        if self.stopping.load(Ordering::Relaxed) {
            return Err("shutting down".to_owned());
        }
        self.visits.health()
    }

    pub fn begin_shutdown(&self) {
        self.stopping.store(true, Ordering::Relaxed);
    }
}
