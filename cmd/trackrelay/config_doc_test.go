package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// configKeys returns the dotted key of every leaf of the config schema t
// under prefix: "smtp.listen", "accounts[].name". A Duration is a leaf.
func configKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" {
			continue
		}
		key := join(prefix, tag)
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != reflect.TypeOf(Duration(0)):
			keys = append(keys, configKeys(ft, key)...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, configKeys(ft.Elem(), key+"[]")...)
		default:
			keys = append(keys, key)
		}
	}
	return keys
}

// missingKeys returns the keys that the reference does not name in
// backticks in a row of its table.
func missingKeys(keys []string, doc string) []string {
	documented := map[string]bool{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "| `") {
			continue
		}
		first := strings.Split(strings.Trim(line, "|"), "|")[0]
		for _, m := range backticked.FindAllStringSubmatch(first, -1) {
			documented[m[1]] = true
		}
	}
	var missing []string
	for _, k := range keys {
		if !documented[k] {
			missing = append(missing, k)
		}
	}
	return missing
}

// docs/configuration.md's table has a row for every key the config file
// takes.
func TestConfigKeysDocumented(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "docs", "configuration.md"))
	if err != nil {
		t.Fatal(err)
	}
	keys := configKeys(reflect.TypeOf(Config{}), "")
	if len(keys) < 50 {
		t.Fatalf("only %d keys found in Config: %q", len(keys), keys)
	}
	for _, k := range missingKeys(keys, string(b)) {
		t.Errorf("docs/configuration.md: no row for %s", k)
	}
	// The check itself: a key taken out of the table is missed.
	broken := strings.Replace(string(b), "| `smtp.data_timeout` |", "| smtp.data_timeout |", 1)
	if m := missingKeys(keys, broken); len(m) != 1 || m[0] != "smtp.data_timeout" {
		t.Errorf("with smtp.data_timeout's row broken, missing = %q", m)
	}
}
