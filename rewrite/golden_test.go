package rewrite

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files of testdata/")

// fixedMinter mints short, readable, deterministic URLs for golden files.
type fixedMinter struct{ testURLs }

func (fixedMinter) OpenURL() string { return testBase + "/o/OPEN" }
func (fixedMinter) ClickURL(i int, dest string) string {
	return fmt.Sprintf("%s/c/LINK%d?a=1&b=2", testBase, i)
}

// TestGolden rewrites each testdata/*.eml and compares the output and the
// Result with testdata/*.golden (go test -run TestGolden -update refreshes).
func TestGolden(t *testing.T) {
	files, err := filepath.Glob("testdata/*.eml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata: %v", err)
	}
	for _, f := range files {
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		res, err := Message(&out, bytes.NewReader(in), Options{Opens: true, Clicks: true, Minter: fixedMinter{testURLs{testBase}}})
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		got := fmt.Sprintf("%+v\n----\n%s", res, out.Bytes())
		golden := strings.TrimSuffix(f, ".eml") + ".golden"
		if *update {
			if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		want, err := os.ReadFile(golden)
		if err != nil {
			t.Fatalf("%v (run with -update)", err)
		}
		if got != string(want) {
			t.Errorf("%s differs from %s:\n%s", f, golden, got)
		}
	}
}
