package main

// Attack tests against the whole server as `trackrelay serve` wires it:
// the relay, the tracker and their limits as the config file sets them.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// bcrypt cost: at least 10 is accepted, below is refused by check-config.
func TestAttack_bcryptCostConfig(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		cost int
		ok   bool
	}{{4, false}, {9, false}, {10, true}} {
		hash, err := bcrypt.GenerateFromPassword([]byte("pw"), tc.cost)
		if err != nil {
			t.Fatal(err)
		}
		path := filepath.Join(dir, fmt.Sprintf("cost%d.yaml", tc.cost))
		os.WriteFile(path, []byte(fmt.Sprintf("data_dir: %s\naccounts:\n  - name: alice\n    password_hash: %q\n", dir, hash)), 0o600)
		var out, errOut bytes.Buffer
		code := run([]string{"check-config", "-config", path}, nil, &out, &errOut)
		if tc.ok && code != 0 {
			t.Errorf("cost %d refused: %s", tc.cost, errOut.String())
		}
		if !tc.ok && (code == 0 || !strings.Contains(errOut.String(), "accounts[0].password_hash") ||
			!strings.Contains(errOut.String(), fmt.Sprintf("cost %d is below 10", tc.cost))) {
			t.Errorf("cost %d: exit %d, %q", tc.cost, code, errOut.String())
		}
	}
	// Not a bcrypt hash at all, and an API key in clear: refused.
	for _, bad := range []string{
		"accounts:\n  - name: alice\n    password_hash: \"secret\"\n",
		"accounts:\n  - name: alice\n    password_hash: \"" + strings.Repeat("x", 60) + "\"\n",
		"accounts:\n  - name: alice\n    networks: [127.0.0.1/32]\n    api_key: \"plain-text-key\"\n",
		"accounts:\n  - name: alice\n    networks: [127.0.0.1/32]\n    api_key_sha256: \"plain-text-key\"\n",
	} {
		path := filepath.Join(dir, "bad.yaml")
		os.WriteFile(path, []byte("data_dir: "+dir+"\n"+bad), 0o600)
		var out, errOut bytes.Buffer
		if code := run([]string{"check-config", "-config", path}, nil, &out, &errOut); code == 0 {
			t.Errorf("accepted:\n%s", bad)
		}
	}
}

// serveForAttack runs `serve` with a config made for attacking it: short
// timeouts and low limits. It returns the SMTP and HTTP addresses and the
// log.
func serveForAttack(t *testing.T, apiKey string) (string, string, *lockedWriter) {
	t.Helper()
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	smtpAddr, httpAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("app password"), 10)
	sum := sha256.Sum256([]byte(apiKey))
	cfgText := fmt.Sprintf(`data_dir: %s
smtp:
  listen: %q
  hostname: relay.test
  tls_cert_file: %s
  tls_key_file: %s
  max_message_bytes: 65536
  max_recipients: 3
  command_timeout: 2s
  data_timeout: 2s
  max_connections: 50
  max_connections_per_ip: 3
http:
  listen: %q
metrics:
  listen: %q
tracking:
  base_url: http://%s
accounts:
  - name: alice
    password_hash: %q
    api_key_sha256: %s
  - name: office
    networks: [192.0.2.0/24]
`, filepath.Join(dir, "data"), smtpAddr, cert, key, httpAddr, metricsAddr, httpAddr, hash, hex.EncodeToString(sum[:]))
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	os.WriteFile(cfgPath, []byte(cfgText), 0o600)
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedWriter{w: &bytes.Buffer{}}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, false, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, smtpAddr)
	waitListening(t, httpAddr)
	return smtpAddr, httpAddr, logs
}

type smtpLine struct {
	c net.Conn
	r *bufio.Reader
}

// reply reads one SMTP reply and returns its code and last line.
func (s *smtpLine) reply(t *testing.T) (int, string) {
	t.Helper()
	s.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		l, err := s.r.ReadString('\n')
		if err != nil {
			return 0, err.Error()
		}
		if len(l) >= 4 && l[3] == '-' {
			continue
		}
		var code int
		fmt.Sscanf(l, "%d", &code)
		return code, strings.TrimSpace(l)
	}
}

func (s *smtpLine) cmd(t *testing.T, line string) (int, string) {
	t.Helper()
	fmt.Fprintf(s.c, "%s\r\n", line)
	return s.reply(t)
}

func dialSMTP(t *testing.T, addr string) (*smtpLine, int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s := &smtpLine{c: c, r: bufio.NewReader(c)}
	code, _ := s.reply(t)
	return s, code
}

