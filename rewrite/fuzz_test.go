package rewrite

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzRewrite checks that Message never panics (a panic is recovered into
// errInternal, which counts as a failure here), that an unchanged result is
// the input, and that when go-message can read the input it can read the
// output, with the same MIME tree.
func FuzzRewrite(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.eml")
	for _, name := range []string{
		"enmime--html-mime-inline.eml", "enmime--mime-mixed-related.eml", "enmime--quoted-printable-mime.eml",
		"mailparser--nested.eml", "mikel-mail--mime_emails--raw_email7.eml", "template--mailgun-action.eml",
		"mikel-mail--attachment_emails--attachment_message_rfc822.eml", "php-mime-mail-parser--m0001.eml",
	} {
		seeds = append(seeds, filepath.Join(corpusDir, name))
	}
	for _, s := range seeds {
		if b, err := os.ReadFile(s); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte("Content-Type: text/html\n\n<a href=http://x>y</a><body><blockquote type=cite><img src=https://t.example.com/o/x></blockquote>"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var out bytes.Buffer
		res, err := Message(&out, bytes.NewReader(in), allOpts(newRecMinter()))
		if errors.Is(err, errInternal) {
			t.Fatalf("panic: %v", err)
		}
		if err != nil {
			return
		}
		// Block copies match the line-at-a-time walk byte for byte.
		var ref bytes.Buffer
		lineAtATime = true
		_, rerr := Message(&ref, bytes.NewReader(in), allOpts(newRecMinter()))
		lineAtATime = false
		if rerr != nil || !bytes.Equal(ref.Bytes(), out.Bytes()) {
			t.Fatalf("block copies differ from line copies (%v)", rerr)
		}
		if !res.Changed {
			if !bytes.Equal(out.Bytes(), in) {
				t.Fatalf("unchanged (%s) but different", res.Skipped)
			}
			return
		}
		before, err := rawTree(in)
		if err != nil {
			return
		}
		after, err := rawTree(out.Bytes())
		if err != nil {
			t.Fatalf("output unreadable: %v", err)
		}
		if !sameShape(before, after) {
			t.Fatalf("MIME tree changed")
		}
	})
}

func sameShape(a, b *rawNode) bool {
	if a.mediaType != b.mediaType || len(a.children) != len(b.children) {
		return false
	}
	for i := range a.children {
		if !sameShape(a.children[i], b.children[i]) {
			return false
		}
	}
	return true
}
