// Package rewrite instruments the HTML of one recipient's copy of an e-mail
// message: it inserts an open pixel and turns http(s) links into click
// redirects, using URLs handed to it by a Minter.
//
// What it owns
//
//   - The MIME walk. The message is read as raw lines and copied to the output
//     byte for byte: every header, preamble, boundary line, epilogue and every
//     part that is not instrumented. Parts are never decoded and re-serialised
//     unless they are changed, and attachments are streamed line by line, so
//     memory does not grow with message or attachment size.
//   - The HTML edit. A text/html part is decoded (quoted-printable, base64 or
//     identity), split into tokens exactly where golang.org/x/net/html's
//     Tokenizer splits them (by the lexer of lex.go, which works over the
//     slice and does not allocate per token), edited in place (only href
//     values and the pixel differ from the input bytes), and encoded again
//     with its own transfer encoding and line ending style.
//   - The link and quote rules (rules.go, html.go; docs/rewriting.md says
//     them for readers): which links are tracked, which are left alone, and
//     which parts of a reply are history.
//
// What it must never do
//
//   - Import the relay, the tracker, SMTP, HTTP or storage code: it is given
//     the URLs to use through Minter and knows nothing else.
//   - Change a byte that is not part of an instrumented text/html part of the
//     message itself. Parts inside message/rfc822, multipart/signed and
//     multipart/encrypted, and HTML sent as an attachment, are copied as they
//     are. The one header it may alter is the Content-Transfer-Encoding of an
//     instrumented part that it encodes anew: quoted-printable and base64
//     parts, and 7bit/8bit parts whose new lines would exceed 998 bytes (the
//     part is then quoted-printable). That field is then written clean,
//     naming the encoding used ("quoted-printable;" becomes
//     "quoted-printable"), so that strict readers decode the part.
//   - Lose mail. On any parse problem Message returns an error (a panic is
//     turned into one) and the caller delivers the original bytes: rewriting
//     fails open. A message carrying a DKIM-Signature is passed through
//     unchanged, because editing its body would break the signature.
//
// Decisions worth knowing
//
//   - Charsets: ASCII-compatible charsets (and a missing charset) are edited
//     as bytes: the tokenizer only needs ASCII for markup, and the URLs written
//     are ASCII. Parts in UTF-16/32, UTF-7, ISO-2022-*, HZ or EBCDIC code pages
//     are left untouched.
//   - <base href> is ignored: relative links stay relative and untracked.
//   - data-notrack attributes are removed when clicks are tracked; with
//     click tracking off the links are not touched at all.
//   - Header blocks are read by internal/rawheader, as the relay reads them:
//     RFC 5322 with its obsolete syntax (white space before a field's colon).
//     A block that ends at a line that is not a field even so, instead of an
//     empty line, is read the way mail clients read it (the body starts at
//     that line), but an HTML body there is not edited: other readers may see
//     header lines.
//   - Speed: the hot path works over byte slices. The lexer and the
//     quoted-printable decoder mirror x/net/html's Tokenizer and
//     mime/quotedprintable's Reader exactly (differential tests and fuzz
//     targets hold them to it) but run several times faster; buffers are
//     pooled per call; allocations follow the number of links, not the size
//     of the message or the number of tags.
//   - The pixel is placed right after <body ...> (or before the first body
//     content when there is no <body> tag), not at the end, so that it still
//     loads when Gmail clips a long message. See pixelMarkup.
package rewrite