func TestAttack_wholeServer(t *testing.T) {
	apiKey := "attack-test-api-key-0123456789"
	smtpAddr, httpAddr, logs := serveForAttack(t, apiKey)

	t.Run("open relay", func(t *testing.T) {
		s, _ := dialSMTP(t, smtpAddr)
		s.cmd(t, "EHLO spammer.example")
		for _, from := range []string{"spammer@elsewhere.example", "", "alice@example.com"} {
			if code, l := s.cmd(t, "MAIL FROM:<"+from+">"); code != 530 {
				t.Errorf("MAIL <%s>: %s", from, l)
			}
		}
		if code, l := s.cmd(t, "RCPT TO:<victim@evil.example>"); code < 500 {
			t.Errorf("RCPT: %s", l)
		}
	})

	t.Run("TLS 1.1", func(t *testing.T) {
		s, _ := dialSMTP(t, smtpAddr)
		s.cmd(t, "EHLO app.example")
		if code, l := s.cmd(t, "STARTTLS"); code != 220 {
			t.Fatalf("STARTTLS: %s", l)
		}
		tc := tls.Client(s.c, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS11, MaxVersion: tls.VersionTLS11})
		tc.SetDeadline(time.Now().Add(5 * time.Second))
		if err := tc.Handshake(); err == nil {
			t.Error("TLS 1.1 handshake succeeded")
		}
	})

	t.Run("connections per IP", func(t *testing.T) {
		// The earlier subtests' connections are closed as they end, and
		// the server counts each until it has seen its close.
		deadline := time.Now().Add(10 * time.Second)
		for open := 0; open < 3; {
			s, code := dialSMTP(t, smtpAddr)
			if code == 220 {
				open++
				continue
			}
			s.c.Close()
			if time.Now().After(deadline) {
				t.Fatalf("greeting %d", code)
			}
			time.Sleep(20 * time.Millisecond)
		}
		s, code := dialSMTP(t, smtpAddr)
		if code != 421 {
			t.Errorf("fourth connection from one address: %d", code)
		}
		s.c.Close()
	})

	get := func(method, path string, hdr map[string]string) *http.Response {
		t.Helper()
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		var b strings.Builder
		fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n", method, path)
		for k, v := range hdr {
			fmt.Fprintf(&b, "%s: %s\r\n", k, v)
		}
		b.WriteString("\r\n")
		io.WriteString(c, b.String())
		resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: method})
		if err != nil {
			t.Fatalf("%s %.40s: %v", method, path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}

	t.Run("tracking endpoints", func(t *testing.T) {
		if r := get("GET", "/c/"+strings.Repeat("A", 1<<20), nil); r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("1 MB path: %d", r.StatusCode)
		}
		if r := get("GET", "/c/"+strings.Repeat("A", 40<<10), nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("40 KB forged token: %d", r.StatusCode)
		}
		if r := get("POST", "/o/x.gif", map[string]string{"Content-Length": "0"}); r.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST pixel: %d", r.StatusCode)
		}
		if r := get("GET", "/o/../api/v1/messages/x", map[string]string{"Authorization": "Bearer " + apiKey}); r.StatusCode != http.StatusNotFound {
			t.Errorf("traversal: %d", r.StatusCode)
		}
	})

	t.Run("API", func(t *testing.T) {
		last := apiKey[:len(apiKey)-1] + "8"
		if r := get("GET", "/api/v1/messages/NOSUCH", map[string]string{"Authorization": "Bearer " + last}); r.StatusCode != http.StatusUnauthorized {
			t.Errorf("key wrong in its last byte: %d", r.StatusCode)
		}
		if r := get("GET", "/api/v1/messages/NOSUCH", map[string]string{"Authorization": "Bearer " + apiKey}); r.StatusCode != http.StatusNotFound {
			t.Errorf("right key, unknown message: %d", r.StatusCode)
		}
		r := get("OPTIONS", "/api/v1/events", map[string]string{"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
		if r.StatusCode != http.StatusMethodNotAllowed || r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("preflight: %d %v", r.StatusCode, r.Header)
		}
		r = get("GET", "/api/v1/events", map[string]string{"Origin": "https://evil.example", "Authorization": "Bearer " + apiKey})
		if r.StatusCode != http.StatusOK || r.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("events with Origin: %d %v", r.StatusCode, r.Header)
		}
	})

	logs.mu.Lock()
	leaked := strings.Contains(logs.w.(*bytes.Buffer).String(), apiKey)
	logs.mu.Unlock()
	if leaked {
		t.Error("the API key reached the log")
	}
}
