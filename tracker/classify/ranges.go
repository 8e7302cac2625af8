package classify

import (
	"bufio"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"

	"go4.org/netipx"
)

// The IP ranges of prefetchers, image proxies and security gateways are
// data, kept with their sources in ipranges/.
//
//go:embed ipranges/*.txt
var ipRangeFiles embed.FS

var prefetchHdrs = []string{"Sec-Purpose", "Purpose", "X-Moz", "X-Purpose"}

// The range files, by name. A directory given to LoadTables may hold
// fresher copies under the same names.
const (
	fileAppleMPP     = "apple-mpp.txt"
	filePrivateRelay = "icloud-private-relay.txt"
	fileGoogleProxy  = "google-image-proxy.txt"
	fileYahooProxy   = "yahoo-mail-proxy.txt"
)

// grade is how certain a security gateway's range is to be a machine.
type grade int

const (
	// mailScanning is a gateway's own mail-scanning range: whatever
	// fetches from it, pixel or link, is the gateway.
	mailScanning grade = iota
	// serviceNetwork is a gateway's service network, through which a
	// person may also browse (the vendor's browser isolation): a pixel
	// from it is the gateway (a person's mail client loads images
	// itself), a click is only supporting evidence.
	serviceNetwork
)

// gatewayFiles are the security gateways' range files, with their grade.
// The name is the one in the reasons (gateway-range:<name>).
var gatewayFiles = []struct {
	name, file string
	grade      grade
}{
	{"eop", "gateway-eop.txt", mailScanning},
	{"proofpoint", "gateway-proofpoint.txt", serviceNetwork},
}

// Tables are the IP range tables classification reads.
type Tables struct {
	appleMPP, privateRelay, googleProxy, yahooProxy *rangeSet
	gateways                                        []gatewaySet
}

type gatewaySet struct {
	name  string
	grade grade
	set   *rangeSet
}

// gateway returns the security gateway whose range holds a, if any.
func (t *Tables) gateway(a netip.Addr) (gatewaySet, bool) {
	if !a.IsValid() {
		return gatewaySet{}, false
	}
	for _, g := range t.gateways {
		if g.set.Contains(a) {
			return g, true
		}
	}
	return gatewaySet{}, false
}

// LoadTables reads the range tables: each file of dir (nil: none) named
// like a shipped one (apple-mpp.txt, icloud-private-relay.txt,
// gateway-eop.txt, ...) replaces it; the shipped copy is used for the
// others. A .txt file of dir with another name is an error, so that a
// misnamed fresh list is not silently ignored.
func LoadTables(dir fs.FS) (*Tables, error) {
	known := map[string]bool{fileAppleMPP: true, filePrivateRelay: true, fileGoogleProxy: true, fileYahooProxy: true}
	for _, g := range gatewayFiles {
		known[g.file] = true
	}
	if dir != nil {
		names, err := fs.Glob(dir, "*.txt")
		if err != nil {
			return nil, err
		}
		for _, n := range names {
			if !known[n] {
				return nil, fmt.Errorf("%s: not the name of an IP range list", n)
			}
		}
	}
	load := func(name string) (*rangeSet, error) {
		var b []byte
		var err error
		if dir != nil {
			b, err = fs.ReadFile(dir, name)
		}
		if dir == nil || err != nil {
			if dir != nil && !errors.Is(err, fs.ErrNotExist) {
				return nil, err
			}
			if b, err = ipRangeFiles.ReadFile("ipranges/" + name); err != nil {
				return nil, err
			}
		}
		ps, err := parseRanges(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		set, err := prefixSet(ps)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		return newRangeSet(set), nil
	}
	var t Tables
	var err error
	for _, f := range []struct {
		set  **rangeSet
		name string
	}{
		{&t.appleMPP, fileAppleMPP}, {&t.privateRelay, filePrivateRelay},
		{&t.googleProxy, fileGoogleProxy}, {&t.yahooProxy, fileYahooProxy},
	} {
		if *f.set, err = load(f.name); err != nil {
			return nil, err
		}
	}
	for _, g := range gatewayFiles {
		set, err := load(g.file)
		if err != nil {
			return nil, err
		}
		t.gateways = append(t.gateways, gatewaySet{g.name, g.grade, set})
	}
	return &t, nil
}

// current are the tables Classify reads: the shipped ones until Use.
var current atomic.Pointer[Tables]

var shipped = sync.OnceValue(func() *Tables {
	t, err := LoadTables(nil)
	if err != nil {
		panic(fmt.Sprintf("classify: shipped IP ranges: %v", err))
	}
	return t
})

// Use makes classification read t, as loaded by LoadTables.
func Use(t *Tables) { current.Store(t) }

func tables() *Tables {
	if t := current.Load(); t != nil {
		return t
	}
	return shipped()
}

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

func prefixSet(ps []netip.Prefix) (*netipx.IPSet, error) {
	var b netipx.IPSetBuilder
	for _, p := range ps {
		b.AddPrefix(p)
	}
	return b.IPSet()
}

// CompactCSV reads a list of IP ranges as CSV, the range in the first
// column, as Apple's egress-ip-ranges.csv ("172.224.224.0/27,GB,GB-EN,
// London,") and its mirrors are, a bare address meaning itself, and
// returns the smallest list of prefixes that covers exactly the same
// addresses: adjacent and contained prefixes merged, IPv4 before IPv6,
// in address order. Blank lines are skipped, and so is a first line that
// is not a range (a header such as "cidr,ip_version").
func CompactCSV(r io.Reader) ([]netip.Prefix, error) {
	var b netipx.IPSetBuilder
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		field, _, _ := strings.Cut(sc.Text(), ",")
		field = strings.Trim(strings.TrimSpace(field), `"`)
		if field == "" {
			continue
		}
		if strings.Contains(field, "/") {
			p, err := netip.ParsePrefix(field)
			if err == nil {
				b.AddPrefix(p.Masked())
				continue
			}
			if n > 1 {
				return nil, fmt.Errorf("line %d: %w", n, err)
			}
			continue
		}
		a, err := netip.ParseAddr(field)
		if err == nil {
			b.Add(a.Unmap())
			continue
		}
		if n > 1 {
			return nil, fmt.Errorf("line %d: %q is neither a prefix nor an address", n, field)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	set, err := b.IPSet()
	if err != nil {
		return nil, err
	}
	return set.Prefixes(), nil
}
