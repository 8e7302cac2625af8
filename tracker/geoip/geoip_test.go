package geoip_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/geoip"
	"github.com/trackrelay/trackrelay/tracker/geoip/geoiptest"
)

func TestLookup(t *testing.T) {
	db, err := geoip.Open(geoiptest.WriteCity(t))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got := db.DatabaseType(); got != "GeoIP2-City" {
		t.Errorf("DatabaseType = %q", got)
	}
	for _, tc := range []struct{ ip, country, city string }{
		{"81.2.69.160", "GB", "London"},
		{"::ffff:81.2.69.142", "GB", "London"}, // IPv4-mapped
		{"89.160.20.115", "SE", ""},            // country only
		{"2001:db8::1", "DE", "Berlin"},
		{"8.8.8.8", "", ""},   // not in the database
		{"127.0.0.1", "", ""}, // loopback
		{"10.1.2.3", "", ""},  // private
		{"::1", "", ""},
	} {
		country, city := db.Lookup(netip.MustParseAddr(tc.ip))
		if country != tc.country || city != tc.city {
			t.Errorf("Lookup(%s) = %q, %q; want %q, %q", tc.ip, country, city, tc.country, tc.city)
		}
	}
	if c, city := db.Lookup(netip.Addr{}); c != "" || city != "" {
		t.Errorf("Lookup(invalid) = %q, %q", c, city)
	}
}

func TestOpenRejects(t *testing.T) {
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.mmdb")
	if err := os.WriteFile(junk, []byte("not a maxmind database"), 0o600); err != nil {
		t.Fatal(err)
	}
	asn := geoiptest.Write(t, "GeoLite2-ASN", []geoiptest.Network{{CIDR: "81.2.69.0/24"}})
	for name, path := range map[string]string{
		"missing": filepath.Join(dir, "missing.mmdb"),
		"junk":    junk,
		"empty":   mustWrite(t, filepath.Join(dir, "empty.mmdb"), nil),
		"asn":     asn,
	} {
		if db, err := geoip.Open(path); err == nil {
			db.Close()
			t.Errorf("%s: Open succeeded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func mustWrite(t *testing.T, path string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func BenchmarkLookup(b *testing.B) {
	db, err := geoip.Open(geoiptest.WriteCity(b))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	ip := netip.MustParseAddr("81.2.69.160")
	b.ReportAllocs()
	for b.Loop() {
		if c, _ := db.Lookup(ip); c != "GB" {
			b.Fatal(c)
		}
	}
}
