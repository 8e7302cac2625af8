package rewrite

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"mime"
	"strings"

	"github.com/trackrelay/trackrelay/internal/rawheader"
)

// errHeaderTooBig is returned for a header block larger than MaxHeaderBytes.
var errHeaderTooBig = errors.New("rewrite: header exceeds maximum size")

// A lineSource yields the raw lines of one entity body. The MIME walk is built
// on lines rather than on a multipart reader because every byte, including
// boundary lines with their padding and line endings, must be copied as it was.
type lineSource interface {
	// readLine returns the next line including its line ending, or a fragment
	// of a line longer than the read buffer; start reports whether the slice
	// begins a line. The slice is valid until the next call. At the end of the
	// body it returns io.EOF and no data.
	readLine() (line []byte, start bool, err error)
	// readLines returns a run of whole lines, valid until the next call,
	// none of which starts with "--" and so none of which can be a
	// delimiter line at any depth: what copyLines may copy as one block.
	// It returns nil when the next line must be read with readLine.
	readLines() []byte
}

// baseSource reads lines from the message itself.
type baseSource struct {
	br    *bufio.Reader
	start bool // the next slice begins a line
}

func (s *baseSource) readLine() ([]byte, bool, error) {
	line, err := s.br.ReadSlice('\n')
	start := s.start
	if len(line) > 0 {
		s.start = line[len(line)-1] == '\n'
	}
	switch {
	case err == nil || err == bufio.ErrBufferFull:
		return line, start, nil
	case err == io.EOF && len(line) > 0:
		return line, start, nil
	default:
		return nil, start, err
	}
}

func (s *baseSource) readLines() []byte {
	if !s.start {
		return nil
	}
	// Only what is buffered: filling is readLine's, which reports errors.
	b, _ := s.br.Peek(s.br.Buffered())
	j := bytes.LastIndexByte(b, '\n')
	if j < 0 || bytes.HasPrefix(b, dashDash) {
		return nil
	}
	b = b[:j+1]
	if i := bytes.Index(b, lfDashDash); i >= 0 {
		b = b[:i+1]
	}
	s.br.Discard(len(b)) // b stays valid: the buffer is refilled only by a later read
	return b
}

// lineAtATime turns block copies off: the tests' reference, which block
// copies must match byte for byte.
var lineAtATime = false

func readLines(src lineSource) []byte {
	if lineAtATime {
		return nil
	}
	return src.readLines()
}

var (
	dashDash   = []byte("--")
	lfDashDash = []byte("\n--")
)

// partSource yields the lines of one part of a multipart body: it stops at
// the next delimiter line of its boundary, which it keeps for the walk to copy.
type partSource struct {
	parent lineSource
	dash   []byte // "--" + boundary
	delim  []byte // the delimiter line that ended the part; nil at the end of the parent
	final  bool   // delim is the close delimiter
	done   bool
}

func (p *partSource) readLine() ([]byte, bool, error) {
	if p.done {
		return nil, true, io.EOF
	}
	line, start, err := p.parent.readLine()
	if err != nil {
		p.done = true
		return nil, start, err
	}
	if start {
		if kind := delimiterKind(line, p.dash); kind != notDelimiter {
			p.done = true
			p.delim = append(p.delim[:0], line...)
			p.final = kind == closeDelimiter
			return nil, true, io.EOF
		}
	}
	return line, start, nil
}

func (p *partSource) readLines() []byte {
	if p.done {
		return nil
	}
	return p.parent.readLines()
}

// next starts the next part, after the walk copied the delimiter.
func (p *partSource) next() {
	p.done = false
	p.delim = nil
	p.final = false
}

const (
	notDelimiter = iota
	partDelimiter
	closeDelimiter
)

// delimiterKind says whether line is a delimiter line of the boundary whose
// "--boundary" is dash: RFC 2046 section 5.1.1, with transport padding
// (spaces and tabs before the line ending) allowed, as go-message does.
func delimiterKind(line, dash []byte) int {
	if !bytes.HasPrefix(line, dash) {
		return notDelimiter
	}
	rest := line[len(dash):]
	kind := partDelimiter
	if len(rest) >= 2 && rest[0] == '-' && rest[1] == '-' {
		kind = closeDelimiter
		rest = rest[2:]
	}
	for len(rest) > 0 && (rest[0] == ' ' || rest[0] == '\t') {
		rest = rest[1:]
	}
	switch string(rest) {
	case "", "\n", "\r\n":
		return kind
	}
	return notDelimiter
}

// copyLines copies what is left of src to w, in blocks of lines where it
// can: an attachment is copied at memory speed, not a line at a time.
func copyLines(w *bufio.Writer, src lineSource) error {
	for {
		if blk := readLines(src); blk != nil {
			if _, err := w.Write(blk); err != nil {
				return err
			}
			continue
		}
		line, _, err := src.readLine()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if _, err := w.Write(line); err != nil {
			return err
		}
	}
}

// header is an entity's header block as read by rawheader (the reader the
// relay uses too, so that both agree on where every header ends), with what
// the walk learnt around it.
type header struct {
	rawheader.Header
	lateDKIM bool // a DKIM-Signature field follows a broken line of the block
	noBody   bool // no empty line ended the block: what follows is not safely a body to edit
}

