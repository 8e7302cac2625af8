package relay

import (
	"bufio"
	"bytes"
	"io"
	"sync"
)

// dotStuffer writes a message body in the DATA encoding of RFC 5321
// section 4.5.2 straight to the upstream connection: every line ends in
// CRLF (a bare LF becomes CRLF) and a line that starts with a dot gets a
// second one, as does a dot after a bare CR. It does what go-smtp's DATA writer (net/textproto's
// DotWriter) does, a line at a time instead of a byte at a time: on a
// 5 MB attachment that writer was a third of the relay's CPU.
//
// It is used only on a connection whose transport the relay holds (no
// TLS, or implicit TLS; after STARTTLS the TLS layer is go-smtp's). Its
// last line ending is held back: finish writes it through the client's
// own DATA writer, whose Close then ends the data with ".\r\n" and reads
// the reply, so go-smtp's state stays its own. The body reaches the
// connection before anything of the client's writer, whose buffer is
// empty from the DATA command until that last line ending.
type dotStuffer struct {
	bw        *bufio.Writer
	lineStart bool // the next byte starts a line
	heldCR    bool // a CR ended the last write; not sent yet
	owedEOL   bool // the last line's CRLF is not sent yet
	err       error
}

// dotBufSize is the write buffer to the connection: 64 KiB, about one
// socket write per 64 KiB of body.
const dotBufSize = 64 << 10

var dotBufs = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, dotBufSize) }}

func newDotStuffer(conn io.Writer) *dotStuffer {
	bw := dotBufs.Get().(*bufio.Writer)
	bw.Reset(conn)
	return &dotStuffer{bw: bw, lineStart: true}
}

// payOwed sends the held-back line ending (or bare CR) before more bytes,
// and reports whether it sent a bare CR.
func (d *dotStuffer) payOwed() (bareCR bool) {
	if d.owedEOL {
		d.putString("\r\n")
		d.owedEOL = false
	}
	if d.heldCR {
		d.putString("\r")
		d.heldCR = false
		return true
	}
	return false
}

// putMid writes bytes from within a line. A dot right after a bare CR is
// doubled, as at the start of a line: a receiver that takes a bare CR for
// a line break must not read "<CR>.<CR><LF>" as the end of the data
// (SMTP smuggling). Mail has no bare CRs (RFC 5322), so this changes
// nothing of a well-formed message.
func (d *dotStuffer) putMid(b []byte) {
	if d.err == nil {
		d.err = writeCRDots(d.bw, b)
	}
}

var crDot = []byte("\r.")

// writeCRDots writes b to w with a second dot after every "\r.".
func writeCRDots(w io.Writer, b []byte) error {
	for {
		i := bytes.Index(b, crDot)
		if i < 0 {
			_, err := w.Write(b)
			return err
		}
		if _, err := w.Write(b[:i+2]); err != nil {
			return err
		}
		if _, err := io.WriteString(w, "."); err != nil {
			return err
		}
		b = b[i+2:]
	}
}

func (d *dotStuffer) put(b []byte) {
	if d.err == nil {
		_, d.err = d.bw.Write(b)
	}
}

func (d *dotStuffer) putString(s string) {
	if d.err == nil {
		_, d.err = d.bw.WriteString(s)
	}
}

// Write encodes p; a line may span any number of calls.
func (d *dotStuffer) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 && d.err == nil {
		if d.heldCR && p[0] == '\n' {
			// The held CR and this LF end the line.
			d.heldCR = false
			p = p[1:]
			d.lineStart, d.owedEOL = true, true
			continue
		}
		if d.payOwed() && p[0] == '.' {
			d.putString(".") // a dot after a bare CR: see putMid
		}
		if d.lineStart {
			d.lineStart = false
			if p[0] == '.' {
				d.putString(".")
			}
		}
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			if p[len(p)-1] == '\r' {
				d.putMid(p[:len(p)-1])
				d.heldCR = true
			} else {
				d.putMid(p)
			}
			break
		}
		line := p[:i]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		d.putMid(line)
		d.lineStart, d.owedEOL = true, true
		p = p[i+1:]
	}
	if d.err != nil {
		return 0, d.err
	}
	return n, nil
}

// finish sends the body and writes its last line ending through w, the
// client's DATA writer, which is then at the start of a line so that its
// Close adds only the final ".\r\n". A body that does not end in a line
// ending gets one, as the client's writer would add; so does an empty one.
func (d *dotStuffer) finish(w io.Writer) error {
	// A held CR ends the body: the CRLF below replaces it.
	d.heldCR, d.owedEOL = false, false
	if d.err == nil {
		d.err = d.bw.Flush()
	}
	d.release()
	if d.err != nil {
		return d.err
	}
	_, err := io.WriteString(w, "\r\n")
	return err
}

// release returns the buffer, with whatever it holds unsent.
func (d *dotStuffer) release() {
	if d.bw != nil {
		d.bw.Reset(nil)
		dotBufs.Put(d.bw)
		d.bw = nil
	}
}

// crDotGuard doubles a dot after a bare CR in a body written through
// go-smtp's DATA writer (after STARTTLS), as dotStuffer does on the other
// transports. A CR followed by a dot is bare by definition.
type crDotGuard struct {
	w  io.Writer
	cr bool // the last byte written was a CR
}

func (g *crDotGuard) Write(p []byte) (int, error) {
	n := len(p)
	if n == 0 {
		return 0, nil
	}
	if g.cr && p[0] == '.' {
		if _, err := io.WriteString(g.w, "."); err != nil {
			return 0, err
		}
	}
	g.cr = p[n-1] == '\r'
	if err := writeCRDots(g.w, p); err != nil {
		return 0, err
	}
	return n, nil
}
