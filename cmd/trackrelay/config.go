package main

import (
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker"
	"github.com/trackrelay/trackrelay/tracker/geoip"
)

// Config is the YAML configuration file. The struct is the schema: each
// field's yaml tag is its key, and docs/configuration.md documents every
// key (TestConfigKeysDocumented).
type Config struct {
	DataDir  string          `yaml:"data_dir"`
	SMTP     SMTPConfig      `yaml:"smtp"`
	Upstream *UpstreamConfig `yaml:"upstream"` // nil: capture mode
	HTTP     HTTPConfig      `yaml:"http"`
	Metrics  MetricsConfig   `yaml:"metrics"`
	Tracking TrackingConfig  `yaml:"tracking"`
	Store    StoreConfig     `yaml:"store"`
	Delivery DeliveryConfig  `yaml:"delivery"`
	Log      LogConfig       `yaml:"log"`
	Accounts []AccountConfig `yaml:"accounts"`
	DKIM     []DKIMConfig    `yaml:"dkim"`
}

// DKIMConfig is one DKIM signing key: copies whose From is in Domain (or a
// subdomain of it) are signed with KeyFile, published at
// Selector._domainkey.Domain (see `trackrelay dkim-keygen`).
type DKIMConfig struct {
	Domain   string `yaml:"domain"`
	Selector string `yaml:"selector"`
	KeyFile  string `yaml:"key_file"`
}

// SMTPConfig is the submission server.
type SMTPConfig struct {
	Listen              string   `yaml:"listen"`
	Hostname            string   `yaml:"hostname"`
	TLSCertFile         string   `yaml:"tls_cert_file"`
	TLSKeyFile          string   `yaml:"tls_key_file"`
	MaxMessageBytes     int64    `yaml:"max_message_bytes"`
	MaxRecipients       int      `yaml:"max_recipients"`
	RequireTLS          bool     `yaml:"require_tls"`
	CommandTimeout      Duration `yaml:"command_timeout"`
	DataTimeout         Duration `yaml:"data_timeout"`
	MaxConnections      int      `yaml:"max_connections"`
	MaxConnectionsPerIP int      `yaml:"max_connections_per_ip"`
}