// readHeader reads a header block up to and including the empty line that
// ends it (or the end of the body). Like Python's email package and most mail
// clients, it also ends the block at a line that is not a header line even
// under RFC 5322's obsolete syntax (a missing empty line): that line is then
// the first line of the body, and the returned lineSource yields it before
// the rest of src.
func readHeader(src lineSource) (*header, lineSource, error) {
	rh, rest, err := rawheader.Read(src.readLine, MaxHeaderBytes)
	if errors.Is(err, rawheader.ErrTooLarge) {
		return nil, nil, errHeaderTooBig
	}
	if err != nil {
		return nil, nil, err
	}
	h := &header{Header: rh, noBody: rh.End == nil}
	if rest != nil {
		return endHeaderEarly(h, rest, src)
	}
	return h, src, nil
}

// endHeaderEarly handles a header block that ended at line, which is not a
// header line. It reads ahead to the empty line that was meant to end the
// block, only to see whether a DKIM-Signature stands there: a signed message
// must not be edited however its header is broken. The lines read are
// replayed as body.
func endHeaderEarly(h *header, line []byte, src lineSource) (*header, lineSource, error) {
	ahead := line // a copy, owned here
	start := true
	for len(ahead) <= MaxHeaderBytes {
		if start {
			if name, ok := rawheader.FieldName(line); ok && equalFoldASCII(name, "dkim-signature") {
				h.lateDKIM = true
			}
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				break
			}
		}
		var err error
		line, start, err = src.readLine()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		ahead = append(ahead, line...)
	}
	return h, &prefixSource{buf: ahead, start: true, rest: src}, nil
}

// prefixSource yields saved bytes as lines, then the rest of a source.
type prefixSource struct {
	buf   []byte
	start bool // the next line of buf begins a line
	rest  lineSource
}

func (p *prefixSource) readLine() ([]byte, bool, error) {
	if len(p.buf) == 0 {
		return p.rest.readLine()
	}
	n := bytes.IndexByte(p.buf, '\n') + 1
	if n == 0 {
		n = len(p.buf)
	}
	line, start := p.buf[:n], p.start
	p.buf = p.buf[n:]
	p.start = line[len(line)-1] == '\n'
	return line, start, nil
}

func (p *prefixSource) readLines() []byte {
	if len(p.buf) == 0 {
		return p.rest.readLines()
	}
	return nil
}

// get returns the value of the first field named name, or "".
func (h *header) get(name string) string {
	v, _ := h.Get(name)
	return v
}

// contentType returns the media type (lower case; text/plain when absent)
// and its parameters. When the parameters do not parse, the type alone is
// returned with nil parameters: a multipart without a boundary is then copied
// as it is.
func (h *header) contentType() (string, map[string]string) {
	v := h.get("content-type")
	if v == "" {
		return "text/plain", nil
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		mt, _, _ = strings.Cut(v, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
		params = nil
	}
	return mt, params
}

// disposition returns the lower-case disposition type ("inline",
// "attachment", or "").
func (h *header) disposition() string {
	v, _, _ := strings.Cut(h.get("content-disposition"), ";")
	return strings.ToLower(strings.TrimSpace(v))
}

// transferEncoding returns the part's transfer encoding: the token of its
// Content-Transfer-Encoding before the first ';' or white space, in lower
// case, so that "quoted-printable;" (a stray semicolon, seen in real mail)
// reads as quoted-printable.
func (h *header) transferEncoding() string {
	v := h.get("content-transfer-encoding")
	if i := strings.IndexAny(v, "; \t"); i >= 0 {
		v = v[:i]
	}
	return strings.ToLower(v)
}

// withTransferEncoding returns the raw header block with a clean
// Content-Transfer-Encoding field naming enc, for a part encoded anew: a
// strict reader must not take a field like "quoted-printable;" for an
// unknown encoding and show the encoded text. The first such field is
// written anew where it stands, with its own line ending (unless it reads
// so already), any other is dropped, and a block without one gets one
// before its empty line.
func (h *header) withTransferEncoding(enc, eol string) []byte {
	clean := "Content-Transfer-Encoding: " + enc
	n, first := 0, -1
	for i := range h.Fields {
		if h.Fields[i].Is("content-transfer-encoding") {
			if n++; first < 0 {
				first = i
			}
		}
	}
	if n == 1 {
		if r := string(h.Fields[first].Raw); r == clean+"\r\n" || r == clean+"\n" {
			return h.Raw
		}
	}
	out := make([]byte, 0, len(h.Raw)+len(clean)+len(eol))
	for i := range h.Fields {
		f := &h.Fields[i]
		switch {
		case i == first:
			out = append(out, clean...)
			out = append(out, lineEnding(f.Raw, eol)...)
		case n > 0 && f.Is("content-transfer-encoding"):
		default:
			out = append(out, f.Raw...)
		}
	}
	if first < 0 {
		out = append(out, clean...)
		out = append(out, eol...)
	}
	return append(out, h.End...)
}

// lineEnding returns the line ending of a field, or eol when it has none.
func lineEnding(raw []byte, eol string) string {
	switch {
	case bytes.HasSuffix(raw, []byte("\r\n")):
		return "\r\n"
	case bytes.HasSuffix(raw, []byte("\n")):
		return "\n"
	}
	return eol
}
