package main

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"

	"github.com/trackrelay/trackrelay/internal/durable"
	"github.com/trackrelay/trackrelay/relay"
)

// dkimSigner loads the dkim keys of cfg; nil when none are configured.
func dkimSigner(cfg *Config, log *slog.Logger) (*relay.DKIMSigner, error) {
	if len(cfg.DKIM) == 0 {
		return nil, nil
	}
	var keys []relay.DKIMKey
	for i, k := range cfg.DKIM {
		signer, err := relay.LoadDKIMKey(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("dkim[%d].key_file: %w", i, err)
		}
		keys = append(keys, relay.DKIMKey{Domain: k.Domain, Selector: k.Selector, Signer: signer})
		log.Info("DKIM signing", "domain", k.Domain, "selector", k.Selector)
	}
	s, err := relay.NewDKIMSigner(keys)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	return s, nil
}

// cmdDKIMKeygen writes a new DKIM private key (PEM, mode 0600) and prints
// the DNS TXT record that publishes its public half.
func cmdDKIMKeygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("dkim-keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	domain := fs.String("domain", "", "signing domain (d=), e.g. example.com")
	selector := fs.String("selector", "", "selector (s=), e.g. trackrelay2026")
	typ := fs.String("type", "rsa", "key type: rsa or ed25519")
	bits := fs.Int("bits", 2048, "RSA key size in bits (2048 to 8192)")
	out := fs.String("out", "", "private key file to write (default DOMAIN.SELECTOR.dkim.pem); never overwritten")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "trackrelay dkim-keygen: "+format+"\n", a...)
		return 2
	}
	d := strings.TrimSuffix(strings.ToLower(*domain), ".")
	if !validDNSName(d) || !strings.Contains(d, ".") {
		return fail("-domain %q is not a domain name", *domain)
	}
	if !validDNSName(*selector) {
		return fail("-selector %q is not a DKIM selector (DNS labels: letters, digits, hyphens)", *selector)
	}
	var key crypto.Signer
	switch *typ {
	case "rsa":
		if *bits < relay.MinDKIMRSABits || *bits > 8192 {
			return fail("-bits %d: RSA keys for DKIM are %d to 8192 bits", *bits, relay.MinDKIMRSABits)
		}
		k, err := rsa.GenerateKey(rand.Reader, *bits)
		if err != nil {
			return fail("%v", err)
		}
		key = k
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return fail("%v", err)
		}
		key = k
	default:
		return fail("-type %q is not rsa or ed25519", *typ)
	}
	record, err := relay.DKIMRecord(key)
	if err != nil {
		return fail("%v", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fail("%v", err)
	}
	path := *out
	if path == "" {
		path = d + "." + *selector + ".dkim.pem"
	}
	// Never over an existing key: its selector may be published already.
	if err := durable.CreateFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		fmt.Fprintf(stderr, "trackrelay dkim-keygen: %v\n", err)
		return 1
	}
	name := *selector + "._domainkey." + d
	abs, _ := filepath.Abs(path)
	fmt.Fprintf(stdout, "private key written to %s (mode 0600)\n\n", path)
	fmt.Fprintf(stdout, "DNS TXT record\n  name:  %s\n  value: %s\n\n", name, record)
	fmt.Fprintf(stdout, "zone file line:\n%s. 3600 IN TXT ( %s )\n\n", name, txtChunks(record))
	fmt.Fprintf(stdout, "config:\ndkim:\n  - domain: %s\n    selector: %s\n    key_file: %s\n", d, *selector, abs)
	return 0
}

// txtChunks quotes a TXT value as DNS character-strings of at most 255 bytes.
func txtChunks(v string) string {
	var parts []string
	for len(v) > 255 {
		parts = append(parts, `"`+v[:255]+`"`)
		v = v[255:]
	}
	parts = append(parts, `"`+v+`"`)
	return strings.Join(parts, " ")
}
