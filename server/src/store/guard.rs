//! Protections around client SQL on a connection: an authorizer that keeps clients away from
//! replicated tables' DDL and internal tables (schema changes go through schema files), and a
//! deadline that interrupts statements running too long.

use super::catalog::Catalog;
use rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use rusqlite::Connection;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct GuardState {
    /// Client SQL is running: enforce the rules.
    active: AtomicBool,
    /// Deadline as nanoseconds after `epoch`, 0 = none.
    deadline: AtomicU64,
    epoch: Mutex<Option<Instant>>,
    replicated: Mutex<HashSet<String>>,
    denial: Mutex<Option<String>>,
}

#[derive(Debug, Clone, Default)]
pub struct Guard(Arc<GuardState>);

impl Guard {
    pub fn install(conn: &Connection, catalog: &Catalog) -> rusqlite::Result<Guard> {
        let g = Guard::default();
        *g.0.epoch.lock().expect("guard") = Some(Instant::now());
        g.set_tables(catalog);
        let st = g.0.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(&st, ctx)))?;
        let st = g.0.clone();
        conn.progress_handler(1000, Some(move || past_deadline(&st)))?;
        Ok(g)
    }

    pub fn set_tables(&self, catalog: &Catalog) {
        *self.0.replicated.lock().expect("guard") = catalog
            .tables()
            .iter()
            .map(|t| t.name.to_ascii_lowercase())
            .collect();
    }

    /// Starts guarding client SQL, with an optional time limit.
    pub fn begin(&self, timeout: Option<Duration>) {
        *self.0.denial.lock().expect("guard") = None;
        let epoch = self
            .0
            .epoch
            .lock()
            .expect("guard")
            .unwrap_or_else(Instant::now);
        // Saturating: a deadline past u64 nanoseconds (584 years) is no deadline in practice.
        let deadline = timeout
            .map(|t| {
                let at = epoch.elapsed().saturating_add(t).as_nanos();
                u64::try_from(at).unwrap_or(u64::MAX)
            })
            .unwrap_or(0);
        self.0.deadline.store(deadline, Ordering::Relaxed);
        self.0.active.store(true, Ordering::Relaxed);
    }

    /// Stops enforcing (the store's own statements follow).
    pub fn end(&self) {
        self.0.active.store(false, Ordering::Relaxed);
        self.0.deadline.store(0, Ordering::Relaxed);
    }

    /// Why the last statement was denied, if it was.
    pub fn take_denial(&self) -> Option<String> {
        self.0.denial.lock().expect("guard").take()
    }
}

fn past_deadline(st: &GuardState) -> bool {
    let d = st.deadline.load(Ordering::Relaxed);
    if d == 0 {
        return false;
    }
    match *st.epoch.lock().expect("guard") {
        Some(epoch) => epoch.elapsed().as_nanos() as u64 > d,
        None => false,
    }
}

fn authorize(st: &GuardState, ctx: AuthContext<'_>) -> Authorization {
    if !st.active.load(Ordering::Relaxed) {
        return Authorization::Allow;
    }
    let replicated = |t: &str| {
        st.replicated
            .lock()
            .expect("guard")
            .contains(&t.to_ascii_lowercase())
    };
    let internal = |t: &str| {
        let l = t.to_ascii_lowercase();
        l.starts_with("__vd_") || l.ends_with("__vd_clock")
    };
    let reason = match ctx.action {
        AuthAction::Insert { table_name } | AuthAction::Delete { table_name } | AuthAction::Update { table_name, .. }
            if internal(table_name) =>
        {
            Some(format!("`{table_name}` is an internal Verdigris table and cannot be written"))
        }
        AuthAction::DropTable { table_name }
        | AuthAction::AlterTable { table_name, .. }
        | AuthAction::CreateIndex { table_name, .. }
        | AuthAction::DropIndex { table_name, .. }
        | AuthAction::CreateTrigger { table_name, .. }
        | AuthAction::DropTrigger { table_name, .. }
            if replicated(table_name) || internal(table_name) =>
        {
            Some(format!(
                "`{table_name}` is a replicated table: change its schema in the schema files (db.schema_paths) and run `verdigris reload`"
            ))
        }
        AuthAction::Transaction { .. } | AuthAction::Savepoint { .. } => Some(
            "transaction control (BEGIN, COMMIT, ROLLBACK, SAVEPOINT) is not allowed: each request already runs as one transaction"
                .to_string(),
        ),
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => {
            Some("ATTACH and DETACH are not allowed through the API".to_string())
        }
        AuthAction::Pragma { pragma_name, pragma_value: Some(_) } => {
            Some(format!("setting PRAGMA {pragma_name} is not allowed through the API"))
        }
        _ => None,
    };
    match reason {
        Some(r) => {
            *st.denial.lock().expect("guard") = Some(r);
            Authorization::Deny
        }
        None => Authorization::Allow,
    }
}
