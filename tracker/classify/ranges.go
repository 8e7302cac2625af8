package classify

import (
	"bufio"
	"embed"
	"fmt"
	"net/netip"
	"strings"
)

// The IP ranges of prefetchers and image proxies are data, kept with
// their sources in ipranges/.
//
//go:embed ipranges/*.txt
var ipRangeFiles embed.FS

var (
	appleMPP     = mustRanges("ipranges/apple-mpp.txt")
	googleProxy  = mustRanges("ipranges/google-image-proxy.txt")
	yahooProxy   = mustRanges("ipranges/yahoo-mail-proxy.txt")
	prefetchHdrs = []string{"Sec-Purpose", "Purpose", "X-Moz", "X-Purpose"}
)

// parseRanges reads one CIDR prefix per line; '#' starts a comment.
func parseRanges(text string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	sc := bufio.NewScanner(strings.NewReader(text))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		p, err := netip.ParsePrefix(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, p.Masked())
	}
	return out, sc.Err()
}

func mustRanges(name string) []netip.Prefix {
	b, err := ipRangeFiles.ReadFile(name)
	if err != nil {
		panic(err)
	}
	p, err := parseRanges(string(b))
	if err != nil {
		panic(fmt.Sprintf("classify: %s: %v", name, err))
	}
	return p
}

// inPrefixes reports whether a is in one of ps.
func inPrefixes(a netip.Addr, ps []netip.Prefix) bool {
	for i := range ps {
		if ps[i].Contains(a) {
			return true
		}
	}
	return false
}
