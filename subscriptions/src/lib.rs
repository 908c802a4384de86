//! Incremental query engine for Verdigris subscriptions. Filled by the subscriptions issue.
