package relay

import (
	"bufio"
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/mail"
	"os"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/trackrelay/trackrelay/internal/guard"
)

// MinDKIMRSABits is the smallest RSA key accepted for DKIM signing
// (RFC 8301 requires at least 1024; receivers increasingly want 2048).
const MinDKIMRSABits = 2048

// dkimMaxHeader bounds the header block read to pick the key and the
// signed fields; a larger header is not signed.
const dkimMaxHeader = 1 << 20

// dkimHeaderKeys are the fields signed when present, in this order. From
// is always signed, and listed once more than it occurs (oversigned), so
// that a From added on the way breaks the signature.
var dkimHeaderKeys = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "MIME-Version",
	"Content-Type", "Content-Transfer-Encoding", "List-Unsubscribe",
	"List-Unsubscribe-Post", "Reply-To", "In-Reply-To", "References",
}

// DKIMKey is one signing key: copies whose From domain is Domain (or a
// subdomain of it) are signed with it as d=Domain, s=Selector.
type DKIMKey struct {
	Domain   string
	Selector string
	// Signer is an RSA (at least MinDKIMRSABits) or Ed25519 private key.
	Signer crypto.Signer
}

// DKIMSigner signs outgoing copies with the key of their From domain,
// relaxed/relaxed, SHA-256. It is safe for concurrent use.
//
// The key is chosen by the domain of the From address: a key for exactly
// that domain, else a key for its nearest parent domain (mail from
// news.example.com is signed d=example.com when only example.com has a
// key; DMARC's relaxed alignment accepts that).
type DKIMSigner struct {
	keys map[string]DKIMKey // by lower-case domain
}

// NewDKIMSigner returns a signer for keys; each domain may have one key.
func NewDKIMSigner(keys []DKIMKey) (*DKIMSigner, error) {
	s := &DKIMSigner{keys: map[string]DKIMKey{}}
	for _, k := range keys {
		k.Domain = normDomain(k.Domain)
		if k.Domain == "" || k.Selector == "" {
			return nil, errors.New("dkim: a key needs a domain and a selector")
		}
		if _, dup := s.keys[k.Domain]; dup {
			return nil, fmt.Errorf("dkim: two keys for domain %s", k.Domain)
		}
		if err := checkDKIMSigner(k.Signer); err != nil {
			return nil, fmt.Errorf("dkim: key for %s: %w", k.Domain, err)
		}
		s.keys[k.Domain] = k
	}
	return s, nil
}

// LoadDKIMKey reads a PEM private key file (PKCS#8 "PRIVATE KEY" holding an
// RSA or Ed25519 key, or PKCS#1 "RSA PRIVATE KEY"). RSA keys shorter than
// MinDKIMRSABits are refused. Errors name the file.
func LoadDKIMKey(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseDKIMKey(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// ParseDKIMKey parses a PEM private key as LoadDKIMKey does.
func ParseDKIMKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block found (expected a PRIVATE KEY)")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q is not a private key (expected PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("cannot parse the private key: %w", err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	if err := checkDKIMSigner(signer); err != nil {
		return nil, err
	}
	return signer, nil
}

func checkDKIMSigner(s crypto.Signer) error {
	switch k := s.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinDKIMRSABits {
			return fmt.Errorf("RSA key of %d bits is too small: DKIM keys need at least %d", bits, MinDKIMRSABits)
		}
		return nil
	case ed25519.PrivateKey:
		return nil
	case nil:
		return errors.New("no key")
	default:
		return fmt.Errorf("unsupported key type %T (use RSA or Ed25519)", s)
	}
}

