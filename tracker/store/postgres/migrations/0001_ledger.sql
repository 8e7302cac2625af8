-- The ledger: messages, their links and copies' deliveries, the events
-- (appended, one row per hit), the accounts' feed, the webhook outbox and
-- the erasure tombstones.

-- One row: the random id that makes event and feed entry ids unique
-- across stores (hex, as bbolt's).
CREATE TABLE store_meta (
    id text NOT NULL
);
INSERT INTO store_meta (id) VALUES (substr(md5(random()::text || clock_timestamp()::text), 1, 16));

CREATE TABLE messages (
    id          text PRIMARY KEY,           -- queue id
    account     text NOT NULL,
    message_id  text NOT NULL,              -- without <>
    sender      text NOT NULL,
    submit_ip   text NOT NULL,
    accepted_at timestamptz NOT NULL,
    mode        text NOT NULL,
    recipients  jsonb NOT NULL              -- [{"a": address, "t": tracked}]
);
CREATE INDEX messages_message_id ON messages (account, message_id);

CREATE TABLE links (
    message text PRIMARY KEY,
    urls    jsonb NOT NULL
);

CREATE TABLE deliveries (
    message       text NOT NULL,
    recipient     int NOT NULL,
    status        text NOT NULL,
    attempts      int NOT NULL,
    last_response text NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (message, recipient)
);

-- Every hit is a row. Those past the cap per copy (kept false) keep only
-- what the counts need. Times are unix nanoseconds: the burst rule
-- compares them to the nanosecond.
CREATE TABLE events (
    seq        bigint PRIMARY KEY,
    hit        uuid NOT NULL UNIQUE,        -- minted by the node: a replay is harmless
    message    text NOT NULL,
    recipient  int NOT NULL,
    type       text NOT NULL,
    at_ns      bigint NOT NULL,
    link       int NOT NULL,
    kept       boolean NOT NULL,
    burst      boolean NOT NULL,            -- part of a click burst
    class      text NOT NULL,
    reasons    jsonb NOT NULL,
    url        text NOT NULL,
    ip         text NOT NULL,
    user_agent text NOT NULL,
    client     text NOT NULL,
    country    text NOT NULL,
    city       text NOT NULL
);
CREATE SEQUENCE events_seq OWNED BY events.seq;
CREATE INDEX events_copy_at ON events (message, recipient, at_ns);
CREATE INDEX events_kept ON events (message, recipient) WHERE kept;

-- The feed, in the order of (xid, seq): xid is the writing transaction's,
-- so that a reader below pg_snapshot_xmin never misses a row committed
-- late.
CREATE TABLE feed (
    seq        bigserial PRIMARY KEY,
    xid        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    account    text NOT NULL,
    kind       text NOT NULL,               -- open, click, delivery, reclassified
    message    text NOT NULL,
    recipient  int NOT NULL,
    event      bigint,                      -- events.seq: open, click, reclassified
    at         timestamptz NOT NULL,
    class      text NOT NULL DEFAULT '',    -- reclassified: new class
    prev       text NOT NULL DEFAULT '',    -- reclassified: class before
    reasons    jsonb,                       -- reclassified
    delivery   jsonb                        -- delivery: the state
);
CREATE INDEX feed_account ON feed (account, xid, seq);
CREATE INDEX feed_message ON feed (message);

CREATE TABLE outbox (
    entry    bigint PRIMARY KEY REFERENCES feed (seq) ON DELETE CASCADE,
    account  text NOT NULL,
    due      timestamptz NOT NULL,
    attempts int NOT NULL DEFAULT 0,
    first_at timestamptz NOT NULL
);
CREATE INDEX outbox_due ON outbox (due, entry);

-- A tombstone per erased message: its later hits and reports are not
-- stored.
CREATE TABLE erased (
    message   text PRIMARY KEY,
    erased_at timestamptz NOT NULL
);
