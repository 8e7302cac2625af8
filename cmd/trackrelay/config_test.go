package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The example config ships with the project: it must always load.
func TestConfig_exampleLoads(t *testing.T) {
	data, err := os.ReadFile("../../configs/trackrelay.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The example names files that exist on a deployed host, not here:
	// point them at real files so that only the schema is under test.
	dir := t.TempDir()
	cert, key := writeTestCert(t, dir)
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, bytes.Repeat([]byte("s"), 44), 0o600)
	pass := filepath.Join(dir, "upstream.pass")
	os.WriteFile(pass, []byte("pw\n"), 0o600)
	r := strings.NewReplacer(
		"/etc/trackrelay/tls.crt", cert,
		"/etc/trackrelay/tls.key", key,
		"/etc/trackrelay/secret", secret,
		"/etc/trackrelay/upstream.pass", pass,
	)
	cfg, err := parseConfig([]byte(r.Replace(string(data))))
	if err != nil {
		t.Fatalf("example config: %v", err)
	}
	if cfg.Upstream == nil || cfg.Upstream.TLS != "starttls" || cfg.Tracking.BaseURL != "https://t.example.com" {
		t.Errorf("example config decoded as %+v", cfg)
	}
	if len(cfg.Accounts) == 0 || cfg.Accounts[0].Name != "alice" {
		t.Errorf("accounts: %+v", cfg.Accounts)
	}
	if cfg.SMTP.CommandTimeout.D() != 5*time.Minute {
		t.Errorf("command_timeout %v", cfg.SMTP.CommandTimeout.D())
	}
}

func TestConfig_errorsNameTheKey(t *testing.T) {
	cases := []struct {
		yaml, want string
	}{
		{"smtp:\n  listen: 127.0.0.1:2525\n  bogus: 1\n", "smtp.bogus"},
		{"nonsense: true\n", "unknown key nonsense"},
		{"smtp:\n  max_recipients: lots\n", "smtp.max_recipients"},
		{"smtp:\n  command_timeout: soon\n", "smtp.command_timeout"},
		{"tracking:\n  mode: sometimes\n", "tracking.mode"},
		{"tracking:\n  base_url: ftp://x\n", "tracking.base_url"},
		{"upstream:\n  address: mail:25\n  tls: maybe\n", "upstream.tls"},
		{"accounts:\n  - name: a\n    password_hash: nope\n", "accounts[0].password_hash"},
		{"accounts:\n  - name: a\n    networks: [300.1.1.1/8]\n", "accounts[0].networks[0]"},
		{"accounts:\n  - name: a\n    networks: [10.0.0.0/8]\n    api_key_sha256: abc\n", "accounts[0].api_key_sha256"},
		{"accounts:\n  - name: a\n    networks: [10.0.0.0/8]\n    colour: red\n", "accounts[0].colour"},
		{"smtp:\n  listen: nowhere\n", "smtp.listen"},
		{"tracking:\n  trusted_proxies: [banana]\n", "tracking.trusted_proxies[0]"},
		{"accounts:\n  - name: a\n", "accounts[0]"},
		{"accounts:\n  - name: a\n    networks: [10.0.0.0/8]\n  - name: a\n    networks: [10.0.0.0/8]\n", "duplicate account"},
	}
	for _, c := range cases {
		_, err := parseConfig([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: want an error naming %q, got %v", c.yaml, c.want, err)
		}
	}
}

func TestConfig_reportsAllProblems(t *testing.T) {
	_, err := parseConfig([]byte("smtp:\n  bogus: 1\nhttp:\n  nope: 2\n"))
	if err == nil || !strings.Contains(err.Error(), "smtp.bogus") || !strings.Contains(err.Error(), "http.nope") {
		t.Fatalf("want both unknown keys reported, got %v", err)
	}
}

func TestConfig_durations(t *testing.T) {
	cfg, err := parseConfig([]byte("delivery:\n  lifetime: 7d\n  retry_initial: 30s\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Delivery.Lifetime.D() != 7*24*time.Hour || cfg.Delivery.RetryInitial.D() != 30*time.Second {
		t.Errorf("got %v %v", cfg.Delivery.Lifetime.D(), cfg.Delivery.RetryInitial.D())
	}
}

func TestCLI_hashPasswordAndCheckConfig(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"hash-password"}, strings.NewReader("s3cret pass\n"), &out, &errb); code != 0 {
		t.Fatalf("hash-password exit %d: %s", code, errb.String())
	}
	hash := strings.TrimSpace(out.String())
	if !strings.HasPrefix(hash, "$2") {
		t.Fatalf("hash %q", hash)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("data_dir: "+dir+"\naccounts:\n  - name: app\n    password_hash: \""+hash+"\"\n"), 0o600)
	out.Reset()
	errb.Reset()
	if code := run([]string{"check-config", "-config", path}, nil, &out, &errb); code != 0 {
		t.Fatalf("check-config of a valid file: exit %d: %s", code, errb.String())
	}
	os.WriteFile(path, []byte("smtp:\n  lisen: 1.2.3.4:25\n"), 0o600)
	errb.Reset()
	if code := run([]string{"check-config", "-config", path}, nil, &out, &errb); code == 0 || !strings.Contains(errb.String(), "smtp.lisen") {
		t.Fatalf("check-config of a bad file: exit %d, %q", code, errb.String())
	}
	// The password is the line without its newline.
	if err := bcryptCompare(hash, "s3cret pass"); err != nil {
		t.Fatal(err)
	}
}