// UpstreamConfig is the smarthost.
type UpstreamConfig struct {
	Address        string   `yaml:"address"`
	TLS            string   `yaml:"tls"`
	Username       string   `yaml:"username"`
	PasswordFile   string   `yaml:"password_file"`
	MaxConnections int      `yaml:"max_connections"`
	ConnectTimeout Duration `yaml:"connect_timeout"`
	CommandTimeout Duration `yaml:"command_timeout"`
	DataTimeout    Duration `yaml:"data_timeout"`
	// InsecureSkipVerify disables certificate checks of the upstream; for
	// tests against self-signed servers only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// HTTPConfig is the tracking and API listener.
type HTTPConfig struct {
	Listen string `yaml:"listen"`
}

// MetricsConfig is the Prometheus listener.
type MetricsConfig struct {
	Listen string `yaml:"listen"`
}

// TrackingConfig is how messages are instrumented and hits recorded.
type TrackingConfig struct {
	BaseURL    string `yaml:"base_url"`
	SecretFile string `yaml:"secret_file"`
	// PreviousSecretFiles still verify tokens after a rotation; only
	// SecretFile signs.
	PreviousSecretFiles []string `yaml:"previous_secret_files"`
	Mode                string   `yaml:"mode"`
	TrustedProxies      []string `yaml:"trusted_proxies"`
	ScannerWindow       Duration `yaml:"scanner_window"`
	// Retention deletes events older than this (e.g. 90d); 0 keeps them.
	// Links keep working and counts stay.
	Retention Duration `yaml:"retention"`
	// IPMode is what is kept of a client's IP: full, truncate (/24 of
	// IPv4, /48 of IPv6) or none.
	IPMode string `yaml:"ip_mode"`
	// MaxEventsPerRecipient is how many events are kept in detail per
	// recipient copy; later hits only add to its counts.
	MaxEventsPerRecipient int `yaml:"max_events_per_recipient"`
	// RecordRate is the hits recorded per second from one client address
	// (an IPv6 /64), after a burst of RecordBurst; past it hits are still
	// answered but not recorded. 0: the defaults (20/s, 200); -1: no limit.
	RecordRate  float64 `yaml:"record_rate"`
	RecordBurst int     `yaml:"record_burst"`
	// GeoIPDB is a MaxMind DB file (GeoLite2/GeoIP2 City or Country): each
	// event then gets the client's country and city. Empty: none.
	GeoIPDB string `yaml:"geoip_db"`
	// IPListsDir holds fresher copies of the classifier's IP range lists
	// (icloud-private-relay.txt, gateway-eop.txt, ...), loaded at start in
	// place of the shipped ones of the same name. Empty: the shipped ones.
	IPListsDir string `yaml:"ip_lists_dir"`
	// Honeypot adds to every copy whose clicks are tracked one link that no
	// person sees or reaches; a hit on it, and the copy's hits from that
	// address around it, are a scanner's.
	Honeypot bool `yaml:"honeypot"`
}

// StoreConfig selects the tracking store: bbolt in data_dir (the
// default), or PostgreSQL, shared by the nodes of a fleet.
type StoreConfig struct {
	Postgres PostgresConfig `yaml:"postgres"`
}

// PostgresConfig is the PostgreSQL store. DSNFile holds a connection URI
// (or TRACKRELAY_POSTGRES_DSN does); unset, the store is bbolt's.
type PostgresConfig struct {
	DSNFile string `yaml:"dsn_file"`
	// MaxConnections is the size of the node's connection pool; 0: 16.
	MaxConnections int `yaml:"max_connections"`
	// FallbackAfter is how long a hit waits for its commit before it goes
	// to the node's hit log instead; 0: 200ms.
	FallbackAfter Duration `yaml:"fallback_after"`
}

// DeliveryConfig is the retry schedule.
type DeliveryConfig struct {
	RetryInitial Duration `yaml:"retry_initial"`
	RetryMax     Duration `yaml:"retry_max"`
	Lifetime     Duration `yaml:"lifetime"`
	DelayWarning Duration `yaml:"delay_warning"` // 0: no "delayed" notices
	ShutdownWait Duration `yaml:"shutdown_grace"`
}

// LogConfig is the log output.
type LogConfig struct {
	Format string `yaml:"format"` // text | json
	Level  string `yaml:"level"`  // debug | info | warn | error
}

// AccountConfig is one sender.
type AccountConfig struct {
	Name          string   `yaml:"name"`
	PasswordHash  string   `yaml:"password_hash"`
	APIKeySHA256  string   `yaml:"api_key_sha256"`
	Networks      []string `yaml:"networks"`
	Mode          string   `yaml:"mode"`
	SelfAddresses []string `yaml:"self_addresses"`
	// WebhookURL receives each tracking event and delivery change as a
	// signed JSON POST; WebhookSecretFile holds the signing secret.
	WebhookURL        string `yaml:"webhook_url"`
	WebhookSecretFile string `yaml:"webhook_secret_file"`
}

// Duration is a time.Duration written as "5m", "36h" or "7d".
type Duration time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseDuration(n.Value)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n int
		if _, err := fmt.Sscanf(days, "%d", &n); err != nil || fmt.Sprint(n) != days || n < 0 {
			return 0, fmt.Errorf("invalid duration %q", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	v, err := time.ParseDuration(s)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("invalid duration %q (use e.g. 30s, 5m, 4h, 7d)", s)
	}
	return v, nil
}

// D is the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// defaultConfig is what `trackrelay serve` runs on without -config, and
// the base every config file is laid over.
func defaultConfig() *Config {
	return &Config{
		DataDir: "./trackrelay-data",
		SMTP: SMTPConfig{
			Listen:              "127.0.0.1:2525",
			Hostname:            "localhost",
			MaxMessageBytes:     36700160,
			MaxRecipients:       100,
			CommandTimeout:      Duration(5 * time.Minute),
			DataTimeout:         Duration(10 * time.Minute),
			MaxConnections:      1000,
			MaxConnectionsPerIP: 50,
		},
		HTTP:     HTTPConfig{Listen: "127.0.0.1:8080"},
		Metrics:  MetricsConfig{Listen: "127.0.0.1:9725"},
		Tracking: TrackingConfig{BaseURL: "http://127.0.0.1:8080", Mode: "all", ScannerWindow: Duration(10 * time.Second), IPMode: "full", MaxEventsPerRecipient: 100},
		Delivery: DeliveryConfig{
			RetryInitial: Duration(time.Minute),
			RetryMax:     Duration(time.Hour),
			Lifetime:     Duration(5 * 24 * time.Hour),
			DelayWarning: Duration(4 * time.Hour),
			ShutdownWait: Duration(30 * time.Second),
		},
		Log: LogConfig{Format: "text", Level: "info"},
	}
}

// defaultAccount is the embedded defaults' one account: loopback clients
// send as it without AUTH; its API key is made on first start.
func defaultAccount() AccountConfig {
	return AccountConfig{Name: "default", Networks: []string{"127.0.0.0/8", "::1/128"}, Mode: ""}
}

// loadConfig reads a config file over the defaults, strictly: unknown keys
// and bad values are errors that name the key. All problems are reported,
// not just the first.
func loadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parseConfig(data)
}

