package relay

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var (
	testRSAKey = sync.OnceValue(func() *rsa.PrivateKey {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		return k
	})
	testEdKey = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
	// testForeignKey signs for a domain the relay holds no key for.
	testForeignKey = sync.OnceValue(func() ed25519.PrivateKey {
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			panic(err)
		}
		return k
	})
)

// dkimDNS answers TXT look-ups from records, keyed by "selector._domainkey.domain".
type dkimDNS map[string]string

func (z dkimDNS) add(t testing.TB, selector, domain string, key crypto.Signer) {
	t.Helper()
	rec, err := DKIMRecord(key)
	if err != nil {
		t.Fatal(err)
	}
	z[selector+"._domainkey."+domain] = rec
}

func (z dkimDNS) lookup(name string) ([]string, error) {
	if r, ok := z[strings.TrimSuffix(name, ".")]; ok {
		return []string{r}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
}

// verifyDKIM checks every signature of msg against z and returns the
// domains that verified.
func verifyDKIM(t testing.TB, msg io.Reader, z dkimDNS) []string {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(msg, &dkim.VerifyOptions{LookupTXT: z.lookup})
	if err != nil {
		t.Fatalf("dkim verify: %v", err)
	}
	var ok []string
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("signature d=%s does not verify: %v", v.Domain, v.Err)
			continue
		}
		ok = append(ok, v.Domain)
	}
	return ok
}

// testSigner holds an RSA key for example.com and an Ed25519 key for
// example.org, and the DNS that publishes both and the foreign key of
// esp.test.
func testSigner(t testing.TB) (*DKIMSigner, dkimDNS) {
	t.Helper()
	s, err := NewDKIMSigner([]DKIMKey{
		{Domain: "example.com", Selector: "rsa1", Signer: testRSAKey()},
		{Domain: "Example.ORG.", Selector: "ed1", Signer: testEdKey()},
	})
	if err != nil {
		t.Fatal(err)
	}
	z := dkimDNS{}
	z.add(t, "rsa1", "example.com", testRSAKey())
	z.add(t, "ed1", "example.org", testEdKey())
	z.add(t, "esp", "esp.test", testForeignKey())
	return s, z
}

func dkimHTMLMsg(from string) string {
	return crlf(`From: "Alice" <` + from + `>
To: bob@example.net
Subject: Your quote
Date: Thu, 16 Apr 2026 07:30:00 +0200
Message-ID: <q1@example.com>
MIME-Version: 1.0
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

<html><body><p>Hello   Bob,</p><a href=3D"https://example.com/quote?id=3D7">Quote</a></body></html>
`)
}

