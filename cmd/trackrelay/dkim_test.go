package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/trackrelay/trackrelay/relay"
)

func keygen(t *testing.T, args ...string) (stdout string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(append([]string{"dkim-keygen"}, args...), nil, &out, &errb)
	if code != 0 {
		return errb.String(), code
	}
	return out.String(), 0
}

func TestDKIMKeygen_recordVerifiesSignature(t *testing.T) {
	dir := t.TempDir()
	for _, typ := range []string{"rsa", "ed25519"} {
		t.Run(typ, func(t *testing.T) {
			path := filepath.Join(dir, typ+".pem")
			out, code := keygen(t, "-domain", "Example.COM", "-selector", "tr-"+typ, "-type", typ, "-out", path)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, out)
			}
			st, err := os.Stat(path)
			if err != nil || st.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v %v", st, err)
			}
			name := "tr-" + typ + "._domainkey.example.com"
			if !strings.Contains(out, "name:  "+name+"\n") {
				t.Errorf("record name not printed:\n%s", out)
			}
			var value string
			for _, l := range strings.Split(out, "\n") {
				if v, ok := strings.CutPrefix(l, "  value: "); ok {
					value = v
				}
			}
			if !strings.HasPrefix(value, "v=DKIM1; k="+typ+"; p=") {
				t.Fatalf("record value %q", value)
			}
			// A signature made with the written key verifies against the
			// printed record.
			key, err := relay.LoadDKIMKey(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := relay.NewDKIMSigner([]relay.DKIMKey{{Domain: "example.com", Selector: "tr-" + typ, Signer: key}})
			if err != nil {
				t.Fatal(err)
			}
			msg := "From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
			sig, err := s.Sign(strings.NewReader(msg))
			if err != nil {
				t.Fatal(err)
			}
			vs, err := dkim.VerifyWithOptions(strings.NewReader(sig+msg), &dkim.VerifyOptions{
				LookupTXT: func(d string) ([]string, error) {
					if d != name {
						t.Errorf("looked up %q", d)
					}
					return []string{value}, nil
				},
			})
			if err != nil || len(vs) != 1 || vs[0].Err != nil {
				t.Fatalf("verify: %v %+v", err, vs)
			}
			// Never overwritten.
			if _, code := keygen(t, "-domain", "example.com", "-selector", "x", "-out", path); code == 0 {
				t.Error("an existing key file was overwritten")
			}
		})
	}
	for _, args := range [][]string{
		{"-selector", "s"},
		{"-domain", "example.com"},
		{"-domain", "example.com", "-selector", "bad selector"},
		{"-domain", "example.com", "-selector", "s", "-bits", "1024"},
		{"-domain", "example.com", "-selector", "s", "-type", "dsa"},
	} {
		if _, code := keygen(t, append(args, "-out", filepath.Join(dir, "never.pem"))...); code == 0 {
			t.Errorf("%v accepted", args)
		}
	}
}

func TestConfig_dkim(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.pem")
	if _, code := keygen(t, "-domain", "example.com", "-selector", "s1", "-type", "ed25519", "-out", good); code != 0 {
		t.Fatal("keygen failed")
	}
	small := filepath.Join(dir, "small.pem")
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(small, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	junk := filepath.Join(dir, "junk.pem")
	os.WriteFile(junk, []byte("hello"), 0o600)

	cfg, err := parseConfig([]byte("dkim:\n  - domain: example.com\n    selector: s1\n    key_file: " + good + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.DKIM) != 1 || cfg.DKIM[0].Selector != "s1" {
		t.Errorf("decoded %+v", cfg.DKIM)
	}
	signer, err := dkimSigner(cfg, slog.New(slog.DiscardHandler))
	if err != nil || signer == nil {
		t.Errorf("dkimSigner: %v", err)
	}

	for _, c := range []struct{ yaml, want string }{
		{"dkim:\n  - domain: example.com\n    selector: s1\n    key_file: " + small, "dkim[0].key_file: " + small + ": RSA key of 1024 bits is too small"},
		{"dkim:\n  - domain: example.com\n    selector: s1\n    key_file: " + junk, "dkim[0].key_file: " + junk + ": no PEM block"},
		{"dkim:\n  - domain: example.com\n    selector: s1\n    key_file: " + dir + "/missing.pem", "dkim[0].key_file: open"},
		{"dkim:\n  - domain: example.com\n    selector: s1", "dkim[0].key_file: required"},
		{"dkim:\n  - domain: localhost\n    selector: s1\n    key_file: " + good, "dkim[0].domain"},
		{"dkim:\n  - domain: exa mple.com\n    selector: s1\n    key_file: " + good, "dkim[0].domain"},
		{"dkim:\n  - domain: example.com\n    selector: -s1\n    key_file: " + good, "dkim[0].selector"},
		{"dkim:\n  - domain: example.com\n    key_file: " + good, "dkim[0].selector"},
		{"dkim:\n  - domain: example.com\n    selector: a\n    key_file: " + good + "\n  - domain: EXAMPLE.com\n    selector: b\n    key_file: " + good, "dkim[1].domain: a second key"},
		{"dkim:\n  - domain: example.com\n    selector: s1\n    keyfile: x", "unknown key dkim[0].keyfile"},
	} {
		_, err := parseConfig([]byte(c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q:\n got %v\nwant %q", c.yaml, err, c.want)
		}
	}
}