// DKIMRecord returns the value of the DNS TXT record that publishes the
// public half of key, e.g. "v=DKIM1; k=rsa; p=MIIB...".
func DKIMRecord(key crypto.Signer) (string, error) {
	switch pub := key.Public().(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + b64(der), nil
	case ed25519.PublicKey:
		// RFC 8463: the raw 32-byte public key.
		return "v=DKIM1; k=ed25519; p=" + b64(pub), nil
	default:
		return "", fmt.Errorf("unsupported key type %T", pub)
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// keyFor returns the key for domain: an exact match, else the nearest
// parent domain's.
func (s *DKIMSigner) keyFor(domain string) (DKIMKey, bool) {
	d := normDomain(domain)
	for d != "" {
		if k, ok := s.keys[d]; ok {
			return k, true
		}
		_, parent, ok := strings.Cut(d, ".")
		if !ok {
			break
		}
		d = parent
	}
	return DKIMKey{}, false
}

// normDomain lower-cases d, drops a final dot and writes internationalized
// labels as A-labels: a key is found for a From in U-labels, and d= is
// always in A-labels, the form DNS publishes the key under (RFC 8616).
func normDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if a, err := domainToASCII(d); err == nil {
		d = a
	}
	return d
}

var (
	// errDKIMNoKey: no key for the copy's From domain; it goes unsigned.
	errDKIMNoKey = errors.New("dkim: no key for the From domain")
	// errDKIMSigned: the copy already carries a DKIM-Signature (it was not
	// changed, so that signature still holds).
	errDKIMSigned = errors.New("dkim: already signed")
)

// Sign reads the message from the start of r to its end and returns the
// DKIM-Signature field to put in front of it, its line ending matching
// the message's. Memory does not grow with the message: the header is
// read once to choose the key and fields, then the whole message is
// streamed through the signer. r is left at its end.
func (s *DKIMSigner) Sign(r io.ReadSeeker) (string, error) {
	return s.sign(r, nil)
}

// sign is Sign, logging to log a panic of the key (nil: slog's default).
func (s *DKIMSigner) sign(r io.ReadSeeker, log *slog.Logger) (string, error) {
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	h, _, err := readHeader(bufio.NewReaderSize(r, 16<<10), dkimMaxHeader)
	if err != nil {
		return "", fmt.Errorf("dkim: reading the header: %w", err)
	}
	if h.end == nil {
		return "", errors.New("dkim: the message has no body separator")
	}
	counts := map[string]int{}
	for _, f := range h.fields {
		counts[strings.ToLower(f.name)]++
	}
	if counts["dkim-signature"] > 0 {
		return "", errDKIMSigned
	}
	if counts["from"] != 1 {
		return "", fmt.Errorf("dkim: the message has %d From fields (want 1)", counts["from"])
	}
	from, _ := h.get("From")
	domain, err := fromDomain(from)
	if err != nil {
		return "", err
	}
	key, ok := s.keyFor(domain)
	if !ok {
		return "", errDKIMNoKey
	}
	var keys []string
	for _, name := range dkimHeaderKeys {
		n := counts[strings.ToLower(name)]
		if name == "From" {
			n++ // oversigned
		}
		for range n {
			keys = append(keys, name)
		}
	}
	signer, err := dkim.NewSigner(&dkim.SignOptions{
		Domain:                 key.Domain,
		Selector:               key.Selector,
		Signer:                 recoveringSigner{key.Signer, log},
		Hash:                   crypto.SHA256,
		HeaderCanonicalization: dkim.CanonicalizationRelaxed,
		BodyCanonicalization:   dkim.CanonicalizationRelaxed,
		HeaderKeys:             keys,
	})
	if err != nil {
		return "", err
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		signer.Close()
		return "", err
	}
	if _, err := io.Copy(signer, r); err != nil {
		signer.Close()
		return "", fmt.Errorf("dkim: reading the message: %w", err)
	}
	if err := signer.Close(); err != nil {
		return "", err
	}
	sig := signer.Signature()
	if h.eol == "\n" {
		sig = strings.ReplaceAll(sig, "\r\n", "\n")
	}
	return sig, nil
}

// recoveringSigner is a key whose panic in Sign is recovered, counted and
// logged as the delivery job's, and returned as the error *guard.Panic.
// go-msgauth calls Sign on a goroutine of its own, whose panic no boundary
// of ours could recover: it would end the process.
type recoveringSigner struct {
	crypto.Signer
	log *slog.Logger
}

// Sign implements crypto.Signer.
func (k recoveringSigner) Sign(rand io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	if p := guard.Run(guard.Delivery, k.log, func() { sig, err = k.Signer.Sign(rand, digest, opts) }); p != nil {
		return nil, p
	}
	return sig, err
}

// fromDomain returns the domain of the (single) address in a From value.
func fromDomain(v string) (string, error) {
	var addr string
	if list, err := mail.ParseAddressList(v); err == nil && len(list) > 0 {
		addr = list[0].Address
	} else {
		// An undecodable display name (unknown charset, stray bytes): the
		// address is what is inside the last angle brackets, or all of it.
		addr = v
		if i := strings.LastIndexByte(v, '<'); i >= 0 {
			addr, _, _ = strings.Cut(v[i+1:], ">")
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return "", fmt.Errorf("dkim: no address in From %q", v)
	}
	d := normDomain(addr[at+1:])
	if d == "" || strings.ContainsAny(d, " \t<>()[],;\"") {
		return "", fmt.Errorf("dkim: no domain in From %q", v)
	}
	return d, nil
}

// resignable reports whether a message carrying DKIM-Signature fields may
// have them removed, be instrumented and signed again: every signature is
// for a domain we hold a key for, and so is its From. A signature by
// anyone else is kept, and the message with it.
func (s *DKIMSigner) resignable(h *rawHeader) bool {
	sigs := 0
	for _, f := range h.fields {
		if !f.is("DKIM-Signature") {
			continue
		}
		sigs++
		if _, ok := s.keyFor(dkimTag(f.value(), "d")); !ok {
			return false
		}
	}
	if sigs == 0 {
		return false
	}
	from, _ := h.get("From")
	d, err := fromDomain(from)
	if err != nil {
		return false
	}
	_, ok := s.keyFor(d)
	return ok
}

// dkimTag returns the value of tag name in a DKIM-Signature value.
func dkimTag(v, name string) string {
	for _, kv := range strings.Split(v, ";") {
		k, val, ok := strings.Cut(kv, "=")
		if ok && strings.TrimSpace(k) == name {
			return strings.Join(strings.Fields(val), "")
		}
	}
	return ""
}
