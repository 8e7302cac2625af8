// Package durable writes files that must survive a crash or a power loss:
// the tracking secret and API key generated on first start, a DKIM key,
// the copies written in capture mode, the spool records set aside for the
// operator.
//
// A file is durable once its bytes are fsynced, it has its final name, and
// the directory holding that name is fsynced, in that order. The bytes go to
// a temporary file in the same directory first, so a crash at any moment
// leaves the old file or the new one at the path, never a part of one (at
// worst a temporary file named ".NAME.tmp*" beside it).
//
// durable imports nothing of trackrelay: relay, tracker and cmd all use it.
package durable