func sigField(t testing.TB, msg []byte) string {
	t.Helper()
	h, _, err := readHeader(bufio.NewReader(bytes.NewReader(msg)), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	var sigs []string
	for _, f := range h.fields {
		if f.is("DKIM-Signature") {
			sigs = append(sigs, f.value())
		}
	}
	if len(sigs) != 1 {
		t.Fatalf("want one DKIM-Signature, have %d:\n%s", len(sigs), msg)
	}
	return sigs[0]
}

func TestDKIMSign_verifies(t *testing.T) {
	s, z := testSigner(t)
	for _, tc := range []struct{ name, from, d, a string }{
		{"rsa-2048", "alice@example.com", "example.com", "rsa-sha256"},
		{"ed25519", "alice@EXAMPLE.org", "example.org", "ed25519-sha256"},
		{"parent-domain", "news@mail.example.com", "example.com", "rsa-sha256"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := dkimHTMLMsg(tc.from)
			sig, err := s.Sign(strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			signed := []byte(sig + msg)
			v := sigField(t, signed)
			if got := dkimTag(v, "d"); got != tc.d {
				t.Errorf("d=%s, want %s", got, tc.d)
			}
			if got := dkimTag(v, "a"); got != tc.a {
				t.Errorf("a=%s, want %s", got, tc.a)
			}
			if got := dkimTag(v, "c"); got != "relaxed/relaxed" {
				t.Errorf("c=%s", got)
			}
			want := "From:From:To:Subject:Date:Message-ID:MIME-Version:Content-Type:Content-Transfer-Encoding"
			if got := dkimTag(v, "h"); got != want {
				t.Errorf("h=%s\nwant %s", got, want)
			}
			if d := verifyDKIM(t, bytes.NewReader(signed), z); len(d) != 1 || d[0] != tc.d {
				t.Errorf("verified %v", d)
			}
			// The oversigned From: a second From added later breaks it.
			forged := []byte(sig + "From: mallory@evil.test\r\n" + msg)
			vs, _ := dkim.VerifyWithOptions(bytes.NewReader(forged), &dkim.VerifyOptions{LookupTXT: z.lookup})
			if len(vs) != 1 || vs[0].Err == nil {
				t.Errorf("a message with an added From still verifies")
			}
		})
	}
}

func TestDKIMSign_lfOnlyAndFoldedHeaders(t *testing.T) {
	s, z := testSigner(t)
	msg := "From: Alice\n <alice@example.com>\nTo: bob@example.net,\n\tcarol@example.net\nCc: dave@example.net\n" +
		"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\nList-Unsubscribe: <https://example.com/u?x=1>\nList-Unsubscribe-Post: List-Unsubscribe=One-Click\n" +
		"X-Other: not signed\n\nbody line   with  spaces \n\n\n"
	sig, err := s.Sign(strings.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(sig, "\r") {
		t.Errorf("signature of an LF message has CR: %q", sig)
	}
	v := sigField(t, []byte(sig+msg))
	if got, want := dkimTag(v, "h"), "From:From:To:Cc:Subject:List-Unsubscribe:List-Unsubscribe-Post"; got != want {
		t.Errorf("h=%s, want %s", got, want)
	}
	if d := verifyDKIM(t, strings.NewReader(sig+msg), z); len(d) != 1 {
		t.Errorf("verified %v", d)
	}
	// Wire form (CRLF) verifies too.
	wire := strings.ReplaceAll(sig+msg, "\n", "\r\n")
	if d := verifyDKIM(t, strings.NewReader(wire), z); len(d) != 1 {
		t.Errorf("CRLF form: verified %v", d)
	}
}

func TestDKIMSign_skips(t *testing.T) {
	s, _ := testSigner(t)
	if _, err := s.Sign(strings.NewReader(dkimHTMLMsg("alice@other.test"))); err != errDKIMNoKey {
		t.Errorf("foreign From: err %v, want errDKIMNoKey", err)
	}
	if _, err := s.Sign(strings.NewReader(dkimHTMLMsg("alice@notexample.com"))); err != errDKIMNoKey {
		t.Errorf("look-alike domain: err %v, want errDKIMNoKey", err)
	}
	signed := "DKIM-Signature: v=1; d=example.com; s=x; b=\r\n" + dkimHTMLMsg("alice@example.com")
	if _, err := s.Sign(strings.NewReader(signed)); err != errDKIMSigned {
		t.Errorf("signed message: err %v, want errDKIMSigned", err)
	}
	for _, bad := range []string{
		"From: a@example.com\r\nFrom: b@example.com\r\n\r\nx\r\n",
		"To: b@example.net\r\n\r\nno from\r\n",
		"From: nobody\r\n\r\nx\r\n",
		"From: a@example.com\r\nSubject: no body",
	} {
		if _, err := s.Sign(strings.NewReader(bad)); err == nil || err == errDKIMNoKey {
			t.Errorf("%q: err %v, want a signing error", bad, err)
		}
	}
}

func TestFromDomain(t *testing.T) {
	for in, want := range map[string]string{
		`alice@Example.COM`:                         "example.com",
		`"Doe, Jane" <jane@example.com>`:            "example.com",
		`=?x-unknown?q?J=E4ne?= <jane@example.org>`: "example.org",
		`Jäne "broken <jane@example.net>`:           "example.net",
	} {
		got, err := fromDomain(in)
		if err != nil || got != want {
			t.Errorf("fromDomain(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

func TestParseDKIMKey(t *testing.T) {
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	for name, data := range map[string][]byte{
		"rsa-pkcs8":     pkcs8(testRSAKey()),
		"rsa-pkcs1":     pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(testRSAKey())}),
		"ed25519-pkcs8": pkcs8(testEdKey()),
	} {
		if _, err := ParseDKIMKey(data); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "small.pem")
	if err := os.WriteFile(path, pkcs8(small), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadDKIMKey(path)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "1024 bits") {
		t.Errorf("1024-bit key: %v", err)
	}
	if _, err := ParseDKIMKey([]byte("not a key")); err == nil {
		t.Error("garbage accepted")
	}
	if _, err := NewDKIMSigner([]DKIMKey{{Domain: "example.com", Selector: "a", Signer: small}}); err == nil {
		t.Error("NewDKIMSigner accepted a 1024-bit key")
	}
	if _, err := NewDKIMSigner([]DKIMKey{
		{Domain: "example.com", Selector: "a", Signer: testEdKey()},
		{Domain: "EXAMPLE.com", Selector: "b", Signer: testEdKey()},
	}); err == nil {
		t.Error("two keys for one domain accepted")
	}
}

func TestSignedCopy_seek(t *testing.T) {
	c := &signedCopy{sig: []byte("SIG\r\n"), body: strings.NewReader("body"), size: 4}
	for range 2 {
		b, err := io.ReadAll(c)
		if err != nil || string(b) != "SIG\r\nbody" {
			t.Fatalf("read %q, %v", b, err)
		}
		if _, err := c.Seek(0, io.SeekStart); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := c.Seek(0, io.SeekEnd); n != 9 {
		t.Errorf("size %d", n)
	}
	c.Seek(6, io.SeekStart)
	if b, _ := io.ReadAll(c); string(b) != "ody" {
		t.Errorf("read from 6: %q", b)
	}
}

// dkimHarness is a harness with an upstream sink whose deliverer signs.
func dkimHarness(t *testing.T, tune func(*DeliveryConfig)) (*harness, dkimDNS) {
	t.Helper()
	s, z := testSigner(t)
	h := newHarness(t, harnessOpts{upstream: true, noStart: true})
	h.d.cfg.DKIM = s
	if tune != nil {
		tune(&h.d.cfg)
	}
	if err := h.d.Start(); err != nil {
		t.Fatal(err)
	}
	return h, z
}

func dkimCount(h *harness, result string) float64 {
	return testutil.ToFloat64(h.d.metrics.dkimSignatures.WithLabelValues(result))
}

func TestDelivery_dkimSignsInstrumentedCopy(t *testing.T) {
	h, z := dkimHarness(t, nil)
	if _, err := h.send("alice@example.com", []string{"bob@example.net"}, dkimHTMLMsg("alice@example.com")); err != nil {
		t.Fatal(err)
	}
	m := h.sink.waitFor(t, 1)[0]
	if !bytes.Contains(m.Data, []byte("http://t.test/c/")) {
		t.Fatalf("copy not instrumented:\n%s", m.Data)
	}
	if !bytes.HasPrefix(m.Data, []byte("DKIM-Signature:")) {
		t.Errorf("the signature is not the first field:\n%s", m.Data)
	}
	sigField(t, m.Data)
	if d := verifyDKIM(t, bytes.NewReader(m.Data), z); len(d) != 1 || d[0] != "example.com" {
		t.Errorf("verified %v", d)
	}
	if n := dkimCount(h, "signed"); n != 1 {
		t.Errorf("signed metric %v", n)
	}
}

func TestDelivery_dkimSignsUntrackedAndLargeCopies(t *testing.T) {
	// MemoryCopyLimit 1: every rewritten copy goes through a temporary file.
	h, z := dkimHarness(t, func(c *DeliveryConfig) { c.MemoryCopyLimit = 1 })
	if _, err := h.send("alice@example.com", []string{"bob@example.net", "carol@example.org"}, mixedMsg()); err != nil {
		t.Fatal(err)
	}
	untracked := strings.Replace(dkimHTMLMsg("alice@example.org"), "Subject:", "X-Track: none\r\nSubject:", 1)
	if _, err := h.send("alice@example.org", []string{"dan@example.net"}, untracked); err != nil {
		t.Fatal(err)
	}
	msgs := h.sink.waitFor(t, 3)
	for _, m := range msgs {
		want := "example.com"
		if m.To == "dan@example.net" {
			want = "example.org"
			if strings.Contains(htmlOf(t, m.Data), "t.test") {
				t.Errorf("X-Track: none copy was instrumented")
			}
		} else {
			if !strings.Contains(htmlOf(t, m.Data), "http://t.test/c/") {
				t.Errorf("copy to %s not instrumented", m.To)
			}
			if !bytes.Equal(attachmentOf(t, m.Data), attachment) {
				t.Errorf("copy to %s: attachment changed", m.To)
			}
		}
		if d := verifyDKIM(t, bytes.NewReader(m.Data), z); len(d) != 1 || d[0] != want {
			t.Errorf("copy to %s: verified %v, want %s", m.To, d, want)
		}
	}
	if n := dkimCount(h, "signed"); n != 3 {
		t.Errorf("signed metric %v", n)
	}
}

func TestDelivery_dkimResignsOurOwnSignature(t *testing.T) {
	h, z := dkimHarness(t, nil)
	var pre bytes.Buffer
	err := dkim.Sign(&pre, strings.NewReader(dkimHTMLMsg("alice@example.com")), &dkim.SignOptions{
		Domain: "example.com", Selector: "rsa1", Signer: testRSAKey(),
	})
	if err != nil {
		t.Fatal(err)
	}
	oldB := dkimTag(sigField(t, pre.Bytes()), "b")
	if _, err := h.send("alice@example.com", []string{"bob@example.net"}, pre.String()); err != nil {
		t.Fatal(err)
	}
	m := h.sink.waitFor(t, 1)[0]
	if !bytes.Contains(m.Data, []byte("http://t.test/c/")) {
		t.Fatalf("copy not instrumented:\n%s", m.Data)
	}
	if got := dkimTag(sigField(t, m.Data), "b"); got == oldB {
		t.Error("the old signature was kept")
	}
	if d := verifyDKIM(t, bytes.NewReader(m.Data), z); len(d) != 1 || d[0] != "example.com" {
		t.Errorf("verified %v", d)
	}
	if n := testutil.ToFloat64(h.d.metrics.rewrites.WithLabelValues("rewritten")); n != 1 {
		t.Errorf("rewritten metric %v", n)
	}
}

func TestDelivery_dkimForeignSignaturePassesUnchanged(t *testing.T) {
	h, z := dkimHarness(t, nil)
	var pre bytes.Buffer
	err := dkim.Sign(&pre, strings.NewReader(dkimHTMLMsg("alice@example.com")), &dkim.SignOptions{
		Domain: "esp.test", Selector: "esp", Signer: testForeignKey(),
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationSimple,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.send("alice@example.com", []string{"bob@example.net"}, pre.String()); err != nil {
		t.Fatal(err)
	}
	m := h.sink.waitFor(t, 1)[0]
	if !bytes.HasSuffix(m.Data, pre.Bytes()) {
		t.Errorf("the foreign-signed message was changed:\n%s", m.Data)
	}
	if d := verifyDKIM(t, bytes.NewReader(m.Data), z); len(d) != 1 || d[0] != "esp.test" {
		t.Errorf("verified %v", d)
	}
	if n := testutil.ToFloat64(h.d.metrics.rewrites.WithLabelValues("dkim_signed")); n != 1 {
		t.Errorf("dkim_signed rewrite metric %v", n)
	}
	if n := dkimCount(h, "signed") + dkimCount(h, "error"); n != 0 {
		t.Errorf("dkim metrics %v", n)
	}
}

func TestDelivery_dkimFailureDeliversUnsigned(t *testing.T) {
	h, _ := dkimHarness(t, nil)
	// Two From fields: not signable, still delivered.
	msg := "From: bob@example.com\r\n" + dkimHTMLMsg("alice@example.com")
	if _, err := h.send("alice@example.com", []string{"bob@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	// No key for the From domain: delivered unsigned, not an error.
	if _, err := h.send("alice@example.com", []string{"carol@example.net"}, dkimHTMLMsg("alice@other.test")); err != nil {
		t.Fatal(err)
	}
	for _, m := range h.sink.waitFor(t, 2) {
		if bytes.Contains(m.Data, []byte("DKIM-Signature")) {
			t.Errorf("copy to %s signed", m.To)
		}
		if !bytes.Contains(m.Data, []byte("http://t.test/c/")) {
			t.Errorf("copy to %s not instrumented", m.To)
		}
	}
	if n := dkimCount(h, "error"); n != 1 {
		t.Errorf("error metric %v", n)
	}
}

// bigMessage writes a message with a base64 attachment of n bytes to a file.
func bigMessage(t testing.TB, n int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "big.eml")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprint(w, crlf(`From: alice@example.com
To: bob@example.net
Subject: Big
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="B"

--B
Content-Type: text/html

<a href="https://example.com/">x</a>
--B
Content-Type: application/octet-stream
Content-Transfer-Encoding: base64

`))
	line := make([]byte, 57)
	enc := make([]byte, 76)
	for i := 0; i < n; i += len(line) {
		for j := range line {
			line[j] = byte(i + j*31)
		}
		base64.StdEncoding.Encode(enc, line)
		w.Write(enc)
		w.WriteString("\r\n")
	}
	w.WriteString("--B--\r\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}

func heapObjects() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

func TestDKIMSign_largeMessageBoundedMemory(t *testing.T) {
	s, z := testSigner(t)
	path := bigMessage(t, 20<<20)
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	// A low GC target, so the heap stays near what is live.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	base := heapObjects()
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if v := heapObjects(); v > peak.Load() {
				peak.Store(v)
			}
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	sig, err := s.Sign(f)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	grew := int64(peak.Load()) - int64(base)
	t.Logf("signing %d MB: heap grew by at most %.1f MB", (20<<20)*4/3>>20, float64(grew)/(1<<20))
	if grew > 10<<20 {
		t.Errorf("heap grew by %d MB while signing a 27 MB message", grew>>20)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if d := verifyDKIM(t, io.MultiReader(strings.NewReader(sig), f), z); len(d) != 1 {
		t.Errorf("verified %v", d)
	}
}

// BenchmarkDKIMSign signs the sample messages of shared/bench (the 20 KB
// newsletter and the 5 MB attachment) with RSA-2048 and Ed25519 keys.
func BenchmarkDKIMSign(b *testing.B) {
	for _, file := range []string{"msg-html-20k.eml", "msg-attach-5m.eml"} {
		msg, err := os.ReadFile(filepath.Join("../../shared/bench", file))
		if err != nil {
			b.Skip("sample message not found:", err)
		}
		for _, k := range []struct {
			name string
			key  crypto.Signer
		}{{"rsa2048", testRSAKey()}, {"ed25519", testEdKey()}} {
			b.Run(strings.TrimSuffix(file, ".eml")+"/"+k.name, func(b *testing.B) {
				s, err := NewDKIMSigner([]DKIMKey{{Domain: "lindqvist-cycling.example.com", Selector: "s", Signer: k.key}})
				if err != nil {
					b.Fatal(err)
				}
				r := bytes.NewReader(msg)
				b.SetBytes(int64(len(msg)))
				b.ReportAllocs()
				for b.Loop() {
					if _, err := s.Sign(r); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkRelay_submitAndDeliverDKIM is BenchmarkRelay_submitAndDeliver
// with every copy DKIM-signed, to compare messages per second.
func BenchmarkRelay_submitAndDeliverDKIM(b *testing.B) {
	msg := benchMessage(b)
	for _, k := range []struct {
		name string
		key  crypto.Signer
	}{{"rsa2048", testRSAKey()}, {"ed25519", testEdKey()}} {
		b.Run(k.name, func(b *testing.B) {
			s, err := NewDKIMSigner([]DKIMKey{{Domain: "lindqvist-cycling.example.com", Selector: "s", Signer: k.key}})
			if err != nil {
				b.Fatal(err)
			}
			h := newHarness(b, harnessOpts{upstream: true, upConns: 8, noStart: true, networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
			h.d.cfg.DKIM = s
			if err := h.d.Start(); err != nil {
				b.Fatal(err)
			}
			total := runRelayLoad(b, h, msg)
			if n := dkimCount(h, "signed"); n < float64(total) {
				b.Errorf("signed %v of %d copies", n, total)
			}
		})
	}
}
