-- The web console's message list: each message's subject (decoded), its
-- searchable text (store.SearchText: the subject and recipient addresses,
-- case-folded, one a line) and an index that lists an account newest
-- first. The trigram index that speeds up searching is made at Open when
-- the pg_trgm extension can be created (searchIndex in migrate.go).
ALTER TABLE messages ADD COLUMN subject text NOT NULL DEFAULT '';
ALTER TABLE messages ADD COLUMN search text NOT NULL DEFAULT '';
-- Messages stored before have no subject: their search text is their
-- addresses (lower-cased by the database, which folds ASCII as Go does).
UPDATE messages SET search = coalesce((
    SELECT string_agg(E'\n' || lower(r.value->>'a'), '' ORDER BY r.ordinality)
    FROM jsonb_array_elements(recipients) WITH ORDINALITY AS r), '');
CREATE INDEX messages_browse ON messages (account, accepted_at DESC, id COLLATE "C" DESC);
