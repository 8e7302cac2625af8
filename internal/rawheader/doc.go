// Package rawheader reads the header block of a message or of a MIME entity
// without decoding it. Every field keeps its bytes exactly as received
// (folding, line endings), so that a header written back from it is the
// header that came in. The relay and the rewriter both read headers with it,
// so that they always agree on where a header ends.
//
// A line belongs to the header when it is a field, a continuation of one
// (it starts with white space), or the empty line that ends the block. A
// field starts with a name of printable ASCII but the colon (RFC 5322
// section 2.2), then the colon; white space between the name and the colon
// is accepted, as RFC 5322 section 4.5.3 (obs-optional) says a receiver
// must. The first line that is none of these ends the block without its
// empty line: that line is the first line of the body, which is how
// Postfix, Python's email package and most mail clients read such a
// message.
//
// It must never decode, reorder, add or drop a byte, and it knows nothing of
// SMTP or MIME.
//
// rawheader imports nothing of trackrelay and never decodes a value (no
// charsets, no RFC 2047): relay and rewrite decide what a field means.
package rawheader
