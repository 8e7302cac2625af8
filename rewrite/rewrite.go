package rewrite

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
)

// Minter mints the tracking URLs of one recipient's copy, and tells the
// tracker's own URLs from others: the URL layout is the tracker's, and
// rewrite knows nothing of it.
type Minter interface {
	// OpenURL returns the absolute URL of the open pixel.
	OpenURL() string
	// ClickURL returns the tracked URL for the index-th distinct tracked link destination of
	// the message (0-based, document order over all HTML parts; identical destinations share one index).
	// dest is the entity-decoded absolute http(s) URL exactly as the browser would have followed it.
	ClickURL(index int, dest string) string
	// Ours reports whether the absolute http(s) URL dest is on the
	// tracking server: such a link is left alone, never tracked twice.
	Ours(dest string) bool
	// IsOpenURL reports whether url is an open pixel of the tracking
	// server (of any message): such a pixel inside quoted history is
	// removed, so that a reply never fires an earlier email's open.
	IsOpenURL(url string) bool
}

// Options says what to instrument.
type Options struct {
	Opens  bool // insert the open pixel
	Clicks bool // turn links into click redirects
	Minter Minter
	// Honeypot, when not "", is the absolute URL of the copy's honeypot
	// link: with Clicks, each instrumented HTML part gets one link to it
	// that no person sees or reaches (see appendHoneypot), right after
	// <body> like the pixel, so that a clipped message keeps it. It is not
	// one of Result.Links. A part with nothing else to instrument gets none.
	Honeypot string
}

// Result reports what Message did.
type Result struct {
	Changed   bool     // false: the output is byte-identical to the input
	HTMLParts int      // text/html parts instrumented
	Links     []string // tracked destinations; Links[i] was minted with index i
	Pixels    int      // open pixels inserted
	Skipped   string   // why nothing was changed, e.g. "dkim-signed", "no-html", "nothing-to-do"; "" when Changed

	// PixelsRemoved counts earlier tracking pixels removed from quoted history.
	PixelsRemoved int
}

// Values of Result.Skipped. They are short, fixed strings so that callers can
// use them as metric labels.
const (
	// SkipDKIM: the message carries a DKIM-Signature; editing it would break it.
	SkipDKIM = "dkim-signed"
	// SkipNoHTML: the message has no text/html part of its own.
	SkipNoHTML = "no-html"
	// SkipNothingToDo: the options ask for nothing, or the HTML has nothing to
	// instrument (no trackable link and no pixel wanted).
	SkipNothingToDo = "nothing-to-do"
	// SkipCharset: the only HTML is in a charset that is not ASCII-compatible.
	SkipCharset = "unsupported-charset"
	// SkipEncoding: the only HTML has a transfer encoding that is unknown or
	// does not decode.
	SkipEncoding = "unsupported-encoding"
	// SkipTooLarge: the only HTML is larger than MaxHTMLBytes.
	SkipTooLarge = "html-too-large"
	// SkipMalformed: the only HTML has a header block not ended by an empty
	// line, so where its body starts is a guess.
	SkipMalformed = "malformed-header"
)

// Limits. They bound memory per message, whatever its size.
const (
	// MaxHTMLBytes is the largest encoded text/html part that is instrumented;
	// larger ones are copied unchanged.
	MaxHTMLBytes = 16 << 20
	// MaxHeaderBytes is the largest header block accepted; a larger one is an error.
	MaxHeaderBytes = 1 << 20
	// maxDepth bounds multipart nesting; deeper multiparts are copied unchanged.
	maxDepth = 32
	// readBufSize is the read buffer; longer lines are handled in fragments.
	readBufSize = 64 << 10
)

// The read and write buffers are reused across messages: a relay rewrites
// one copy per recipient, and 96 KiB per call would dominate its garbage.
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufSize) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}
)

// errInternal wraps a panic turned into an error.
var errInternal = errors.New("rewrite: internal error")

// ErrMinter is returned when tracking is asked for without a Minter.
var ErrMinter = errors.New("rewrite: Options.Minter is nil")

// Message copies the RFC 5322 message read from r to w, instrumenting its text/html parts.
// On error w may hold partial output: the caller then delivers the original bytes (rewriting fails open).
func Message(w io.Writer, r io.Reader, opts Options) (res Result, err error) {
	defer func() {
		// Rewriting must never cost a user an email: a bug here becomes an
		// error, and the caller delivers the original.
		if p := recover(); p != nil {
			res = Result{}
			err = fmt.Errorf("%w: %v", errInternal, p)
		}
	}()
	if (opts.Opens || opts.Clicks) && opts.Minter == nil {
		return Result{}, ErrMinter
	}

	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	defer func() {
		bw.Reset(nil)
		writerPool.Put(bw)
		br.Reset(nil)
		readerPool.Put(br)
	}()
	src := &baseSource{br: br, start: true}

	h, body, err := readHeader(src)
	if err != nil {
		return Result{}, err
	}

	m := newMessageRewriter(opts, h)
	defer m.sc.release()
	switch {
	case h.Has("dkim-signature") || h.lateDKIM:
		// The signature covers the body (and usually Content-Type); any edit
		// breaks it. The relay may sign again after rewriting.
		m.early = SkipDKIM
		err = m.copyEntity(bw, body, h)
	case !opts.Opens && !opts.Clicks:
		m.early = SkipNothingToDo
		err = m.copyEntity(bw, body, h)
	default:
		err = m.entity(bw, body, h, 0)
	}
	if err != nil {
		return Result{}, err
	}
	if err := bw.Flush(); err != nil {
		return Result{}, err
	}
	return m.result(), nil
}

