package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/crypto/bcrypt"

	"github.com/trackrelay/trackrelay/internal/guard"
)

// A copy whose delivery panics is held, and everyone sees it so: the app
// in the API, the operator in `queue list` and the queue gauge. `queue
// retry` releases it and it is delivered.
func TestQueue_heldCopy(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	smtpAddr, httpAddr, metricsAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	hash, _ := bcrypt.GenerateFromPassword([]byte("app password"), 10)
	apiKey := "held-test-api-key-0123456789"
	sum := sha256.Sum256([]byte(apiKey))
	cfgText := fmt.Sprintf(`data_dir: %s
smtp:
  listen: %q
  hostname: relay.test
  tls_cert_file: %s
  tls_key_file: %s
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
`, filepath.Join(dir, "data"), smtpAddr, cert, key, httpAddr, metricsAddr, httpAddr, hash, hex.EncodeToString(sum[:]))
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, false, io.Discard, &lockedWriter{w: &bytes.Buffer{}}) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, smtpAddr)
	waitListening(t, httpAddr)

	// The first delivery attempt panics.
	before := testutil.ToFloat64(guard.Panics.WithLabelValues(guard.Delivery))
	var fired atomic.Bool
	defer guard.Inject(func(c, _ string) bool { return c == guard.Delivery && fired.CompareAndSwap(false, true) })()
	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "alice", "app password")); err != nil {
		t.Fatal(err)
	}
	msg := "From: alice@example.com\r\nTo: bob@example.net\r\nSubject: held\r\n\r\nHello\r\n"
	if err := c.SendMail("alice@example.com", []string{"bob@example.net"}, strings.NewReader(msg)); err != nil {
		t.Fatal(err)
	}
	// The queue id, from the operator's list (SendMail hides the 250 text).
	var id string
	for deadline := time.Now().Add(10 * time.Second); id == ""; time.Sleep(10 * time.Millisecond) {
		var out bytes.Buffer
		if code := cmdQueue([]string{"-config", cfgPath, "list"}, &out, io.Discard); code != 0 {
			t.Fatalf("queue list: exit %d", code)
		}
		if m := regexp.MustCompile(`(?m)^([0-9A-Z]{16}) .* held +0 +on retry +held after an internal error`).FindStringSubmatch(out.String()); m != nil {
			id = m[1]
			if !strings.Contains(out.String(), "1 copy(ies) held after an internal error") {
				t.Errorf("queue list does not tell how to release the held copy:\n%s", out.String())
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue list never showed the copy held:\n%s", out.String())
		}
	}
	if n := testutil.ToFloat64(guard.Panics.WithLabelValues(guard.Delivery)) - before; n != 1 {
		t.Errorf("trackrelay_panics_total{component=\"delivery\"} rose by %v, want 1", n)
	}
	status := func() (string, string) {
		req, _ := http.NewRequest("GET", "http://"+httpAddr+"/api/v1/messages/"+id, nil)
		req.Header.Set("Authorization", "Bearer "+apiKey)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Recipients []struct {
				Delivery struct {
					Status       string `json:"status"`
					LastResponse string `json:"last_response"`
				} `json:"delivery"`
			} `json:"recipients"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || len(v.Recipients) != 1 {
			t.Fatalf("API: %d %v %+v", resp.StatusCode, err, v)
		}
		return v.Recipients[0].Delivery.Status, v.Recipients[0].Delivery.LastResponse
	}
	waitAPI := func(want string) {
		t.Helper()
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			got, resp := status()
			if got == want {
				if strings.Contains(resp, "panic") {
					t.Errorf("API shows the panic: %q", resp)
				}
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("API: delivery.status %q, want %q", got, want)
			}
		}
	}
	waitAPI("held")
	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Contains(metrics, []byte(`trackrelay_queue_recipients{state="held"} 1`)) {
		t.Errorf("queue gauge does not count the held copy:\n%s", regexp.MustCompile(`(?m)^trackrelay_queue.*$`).FindAll(metrics, -1))
	}

	var out bytes.Buffer
	if code := cmdQueue([]string{"-config", cfgPath, "retry", id}, &out, io.Discard); code != 0 {
		t.Fatalf("queue retry: exit %d", code)
	}
	var n struct{ Rescheduled, Released int }
	if err := json.Unmarshal(out.Bytes(), &n); err != nil || n.Released != 1 {
		t.Errorf("queue retry: %s", out.String())
	}
	waitAPI("delivered")
}
