package relay

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
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
	_, v, _ := bytes.Cut(f.raw, []byte{':'})
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	v = bytes.ReplaceAll(v, []byte("\n"), nil)
	return strings.TrimSpace(string(v))
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
// it with the reader of the body. When the body starts without the empty
// line RFC 5322 requires, the missing empty line is supplied in end, so the
// spooled message is well formed, and the body reader starts with the line
// that was read too far.
func readHeader(br *bufio.Reader, max int) (*rawHeader, io.Reader, error) {
	h := &rawHeader{eol: "\r\n"}
	total := 0
	first := true
	for {
		line, err := readLine(br, max-total)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, nil, err
		}
		total += len(line)
		if first && len(line) > 0 {
			first = false
			if !bytes.HasSuffix(line, []byte("\r\n")) && bytes.HasSuffix(line, []byte("\n")) {
				h.eol = "\n"
			}
		}
		switch {
		case len(line) == 0:
			return h, br, nil // EOF: a message that is all header
		case isBlank(line):
			h.end = line
			return h, br, nil
		case (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0:
			f := &h.fields[len(h.fields)-1]
			f.raw = append(f.raw, line...)
		default:
			name, ok := fieldName(line)
			if !ok {
				// Body without the separating empty line.
				h.end = []byte(h.eol)
				return h, io.MultiReader(bytes.NewReader(line), br), nil
			}
			h.fields = append(h.fields, rawField{name: name, raw: line})
		}
		if errors.Is(err, io.EOF) {
			return h, br, nil
		}
	}
}

// readLine reads one line, its ending included, refusing lines that would
// take the header past its limit.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > limit {
			return nil, errHeaderTooLarge
		}
		line = append(line, chunk...)
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return line, err
	}
}

func isBlank(line []byte) bool {
	return len(bytes.TrimRight(line, "\r\n")) == 0
}

// fieldName returns the name of a field line (RFC 5322 section 2.2:
// printable ASCII but the colon, then a colon).
func fieldName(line []byte) (string, bool) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", false
	}
	for _, c := range line[:i] {
		if c <= ' ' || c > '~' {
			return "", false
		}
	}
	return string(line[:i]), true
}
