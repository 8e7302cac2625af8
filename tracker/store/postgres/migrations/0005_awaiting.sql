-- Events stored before their message's record (a hit shipped from a
-- node's hit log, or committed, before the relay's report of its message
-- reached the database), and events the tracker classified without their
-- message: what they still wait for (awaiting.go). A row goes when its
-- event has its feed entry and its final class, or with its event.
CREATE TABLE awaiting (
    seq     bigint PRIMARY KEY REFERENCES events (seq) ON DELETE CASCADE,
    message text NOT NULL,
    listed  boolean NOT NULL,   -- its feed entry is written (or it has none: past the cap)
    client  text                -- NULL: classified; else its class waits for the message (and a
                                -- click's for its copy's delivery): the salted SHA-256 of the
                                -- client's address, for the submitter rule
);
CREATE INDEX awaiting_message ON awaiting (message);
