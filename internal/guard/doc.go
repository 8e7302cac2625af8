// Package guard recovers a panic at the boundary of one job of a goroutine
// that serves many (a delivery worker, the tracker's collector, a webhook
// sender), so that one bad message or record never takes the server down.
//
// It logs the stack once, counts the panic in trackrelay_panics_total by
// component, and hands the recovered value to the caller, which quarantines
// the job (holds the message copy, sets the hit-log record aside) and goes
// on with the next one.
//
// guard imports nothing of trackrelay: relay, tracker and cmd all use it.
package guard
