package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/trackrelay/trackrelay/internal/durable"

	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// Environment variables that carry secrets instead of files, for platforms
// that inject secrets that way. When set, they win over the file keys.
const (
	envTrackingSecret   = "TRACKRELAY_TRACKING_SECRET"
	envUpstreamPassword = "TRACKRELAY_UPSTREAM_PASSWORD"
	envPostgresDSN      = "TRACKRELAY_POSTGRES_DSN"
)

// postgresDSN returns the PostgreSQL connection string, from the
// environment or store.postgres.dsn_file, checked for syntax without
// connecting; "" when neither is set (the store is bbolt's). Errors name
// the source, never the string, which may hold a password.
func postgresDSN(cfg *Config) (string, error) {
	source := envPostgresDSN
	dsn := os.Getenv(envPostgresDSN)
	if dsn == "" {
		source = "store.postgres.dsn_file"
		if cfg.Store.Postgres.DSNFile == "" {
			return "", nil
		}
		b, err := os.ReadFile(cfg.Store.Postgres.DSNFile)
		if err != nil {
			return "", fmt.Errorf("%s: %w", source, err)
		}
		dsn = string(b)
	}
	dsn = strings.TrimSpace(dsn)
	if dsn == "" {
		return "", fmt.Errorf("%s: empty", source)
	}
	if _, err := postgres.ParseDSN(dsn); err != nil {
		return "", fmt.Errorf("%s: %w", source, err)
	}
	return dsn, nil
}

// loadKeyring builds the token keys: the current secret signs, and the
// previous ones (tracking.previous_secret_files) still verify, so that
// links in mail already sent keep working after a rotation.
func loadKeyring(cfg *Config) (*token.Keyring, error) {
	secrets, err := loadSecrets(cfg)
	if err != nil {
		return nil, err
	}
	return keyringOf(secrets)
}

// keyringOf builds the token keys of secrets (the current one last).
func keyringOf(secrets [][]byte) (*token.Keyring, error) {
	keys := make([]token.Key, len(secrets))
	for i, s := range secrets {
		keys[i] = token.Key{ID: keyID(s), Secret: s}
	}
	k, err := token.NewKeyring(keys...) // the last one signs
	if err != nil {
		return nil, fmt.Errorf("tracking secrets: %w (two secrets whose ids collide: make a new current secret)", err)
	}
	return k, nil
}

// loadSecrets reads the tracking secrets: the previous ones in order, the
// current one last. The token keys and the console's session keys are
// made from them.
func loadSecrets(cfg *Config) ([][]byte, error) {
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
	var secrets [][]byte
	for i, path := range cfg.Tracking.PreviousSecretFiles {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("tracking.previous_secret_files[%d]: %w", i, err)
		}
		s := []byte(strings.TrimSpace(string(b)))
		if len(s) < token.MinSecretLen {
			return nil, fmt.Errorf("tracking.previous_secret_files[%d]: %s holds %d bytes; at least %d are needed", i, path, len(s), token.MinSecretLen)
		}
		secrets = append(secrets, s)
	}
	return append(secrets, current), nil
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

// loadSecret reads tracking.secret_file, or the secret kept in the data
// dir, generating it on first start.
func loadSecret(cfg *Config) ([]byte, error) {
	path := cfg.Tracking.SecretFile
	if path == "" {
		path = filepath.Join(cfg.DataDir, "tracking-secret")
		if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
			raw := make([]byte, 32)
			rand.Read(raw)
			// Every link sent depends on it: durable before the first token
			// is signed, and never replaced (another process starting on the
			// same data dir may have made it first).
			err := durable.CreateFile(path, []byte(base64.StdEncoding.EncodeToString(raw)+"\n"), 0o600)
			if err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("generating tracking secret: %w", err)
			}
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tracking.secret_file: %w", err)
	}
	secret := []byte(strings.TrimSpace(string(b)))
	if len(secret) < 32 {
		return nil, fmt.Errorf("tracking.secret_file: %s holds %d bytes; at least 32 are needed", path, len(secret))
	}
	return secret, nil
}

// keyID names a secret by its hash, so that the id of a key does not depend
// on the order keys are listed in when they rotate.
func keyID(secret []byte) byte {
	h := sha256.Sum256(append([]byte("trackrelay key id\x00"), secret...))
	return h[0]
}

// ensureDefaultAPIKey gives the embedded defaults' account its API key: made
// and printed once on first start, kept in the data dir.
func ensureDefaultAPIKey(cfg *Config, stdout io.Writer, log *slog.Logger) error {
	path := filepath.Join(cfg.DataDir, "api-key-default")
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		raw := make([]byte, 24)
		rand.Read(raw)
		key := "trk_" + base64.RawURLEncoding.EncodeToString(raw)
		err = durable.CreateFile(path, []byte(key+"\n"), 0o600)
		switch {
		case err == nil:
			fmt.Fprintf(stdout, "API key of account \"default\" (shown once; also kept in %s):\n%s\n", path, key)
			b = []byte(key)
		case errors.Is(err, fs.ErrExist): // made meanwhile by another start
			b, err = os.ReadFile(path)
		default:
			return fmt.Errorf("writing API key: %w", err)
		}
	} else if err == nil {
		log.Info("API key of account default is kept in the data dir", "file", path)
	}
	if err != nil {
		return fmt.Errorf("reading API key: %w", err)
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(string(b))))
	for i := range cfg.Accounts {
		if cfg.Accounts[i].Name == "default" && cfg.Accounts[i].APIKeySHA256 == "" {
			cfg.Accounts[i].APIKeySHA256 = hex.EncodeToString(sum[:])
		}
	}
	return nil
}
