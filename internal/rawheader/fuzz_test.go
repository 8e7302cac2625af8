package rawheader

import (
	"bufio"
	"bytes"
	"net/mail"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	gmtextproto "github.com/emersion/go-message/textproto"
)

// corpusDir holds real-world messages shared by the project.
const corpusDir = "../../../shared/corpus"

// obsSeeds are headers in RFC 5322's obsolete syntax and near misses.
var obsSeeds = []string{
	"Subject : hi\r\nTo: b@example.net\r\nContent-Type: text/html\r\n\r\n<p>hi</p>\r\n",
	"Subject\t:hi\nFrom :\ta@example.com\n\nbody\n",
	"To: a@example.com,\r\n \r\n b@example.com\r\n\r\n",
	"Received: from x\r\n\tby y;\r\n  Thu, 1 Jan 2004 00:00:00 +0000\r\n\r\n",
	"Subject: hi\r\nthis line is body\r\n\r\n",
	": empty\r\n\r\n",
	" continued: first\r\n\r\n",
	"Subject: a\r\r\n\r\n",
	"X-Odd!#$%&'*+-.^_`|~: v\r\n\r\n",
	"Subject: caf\xc3\xa9 \xe9\r\n\r\n",
	"A: 1\r\nB: 2",
	"A:\r\n\r\n",
}

// seedHeader returns the header block of a message, and a little of its body.
func seedHeader(msg []byte) []byte {
	for _, sep := range []string{"\r\n\r\n", "\n\n"} {
		if i := bytes.Index(msg, []byte(sep)); i >= 0 {
			return msg[:min(len(msg), i+len(sep)+64)]
		}
	}
	return msg[:min(len(msg), 4096)]
}

// FuzzRawHeaderDifferential reads arbitrary input with Read and holds the
// result to its own invariants, to an independent reading of RFC 5322's
// grammar (obsolete syntax included), and to go-message's textproto and
// net/mail on the same input: they may reject what Read accepts, never the
// reverse where the input is RFC 5322, and where both accept they see the
// same fields.
func FuzzRawHeaderDifferential(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join(corpusDir, "*.eml"))
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(seedHeader(b))
		}
	}
	for _, s := range obsSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h, rest, body, err := read(t, in, 4096, 1<<20)
		if err != nil {
			t.Fatal(err)
		}
		checkInvariants(t, h)
		if got := append(append([]byte(nil), h.Raw...), body...); !bytes.Equal(got, in) {
			t.Fatalf("header and body %q are not the input", got)
		}
		// Lines that arrive in fragments are read the same.
		h16, rest16, body16, err := read(t, in, 16, 1<<20)
		if err != nil || !sameHeader(h, h16) || !bytes.Equal(body, body16) || (rest == nil) != (rest16 == nil) {
			t.Fatalf("read in 16-byte fragments: %q/%q, whole lines: %q/%q (%v)", h16.Raw, body16, h.Raw, body, err)
		}

		fields, end, isRFC := rfc5322Header(in)
		if isRFC {
			if rest != nil || !bytes.Equal(h.End, end) || (h.End == nil) != (end == nil) || len(h.Fields) != len(fields) {
				t.Fatalf("RFC 5322 header read as %d fields, end %q, rest %q; want %d fields, end %q", len(h.Fields), h.End, rest, len(fields), end)
			}
			for i := range fields {
				if !bytes.Equal(h.Fields[i].Raw, fields[i]) {
					t.Fatalf("field %d is %q, want %q", i, h.Fields[i].Raw, fields[i])
				}
			}
		}

		// go-message's textproto.
		gh, gerr := gmtextproto.ReadHeader(bufio.NewReader(bytes.NewReader(in)))
		if gerr == nil && (isRFC || h.End != nil) {
			var gk, gv []string
			for fs := gh.Fields(); fs.Next(); {
				gk = append(gk, fs.Key())
				gv = append(gv, fs.Value())
			}
			if len(gk) != len(h.Fields) {
				t.Fatalf("go-message reads %d fields %q, Read %d %q", len(gk), gk, len(h.Fields), names(h))
			}
			for i, fl := range h.Fields {
				if !strings.EqualFold(gk[i], string(fl.Name)) {
					t.Fatalf("field %d: go-message reads %q, Read %q", i, gk[i], fl.Name)
				}
				if isRFC && squash(gv[i]) != squash(fl.Value()) {
					t.Fatalf("field %s: go-message reads %q, Read %q", gk[i], gv[i], fl.Value())
				}
			}
		}

		// net/mail (net/textproto): a map of fields, which keeps white space
		// before a colon in the key and loses the order of keys that then
		// differ: values are compared as sets per name.
		if msg, merr := mail.ReadMessage(bytes.NewReader(in)); merr == nil && isRFC {
			ours, theirs := map[string][]string{}, map[string][]string{}
			for _, fl := range h.Fields {
				k := textproto.CanonicalMIMEHeaderKey(string(fl.Name))
				ours[k] = append(ours[k], squash(fl.Value()))
			}
			for k, vs := range msg.Header {
				k = textproto.CanonicalMIMEHeaderKey(strings.TrimRight(k, " \t"))
				for _, v := range vs {
					theirs[k] = append(theirs[k], squash(v))
				}
			}
			if len(theirs) != len(ours) {
				t.Fatalf("net/mail reads %d field names, Read %d", len(theirs), len(ours))
			}
			for k, vs := range theirs {
				slices.Sort(vs)
				slices.Sort(ours[k])
				if !slices.Equal(vs, ours[k]) {
					t.Fatalf("field %s: net/mail reads %q, Read %q", k, vs, ours[k])
				}
			}
		}
	})
}

