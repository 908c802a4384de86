-- Example schema of `verdigris dev`: the routing data of a fleet scheduler. Each worker host
-- publishes the machines (app instances) it runs; every node sees every worker's machines,
-- and a proxy subscribes to the ones it can route to (started and passing health checks).

CREATE TABLE apps (
    name TEXT NOT NULL PRIMARY KEY,
    org TEXT NOT NULL DEFAULT 'personal',
    created_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE workers (
    name TEXT NOT NULL PRIMARY KEY,
    region TEXT NOT NULL DEFAULT '',
    node TEXT NOT NULL DEFAULT '',
    started_at INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE machines (
    id TEXT NOT NULL PRIMARY KEY,
    app TEXT NOT NULL DEFAULT '',
    worker TEXT NOT NULL DEFAULT '',
    region TEXT NOT NULL DEFAULT '',
    address TEXT NOT NULL DEFAULT '',
    port INTEGER NOT NULL DEFAULT 0,
    -- created, started, stopped
    state TEXT NOT NULL DEFAULT 'created',
    -- unknown, passing, critical
    health TEXT NOT NULL DEFAULT 'unknown',
    updated_at INTEGER NOT NULL DEFAULT 0
);

CREATE INDEX machines_by_app ON machines (app);