// scratch holds the buffers of one Message call; they are reused across
// calls, so that rewriting allocates for what it creates (links, their URLs)
// and not in proportion to the message.
type scratch struct {
	body  []byte // the encoded HTML part
	dec   []byte // the decoded HTML
	doc   []byte // the edited HTML
	enc   []byte // the edited HTML, encoded again
	attrs []tagAttr
	edits []edit
}

// maxPooledBytes bounds the buffers kept for reuse: a rare huge part does
// not pin its memory.
const maxPooledBytes = 1 << 20

var scratchPool = sync.Pool{New: func() any { return new(scratch) }}

func (sc *scratch) release() {
	for _, b := range []*[]byte{&sc.body, &sc.dec, &sc.doc, &sc.enc} {
		if cap(*b) > maxPooledBytes {
			*b = nil
		}
	}
	clear(sc.edits[:cap(sc.edits)]) // drop the destination strings
	clear(sc.attrs[:cap(sc.attrs)]) // and the references to the input
	scratchPool.Put(sc)
}

// messageRewriter holds the state of one Message call: the link index shared
// by all HTML parts and the counters of the Result.
type messageRewriter struct {
	opts  Options
	rules linkRules

	links   map[string]int
	res     Result
	sawHTML bool     // an eligible text/html part was seen
	early   string   // the whole message was passed through for this reason
	sc      *scratch // reused buffers
	skip    string   // reason recorded when a part was left alone
}

func newMessageRewriter(opts Options, h *header) *messageRewriter {
	return &messageRewriter{
		opts:  opts,
		rules: newLinkRules(opts, h),
		links: make(map[string]int),
		sc:    scratchPool.Get().(*scratch),
	}
}

// result returns the Result with Skipped filled in when nothing changed.
func (m *messageRewriter) result() Result {
	res := m.res
	if res.Changed {
		res.Skipped = ""
		return res
	}
	switch {
	case m.early != "":
		res.Skipped = m.early
	case !m.sawHTML:
		res.Skipped = SkipNoHTML
	case m.skip != "":
		res.Skipped = m.skip
	default:
		res.Skipped = SkipNothingToDo
	}
	return res
}

// noteSkip records why an HTML part was left alone (the first reason wins).
func (m *messageRewriter) noteSkip(reason string) {
	if m.skip == "" {
		m.skip = reason
	}
}

// mint returns the index of dest, minting a new one on first sight.
func (m *messageRewriter) mint(dest string) string {
	i, ok := m.links[dest]
	if !ok {
		i = len(m.res.Links)
		m.links[dest] = i
		m.res.Links = append(m.res.Links, dest)
	}
	return m.opts.Minter.ClickURL(i, dest)
}

// entity copies one entity (whose header h was already read) and its body,
// instrumenting what it may.
func (m *messageRewriter) entity(w *bufio.Writer, src lineSource, h *header, depth int) error {
	mt, params := h.contentType()
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		boundary := params["boundary"]
		// multipart/signed and multipart/encrypted: any edit breaks them.
		if boundary == "" || mt == "multipart/signed" || mt == "multipart/encrypted" || depth >= maxDepth {
			return m.copyEntity(w, src, h)
		}
		if _, err := w.Write(h.Raw); err != nil {
			return err
		}
		return m.multipart(w, src, boundary, depth)
	case mt == "text/html" && h.disposition() != "attachment":
		m.sawHTML = true
		if h.noBody {
			m.noteSkip(SkipMalformed)
			return m.copyEntity(w, src, h)
		}
		return m.htmlPart(w, src, h, params)
	default:
		// Includes message/rfc822: an attached message is history, not ours.
		return m.copyEntity(w, src, h)
	}
}

// copyEntity writes the header as read and copies the body unchanged.
func (m *messageRewriter) copyEntity(w *bufio.Writer, src lineSource, h *header) error {
	if _, err := w.Write(h.Raw); err != nil {
		return err
	}
	return copyLines(w, src)
}

// multipart copies a multipart body: preamble, parts (each walked as an
// entity), delimiter lines and epilogue, all byte for byte.
func (m *messageRewriter) multipart(w *bufio.Writer, src lineSource, boundary string, depth int) error {
	ps := &partSource{parent: src, dash: []byte("--" + boundary)}
	if err := copyLines(w, ps); err != nil { // preamble
		return err
	}
	for {
		if ps.delim == nil {
			// The body ended without a (further) delimiter: what was there
			// has been copied; a missing close delimiter is tolerated.
			return nil
		}
		if _, err := w.Write(ps.delim); err != nil {
			return err
		}
		if ps.final {
			return copyLines(w, src) // epilogue, up to the parent's delimiter
		}
		ps.next()
		h, body, err := readHeader(ps)
		if err != nil {
			return err
		}
		if err := m.entity(w, body, h, depth+1); err != nil {
			return err
		}
		if err := copyLines(w, ps); err != nil {
			return err
		}
	}
}
