-- The history an event batch reads (events.go), by index instead of by
-- walking every event of a copy near the batch's time: a busy copy has
-- thousands of plain opens in that window and a batch needs none of them.
-- Clicks, for the burst and click sequence rules:
CREATE INDEX events_clicks ON events (message, recipient, at_ns) WHERE type = 'click';
-- Honeypot hits and gateways' pixel fetches kept in detail, for the
-- honeypot and gateway pair rules. The predicate is repeated word for word
-- in the batch's read (historyMarks), so the planner can use the index;
-- the prefixes are classify.ReasonGatewayRange and ReasonGatewayNetwork.
CREATE INDEX events_marks ON events (message, recipient, at_ns)
    WHERE kept AND (reasons ? 'honeypot'
        OR type = 'open' AND reasons @? '$[*] ? (@ starts with "gateway-range:" || @ starts with "gateway-network:")');
