package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-message"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"
)

func bcryptCompare(hash, pass string) error {
	return bcrypt.CompareHashAndPassword([]byte(hash), []byte(pass))
}

// writeTestCert writes a self-signed certificate for 127.0.0.1 and
// localhost, and returns the paths of the certificate and key.
func writeTestCert(t *testing.T, dir string) (string, string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	cert := filepath.Join(dir, "tls.crt")
	keyf := filepath.Join(dir, "tls.key")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyf, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600)
	return cert, keyf
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// upstreamSink is an in-process go-smtp server standing in for the smarthost.
type upstreamSink struct {
	mu   sync.Mutex
	msgs []sunkMsg
}

type sunkMsg struct {
	from, to string
	data     []byte
}

type sinkSess struct {
	s    *upstreamSink
	from string
	to   []string
}

func (ss *sinkSess) Mail(f string, _ *smtp.MailOptions) error { ss.from = f; return nil }
func (ss *sinkSess) Rcpt(t string, _ *smtp.RcptOptions) error { ss.to = append(ss.to, t); return nil }
func (ss *sinkSess) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	ss.s.mu.Lock()
	defer ss.s.mu.Unlock()
	for _, to := range ss.to {
		ss.s.msgs = append(ss.s.msgs, sunkMsg{ss.from, to, b})
	}
	return err
}
func (ss *sinkSess) Reset()        { ss.to = nil }
func (ss *sinkSess) Logout() error { return nil }

func startSink(t *testing.T) (*upstreamSink, string) {
	s := &upstreamSink{}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSess{s: s}, nil }))
	srv.Domain = "upstream.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return s, ln.Addr().String()
}

const e2eHTML = `<!DOCTYPE html><html><head><title>Quote</title></head><body>
<p>Dear client,</p>
<p>Please find <a href="https://shop.example.com/quote?id=42&amp;ref=mail%20x&plus=a+b">your quote</a> and
our <a href="https://example.com/terms#fees">terms</a>.</p>
<p>Write to <a href="mailto:sales@example.com">sales</a>.</p>
</body></html>`

func e2eMessage(pdf []byte) string {
	b64 := base64.StdEncoding.EncodeToString(pdf)
	var lines []string
	for len(b64) > 76 {
		lines = append(lines, b64[:76])
		b64 = b64[76:]
	}
	lines = append(lines, b64)
	msg := "From: Alice <alice@example.com>\nTo: bob@example.net, carol@example.org\nSubject: =?UTF-8?Q?Quote_42_=E2=80=94_?=\n =?UTF-8?Q?=C3=A9t=C3=A9?=\n" +
		"Message-ID: <quote-42@example.com>\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/mixed; boundary=\"MIX\"\n\n" +
		"--MIX\nContent-Type: multipart/alternative; boundary=\"ALT\"\n\n" +
		"--ALT\nContent-Type: text/plain; charset=utf-8\n\nYour quote: https://shop.example.com/quote?id=42\n" +
		"--ALT\nContent-Type: text/html; charset=utf-8\n\n" + e2eHTML + "\n--ALT--\n" +
		"--MIX\nContent-Type: application/pdf; name=quote.pdf\nContent-Disposition: attachment; filename=quote.pdf\n" +
		"Content-Transfer-Encoding: base64\n\n" + strings.Join(lines, "\n") + "\n--MIX--\n"
	return strings.ReplaceAll(msg, "\n", "\r\n")
}

