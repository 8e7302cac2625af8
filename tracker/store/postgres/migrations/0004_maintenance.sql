-- Maintenance by the fleet's leader (maintenance.go).

-- The counts of a copy's events that retention deleted, by what the view
-- counts them by: a copy's counts stay when its events go. kept counts
-- those that were kept in detail, which still count towards the cap.
CREATE TABLE tallies (
    message   text NOT NULL,
    recipient int NOT NULL,
    type      text NOT NULL,
    class     text NOT NULL,
    link      int NOT NULL,
    events    bigint NOT NULL,
    kept      bigint NOT NULL,
    first_ns  bigint NOT NULL,
    last_ns   bigint NOT NULL,
    PRIMARY KEY (message, recipient, type, class, link)
);

-- Retention marks: the event and feed sequences reached at a time. What
-- is at or below the newest mark older than the retention period was
-- written before it, so it is older than the period.
CREATE TABLE retention_marks (
    at        timestamptz PRIMARY KEY,
    event_seq bigint NOT NULL,
    feed_seq  bigint NOT NULL
);

-- Webhook deliveries no sender took are purged by age.
CREATE INDEX outbox_first_at ON outbox (first_at);
