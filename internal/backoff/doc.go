// Package backoff computes how long to wait before retrying after
// failures: exponential, capped, and, where many retries could fall due
// together, jittered.
//
// backoff imports nothing of trackrelay and keeps no state: callers pass
// their durations and count their attempts.
package backoff
