-- Webhook deliveries are claimed for a while by the node that sends them,
-- so that one node at a time sends each.
ALTER TABLE outbox ADD COLUMN leased_until timestamptz;
