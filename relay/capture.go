package relay

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/trackrelay/trackrelay/internal/durable"
)

// capture writes the copy as <CaptureDir>/<queue id>-<n>.eml, made durable
// before it counts as delivered; the workers capturing at once share the
// outbox's directory fsyncs.
func (d *Deliverer) capture(env *Envelope, idx int, rcpt string, body io.Reader) (string, error) {
	name := fmt.Sprintf("%s-%d.eml", env.ID, idx)
	err := durable.Write(filepath.Join(d.cfg.CaptureDir, name), durable.Options{SyncDir: d.outbox.sync}, func(w io.Writer) error {
		if _, err := fmt.Fprintf(w, "Return-Path: <%s>\r\nDelivered-To: %s\r\n", env.From, rcpt); err != nil {
			return err
		}
		_, err := io.Copy(w, body)
		return err
	})
	if err != nil {
		return "", fmt.Errorf("capture: %w", err)
	}
	return "250 2.0.0 captured as " + name, nil
}
