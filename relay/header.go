package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"

	"github.com/trackrelay/trackrelay/internal/rawheader"
)

// rawField is one header field exactly as received: its lines, folding and
// line endings included, so that writing it back changes nothing.
type rawField struct {
	name string
	raw  []byte
}

func (f rawField) is(name string) bool { return strings.EqualFold(f.name, name) }

// value is the unfolded field body.
func (f rawField) value() string {
	return (&rawheader.Field{Raw: f.raw}).Value()
}

// rawHeader is a message header read without decoding.
type rawHeader struct {
	fields []rawField
	end    []byte // the empty line that ends the header, as received
	eol    string // the message's line ending, "\r\n" or "\n"
}

func (h *rawHeader) get(name string) (string, bool) {
	for _, f := range h.fields {
		if f.is(name) {
			return f.value(), true
		}
	}
	return "", false
}

// readHeader reads the header block from br, at most max bytes, and returns
// it with the reader of the body. The block is read by rawheader, as the
// rewriter reads it: a field may have white space before its colon (RFC
// 5322 obsolete syntax). When the body starts without the empty line RFC
// 5322 requires (at a line that is not a field even so), the missing empty
// line is supplied in end, so the spooled message is well formed, and the
// body reader starts with that line.
func readHeader(br *bufio.Reader, max int) (*rawHeader, io.Reader, error) {
	rh, rest, err := rawheader.Read(rawheader.Lines(br), max)
	if errors.Is(err, rawheader.ErrTooLarge) {
		return nil, nil, errHeaderTooLarge
	}
	if err != nil {
		return nil, nil, err
	}
	h := &rawHeader{fields: make([]rawField, len(rh.Fields)), end: rh.End, eol: "\r\n"}
	for i, f := range rh.Fields {
		h.fields[i] = rawField{name: string(f.Name), raw: f.Raw}
	}
	for _, b := range [][]byte{rh.Raw, rest} {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			if i == 0 || b[i-1] != '\r' {
				h.eol = "\n"
			}
			break
		}
	}
	if rest == nil {
		return h, br, nil
	}
	h.end = []byte(h.eol)
	return h, io.MultiReader(bytes.NewReader(rest), br), nil
}