func sameHeader(a, b Header) bool {
	if !bytes.Equal(a.Raw, b.Raw) || !bytes.Equal(a.End, b.End) || (a.End == nil) != (b.End == nil) || len(a.Fields) != len(b.Fields) {
		return false
	}
	for i := range a.Fields {
		if !bytes.Equal(a.Fields[i].Raw, b.Fields[i].Raw) || !bytes.Equal(a.Fields[i].Name, b.Fields[i].Name) {
			return false
		}
	}
	return true
}

// squash collapses runs of spaces and tabs and trims them: how far readers
// may differ in the white space of an unfolded value.
func squash(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' || r == '\t' }), " ")
}

// rfc5322Header reads in's header by RFC 5322's grammar, section 2.2 and
// the obsolete syntax of section 4 (white space before the colon,
// obs-optional; folding lines of white space only, obs-FWS), with LF
// accepted for CRLF and 8-bit bytes in values (RFC 6532). It returns the
// raw fields and the empty line ending them (nil at the end of the input),
// or ok == false when in does not start with such a header.
func rfc5322Header(in []byte) (fields [][]byte, end []byte, ok bool) {
	for len(in) > 0 {
		i := bytes.IndexByte(in, '\n')
		if i < 0 {
			return nil, nil, false // every line of a header ends in a line break
		}
		line, text := in[:i+1], in[:i]
		text, _ = bytes.CutSuffix(text, []byte("\r"))
		if bytes.ContainsAny(text, "\x00\r") {
			return nil, nil, false // NUL and a bare CR are not text
		}
		switch {
		case len(text) == 0:
			return fields, line, true
		case text[0] == ' ' || text[0] == '\t':
			if len(fields) == 0 {
				return nil, nil, false
			}
			fields[len(fields)-1] = append(fields[len(fields)-1], line...)
		default:
			colon := bytes.IndexByte(text, ':')
			if colon < 0 {
				return nil, nil, false
			}
			name := bytes.TrimRight(text[:colon], " \t")
			if len(name) == 0 {
				return nil, nil, false
			}
			for _, c := range name {
				if c < 33 || c > 126 {
					return nil, nil, false
				}
			}
			fields = append(fields, append([]byte(nil), line...))
		}
		in = in[i+1:]
	}
	return fields, nil, true
}