// TestEndToEnd runs the whole relay on loopback: AUTH over STARTTLS, two
// recipients, delivery to a real SMTP upstream, pixel, click and API.
func TestEndToEnd(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	sink, upAddr := startSink(t)
	smtpAddr, httpAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("app password"), 10)
	apiKey := "test-api-key-0123456789"
	sum := sha256.Sum256([]byte(apiKey))
	otherKey := "other-key-0123456789"
	otherSum := sha256.Sum256([]byte(otherKey))
	base := "http://" + httpAddr
	cfgText := fmt.Sprintf(`data_dir: %s
smtp:
  listen: %q
  hostname: relay.test
  tls_cert_file: %s
  tls_key_file: %s
upstream:
  address: %q
  tls: none
http:
  listen: %q
metrics:
  listen: %q
tracking:
  base_url: %s
  mode: all
  scanner_window: 1ms
delivery:
  retry_initial: 100ms
  retry_max: 1s
accounts:
  - name: alice
    password_hash: %q
    api_key_sha256: %s
    self_addresses: [alice@example.com]
  - name: other
    api_key_sha256: %s
    networks: [192.0.2.0/24]
`, filepath.Join(dir, "data"), smtpAddr, cert, key, upAddr, httpAddr, metricsAddr, base, hash,
		hex.EncodeToString(sum[:]), hex.EncodeToString(otherSum[:]))
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	os.WriteFile(cfgPath, []byte(cfgText), 0o600)
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() { done <- serve(ctx, cfg, false, io.Discard, &lockedWriter{w: &logs}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, smtpAddr)
	waitListening(t, httpAddr)

	// Submit with AUTH PLAIN after STARTTLS.
	pdf := make([]byte, 9000)
	rand.Read(pdf)
	// The app submits from 127.0.0.2, so that the hits below, from
	// 127.0.0.1, are not the submitter's own ("self").
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	conn, err := d.Dial("tcp", smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	c, err := smtp.NewClientStartTLS(conn, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice", "app password")); err != nil {
		t.Fatalf("AUTH over STARTTLS: %v", err)
	}
	if err := c.Mail("alice@example.com", nil); err != nil {
		t.Fatal(err)
	}
	for _, r := range []string{"bob@example.net", "carol@example.org"} {
		if err := c.Rcpt(r, nil); err != nil {
			t.Fatal(err)
		}
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, e2eMessage(pdf))
	resp, err := w.CloseWithResponse()
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`queued as ([0-9A-Z]+)`).FindStringSubmatch(resp.StatusText)
	if m == nil {
		t.Fatalf("250 reply %q names no queue id", resp.StatusText)
	}
	id := m[1]

	// Both copies reach the upstream, each with its own tokens.
	var msgs []sunkMsg
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		sink.mu.Lock()
		msgs = append([]sunkMsg(nil), sink.msgs...)
		sink.mu.Unlock()
		if len(msgs) >= 2 {
			break
		}
	}
	if len(msgs) != 2 {
		t.Fatalf("upstream received %d copies, want 2", len(msgs))
	}
	clickRe := regexp.MustCompile(regexp.QuoteMeta(base) + `/c/[A-Za-z0-9_-]+`)
	pixelRe := regexp.MustCompile(regexp.QuoteMeta(base) + `/o/[A-Za-z0-9_-]+(\.gif)?`)
	var clicks, pixels []string
	for _, msg := range msgs {
		html, attach := parts(t, msg.data)
		if !bytes.Equal(attach, pdf) {
			t.Errorf("copy to %s: attachment not byte-identical", msg.to)
		}
		cl := clickRe.FindAllString(html, -1)
		px := pixelRe.FindAllString(html, -1)
		if len(cl) != 2 || len(px) != 1 {
			t.Fatalf("copy to %s: %d click URLs, %d pixels:\n%s", msg.to, len(cl), len(px), html)
		}
		if !strings.Contains(html, `href="mailto:sales@example.com"`) {
			t.Errorf("mailto link changed")
		}
		clicks = append(clicks, cl[0])
		pixels = append(pixels, px[0])
	}
	if clicks[0] == clicks[1] || pixels[0] == pixels[1] {
		t.Error("both copies carry the same tokens")
	}

	// The pixel is served and the click goes where the browser would have gone.
	ua := "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
	time.Sleep(50 * time.Millisecond)
	pr := get(t, pixels[0], ua)
	body, _ := io.ReadAll(pr.Body)
	pr.Body.Close()
	if pr.StatusCode != 200 || pr.Header.Get("Content-Type") != "image/gif" || len(body) != 43 {
		t.Fatalf("pixel: %d %s %d bytes", pr.StatusCode, pr.Header.Get("Content-Type"), len(body))
	}
	cr := get(t, clicks[0], ua)
	cr.Body.Close()
	if cr.StatusCode != http.StatusFound || cr.Header.Get("Location") != "https://shop.example.com/quote?id=42&ref=mail%20x&plus=a+b" {
		t.Fatalf("click: %d to %q", cr.StatusCode, cr.Header.Get("Location"))
	}
	bad := get(t, clicks[0][:len(clicks[0])-3]+"AAA", ua)
	bad.Body.Close()
	if bad.StatusCode != http.StatusNotFound {
		t.Fatalf("tampered click token: %d", bad.StatusCode)
	}

	// The API tells it all, to its account only.
	var view struct {
		ID         string `json:"id"`
		MessageID  string `json:"message_id"`
		Subject    string `json:"subject"`
		Account    string `json:"account"`
		Recipients []struct {
			Address  string `json:"address"`
			Tracked  bool   `json:"tracked"`
			Opened   bool   `json:"opened"`
			Clicks   int    `json:"clicks"`
			Delivery struct {
				Status   string `json:"status"`
				Attempts int    `json:"attempts"`
			} `json:"delivery"`
		} `json:"recipients"`
		Links []struct {
			Index  int    `json:"index"`
			URL    string `json:"url"`
			Clicks int    `json:"clicks"`
		} `json:"links"`
		Events []struct {
			Type      string `json:"type"`
			Recipient string `json:"recipient"`
			IP        string `json:"ip"`
			UserAgent string `json:"user_agent"`
			Class     string `json:"class"`
			Client    string `json:"client"`
		} `json:"events"`
	}
	api := func(ref, key string) *http.Response {
		req, _ := http.NewRequest("GET", base+"/api/v1/messages/"+ref, nil)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	for _, ref := range []string{id, url.PathEscape("<quote-42@example.com>"), url.PathEscape("quote-42@example.com")} {
		r := api(ref, apiKey)
		if r.StatusCode != 200 {
			t.Fatalf("GET %s: %d", ref, r.StatusCode)
		}
		if err := json.NewDecoder(r.Body).Decode(&view); err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	if view.ID != id || view.MessageID != "quote-42@example.com" || view.Subject != "Quote 42 — été" || view.Account != "alice" || len(view.Recipients) != 2 {
		t.Fatalf("view: %+v", view)
	}
	var opened, clicked int
	for _, rc := range view.Recipients {
		if rc.Delivery.Status != "delivered" || rc.Delivery.Attempts != 1 || !rc.Tracked {
			t.Errorf("recipient %+v", rc)
		}
		if rc.Opened {
			opened++
		}
		clicked += rc.Clicks
	}
	if opened != 1 || clicked != 1 {
		t.Errorf("opened %d, clicks %d; want 1 and 1: %+v", opened, clicked, view)
	}
	if len(view.Links) != 2 || view.Links[0].URL != "https://shop.example.com/quote?id=42&ref=mail%20x&plus=a+b" || view.Links[0].Clicks != 1 {
		t.Errorf("links %+v", view.Links)
	}
	if len(view.Events) != 2 {
		t.Fatalf("events %+v", view.Events)
	}
	for _, ev := range view.Events {
		if ev.Class != "human" || ev.IP != "127.0.0.1" || ev.UserAgent != ua || ev.Client != "Chrome" {
			t.Errorf("event %+v", ev)
		}
	}
	if r := api(id, "wrong-key"); r.StatusCode != 401 {
		t.Errorf("wrong key: %d", r.StatusCode)
	}
	if r := api(id, ""); r.StatusCode != 401 {
		t.Errorf("no key: %d", r.StatusCode)
	}
	if r := api(id, otherKey); r.StatusCode != 404 {
		t.Errorf("another account's key: %d", r.StatusCode)
	}

	// Metrics are served and count what happened.
	mr, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mr.Body)
	mr.Body.Close()
	for _, want := range []string{`trackrelay_smtp_messages_total{reason="",result="accepted"} 1`, `trackrelay_delivery_attempts_total{result="delivered"} 2`} {
		if !strings.Contains(string(mb), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(logs.String(), "app password") || strings.Contains(logs.String(), apiKey) {
		t.Error("a secret reached the log")
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func get(t *testing.T, u, ua string) *http.Response {
	t.Helper()
	req, _ := http.NewRequest("GET", u, nil)
	req.Header.Set("User-Agent", ua)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	r, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func waitListening(t *testing.T, addr string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return
		}
	}
	t.Fatalf("%s never listened", addr)
}

// parts returns the decoded HTML and the decoded attachment of a copy.
func parts(t *testing.T, data []byte) (string, []byte) {
	t.Helper()
	e, err := message.Read(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	var html string
	var attach []byte
	e.Walk(func(_ []int, p *message.Entity, err error) error {
		if err != nil {
			return err
		}
		mt, _, _ := p.Header.ContentType()
		switch mt {
		case "text/html":
			b, _ := io.ReadAll(p.Body)
			html = string(b)
		case "application/pdf":
			attach, _ = io.ReadAll(p.Body)
		}
		return nil
	})
	return html, attach
}
