package rawheader

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

// ErrTooLarge is returned for a header block larger than the limit given to
// Read. A body line that follows the block without its empty line counts
// too, as far as it is read to tell that it is not a field.
var ErrTooLarge = errors.New("rawheader: header block exceeds its size limit")

// A LineFunc yields the lines of its input: each call returns the next line,
// its line ending included, or a fragment of a line too long for the
// caller's buffer; start reports whether the slice begins a line. The slice
// need only be valid until the next call. At the end of the input it returns
// io.EOF and no data.
type LineFunc func() (line []byte, start bool, err error)

// Lines returns a LineFunc reading br: lines longer than br's buffer come
// in fragments.
func Lines(br *bufio.Reader) LineFunc {
	start := true
	return func() ([]byte, bool, error) {
		line, err := br.ReadSlice('\n')
		s := start
		if len(line) > 0 {
			start = line[len(line)-1] == '\n'
		}
		switch {
		case err == nil || err == bufio.ErrBufferFull:
			return line, s, nil
		case err == io.EOF && len(line) > 0:
			return line, s, nil
		default:
			return nil, s, err
		}
	}
}

// Header is a header block as received.
type Header struct {
	// Raw is the block byte for byte: its fields, in order, then End.
	Raw []byte
	// Fields are the fields of the block; their Raw bytes, one after the
	// other, are Raw up to End.
	Fields []Field
	// End is the empty line that ended the block, as received (the tail of
	// Raw), or nil when the input ended first or a line that is not part of
	// a header did.
	End []byte
}

// Field is one header field.
type Field struct {
	// Name is the field name as written, without the white space that may
	// stand before the colon.
	Name []byte
	// Raw is the whole field: its lines, continuation lines and line endings
	// included, exactly as received.
	Raw []byte
}

