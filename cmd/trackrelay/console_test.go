package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/smtp"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The http listener serves the console under /ui/ next to the API: a
// message sent over SMTP is listed, found by its subject and shows it on
// its page, for a session
// made with the account's SMTP password; a SIGHUP that rotates the
// tracking secret (keeping the old one) keeps the session, one that
// changes the account's password ends it, and the new password logs in.
func TestServe_console(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	smtpAddr, httpAddr := freeAddr(t), freeAddr(t)
	secret1, secret2 := filepath.Join(dir, "secret1"), filepath.Join(dir, "secret2")
	os.WriteFile(secret1, []byte(strings.Repeat("1", 40)+"\n"), 0o600)
	os.WriteFile(secret2, []byte(strings.Repeat("2", 40)+"\n"), 0o600)
	account := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), 10)
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256([]byte("app-key"))
		return fmt.Sprintf("  - {name: app, password_hash: %q, api_key_sha256: %s, networks: [127.0.0.0/8]}\n", h, hex.EncodeToString(s[:]))
	}
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	write := func(tracking, accounts string) {
		t.Helper()
		text := fmt.Sprintf("data_dir: %s\nsmtp: {listen: %q, hostname: relay.test}\nhttp: {listen: %q}\n"+
			"tracking: {base_url: \"http://%s\", %s}\naccounts:\n%s", data, smtpAddr, httpAddr, httpAddr, tracking, accounts)
		if err := os.WriteFile(cfgPath, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("secret_file: "+secret1, account("first password"))
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logs := &lockedWriter{w: &bytes.Buffer{}}
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
	reloadAndWait := func() {
		t.Helper()
		before := logs.count("config reloaded")
		reload <- syscall.SIGHUP
		for deadline := time.Now().Add(10 * time.Second); logs.count("config reloaded") == before; time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("no reload in the log:\n%s", logs.String())
			}
		}
	}

	msg := "From: a@example.com\r\nTo: c@example.net\r\nSubject: =?utf-8?q?Devis_cuisine_=E2=80=94_<b>42</b>?=\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hello</p>\r\n"
	if err := smtp.SendMail(smtpAddr, nil, "a@example.com", []string{"c@example.net"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	outboxPixel(t, filepath.Join(data, "outbox"))
	files, _ := filepath.Glob(filepath.Join(data, "outbox", "*.eml"))
	id := strings.TrimSuffix(filepath.Base(files[0]), ".eml")
	id = id[:strings.LastIndex(id, "-")]

	base := "http://" + httpAddr
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar}
	page := func(p string) (int, string) {
		t.Helper()
		resp, err := c.Get(base + p)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	login := func(pw string) string {
		t.Helper()
		resp, err := c.PostForm(base+"/ui/login", url.Values{"account": {"app"}, "secret": {pw}})
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		return resp.Request.URL.Path // where the redirects ended
	}
	if p := login("first password"); p != "/ui/" {
		t.Fatalf("login ended on %s", p)
	}
	// The subject, decoded, shows as text: its markup is escaped.
	const subject = "Devis cuisine — &lt;b&gt;42&lt;/b&gt;"
	if code, body := page("/ui/"); code != 200 || !strings.Contains(body, `<a href="/ui/messages/`+id+`">`+subject+`</a>`) {
		t.Fatalf("list: %d, no link to %s named %q:\n%s", code, id, subject, body)
	}
	if code, body := page("/ui/?q=CUISINE"); code != 200 || !strings.Contains(body, subject) {
		t.Errorf("search by subject: %d:\n%s", code, body)
	}
	if code, body := page("/ui/messages/" + id); code != 200 || !strings.Contains(body, "<h1>"+subject+"</h1>") || !strings.Contains(body, "c@example.net") {
		t.Fatalf("message page: %d:\n%s", code, body)
	}
	// The API is still the tracker's.
	if code, body := apiGet(t, base+"/api/v1/messages/"+id, "app-key"); code != 200 || !strings.Contains(body, `"id":"`+id+`"`) {
		t.Errorf("API: %d %s", code, body)
	}

	write("secret_file: "+secret2+", previous_secret_files: ["+secret1+"]", account("first password"))
	reloadAndWait()
	if code, _ := page("/ui/overview"); code != 200 {
		t.Errorf("after a secret rotation: %d", code)
	}
	write("secret_file: "+secret2+", previous_secret_files: ["+secret1+"]", account("second password"))
	reloadAndWait()
	if code, body := page("/ui/"); code != 200 || !regexp.MustCompile(`<h1>Log in</h1>`).MatchString(body) {
		t.Errorf("after the password changed: %d, want the login page", code)
	}
	if p := login("first password"); p == "/ui/" {
		t.Error("the old password still logs in")
	}
	if p := login("second password"); p != "/ui/" {
		t.Errorf("the new password: ended on %s", p)
	}
}
