package geoip

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"strings"

	"github.com/oschwald/maxminddb-golang/v2"
)

// DB is an open MaxMind DB. It is safe for concurrent use.
type DB struct {
	r *maxminddb.Reader
}

// record is the part of a GeoIP2 City or Country record that is read.
type record struct {
	Country struct {
		ISOCode string `maxminddb:"iso_code"`
	} `maxminddb:"country"`
	City struct {
		Names struct {
			EN string `maxminddb:"en"`
		} `maxminddb:"names"`
	} `maxminddb:"city"`
}

// Open opens the MaxMind DB file at path. It fails if the file is not a
// MaxMind DB, or is one of another kind than City or Country (an ASN
// database, say, which has no location).
func Open(path string) (*DB, error) {
	r, err := maxminddb.Open(path)
	if err != nil {
		if _, ok := errors.AsType[*fs.PathError](err); !ok {
			err = fmt.Errorf("%s: %w", path, err)
		}
		return nil, err
	}
	t := strings.ToLower(r.Metadata.DatabaseType)
	if !strings.Contains(t, "city") && !strings.Contains(t, "country") {
		_ = r.Close()
		return nil, fmt.Errorf("%s: database type %q is not a City or Country database", path, r.Metadata.DatabaseType)
	}
	return &DB{r: r}, nil
}

// DatabaseType is the type the database declares, e.g. "GeoLite2-City".
func (db *DB) DatabaseType() string { return db.r.Metadata.DatabaseType }

// Lookup returns the ISO 3166-1 alpha-2 code of the country of ip and the
// English name of its city; either is "" when unknown (always for loopback,
// private and other non-public addresses, and a Country database has no
// cities).
func (db *DB) Lookup(ip netip.Addr) (country, city string) {
	ip = ip.Unmap()
	if !ip.IsValid() || !ip.IsGlobalUnicast() || ip.IsPrivate() {
		return "", ""
	}
	res := db.r.Lookup(ip)
	if !res.Found() {
		return "", ""
	}
	var rec record
	if err := res.Decode(&rec); err != nil {
		return "", ""
	}
	return rec.Country.ISOCode, rec.City.Names.EN
}

// Close releases the database. Lookups must not be running or follow.
func (db *DB) Close() error { return db.r.Close() }
