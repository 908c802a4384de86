//! The process's log filter, changeable while the node runs (`verdigris log set <filter>` /
//! `log reset`, as Corrosion's admin socket offers). The binary installs the subscriber; a
//! library user that installs none gets an error from the admin command instead.

use std::sync::OnceLock;
use tracing_subscriber::{layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter};

type Setter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The filter set at start (from `RUST_LOG`, default `info`), and how to replace it.
struct Control {
    initial: String,
    set: Setter,
}

static CONTROL: OnceLock<Control> = OnceLock::new();

/// Installs the process-wide subscriber (stderr), filtered by `RUST_LOG` (default `info`).
pub fn init() {
    let initial = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&initial).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(filter);
    tracing_subscriber::registry()
        .with(layer)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
    let set: Setter = Box::new(move |f| handle.reload(f).map_err(|e| e.to_string()));
    let _ = CONTROL.set(Control { initial, set });
}

/// Replaces the log filter (`EnvFilter` syntax, e.g. `info,verdigris::cluster=debug`).
pub fn set_filter(filter: &str) -> Result<(), String> {
    let f = EnvFilter::try_new(filter)
        .map_err(|e| format!("invalid log filter {filter:?}: {e}; use RUST_LOG syntax, e.g. info,verdigris::cluster=debug"))?;
    let c = CONTROL
        .get()
        .ok_or("this process did not install a reloadable log filter")?;
    (c.set)(f)
}

/// Goes back to the filter the process started with.
pub fn reset_filter() -> Result<String, String> {
    let c = CONTROL
        .get()
        .ok_or("this process did not install a reloadable log filter")?;
    let f = EnvFilter::try_new(&c.initial).unwrap_or_else(|_| EnvFilter::new("info"));
    (c.set)(f)?;
    Ok(c.initial.clone())
}
