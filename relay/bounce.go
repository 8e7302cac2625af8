package relay

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
)

// bounce queues an RFC 3464 delivery status notification of a failed copy
// to the envelope sender. Never to the null sender, never for a bounce.
func (d *Deliverer) bounce(env *Envelope, rc Recipient) error {
	return d.notify(env, rc, actionFailed)
}

// DSN actions (RFC 3464 section 2.3.3) the relay reports.
const (
	actionFailed  = "failed"
	actionDelayed = "delayed"
)

// errNoticePanic is notify's error when building the notice panicked:
// the caller holds the copy it was about.
var errNoticePanic = errors.New("the delivery status notification could not be built (internal error, see the log)")

// notify queues a delivery status notification with the given action.
// Building it is a job boundary: a panic there is errNoticePanic.
func (d *Deliverer) notify(env *Envelope, rc Recipient, action string) error {
	if env.From == "" || env.Bounce {
		d.log.Info("bounce not sent: null sender or bounce of a bounce", "queue_id", env.ID)
		return nil
	}
	var msg []byte
	if p := guard.Run(guard.Bounce, d.log.With("queue_id", env.ID), func() {
		guard.Check(guard.Bounce, env.ID)
		msg = d.buildNotice(env, rc, action)
	}); p != nil {
		return errNoticePanic
	}
	dsn := &Envelope{
		Account:    env.Account,
		From:       "",
		MessageID:  "",
		Mode:       ModeNone,
		AcceptedAt: time.Now().UTC(),
		Bounce:     true,
		Recipients: []Recipient{{Address: env.From, Status: StatusQueued, UpdatedAt: time.Now().UTC()}},
		// A sender whose address is not ASCII gets its notice over
		// SMTPUTF8 (RFC 6531, RFC 6533): its address is the notice's
		// envelope recipient.
		SMTPUTF8: !isASCII(env.From),
	}
	if err := d.spool.Enqueue(dsn, msg); err != nil {
		return err
	}
	if action == actionFailed {
		d.metrics.bounces.Inc()
	}
	d.log.Info("delivery status notification queued", "action", action, "queue_id", env.ID, "dsn_queue_id", dsn.ID, "to", env.From)
	d.Submit(dsn, true)
	return nil
}

// buildNotice renders the notice about copy rc of env, with the header of
// the original message when it can be read.
func (d *Deliverer) buildNotice(env *Envelope, rc Recipient, action string) []byte {
	var orig []byte
	if f, err := d.spool.Open(env.ID); err == nil {
		defer f.Close()
		hdr, _, err := readHeader(bufio.NewReader(f), 256<<10)
		if err == nil {
			for _, fl := range hdr.fields {
				orig = append(orig, fl.raw...)
			}
		}
	}
	return buildDSN(d.cfg.Hostname, env, rc, action, orig, time.Now())
}

// buildDSN renders the multipart/report of RFC 3464: a readable
// explanation, the machine-readable status, and the original header. When
// the failed recipient's address, the diagnostic or the original header is
// not ASCII, the report uses the types of RFC 6533: the status as
// message/global-delivery-status with a utf-8 Final-Recipient, the header
// as message/global-headers.
func buildDSN(host string, env *Envelope, rc Recipient, action string, origHeader []byte, now time.Time) []byte {
	boundary := "dsn-" + NewID()
	status, diag := "5.0.0", rc.LastResponse
	f := strings.Fields(rc.LastResponse)
	switch {
	case action == actionDelayed:
		status = "4.0.0"
		if len(f) > 1 && isEnhancedCode(f[1]) && f[1][0] == '4' {
			status = f[1]
		}
	case len(f) > 1 && isEnhancedCode(f[1]) && f[1][0] == '5':
		status = f[1]
	case strings.HasPrefix(rc.LastResponse, "message expired"):
		status = "4.4.7"
	}
	subject, intro := "Undelivered Mail Returned to Sender", "Your message could not be delivered to one or more recipients."
	if action == actionDelayed {
		subject = "Delayed Mail (still being retried)"
		intro = "Your message has not been delivered yet to one or more recipients. It is still being retried; you do not need to send it again."
	}
	global := !isASCII(rc.Address) || !isASCII(diag)
	reportType, charset := "delivery-status", "us-ascii"
	finalRecipient := "rfc822; " + rc.Address
	if global {
		reportType, charset = "global-delivery-status", "utf-8"
		finalRecipient = "utf-8; " + utf8AddrUnitext(rc.Address)
	}
	headersType := "text/rfc822-headers"
	if !isASCII(origHeader) {
		headersType = "message/global-headers"
	}
	// The notice's own header stays ASCII whenever the sender's address
	// has an ASCII form (a U-label domain as A-labels), so that it can
	// travel without SMTPUTF8.
	to := env.From
	if a, ok := asciiAddress(env.From); ok {
		to = a
	}
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	w("From: Mail Delivery System <MAILER-DAEMON@%s>", host)
	w("To: <%s>", to)
	w("Subject: %s", subject)
	w("Date: %s", now.Format(time.RFC1123Z))
	w("Message-ID: <%s.dsn@%s>", NewID(), host)
	w("Auto-Submitted: auto-replied")
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=%s;\r\n\tboundary=\"%s\"", reportType, boundary)
	w("")
	w("This is a MIME-encapsulated message.")
	w("")
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=%s", charset)
	w("Content-Description: Notification")
	w("")
	w("This is the mail system at host %s.", host)
	w("")
	w("%s", intro)
	w("")
	w("<%s>: %s", rc.Address, oneLine(rc.LastResponse))
	w("")
	w("--%s", boundary)
	w("Content-Type: message/%s", reportType)
	w("Content-Description: Delivery report")
	w("")
	w("Reporting-MTA: dns; %s", host)
	w("X-Trackrelay-Queue-ID: %s", env.ID)
	w("Arrival-Date: %s", env.AcceptedAt.Format(time.RFC1123Z))
	w("")
	w("Final-Recipient: %s", finalRecipient)
	w("Action: %s", action)
	w("Status: %s", status)
	if strings.HasPrefix(diag, "4") || strings.HasPrefix(diag, "5") {
		w("Diagnostic-Code: smtp; %s", oneLine(diag))
	} else {
		w("Diagnostic-Code: X-trackrelay; %s", oneLine(diag))
	}
	w("Last-Attempt-Date: %s", rc.UpdatedAt.Format(time.RFC1123Z))
	w("")
	w("--%s", boundary)
	w("Content-Type: %s", headersType)
	w("Content-Description: Undelivered message headers")
	w("")
	b.Write(bytes.ReplaceAll(bytes.ReplaceAll(origHeader, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n")))
	w("")
	w("--%s--", boundary)
	return b.Bytes()
}

func isEnhancedCode(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.Trim(p, "0123456789") != "" {
			return false
		}
	}
	return true
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
