// Package geoip looks up the country and city of an IP address in a MaxMind
// DB file (GeoLite2 or GeoIP2 City or Country, or a database with the same
// layout). The file is memory-mapped: a lookup walks the search tree in
// place and decodes only the two fields it returns.
//
// geoip imports nothing of trackrelay: the tracker's handler asks it
// through tracker.GeoLocator.
package geoip
