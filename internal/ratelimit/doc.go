// Package ratelimit limits what one client may do, per client address: a
// token bucket each (golang.org/x/time/rate), kept in memory that idle
// clients leave. The relay limits failed logins with it, the tracker the
// hits it records.
//
// ratelimit imports nothing of trackrelay and knows nothing of SMTP or
// HTTP: callers say what one attempt is.
package ratelimit
