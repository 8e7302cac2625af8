// Package geoiptest writes small MaxMind DB files for tests, in the layout
// of GeoIP2-City (country.iso_code, city.names.en).
//
// geoiptest is for tests only; no non-test code may import it.
package geoiptest