func parseConfig(data []byte) (*Config, error) {
	cfg := defaultConfig()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	var errs []error
	if len(root.Content) > 0 {
		decodeInto(root.Content[0], reflect.ValueOf(cfg).Elem(), "", &errs)
	}
	if len(errs) == 0 {
		errs = cfg.validate()
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

// decodeInto decodes n into v key by key, so that every error carries the
// dotted path of its key.
func decodeInto(n *yaml.Node, v reflect.Value, path string, errs *[]error) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if v.Kind() == reflect.Pointer && v.Type().Elem().Kind() == reflect.Struct {
		if n.Tag == "!!null" {
			return
		}
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		v = v.Elem()
	}
	switch {
	case v.Kind() == reflect.Struct && v.Type() != reflect.TypeOf(Duration(0)):
		if n.Kind != yaml.MappingNode {
			if n.Tag == "!!null" {
				return
			}
			*errs = append(*errs, fmt.Errorf("config: %s (line %d): expected a mapping", orRoot(path), n.Line))
			return
		}
		fields := map[string]int{}
		for i := 0; i < v.NumField(); i++ {
			tag := strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0]
			if tag != "" && tag != "-" {
				fields[tag] = i
			}
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			key := join(path, k.Value)
			idx, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Errorf("config: unknown key %s (line %d)", key, k.Line))
				continue
			}
			if seen[k.Value] {
				*errs = append(*errs, fmt.Errorf("config: duplicate key %s (line %d)", key, k.Line))
				continue
			}
			seen[k.Value] = true
			decodeInto(val, v.Field(idx), key, errs)
		}
	case v.Kind() == reflect.Slice && v.Type().Elem().Kind() == reflect.Struct:
		if n.Tag == "!!null" {
			return
		}
		if n.Kind != yaml.SequenceNode {
			*errs = append(*errs, fmt.Errorf("config: %s (line %d): expected a list", path, n.Line))
			return
		}
		s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
		for i, item := range n.Content {
			decodeInto(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i), errs)
		}
		v.Set(s)
	default:
		if err := n.Decode(v.Addr().Interface()); err != nil {
			msg := err.Error()
			if te := (*yaml.TypeError)(nil); errors.As(err, &te) && len(te.Errors) > 0 {
				msg = te.Errors[0]
			}
			*errs = append(*errs, fmt.Errorf("config: %s (line %d): %s", path, n.Line, strings.TrimPrefix(msg, "yaml: ")))
		}
	}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func orRoot(p string) string {
	if p == "" {
		return "top level"
	}
	return p
}

var validModes = map[string]bool{"none": true, "opens": true, "clicks": true, "all": true}

