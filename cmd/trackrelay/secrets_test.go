package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// A rotation: tokens in mail already sent keep working once a new secret
// signs and the old one is listed as previous.
func TestSecrets_rotationKeepsOldTokensWorking(t *testing.T) {
	dir := t.TempDir()
	oldPath := filepath.Join(dir, "old")
	newPath := filepath.Join(dir, "new")
	os.WriteFile(oldPath, []byte(strings.Repeat("o", 44)+"\n"), 0o600)
	os.WriteFile(newPath, []byte("  "+strings.Repeat("n", 44)+"\n"), 0o600)

	before := defaultConfig()
	before.DataDir = dir
	before.Tracking.SecretFile = oldPath
	k1, err := loadKeyring(before)
	if err != nil {
		t.Fatal(err)
	}
	sent := k1.ClickToken("0PGK00000000ABCD", 0, 0, "https://example.com/q?a=1&b=2")

	after := defaultConfig()
	after.DataDir = dir
	after.Tracking.SecretFile = newPath
	after.Tracking.PreviousSecretFiles = []string{oldPath}
	k2, err := loadKeyring(after)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := k2.Verify(sent)
	if err != nil || tok.Dest != "https://example.com/q?a=1&b=2" {
		t.Fatalf("old token after rotation: %+v, %v", tok, err)
	}
	fresh := k2.OpenToken("0PGK00000000ABCD", 1)
	if _, err := k1.Verify(fresh); err == nil {
		t.Fatal("a new token verified with the old key alone: the new secret does not sign")
	}
	tok, err = k2.Verify(fresh)
	if err != nil || tok.KeyID != keyID([]byte(strings.Repeat("n", 44))) {
		t.Fatalf("new token: %+v, %v", tok, err)
	}

	// Once the old secret is dropped, its tokens stop working.
	dropped := defaultConfig()
	dropped.DataDir = dir
	dropped.Tracking.SecretFile = newPath
	k3, _ := loadKeyring(dropped)
	if _, err := k3.Verify(sent); err == nil {
		t.Fatal("a token of a retired secret still verifies")
	}
}

func TestSecrets_fromEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(envTrackingSecret, strings.Repeat("e", 40))
	t.Setenv(envUpstreamPassword, "from-env")
	cfg := defaultConfig()
	cfg.DataDir = dir
	k, err := loadKeyring(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := k.Verify(k.OpenToken("0PGK00000000ABCD", 0))
	if err != nil || tok.KeyID != keyID([]byte(strings.Repeat("e", 40))) {
		t.Fatalf("env secret: %+v %v", tok, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tracking-secret")); err == nil {
		t.Error("a secret file was generated although the environment supplies the secret")
	}
	pass, err := upstreamPassword(&UpstreamConfig{PasswordFile: "/nonexistent"})
	if err != nil || pass != "from-env" {
		t.Fatalf("upstream password from env: %q %v", pass, err)
	}
	t.Setenv(envTrackingSecret, "short")
	if _, err := loadKeyring(cfg); err == nil || !strings.Contains(err.Error(), envTrackingSecret) {
		t.Fatalf("short env secret: %v", err)
	}
}

// Starts racing on an empty data dir (a restart loop, a second copy started
// by mistake) all end up with the one secret and the one API key kept
// there: none fails, and none signs with a secret that another replaced.
func TestSecrets_firstStartsAgree(t *testing.T) {
	const n = 8
	for range 20 {
		dir := t.TempDir()
		secrets := make([][]byte, n)
		keys := make([]string, n)
		printed := make([]string, n)
		errs := make([]error, n)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				cfg := defaultConfig()
				cfg.DataDir = dir
				cfg.Accounts = []AccountConfig{defaultAccount()}
				<-start
				var out strings.Builder
				if errs[i] = ensureDefaultAPIKey(cfg, &out, slog.New(slog.DiscardHandler)); errs[i] != nil {
					return
				}
				keys[i], printed[i] = cfg.Accounts[0].APIKeySHA256, out.String()
				secrets[i], errs[i] = loadSecret(cfg)
			})
		}
		close(start)
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("start %d: %v", i, err)
			}
		}
		kept, err := os.ReadFile(filepath.Join(dir, "tracking-secret"))
		if err != nil {
			t.Fatal(err)
		}
		apiKey, err := os.ReadFile(filepath.Join(dir, "api-key-default"))
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(bytes.TrimSpace(apiKey))
		shown := 0
		for i := range n {
			if string(secrets[i]) != strings.TrimSpace(string(kept)) {
				t.Fatalf("start %d signs with %q; the data dir keeps %q", i, secrets[i], kept)
			}
			if keys[i] != hex.EncodeToString(sum[:]) {
				t.Fatalf("start %d checks API keys against %s; the data dir keeps the key of %x", i, keys[i], sum)
			}
			if printed[i] != "" {
				shown++
				if !strings.Contains(printed[i], string(bytes.TrimSpace(apiKey))) {
					t.Errorf("start %d printed a key that is not kept: %q", i, printed[i])
				}
			}
		}
		if shown != 1 {
			t.Fatalf("the API key was printed %d times", shown)
		}
		if names, _ := filepath.Glob(filepath.Join(dir, ".*")); len(names) != 0 {
			t.Errorf("left behind: %q", names)
		}
	}
}
