package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/trackrelay/trackrelay/tracker/token"
)

// Environment variables that carry secrets instead of files, for platforms
// that inject secrets that way. When set, they win over the file keys.
const (
	envTrackingSecret   = "TRACKRELAY_TRACKING_SECRET"
	envUpstreamPassword = "TRACKRELAY_UPSTREAM_PASSWORD"
)

// loadKeyring builds the token keys: the current secret signs, and the
// previous ones (tracking.previous_secret_files) still verify, so that
// links in mail already sent keep working after a rotation.
func loadKeyring(cfg *Config) (*token.Keyring, error) {
	var current []byte
	if v := os.Getenv(envTrackingSecret); v != "" {
		current = []byte(strings.TrimSpace(v))
		if len(current) < token.MinSecretLen {
			return nil, fmt.Errorf("%s holds %d bytes; at least %d are needed", envTrackingSecret, len(current), token.MinSecretLen)
		}
	} else {
		s, err := loadSecret(cfg)
		if err != nil {
			return nil, err
		}
		current = s
	}
	var keys []token.Key
	for i, path := range cfg.Tracking.PreviousSecretFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("tracking.previous_secret_files[%d]: %w", i, err)
		}
		s := []byte(strings.TrimSpace(string(b)))
		if len(s) < token.MinSecretLen {
			return nil, fmt.Errorf("tracking.previous_secret_files[%d]: %s holds %d bytes; at least %d are needed", i, path, len(s), token.MinSecretLen)
		}
		keys = append(keys, token.Key{ID: keyID(s), Secret: s})
	}
	keys = append(keys, token.Key{ID: keyID(current), Secret: current}) // the last one signs
	k, err := token.NewKeyring(keys...)
	if err != nil {
		return nil, fmt.Errorf("tracking secrets: %w (two secrets whose ids collide: make a new current secret)", err)
	}
	return k, nil
}

// upstreamPassword reads the upstream password from the environment or
// upstream.password_file, without its line ending.
func upstreamPassword(u *UpstreamConfig) (string, error) {
	if v := os.Getenv(envUpstreamPassword); v != "" {
		return v, nil
	}
	if u.PasswordFile == "" {
		return "", nil
	}
	b, err := os.ReadFile(u.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("upstream.password_file: %w", err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