// validate checks values; every message names its key.
func (c *Config) validate() []error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("config: %s: %s", key, fmt.Sprintf(format, a...)))
	}
	if strings.TrimSpace(c.DataDir) == "" {
		bad("data_dir", "must not be empty")
	}
	if pg := c.Store.Postgres; pg.MaxConnections < 0 || pg.MaxConnections > math.MaxInt32 {
		bad("store.postgres.max_connections", "%d is not a pool size (0 for the default)", pg.MaxConnections)
	}
	// A hit waits for the store tracker.DefaultStoreTimeout at most: the
	// bound must leave time for the hit log's fdatasync within it.
	if fa := c.Store.Postgres.FallbackAfter.D(); fa < 0 || fa > tracker.DefaultStoreTimeout/2 {
		bad("store.postgres.fallback_after", "%s is not a wait between 0 (the default, 200ms) and %s", fa, tracker.DefaultStoreTimeout/2)
	}
	if dsn, err := postgresDSN(c); err != nil {
		errs = append(errs, fmt.Errorf("config: %w", err))
	} else if dsn != "" && c.Tracking.Retention != 0 {
		// Retention on PostgreSQL is a sweep one node of the fleet must
		// run; until it exists, data would be kept past the promise.
		bad("tracking.retention", "not applied by the PostgreSQL store yet; leave it unset with store.postgres")
	}
	checkListen := func(key, v string) {
		if _, _, err := net.SplitHostPort(v); err != nil {
			bad(key, "%q is not host:port", v)
		}
	}
	checkListen("smtp.listen", c.SMTP.Listen)
	checkListen("http.listen", c.HTTP.Listen)
	if c.Metrics.Listen != "" {
		checkListen("metrics.listen", c.Metrics.Listen)
	}
	if c.SMTP.Hostname == "" || strings.ContainsAny(c.SMTP.Hostname, " \t\r\n") {
		bad("smtp.hostname", "must be a host name")
	}
	if (c.SMTP.TLSCertFile == "") != (c.SMTP.TLSKeyFile == "") {
		bad("smtp.tls_cert_file", "tls_cert_file and tls_key_file go together")
	} else if c.SMTP.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(c.SMTP.TLSCertFile, c.SMTP.TLSKeyFile); err != nil {
			bad("smtp.tls_cert_file", "cannot load the certificate and key: %v", err)
		}
	}
	if c.SMTP.RequireTLS && c.SMTP.TLSCertFile == "" {
		bad("smtp.require_tls", "needs smtp.tls_cert_file and smtp.tls_key_file")
	}
	if c.SMTP.MaxMessageBytes <= 0 {
		bad("smtp.max_message_bytes", "must be positive")
	}
	if c.SMTP.MaxRecipients <= 0 {
		bad("smtp.max_recipients", "must be positive")
	}
	if c.SMTP.MaxConnections <= 0 {
		bad("smtp.max_connections", "must be positive")
	}
	if c.SMTP.MaxConnectionsPerIP <= 0 {
		bad("smtp.max_connections_per_ip", "must be positive")
	}
	if c.SMTP.CommandTimeout <= 0 {
		bad("smtp.command_timeout", "must be positive")
	}
	if u := c.Upstream; u != nil {
		if _, _, err := net.SplitHostPort(u.Address); err != nil {
			bad("upstream.address", "%q is not host:port", u.Address)
		}
		switch u.TLS {
		case "", "starttls", "implicit", "none":
		default:
			bad("upstream.tls", "%q is not one of starttls, implicit, none", u.TLS)
		}
		if u.Username != "" && u.PasswordFile == "" && os.Getenv(envUpstreamPassword) == "" {
			bad("upstream.password_file", "required with upstream.username")
		}
		if u.PasswordFile != "" {
			if _, err := os.Stat(u.PasswordFile); err != nil {
				bad("upstream.password_file", "%v", err)
			}
		}
		if u.MaxConnections < 0 {
			bad("upstream.max_connections", "must not be negative")
		}
	}
	if u, err := url.Parse(c.Tracking.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		bad("tracking.base_url", "%q is not an absolute http(s) URL without query", c.Tracking.BaseURL)
	}
	switch c.Tracking.IPMode {
	case "full", "truncate", "none":
	default:
		bad("tracking.ip_mode", "%q is not one of full, truncate, none", c.Tracking.IPMode)
	}
	if c.Tracking.RecordRate < 0 && c.Tracking.RecordRate != -1 {
		bad("tracking.record_rate", "must be positive, 0 (default) or -1 (no limit)")
	}
	if c.Tracking.RecordBurst < 0 {
		bad("tracking.record_burst", "must not be negative")
	}
	if c.Tracking.MaxEventsPerRecipient <= 0 {
		bad("tracking.max_events_per_recipient", "must be positive")
	}
	if c.Tracking.Retention != 0 && c.Tracking.Retention < Duration(time.Hour) {
		bad("tracking.retention", "must be 0 (keep events) or at least 1h")
	}
	if !validModes[c.Tracking.Mode] {
		bad("tracking.mode", "%q is not one of none, opens, clicks, all", c.Tracking.Mode)
	}
	for i, p := range c.Tracking.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			bad(fmt.Sprintf("tracking.trusted_proxies[%d]", i), "%v", err)
		}
	}
	if c.Tracking.SecretFile != "" {
		if _, err := os.Stat(c.Tracking.SecretFile); err != nil {
			bad("tracking.secret_file", "%v", err)
		}
	}
	if c.Tracking.GeoIPDB != "" {
		if db, err := geoip.Open(c.Tracking.GeoIPDB); err != nil {
			bad("tracking.geoip_db", "not a usable MaxMind DB: %v", err)
		} else {
			_ = db.Close()
		}
	}
	if c.Tracking.IPListsDir != "" {
		if _, err := loadIPLists(c.Tracking.IPListsDir); err != nil {
			bad("tracking.ip_lists_dir", "%v", err)
		}
	}
	if c.Delivery.RetryInitial <= 0 || c.Delivery.RetryMax < c.Delivery.RetryInitial {
		bad("delivery.retry_initial", "must be positive and not above delivery.retry_max")
	}
	if c.Delivery.Lifetime <= 0 {
		bad("delivery.lifetime", "must be positive")
	}
	if c.Delivery.DelayWarning < 0 || (c.Delivery.DelayWarning > 0 && c.Delivery.DelayWarning >= c.Delivery.Lifetime) {
		bad("delivery.delay_warning", "must be 0 (off) or shorter than delivery.lifetime")
	}
	if c.Delivery.ShutdownWait <= 0 {
		bad("delivery.shutdown_grace", "must be positive")
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		bad("log.format", "%q is not text or json", c.Log.Format)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		bad("log.level", "%q is not debug, info, warn or error", c.Log.Level)
	}
	names := map[string]bool{}
	for i, a := range c.Accounts {
		key := fmt.Sprintf("accounts[%d]", i)
		if a.Name == "" {
			bad(key+".name", "must not be empty")
		} else if names[a.Name] {
			bad(key+".name", "duplicate account %q", a.Name)
		}
		names[a.Name] = true
		if a.PasswordHash != "" {
			cost, err := bcrypt.Cost([]byte(a.PasswordHash))
			if err != nil {
				bad(key+".password_hash", "not a bcrypt hash (make one with `trackrelay hash-password`)")
			} else if cost < 10 {
				bad(key+".password_hash", "bcrypt cost %d is below 10", cost)
			}
		}
		if a.APIKeySHA256 != "" {
			if b, err := hex.DecodeString(a.APIKeySHA256); err != nil || len(b) != 32 {
				bad(key+".api_key_sha256", "must be 64 hex digits (sha256sum of the key)")
			}
		}
		for j, n := range a.Networks {
			if _, err := parsePrefix(n); err != nil {
				bad(fmt.Sprintf("%s.networks[%d]", key, j), "%v", err)
			}
		}
		if a.Mode != "" && !validModes[a.Mode] {
			bad(key+".mode", "%q is not one of none, opens, clicks, all", a.Mode)
		}
		for j, s := range a.SelfAddresses {
			if !strings.Contains(s, "@") {
				bad(fmt.Sprintf("%s.self_addresses[%d]", key, j), "%q is not an address", s)
			}
		}
		if a.WebhookURL != "" {
			if u, err := url.Parse(a.WebhookURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				bad(key+".webhook_url", "%q is not an absolute http(s) URL", a.WebhookURL)
			}
			if a.WebhookSecretFile == "" {
				bad(key+".webhook_secret_file", "required with webhook_url")
			} else if b, err := os.ReadFile(a.WebhookSecretFile); err != nil {
				bad(key+".webhook_secret_file", "%v", err)
			} else if len(strings.TrimSpace(string(b))) < 16 {
				bad(key+".webhook_secret_file", "holds fewer than 16 bytes")
			}
		} else if a.WebhookSecretFile != "" {
			bad(key+".webhook_secret_file", "set without webhook_url")
		}
		if a.PasswordHash == "" && len(a.Networks) == 0 {
			bad(key, "account %q can neither AUTH (password_hash) nor send from a network (networks)", a.Name)
		}
	}
	errs = append(errs, validateDKIM(c.DKIM)...)
	return errs
}

