package main

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
)

// "ipranges build" turns Apple's CSV into a range file that
// tracking.ip_lists_dir loads: its source in the header, ranges merged.
func TestIPRanges_build(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "egress-ip-ranges.csv")
	csv := "172.224.224.0/27,GB,GB-EN,London,\n172.224.224.32/27,GB,GB-EN,London,\n2a02:26f7:b3c0:4000::/64,DE,DE-BE,Berlin,\n"
	if err := os.WriteFile(in, []byte(csv), 0o644); err != nil {
		t.Fatal(err)
	}
	lists := filepath.Join(dir, "lists")
	if err := os.Mkdir(lists, 0o755); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(lists, "icloud-private-relay.txt")
	now := time.Date(2026, 8, 17, 12, 0, 0, 0, time.UTC)
	var stdout, stderr bytes.Buffer
	if code := cmdIPRanges([]string{"build", "-in", in, "-out", out, "-source", "https://mask-api.icloud.com/egress-ip-ranges.csv"}, now, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	for _, want := range []string{
		"# https://mask-api.icloud.com/egress-ip-ranges.csv\n",
		"from egress-ip-ranges.csv on 2026-08-17: 2 prefixes (1 IPv4, 1 IPv6)",
		"\n172.224.224.0/26\n2a02:26f7:b3c0:4000::/64\n",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("file lacks %q:\n%s", want, text)
		}
	}
	tables, err := loadIPLists(lists)
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := classify.LoadTables(nil)
	t.Cleanup(func() { classify.Use(orig) })
	classify.Use(tables)
	v := classify.Classify(classify.Hit{Method: http.MethodGet, IP: netip.MustParseAddr("172.224.224.40"), Header: http.Header{}, UserAgent: "Mozilla/5.0", At: now})
	if v.Class != classify.Prefetch {
		t.Errorf("built list not used: %+v", v)
	}

	// A row that is no range fails the build and leaves the file as it was.
	if err := os.WriteFile(in, []byte("172.224.224.0/27,GB\nLondon,GB\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := cmdIPRanges([]string{"build", "-in", in, "-out", out}, now, io.Discard, io.Discard); code != 1 {
		t.Errorf("bad row: exit %d", code)
	}
	if b2, _ := os.ReadFile(out); !bytes.Equal(b, b2) {
		t.Error("a failed build changed the file")
	}
	if code := run([]string{"ipranges", "build", "-in", in}, nil, io.Discard, io.Discard); code != 2 {
		t.Errorf("no -out: exit %d", code)
	}
}

// tracking.ip_lists_dir is checked at load; at start its lists replace
// the shipped ones.
func TestConfig_ipListsDir(t *testing.T) {
	good, bad := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(good, "apple-mpp.txt"), []byte("198.51.100.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(bad, "apple.txt"), []byte("198.51.100.0/24\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{bad, filepath.Join(good, "missing")} {
		if _, err := parseConfig([]byte("tracking:\n  ip_lists_dir: " + dir + "\n")); err == nil || !strings.Contains(err.Error(), "tracking.ip_lists_dir") {
			t.Errorf("%s: want an error naming tracking.ip_lists_dir, got %v", dir, err)
		}
	}
	cfg, err := parseConfig([]byte("tracking:\n  ip_lists_dir: " + good + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	orig, _ := classify.LoadTables(nil)
	t.Cleanup(func() { classify.Use(orig) })
	if err := useIPLists(cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err != nil {
		t.Fatal(err)
	}
	hit := func(ip string) string {
		return classify.Classify(classify.Hit{Method: http.MethodGet, IP: netip.MustParseAddr(ip), Header: http.Header{},
			UserAgent: "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36", At: time.Now()}).Class
	}
	if c := hit("198.51.100.7"); c != classify.Prefetch {
		t.Errorf("address of the directory's apple-mpp list: %s", c)
	}
	if c := hit("17.58.101.4"); c != classify.Human {
		t.Errorf("address only in the shipped apple-mpp list: %s", c)
	}
}
