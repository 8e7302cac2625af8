package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-message"
)

// TestTrackingCrash_kill9 runs the built binary, hammers the open pixel
// from 32 clients, each hit with its own user agent, kills the process with
// SIGKILL in the middle, restarts it and checks through the API that every
// hit that got its 200 is in the store: a hit is committed before its
// response.
func TestTrackingCrash_kill9(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "trackrelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	addr := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	smtpAddr, httpAddr := addr(), addr()
	const apiKey = "crash-test-api-key"
	sum := sha256.Sum256([]byte(apiKey))
	cfgPath := filepath.Join(dir, "config.yaml")
	cfg := fmt.Sprintf(`data_dir: %s
smtp: {listen: "%s", hostname: relay.test}
http: {listen: "%s"}
metrics: {listen: ""}
tracking: {base_url: "http://%s", max_events_per_recipient: 1000000, record_rate: -1}
log: {level: warn}
accounts:
  - {name: crash, networks: [127.0.0.0/8], api_key_sha256: %s}
`, filepath.Join(dir, "data"), smtpAddr, httpAddr, httpAddr, hex.EncodeToString(sum[:]))
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "-config", cfgPath)
		cmd.Stdout, cmd.Stderr = &logs, &logs
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if resp, err := http.Get("http://" + httpAddr + "/healthz"); err == nil {
				resp.Body.Close()
				return cmd
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("server did not start:\n%s", logs.String())
			}
		}
	}
	srv := start()
	defer func() { srv.Process.Kill(); srv.Wait() }()

	msg := "From: a@example.com\r\nTo: c@example.net\r\nSubject: crash\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello</p></body></html>\r\n"
	if err := smtp.SendMail(smtpAddr, nil, "a@example.com", []string{"c@example.net"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	pixel, mid := outboxPixel(t, filepath.Join(dir, "data", "outbox"))

	// Load, then SIGKILL while it runs.
	var (
		mu    sync.Mutex
		acked []string
		n     atomic.Int64
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	for w := range 32 {
		wg.Go(func() {
			for !stop.Load() {
				ua := fmt.Sprintf("crash-test/%d-%d", w, n.Add(1))
				req, _ := http.NewRequest(http.MethodGet, pixel, nil)
				req.Header.Set("User-Agent", ua)
				resp, err := client.Do(req)
				if err != nil {
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil && resp.StatusCode == http.StatusOK {
					mu.Lock()
					acked = append(acked, ua)
					mu.Unlock()
				}
			}
		})
	}
	// Kill once enough hits are answered, while the clients keep going.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(20 * time.Millisecond) {
		mu.Lock()
		answered := len(acked)
		mu.Unlock()
		if answered >= 100 {
			break
		}
		if time.Now().After(deadline) {
			stop.Store(true)
			wg.Wait()
			t.Fatalf("only %d hits answered in a minute", answered)
		}
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	stop.Store(true)
	wg.Wait()

	srv = start()
	if mid == "" {
		t.Fatal("copy without Message-ID")
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+httpAddr+"/api/v1/messages/"+strings.ReplaceAll(mid, "/", "%2F"), nil)
	req.Header.Set("Authorization", "Bearer "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var view struct {
		Events []struct {
			UserAgent string `json:"user_agent"`
		} `json:"events"`
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("API: %s", resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(&view); err != nil {
		t.Fatal(err)
	}
	stored := map[string]bool{}
	for _, e := range view.Events {
		stored[e.UserAgent] = true
	}
	missing := 0
	for _, ua := range acked {
		if !stored[ua] {
			missing++
		}
	}
	t.Logf("%d hits answered before kill -9, %d events stored, %d answered hits missing", len(acked), len(stored), missing)
	if missing > 0 {
		t.Errorf("%d of %d answered hits are not in the store", missing, len(acked))
	}
}

// outboxPixel waits (bounded) for the first copy in a capture-mode outbox
// and returns the URL of its open pixel and its Message-ID.
func outboxPixel(t *testing.T, outbox string) (pixel, messageID string) {
	t.Helper()
	var eml []byte
	for deadline := time.Now().Add(20 * time.Second); eml == nil; time.Sleep(20 * time.Millisecond) {
		if files, _ := filepath.Glob(filepath.Join(outbox, "*.eml")); len(files) > 0 {
			eml, _ = os.ReadFile(files[0])
		}
		if eml == nil && time.Now().After(deadline) {
			t.Fatal("no delivered copy")
		}
	}
	ent, err := message.Read(bytes.NewReader(eml))
	if err != nil {
		t.Fatal(err)
	}
	html, err := io.ReadAll(ent.Body)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`src="(http://[^"]+/o/[^"]+)"`).FindSubmatch(html)
	if m == nil {
		t.Fatalf("no pixel in %s", html)
	}
	return string(m[1]), strings.Trim(ent.Header.Get("Message-Id"), "<> ")
}
