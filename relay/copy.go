package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/rewrite"
)

// instrument returns the bytes to send for one copy (the spool file itself
// when the copy is untracked or rewriting fails, else the rewritten copy)
// and the copy's tracked links, nil if none.
func (d *Deliverer) instrument(env *Envelope, idx int, f *os.File, log *slog.Logger) (io.ReadSeeker, int64, func(), []string, error) {
	nop := func() {}
	rc := env.Recipients[idx]
	opens, clicks := ModeFlags(env.Mode)
	if !rc.Tracked || env.Bounce || (!opens && !clicks) || d.minters == nil {
		d.metrics.rewrites.WithLabelValues("untracked").Inc()
		return f, env.Size, nop, nil, nil
	}
	src, err := d.dkimSource(f)
	if err != nil {
		return nil, 0, nil, nil, err
	}
	start := time.Now()
	var out interface {
		io.Writer
		io.ReadSeeker
	}
	release := nop
	if env.Size <= d.cfg.MemoryCopyLimit {
		buf, _ := d.bufs.Get().(*bytes.Buffer)
		if buf == nil {
			buf = new(bytes.Buffer)
		}
		buf.Reset()
		mb := &memCopy{buf: buf}
		out = mb
		release = func() {
			if buf.Cap() <= int(2*d.cfg.MemoryCopyLimit) {
				d.bufs.Put(buf)
			}
		}
	} else {
		tmp, err := os.CreateTemp(filepath.Join(d.spool.dir), "copy-*.tmp")
		if err != nil {
			return nil, 0, nil, nil, fmt.Errorf("temporary copy: %w", err)
		}
		os.Remove(tmp.Name()) // unlinked: nothing is left behind by a crash
		out = tmp
		release = func() { tmp.Close() }
	}
	opts := rewrite.Options{Opens: opens, Clicks: clicks, Minter: d.minters.Minter(env.ID, idx)}
	if hm, ok := opts.Minter.(HoneypotMinter); ok && d.cfg.Honeypot && clicks {
		opts.Honeypot = hm.HoneypotURL()
	}
	res, err := rewrite.Message(out, src, opts)
	d.metrics.rewriteDuration.Observe(time.Since(start).Seconds())
	if err != nil || !res.Changed {
		release()
		outcome := "unchanged"
		switch {
		case err != nil:
			outcome = "failed"
			log.Warn("rewrite failed; delivering the copy unchanged", "err", err)
		case res.Skipped == "dkim-signed":
			outcome = "dkim_signed"
		}
		d.metrics.rewrites.WithLabelValues(outcome).Inc()
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return nil, 0, nil, nil, err
		}
		return f, env.Size, nop, nil, nil
	}
	d.metrics.rewrites.WithLabelValues("rewritten").Inc()
	d.metrics.linksRewritten.Add(float64(len(res.Links)))
	var links []string
	if len(res.Links) > 0 {
		links = res.Links
	}
	size, err := out.Seek(0, io.SeekCurrent)
	if err != nil {
		release()
		return nil, 0, nil, nil, err
	}
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		release()
		return nil, 0, nil, nil, err
	}
	return out, size, release, links, nil
}

// memCopy is a bytes.Buffer that can be read back from the start.
type memCopy struct {
	buf *bytes.Buffer
	r   *bytes.Reader
}

func (m *memCopy) Write(p []byte) (int, error) { return m.buf.Write(p) }

func (m *memCopy) Read(p []byte) (int, error) {
	if m.r == nil {
		m.r = bytes.NewReader(m.buf.Bytes())
	}
	return m.r.Read(p)
}

func (m *memCopy) Seek(off int64, whence int) (int64, error) {
	if m.r == nil {
		if whence == io.SeekCurrent && off == 0 {
			return int64(m.buf.Len()), nil
		}
		m.r = bytes.NewReader(m.buf.Bytes())
	}
	return m.r.Seek(off, whence)
}

// dkimSource returns what the rewriter reads for a tracked copy: the spool
// file, or, when the message is DKIM-signed only for domains we hold keys
// for, the spool file without its DKIM-Signature fields, so that the copy
// is instrumented and then signed again. Only the header is held in memory.
func (d *Deliverer) dkimSource(f *os.File) (io.Reader, error) {
	if d.cfg.DKIM == nil {
		return f, nil
	}
	br := bufio.NewReaderSize(f, 16<<10)
	h, body, err := readHeader(br, dkimMaxHeader)
	if err == nil && d.cfg.DKIM.resignable(h) {
		var hdr bytes.Buffer
		for _, fl := range h.fields {
			if !fl.is("DKIM-Signature") {
				hdr.Write(fl.raw)
			}
		}
		hdr.Write(h.end)
		return io.MultiReader(&hdr, body), nil
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	return f, nil
}

// signCopy returns the copy to send with its DKIM-Signature in front, or
// the copy as it is when there is no key for its From domain, it is
// already signed, or signing fails: a signature is never worth a lost
// mail. A panic of the key is returned as its *guard.Panic, for the job to
// hold the copy. body is read from its start; what is returned is at its
// start.
func (d *Deliverer) signCopy(body io.ReadSeeker, size int64, log *slog.Logger) (io.ReadSeeker, int64, error) {
	if d.cfg.DKIM == nil {
		return body, size, nil
	}
	sig, err := d.cfg.DKIM.sign(body, log)
	if _, serr := body.Seek(0, io.SeekStart); serr != nil {
		return nil, 0, serr
	}
	var p *guard.Panic
	switch {
	case errors.As(err, &p):
		// Not a failure to deliver unsigned over: the job's boundary
		// holds the copy.
		return nil, 0, p
	case err == nil:
		d.metrics.dkimSignatures.WithLabelValues("signed").Inc()
		return &signedCopy{sig: []byte(sig), body: body, size: size}, size + int64(len(sig)), nil
	case errors.Is(err, errDKIMNoKey), errors.Is(err, errDKIMSigned):
		return body, size, nil
	default:
		d.metrics.dkimSignatures.WithLabelValues("error").Inc()
		log.Warn("dkim: signing failed; delivering the copy unsigned", "err", err)
		return body, size, nil
	}
}

// signedCopy reads a DKIM-Signature field followed by the copy it signs,
// and seeks over both.
type signedCopy struct {
	sig  []byte
	body io.ReadSeeker // positioned at pos-len(sig) once pos is past sig
	size int64         // of body
	pos  int64
}

func (c *signedCopy) Read(p []byte) (int, error) {
	if c.pos < int64(len(c.sig)) {
		n := copy(p, c.sig[c.pos:])
		c.pos += int64(n)
		return n, nil
	}
	n, err := c.body.Read(p)
	c.pos += int64(n)
	return n, err
}

func (c *signedCopy) Seek(off int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		off += c.pos
	case io.SeekEnd:
		off += int64(len(c.sig)) + c.size
	default:
		return 0, errors.New("signedCopy.Seek: invalid whence")
	}
	if off < 0 {
		return 0, errors.New("signedCopy.Seek: negative position")
	}
	if _, err := c.body.Seek(max(0, off-int64(len(c.sig))), io.SeekStart); err != nil {
		return 0, err
	}
	c.pos = off
	return off, nil
}
