package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/smtp"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/token"
	"golang.org/x/crypto/bcrypt"
)

// A reload adds an account (its SMTP login and its API key work at once),
// rotates the tracking secret (links signed with the old one still
// redirect) and leaves the old account and an open SMTP session working;
// an invalid file is refused and the node keeps serving what it had; a
// key that needs a restart is named and keeps its old value.
func TestServe_reloadAccountsAndSecrets(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	smtpAddr, httpAddr := freeAddr(t), freeAddr(t)
	secret1, secret2 := filepath.Join(dir, "secret1"), filepath.Join(dir, "secret2")
	os.WriteFile(secret1, []byte(strings.Repeat("1", 40)+"\n"), 0o600)
	os.WriteFile(secret2, []byte(strings.Repeat("2", 40)+"\n"), 0o600)
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), 10)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	keySum := func(k string) string { s := sha256.Sum256([]byte(k)); return hex.EncodeToString(s[:]) }
	oldAccount := fmt.Sprintf("  - {name: app, password_hash: %q, api_key_sha256: %s}\n", hash("app password"), keySum("app-key"))
	newAccount := fmt.Sprintf("  - {name: newco, password_hash: %q, api_key_sha256: %s}\n", hash("newco password"), keySum("newco-key"))
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	write := func(dataDir, smtpListen, tracking, accounts string) {
		t.Helper()
		text := fmt.Sprintf("data_dir: %s\nsmtp: {listen: %q, hostname: relay.test}\nhttp: {listen: %q}\n"+
			"tracking: {base_url: \"http://%s\", %s}\naccounts:\n%s", dataDir, smtpListen, httpAddr, httpAddr, tracking, accounts)
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(data, smtpAddr, "secret_file: "+secret1, oldAccount)
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	oldKeys, err := loadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var logBuf bytes.Buffer
	logs := &lockedWriter{w: &logBuf}
	reload := make(chan os.Signal)
	done := make(chan error, 1)
	go func() { done <- serveReloading(ctx, cfg, false, cfgPath, reload, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, smtpAddr)
	waitListening(t, httpAddr)
	// reloadAndWait sends SIGHUP and waits for the reload's log line.
	reloadAndWait := func(line string) {
		t.Helper()
		before := logs.count(line)
		reload <- syscall.SIGHUP
		for deadline := time.Now().Add(10 * time.Second); logs.count(line) == before; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log after SIGHUP:\n%s", line, logs.String())
			}
		}
	}
	events := "http://" + httpAddr + "/api/v1/events"
	click := func(tok string) int {
		t.Helper()
		resp := get(t, "http://"+httpAddr+"/c/"+tok, "test")
		resp.Body.Close()
		return resp.StatusCode
	}
	send := func(user, pass string) error {
		msg := "From: a@example.com\r\nTo: c@example.net\r\nSubject: hi\r\n\r\nhello\r\n"
		return smtp.SendMail(smtpAddr, smtp.PlainAuth("", user, pass, "127.0.0.1"), "a@example.com", []string{"c@example.net"}, []byte(msg))
	}

	oldLink := oldKeys.ClickToken("q1", 0, 0, "https://example.com/old")
	if code := click(oldLink); code != http.StatusFound {
		t.Fatalf("old link before the reload: %d", code)
	}
	if err := send("newco", "newco password"); err == nil {
		t.Fatal("newco could AUTH before it was added")
	}
	if code, _ := apiGet(t, events, "newco-key"); code != http.StatusUnauthorized {
		t.Fatalf("newco's API key before it was added: %d", code)
	}
	// A session authenticated before the reload, used after it.
	open, err := smtp.Dial(smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if err := open.Auth(smtp.PlainAuth("", "app", "app password", "127.0.0.1")); err != nil {
		t.Fatal(err)
	}

	// Add newco, rotate the secret, and move smtp.listen and data_dir
	// (restart only).
	write(filepath.Join(dir, "elsewhere"), freeAddr(t), "secret_file: "+secret2+", previous_secret_files: ["+secret1+"]", oldAccount+newAccount)
	reloadAndWait("config reloaded")
	for _, key := range []string{"smtp.listen", "data_dir"} {
		if !strings.Contains(logs.String(), key) {
			t.Errorf("the log does not name %s as needing a restart:\n%s", key, logs.String())
		}
	}
	if err := open.Mail("a@example.com"); err != nil {
		t.Fatalf("session open across the reload: MAIL: %v", err)
	}
	if err := open.Rcpt("c@example.net"); err != nil {
		t.Fatalf("session open across the reload: RCPT: %v", err)
	}
	w, err := open.Data()
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(w, "From: a@example.com\r\nTo: c@example.net\r\nSubject: across\r\nMIME-Version: 1.0\r\n"+
		"Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>across</p></body></html>\r\n")
	if err := w.Close(); err != nil {
		t.Fatalf("session open across the reload: DATA: %v", err)
	}
	// The copy is signed with the new secret, which alone verifies it.
	pixel, _ := outboxPixel(t, filepath.Join(data, "outbox"))
	tok := strings.TrimSuffix(pixel[strings.LastIndex(pixel, "/")+1:], ".gif")
	s2 := []byte(strings.Repeat("2", 40))
	onlyNew, err := token.NewKeyring(token.Key{ID: keyID(s2), Secret: s2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := onlyNew.Verify(tok); err != nil {
		t.Errorf("copy delivered after the rotation: %s is not signed with the new secret: %v", pixel, err)
	}
	check := func(when string) {
		t.Helper()
		for _, a := range [][2]string{{"app", "app password"}, {"newco", "newco password"}} {
			if err := send(a[0], a[1]); err != nil {
				t.Errorf("%s: %s cannot send: %v", when, a[0], err)
			}
		}
		for _, key := range []string{"app-key", "newco-key"} {
			if code, body := apiGet(t, events, key); code != http.StatusOK {
				t.Errorf("%s: API key %s: %d %s", when, key, code, body)
			}
		}
		if code := click(oldLink); code != http.StatusFound {
			t.Errorf("%s: link signed with the previous secret: %d", when, code)
		}
	}
	check("after the reload")
	newCfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	newKeys, err := loadKeyring(newCfg)
	if err != nil {
		t.Fatal(err)
	}
	if code := click(newKeys.ClickToken("q2", 0, 0, "https://example.com/new")); code != http.StatusFound {
		t.Errorf("link signed with the new secret: %d", code)
	}

	// An invalid file (a password that is no bcrypt hash, and newco gone):
	// refused, naming the key; newco still works.
	write(data, smtpAddr, "secret_file: "+secret2, oldAccount+"  - {name: bad, password_hash: \"secret\"}\n")
	reloadAndWait("config reload refused")
	if !strings.Contains(logs.String(), "accounts[1].password_hash") {
		t.Errorf("the refusal does not name the key:\n%s", logs.String())
	}
	check("after a refused reload")
}

// String returns what was written, when l writes to a bytes.Buffer.
func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.(fmt.Stringer).String()
}

// count returns how many times s is in what was written.
func (l *lockedWriter) count(s string) int {
	return strings.Count(l.String(), s)
}

// data_dir needs a restart, so a reload that moves it keeps reading the
// tracking secret made on first start in the old one, and goes through.
func TestServe_reloadKeepsDataDir(t *testing.T) {
	dir := t.TempDir()
	smtpAddr, httpAddr := freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	write := func(dataDir string) {
		t.Helper()
		text := fmt.Sprintf("data_dir: %s\nsmtp: {listen: %q}\nhttp: {listen: %q}\naccounts:\n  - {name: app, networks: [127.0.0.0/8]}\n",
			dataDir, smtpAddr, httpAddr)
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(dir, "data"))
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var logBuf bytes.Buffer
	logs := &lockedWriter{w: &logBuf}
	reload := make(chan os.Signal)
	done := make(chan error, 1)
	go func() { done <- serveReloading(ctx, cfg, false, cfgPath, reload, io.Discard, logs) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	waitListening(t, httpAddr)

	write(filepath.Join(dir, "elsewhere"))
	reload <- syscall.SIGHUP
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		out := logs.String()
		if strings.Contains(out, "config reload refused") {
			t.Fatalf("reload refused:\n%s", out)
		}
		if strings.Contains(out, "config reloaded") {
			if !strings.Contains(out, "data_dir") {
				t.Errorf("the log does not name data_dir as needing a restart:\n%s", out)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no reload in the log:\n%s", out)
		}
	}
}
