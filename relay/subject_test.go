package relay

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Subject reaches the ledger decoded (RFC 2047: UTF-8 and ISO-8859-1,
// B and Q; a word that cannot be decoded as written; folding undone) and
// is kept in the spool with the message; a message without one has none.
// The copy delivered keeps the field byte for byte.
func TestServer_subject(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, c := range []struct {
		name, field, want string
	}{
		{"UTF-8 B", "Subject: =?UTF-8?B?RGV2aXMgbsKwIDQyIOKAlCDDqXTDqQ==?=\n", "Devis n° 42 — été"},
		{"UTF-8 Q", "Subject: =?utf-8?Q?Facture_=C3=A0_r=C3=A9gler?=\n", "Facture à régler"},
		{"ISO-8859-1", "Subject: =?ISO-8859-1?Q?Gr=FC=DFe_aus_K=F6ln?=\n", "Grüße aus Köln"},
		{"a broken word", "Subject: Offer =?x-no-such-charset?Q?caf=E9?= and =?UTF-8?B?w6l0w6k=?=\n", "Offer =?x-no-such-charset?Q?caf=E9?= and été"},
		{"folded", "Subject: Your quote for the\n =?UTF-8?Q?r=C3=A9novation?=\n =?UTF-8?Q?_works?= is ready\n", "Your quote for the rénovation works is ready"},
		{"none", "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			msg := "From: alice@example.com\nTo: bob@example.net\n" + c.field + "\nHello.\n"
			reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(msg))
			if err != nil {
				t.Fatal(err)
			}
			id := queueID(t, reply)
			if env := h.ledger.waitAccepted(t, id); env.Subject != c.want {
				t.Errorf("ledger's subject = %q, want %q", env.Subject, c.want)
			}
			h.ledger.waitStatus(t, id, 0, StatusDelivered)
			b, err := os.ReadFile(filepath.Join(h.dir, "outbox", id+"-0.eml"))
			if err != nil {
				t.Fatal(err)
			}
			if c.field != "" && !strings.Contains(string(b), crlf(c.field)) {
				t.Errorf("the copy's Subject changed:\n%s", b)
			}
		})
	}
}

// The subject is part of the spooled envelope: a relay that restarts
// before its deliverer reported the message reports it with its subject.
func TestServer_subjectSpooled(t *testing.T) {
	dir := t.TempDir()
	h := newHarness(t, harnessOpts{dir: dir, noStart: true})
	msg := "From: alice@example.com\nTo: bob@example.net\nSubject: =?UTF-8?Q?Devis_=C3=A9t=C3=A9?=\n\nHello.\n"
	reply, err := h.send("alice@example.com", []string{"bob@example.net"}, crlf(msg))
	if err != nil {
		t.Fatal(err)
	}
	id := queueID(t, reply)
	h.srv.smtp.Close()
	h.spool.Close()

	spool, err := OpenSpool(filepath.Join(dir, "spool"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	ledger := newMemLedger()
	d := NewDeliverer(DeliveryConfig{CaptureDir: filepath.Join(dir, "outbox"), RetryInitial: 50 * time.Millisecond}, spool, ledger, testMinters{}, nil, nil)
	if err := d.Start(); err != nil {
		t.Fatal(err)
	}
	defer d.Shutdown(context.Background())
	if env := ledger.waitAccepted(t, id); env.Subject != "Devis été" {
		t.Errorf("subject reported after the restart = %q", env.Subject)
	}
}
