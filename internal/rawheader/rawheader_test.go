package rawheader

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

// read reads in's header with a bufio.Reader of the given size and returns
// the header, and the body as the caller sees it: rest, then what is left.
func read(t testing.TB, in []byte, size, max int) (Header, []byte, []byte, error) {
	t.Helper()
	br := bufio.NewReaderSize(bytes.NewReader(in), size)
	h, rest, err := Read(Lines(br), max)
	if err != nil {
		return h, nil, nil, err
	}
	left, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return h, rest, append(append([]byte(nil), rest...), left...), nil
}

func names(h Header) string {
	var n []string
	for _, f := range h.Fields {
		n = append(n, string(f.Name))
	}
	return strings.Join(n, ",")
}

func TestRead(t *testing.T) {
	for _, c := range []struct {
		name, in    string
		fields, end string
		rest        string // the line the header broke off at, "" for none
	}{
		{name: "plain", in: "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n", fields: "From,Subject", end: "\r\n"},
		{name: "lf only", in: "From: a\nSubject: hi\n\nbody\n", fields: "From,Subject", end: "\n"},
		// RFC 5322 section 4.5.3, obs-optional: white space before the colon.
		{name: "space before colon", in: "Subject : hi\r\nTo: b@example.net\r\nContent-Type: text/html\r\n\r\n<p>", fields: "Subject,To,Content-Type", end: "\r\n"},
		{name: "tabs before colon", in: "Subject\t \t: hi\r\n\r\n", fields: "Subject", end: "\r\n"},
		{name: "no space after colon", in: "Subject:hi\r\n\r\n", fields: "Subject", end: "\r\n"},
		// Section 4.2, obs-FWS: a folding line of white space only.
		{name: "blank folding line", in: "To: a@example.com,\r\n \r\n\tb@example.com\r\nX: y\r\n\r\n", fields: "To,X", end: "\r\n"},
		{name: "folded", in: "Content-Type: multipart/mixed;\r\n\tboundary=\"b\"\r\n\r\n", fields: "Content-Type", end: "\r\n"},
		{name: "8-bit value", in: "Subject: caf\xc3\xa9\r\n\r\n", fields: "Subject", end: "\r\n"},
		{name: "odd name bytes", in: "X-{odd}~!#: v\r\n\r\n", fields: "X-{odd}~!#", end: "\r\n"},
		{name: "empty header", in: "\r\nbody", end: "\r\n"},
		{name: "all header", in: "Subject: hi\r\nTo: b", fields: "Subject,To"},
		{name: "empty input", in: ""},
		// Not a field even under the obsolete syntax: the body starts there.
		{name: "body line", in: "Subject: hi\r\nthis line is body\r\nmore\r\n", fields: "Subject", rest: "this line is body\r\n"},
		{name: "name then spaces only", in: "Subject: hi\r\nSubject  \r\n\r\n", fields: "Subject", rest: "Subject  \r\n"},
		{name: "empty name", in: "Subject: hi\r\n: x\r\n\r\n", fields: "Subject", rest: ": x\r\n"},
		{name: "space inside name", in: "Subject: hi\r\nSub ject: x\r\n\r\n", fields: "Subject", rest: "Sub ject: x\r\n"},
		{name: "control in name", in: "A: 1\r\nB\x00: 2\r\n\r\n", fields: "A", rest: "B\x00: 2\r\n"},
		{name: "continuation first", in: " Subject: hi\r\n\r\n", rest: " Subject: hi\r\n"},
		{name: "bare CR line", in: "A: 1\r\n\r\r\nB: 2\r\n", fields: "A", rest: "\r\r\n"},
		{name: "html right away", in: "Content-Type: text/html\r\n<html><body>\r\n", fields: "Content-Type", rest: "<html><body>\r\n"},
		{name: "unterminated last line", in: "A: 1\r\nno colon", fields: "A", rest: "no colon"},
	} {
		for _, size := range []int{16, 4096} {
			h, rest, body, err := read(t, []byte(c.in), size, 1<<20)
			if err != nil {
				t.Fatalf("%s: %v", c.name, err)
			}
			if got := names(h); got != c.fields {
				t.Errorf("%s (%d): fields %q, want %q", c.name, size, got, c.fields)
			}
			if string(h.End) != c.end || (h.End == nil) != (c.end == "") {
				t.Errorf("%s (%d): end %q, want %q", c.name, size, h.End, c.end)
			}
			if c.rest != "" && !bytes.HasPrefix(body, []byte(c.rest)) || (rest == nil) != (c.rest == "") {
				t.Errorf("%s (%d): rest %q, body %q, want the body to start with %q", c.name, size, rest, body, c.rest)
			}
			if got := string(h.Raw) + string(body); got != c.in {
				t.Errorf("%s (%d): header and body are %q, want %q", c.name, size, got, c.in)
			}
			checkInvariants(t, h)
		}
	}
}

