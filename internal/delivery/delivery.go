package delivery

// Status is the delivery state of one recipient's copy. Its string is what
// the spool, the store and the API hold.
type Status string

// The delivery states.
const (
	// Queued: accepted, not yet tried.
	Queued Status = "queued"
	// Deferred: tried and failed for now; retried later.
	Deferred Status = "deferred"
	// Delivered: an upstream took the copy. Final.
	Delivered Status = "delivered"
	// Bounced: refused for good, or given up on. Final.
	Bounced Status = "bounced"
	// Held: the copy's job panicked. It is in no schedule, a restart
	// leaves it held (re-queueing it at once would be a crash loop), and
	// only the operator's retry releases it.
	Held Status = "held"
)

// Final reports whether the copy is done with: delivered or bounced.
func (s Status) Final() bool { return s == Delivered || s == Bounced }
