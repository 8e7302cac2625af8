package geoiptest

import (
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/maxmind/mmdbwriter"
	"github.com/maxmind/mmdbwriter/mmdbtype"
)

// Network is one network of a test database and where it is.
type Network struct {
	CIDR    string
	Country string // ISO code; "" leaves country out
	City    string // English name; "" leaves city out
}

// Networks are the networks of WriteCity's database. 81.2.69.0/24 and
// 89.160.20.0/24 are also in MaxMind's published test databases (London;
// Sweden); 2001:db8::/32 is the IPv6 documentation prefix.
var Networks = []Network{
	{CIDR: "81.2.69.0/24", Country: "GB", City: "London"},
	{CIDR: "89.160.20.0/24", Country: "SE"},
	{CIDR: "2001:db8::/32", Country: "DE", City: "Berlin"},
}

// WriteCity writes a GeoIP2-City database of Networks in t.TempDir() and
// returns its path.
func WriteCity(t testing.TB) string {
	t.Helper()
	return Write(t, "GeoIP2-City", Networks)
}

// Write writes a database of type dbType with nets in t.TempDir() and
// returns its path.
func Write(t testing.TB, dbType string, nets []Network) string {
	t.Helper()
	tree, err := mmdbwriter.New(mmdbwriter.Options{
		DatabaseType:            dbType,
		Languages:               []string{"en"},
		IPVersion:               6,
		RecordSize:              24,
		IncludeReservedNetworks: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nets {
		_, ipnet, err := net.ParseCIDR(n.CIDR)
		if err != nil {
			t.Fatal(err)
		}
		rec := mmdbtype.Map{}
		if n.Country != "" {
			rec["country"] = mmdbtype.Map{"iso_code": mmdbtype.String(n.Country)}
		}
		if n.City != "" {
			rec["city"] = mmdbtype.Map{"names": mmdbtype.Map{"en": mmdbtype.String(n.City)}}
		}
		if err := tree.Insert(ipnet, rec); err != nil {
			t.Fatal(err)
		}
	}
	path := filepath.Join(t.TempDir(), dbType+".mmdb")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tree.WriteTo(f); err != nil {
		f.Close()
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	return path
}