// checkInvariants: the fields, then End, are Raw; each field starts with its
// name, optional white space and a colon.
func checkInvariants(t testing.TB, h Header) {
	t.Helper()
	var cat []byte
	for _, f := range h.Fields {
		cat = append(cat, f.Raw...)
		rest, ok := bytes.CutPrefix(f.Raw, f.Name)
		if !ok || len(f.Name) == 0 || !bytes.HasPrefix(bytes.TrimLeft(rest, " \t"), []byte(":")) {
			t.Fatalf("field %q named %q", f.Raw, f.Name)
		}
		if cap(f.Raw) != len(f.Raw) {
			t.Fatalf("field %q may grow into the next", f.Raw)
		}
	}
	cat = append(cat, h.End...)
	if !bytes.Equal(cat, h.Raw) {
		t.Fatalf("fields and end %q are not the raw block %q", cat, h.Raw)
	}
}

func TestValue(t *testing.T) {
	for raw, want := range map[string]string{
		"Subject: hi\r\n":          "hi",
		"Subject :  hi  \r\n":      "hi",
		"Subject:hi":               "hi",
		"Subject:\r\n":             "",
		"To: a,\r\n b\r\n":         "a, b",
		"To: a,\r\n\tb\n":          "a,\tb",
		"To:\r\n a\r\n \r\n b\r\n": "a  b",
		"Subject: a:b:c\r\n":       "a:b:c",
		"Content-Type: text/html;\r\n\tcharset=utf-8\r\n": "text/html;\tcharset=utf-8",
	} {
		f := Field{Raw: []byte(raw)}
		if got := f.Value(); got != want {
			t.Errorf("Value of %q = %q, want %q", raw, got, want)
		}
	}
}

func TestGet(t *testing.T) {
	h, _, _, err := read(t, []byte("X-Track : none\r\nSubject: one\r\nsubject: two\r\n\r\n"), 4096, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := h.Get("x-track"); !ok || v != "none" {
		t.Errorf("Get(x-track) = %q, %v", v, ok)
	}
	if v, _ := h.Get("SUBJECT"); v != "one" {
		t.Errorf("Get(SUBJECT) = %q, want the first", v)
	}
	if _, ok := h.Get("From"); ok || h.Has("from") || !h.Has("Subject") {
		t.Error("Has/Get of absent or present fields")
	}
}

func TestReadLimit(t *testing.T) {
	in := []byte("Subject: " + strings.Repeat("x", 100) + "\r\n\r\nbody")
	hdrLen := len(in) - len("body")
	for _, size := range []int{16, 4096} {
		if _, _, _, err := read(t, in, size, hdrLen-1); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%d: one byte over the limit: %v", size, err)
		}
		if h, _, _, err := read(t, in, size, hdrLen); err != nil || len(h.Raw) != hdrLen {
			t.Errorf("%d: at the limit: %v", size, err)
		}
	}
	// A long name arrives in fragments and is still read as a field.
	long := "X-" + strings.Repeat("n", 100)
	h, _, _, err := read(t, []byte(long+" : v\r\n\r\n"), 16, 1<<20)
	if err != nil || names(h) != long {
		t.Errorf("long name: %q, %v", names(h), err)
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("boom")
	calls := 0
	_, _, err := Read(func() ([]byte, bool, error) {
		calls++
		if calls == 1 {
			return []byte("Subject: hi\r\n"), true, nil
		}
		return nil, true, boom
	}, 1<<20)
	if err != boom {
		t.Errorf("err = %v, want the LineFunc's error as it is", err)
	}
}

func TestFieldName(t *testing.T) {
	for line, want := range map[string]string{
		"DKIM-Signature: v=1": "DKIM-Signature",
		"DKIM-Signature :v=1": "DKIM-Signature",
		"DKIM-Signature":      "",
		" DKIM-Signature: v":  "",
		": v":                 "",
	} {
		n, ok := FieldName([]byte(line))
		if string(n) != want || ok != (want != "") {
			t.Errorf("FieldName(%q) = %q, %v", line, n, ok)
		}
	}
}