// validateDKIM checks the dkim list: names, one key per domain, and key
// files that load (RSA of at least 2048 bits, or Ed25519).
func validateDKIM(keys []DKIMConfig) []error {
	var errs []error
	seen := map[string]bool{}
	for i, k := range keys {
		key := fmt.Sprintf("dkim[%d]", i)
		d := strings.TrimSuffix(strings.ToLower(k.Domain), ".")
		switch {
		case !validDNSName(d) || !strings.Contains(d, "."):
			errs = append(errs, fmt.Errorf("config: %s.domain: %q is not a domain name", key, k.Domain))
		case seen[d]:
			errs = append(errs, fmt.Errorf("config: %s.domain: a second key for %s", key, d))
		}
		seen[d] = true
		if !validDNSName(k.Selector) {
			errs = append(errs, fmt.Errorf("config: %s.selector: %q is not a DKIM selector (DNS labels: letters, digits, hyphens)", key, k.Selector))
		}
		if k.KeyFile == "" {
			errs = append(errs, fmt.Errorf("config: %s.key_file: required", key))
		} else if _, err := relay.LoadDKIMKey(k.KeyFile); err != nil {
			errs = append(errs, fmt.Errorf("config: %s.key_file: %v", key, err))
		}
	}
	return errs
}

// validDNSName reports whether s is dot-separated labels of letters,
// digits and inner hyphens (underscores allowed, as some selectors have).
func validDNSName(s string) bool {
	if s == "" || len(s) > 253 {
		return false
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// parsePrefix accepts a CIDR prefix or a bare address (a /32 or /128).
func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not an address or CIDR prefix", s)
	}
	return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
}