// Is reports whether the field is named name, compared in ASCII case-insensitively.
func (f *Field) Is(name string) bool {
	if len(f.Name) != len(name) {
		return false
	}
	for i := 0; i < len(name); i++ {
		if lower(f.Name[i]) != lower(name[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Value returns the field body unfolded (RFC 5322 section 2.2.3: every line
// break before a continuation line removed, the white space after it kept),
// without the white space around it.
func (f *Field) Value() string {
	_, v, _ := bytes.Cut(f.Raw, []byte{':'})
	v = bytes.Trim(v, " \t\r\n")
	if bytes.IndexByte(v, '\n') < 0 {
		return string(v) // one line: the common case, one allocation
	}
	b := make([]byte, 0, len(v))
	for {
		i := bytes.IndexByte(v, '\n')
		if i < 0 {
			return string(append(b, v...))
		}
		line := v[:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		b = append(b, line...)
		v = v[i+1:]
	}
}

// Get returns the value of the first field named name (case-insensitive)
// and whether there is one.
func (h *Header) Get(name string) (string, bool) {
	for i := range h.Fields {
		if h.Fields[i].Is(name) {
			return h.Fields[i].Value(), true
		}
	}
	return "", false
}

// Has reports whether a field named name (case-insensitive) is present.
func (h *Header) Has(name string) bool {
	for i := range h.Fields {
		if h.Fields[i].Is(name) {
			return true
		}
	}
	return false
}

// Read reads a header block from next, at most limit bytes of it.
//
// The block ends after its empty line (h.End), at the end of the input, or
// before the first line that is neither a field, a continuation of one, nor
// an empty line. In the last case that line, which RFC 5322 would have had
// after an empty line, is returned as rest (a copy, or its first fragments
// when it is longer than next's buffer): it begins the body, and next goes
// on with what follows it. A LineFunc error is returned as it is.
func Read(next LineFunc, limit int) (h Header, rest []byte, err error) {
	var raw []byte
	lineAt := 0        // offset in raw of the line being read
	pending := false   // that line is not classified yet (only a fragment read)
	haveField := false // a field was read, so a continuation line may follow
	for {
		b, start, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Header{}, nil, err
		}
		if len(raw)+len(b) > limit {
			return Header{}, nil, ErrTooLarge
		}
		if start || len(raw) == 0 {
			lineAt, pending = len(raw), true
		}
		raw = append(raw, b...)
		if !pending {
			continue // the rest of a line already classified
		}
		switch classify(raw[lineAt:], raw[len(raw)-1] == '\n', haveField) {
		case undecided:
		case fieldLine:
			haveField, pending = true, false
		case continuationLine:
			pending = false
		case emptyLine:
			return parse(raw, lineAt), nil, nil
		case notHeader:
			rest = bytes.Clone(raw[lineAt:])
			return parse(raw[:lineAt], -1), rest, nil
		}
	}
	if pending && classify(raw[lineAt:], true, haveField) == notHeader {
		rest = bytes.Clone(raw[lineAt:])
		return parse(raw[:lineAt], -1), rest, nil
	}
	return parse(raw, -1), nil, nil
}

// Kinds of header lines.
const (
	undecided = iota // more of the line is needed
	fieldLine
	continuationLine
	emptyLine
	notHeader
)

// classify says what kind of line line is, from as much of it as has been
// read; complete reports that it is all there.
func classify(line []byte, complete, haveField bool) int {
	switch {
	case len(line) == 0:
		return undecided
	case line[0] == ' ' || line[0] == '\t':
		if haveField {
			return continuationLine
		}
		return notHeader // a continuation of nothing
	case line[0] == '\n':
		return emptyLine
	case line[0] == '\r':
		switch {
		case len(line) == 1 && !complete:
			return undecided
		case len(line) >= 2 && line[1] == '\n':
			return emptyLine
		}
		return notHeader
	}
	switch k, _ := fieldName(line); {
	case k == undecided && complete:
		return notHeader
	default:
		return k
	}
}

// fieldName says whether line starts a field: a name of printable ASCII but
// the colon, optional white space (obs-optional), then a colon. For a field
// it returns the name's length.
func fieldName(line []byte) (kind, n int) {
	i := 0
	for i < len(line) && isFtext(line[i]) {
		i++
	}
	if i == 0 {
		return notHeader, 0
	}
	j := i
	for j < len(line) && (line[j] == ' ' || line[j] == '\t') {
		j++
	}
	switch {
	case j == len(line):
		return undecided, 0
	case line[j] == ':':
		return fieldLine, i
	}
	return notHeader, 0
}

// isFtext reports whether c may be part of a field name (RFC 5322 section
// 3.6.8: printable US-ASCII but the colon).
func isFtext(c byte) bool { return c >= 33 && c <= 126 && c != ':' }

// FieldName returns the name of the field that line starts, and false when
// line does not start a field.
func FieldName(line []byte) ([]byte, bool) {
	k, n := fieldName(line)
	if k != fieldLine {
		return nil, false
	}
	return line[:n], true
}

// parse locates the fields of raw, whose lines were all classified by Read
// as fields, continuations and, at endAt (or -1), the empty line ending it.
func parse(raw []byte, endAt int) Header {
	h := Header{Raw: raw}
	body := raw
	if endAt >= 0 {
		body, h.End = raw[:endAt], raw[endAt:]
	}
	n := 0 // lines that start a field: the Fields are allocated once
	for off := 0; off < len(body); {
		if body[off] != ' ' && body[off] != '\t' {
			n++
		}
		e := bytes.IndexByte(body[off:], '\n')
		if e < 0 {
			break
		}
		off += e + 1
	}
	h.Fields = make([]Field, 0, n)
	for off := 0; off < len(body); {
		end := len(body)
		if e := bytes.IndexByte(body[off:], '\n'); e >= 0 {
			end = off + e + 1
		}
		if body[off] == ' ' || body[off] == '\t' {
			f := &h.Fields[len(h.Fields)-1]
			f.Raw = f.Raw[:len(f.Raw)+end-off]
		} else {
			_, k := fieldName(body[off:end])
			h.Fields = append(h.Fields, Field{Name: body[off : off+k : off+k], Raw: body[off:end]})
		}
		off = end
	}
	// A field's Raw may not grow into the next one's bytes.
	for i := range h.Fields {
		f := &h.Fields[i]
		f.Raw = f.Raw[:len(f.Raw):len(f.Raw)]
	}
	return h
}
