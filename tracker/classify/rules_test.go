package classify

import (
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"testing/fstest"
	"time"
)

// uaMPP is the agent of every Mail Privacy Protection fetch since
// 2021-09-20 (ua-parser/uap-core#509; Mailgun's and ClickDimensions'
// bot-detection docs).
const uaMPP = "Mozilla/5.0"

// A rule case: a hit and the verdict it must get, the reason it must carry
// (if any) and the reasons it must not.
type ruleCase struct {
	name   string
	click  bool
	ip     string
	ua     string
	at     time.Duration // after delivery; 0: an hour
	class  string
	reason string
	not    []string
}

func runRules(t *testing.T, cases []ruleCase) {
	t.Helper()
	delivered := time.Date(2026, 8, 20, 9, 0, 0, 0, time.UTC)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			at := delivered.Add(time.Hour)
			if tc.at != 0 {
				at = delivered.Add(tc.at)
			}
			v := Classify(Hit{Click: tc.click, Method: http.MethodGet, IP: netip.MustParseAddr(tc.ip), Header: http.Header{},
				UserAgent: tc.ua, At: at, SubmitIP: "192.0.2.10", DeliveredAt: delivered, ScannerWindow: 10 * time.Second})
			if v.Class != tc.class {
				t.Errorf("class %s (reasons %v), want %s", v.Class, v.Reasons, tc.class)
			}
			if tc.reason != "" && !slices.Contains(v.Reasons, tc.reason) {
				t.Errorf("reasons %v lack %s", v.Reasons, tc.reason)
			}
			for _, r := range tc.not {
				if slices.Contains(v.Reasons, r) {
					t.Errorf("reasons %v hold %s", v.Reasons, r)
				}
			}
		})
	}
}

// Mail Privacy Protection fetches through iCloud Private Relay's egress
// addresses with the agent exactly "Mozilla/5.0"; people browsing in
// Safari over Private Relay share the addresses with a full agent and
// stay human. The addresses are in Apple's list as shipped
// (ipranges/icloud-private-relay.txt: 104.28.28.0/26, 146.75.128.0/23,
// 2606:54c0::/35).
func TestClassify_privateRelay(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "mpp fetch from relay ipv4", ip: "104.28.28.10", ua: uaMPP, class: Prefetch, reason: ReasonPrivateRelayEgress},
		{name: "mpp fetch from relay ipv4, second block", ip: "146.75.128.9", ua: uaMPP, class: Prefetch, reason: ReasonPrivateRelayEgress},
		{name: "mpp fetch from relay ipv6", ip: "2606:54c0::1234", ua: uaMPP, class: Prefetch, reason: ReasonPrivateRelayEgress},
		{name: "mpp fetch over ipv4-mapped ipv6", ip: "::ffff:104.28.28.10", ua: uaMPP, class: Prefetch, reason: ReasonPrivateRelayEgress},
		{name: "mpp fetch from apple's network", ip: "17.58.101.4", ua: uaMPP, class: Prefetch, reason: ReasonAppleMPPIP},
		{name: "mpp fetch with spaces around the agent", ip: "104.28.28.10", ua: " Mozilla/5.0 ", class: Prefetch, reason: ReasonPrivateRelayEgress},
		// Look-alikes that stay human.
		{name: "safari over private relay", ip: "104.28.28.10", ua: uaSafari, class: Human},
		{name: "safari over private relay ipv6", ip: "2606:54c0::1234", ua: uaSafari, class: Human},
		{name: "ios mail over private relay, protection off", ip: "146.75.128.9", ua: uaIOSMail, class: Human},
		{name: "safari click over private relay", click: true, ip: "104.28.28.10", ua: uaSafari, class: Human},
		{name: "bare agent just outside the list", ip: "104.28.28.64", ua: uaSafari, class: Human},
		{name: "a longer agent starting like mpp's", ip: "104.28.28.10", ua: "Mozilla/5.0 (iPhone)", class: Human, not: []string{ReasonPrivateRelayEgress}},
	})
}

// Security gateways fetch pixels and links from their own networks, with
// browser agents and at any time. Exchange Online Protection's addresses
// are Microsoft's endpoints service's; Proofpoint's its support page's
// (ipranges/gateway-*.txt).
func TestClassify_gateways(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "eop pixel fetch", ip: "40.92.18.5", ua: uaChrome, class: Scanner, reason: ReasonGatewayRange + "eop"},
		{name: "eop link fetch a day later", click: true, ip: "40.107.212.33", ua: uaEdge, at: 24 * time.Hour, class: Scanner, reason: ReasonGatewayRange + "eop"},
		{name: "eop 52.100/14", click: true, ip: "52.103.0.9", ua: uaChrome, class: Scanner, reason: ReasonGatewayRange + "eop"},
		{name: "eop 104.47/17", ip: "104.47.101.200", ua: uaOutlookWord, class: Scanner, reason: ReasonGatewayRange + "eop"},
		{name: "eop ipv6", click: true, ip: "2a01:111:f403:c80c::5", ua: uaChrome, class: Scanner, reason: ReasonGatewayRange + "eop"},
		{name: "proofpoint pixel fetch", ip: "67.231.153.30", ua: uaChrome, class: Scanner, reason: ReasonGatewayRange + "proofpoint"},
		// A person may click through Proofpoint's browser isolation: the
		// network is recorded, the class stays.
		{name: "click from proofpoint's network", click: true, ip: "67.231.153.30", ua: uaChrome, class: Human, reason: ReasonGatewayNetwork + "proofpoint"},
		// Look-alikes: people in Microsoft's and others' clouds, offices.
		{name: "person in windows 365 (azure)", ip: "20.105.3.17", ua: uaEdge, class: Human},
		{name: "person clicking from azure", click: true, ip: "20.105.3.17", ua: uaEdge, class: Human},
		{name: "outlook on the web's own network", ip: "52.96.10.4", ua: uaEdge, class: Human},
		{name: "just past 40.92.0.0/15", ip: "40.94.0.1", ua: uaChrome, class: Human},
		{name: "just past 104.47.0.0/17", click: true, ip: "104.47.128.1", ua: uaChrome, class: Human},
		{name: "person on an office nat", click: true, ip: "203.0.113.9", ua: uaChrome, class: Human},
		{name: "push notification open seconds after delivery", ip: "203.0.113.9", ua: uaIOSMail, at: 2 * time.Second, class: Human},
	})
}

// Gmail's prefetcher has its own agent and is no open; Gmail's image
// proxy fetching for a reader is (gmass.co/blog/false-opens-in-gmail/,
// bird.com/en-us/blog/gmail-prefetching-images).
func TestClassify_gmailPrefetch(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "prefetcher from google's network", ip: "66.249.84.17", ua: GmailPrefetchUA, class: Prefetch, reason: ReasonGmailPrefetchUA,
			not: []string{ReasonGoogleProxyIP}},
		{name: "prefetcher from elsewhere", ip: "203.0.113.9", ua: GmailPrefetchUA, class: Prefetch, reason: ReasonGmailPrefetchUA},
		{name: "image proxy stays proxy", ip: "66.249.84.17", ua: uaGmailProxy, class: Proxy, reason: ReasonGoogleProxyUA},
		{name: "the prefetcher's agent clicking", click: true, ip: "66.249.84.17", ua: GmailPrefetchUA, class: Scanner, reason: ReasonClickFromProxyIP},
		{name: "old edge without the trailing token", ip: "203.0.113.9", ua: strings.TrimSuffix(GmailPrefetchUA, " Mozilla/5.0"), class: Human},
	})
	if v := Classify(Hit{Method: http.MethodGet, IP: netip.MustParseAddr("66.249.84.17"), UserAgent: GmailPrefetchUA, At: time.Now()}); v.Client != "Gmail" {
		t.Errorf("client %q, want Gmail", v.Client)
	}
}

// Mail Privacy Protection never follows links and no browser sends
// "Mozilla/5.0" alone: such a click is a machine's, wherever it comes from.
func TestClassify_bareAgentClick(t *testing.T) {
	runRules(t, []ruleCase{
		{name: "bare click from a home address", click: true, ip: "203.0.113.9", ua: uaMPP, class: Scanner, reason: ReasonClickBareUA},
		{name: "bare click from private relay", click: true, ip: "104.28.28.10", ua: uaMPP, class: Scanner, reason: ReasonClickBareUA},
		{name: "bare open from a home address", ip: "203.0.113.9", ua: uaMPP, class: Human},
		{name: "safari click from a home address", click: true, ip: "203.0.113.9", ua: uaSafari, class: Human},
	})
}

// A list in the directory replaces the shipped one of its name; the others
// stay.
func TestLoadTables(t *testing.T) {
	t.Cleanup(func() { Use(shipped()) })
	dir := fstest.MapFS{"icloud-private-relay.txt": {Data: []byte("# fresher\n198.51.100.0/24\n")}, "README": {Data: []byte("notes")}}
	tb, err := LoadTables(dir)
	if err != nil {
		t.Fatal(err)
	}
	Use(tb)
	hit := func(ip, ua string) Verdict {
		return Classify(Hit{Method: http.MethodGet, IP: netip.MustParseAddr(ip), Header: http.Header{}, UserAgent: ua, At: time.Now()})
	}
	if v := hit("198.51.100.7", uaMPP); v.Class != Prefetch {
		t.Errorf("address of the fresher list: %+v", v)
	}
	if v := hit("104.28.28.10", uaMPP); v.Class != Human {
		t.Errorf("address only in the shipped list: %+v", v)
	}
	if v := hit("40.92.18.5", uaChrome); v.Class != Scanner {
		t.Errorf("shipped eop list no longer used: %+v", v)
	}
	for name, fsys := range map[string]fstest.MapFS{
		"unknown name": {"icloud-relay.txt": {Data: []byte("198.51.100.0/24\n")}},
		"bad line":     {"gateway-eop.txt": {Data: []byte("40.92.0.0/15\n40.107.0.0/33\n")}},
	} {
		if _, err := LoadTables(fsys); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// CompactCSV merges Apple's rows (and a mirror's, addresses included) into
// the fewest prefixes that cover the same addresses.
func TestCompactCSV(t *testing.T) {
	in := strings.Join([]string{
		"cidr,ip_version",
		"172.224.224.0/27,GB,GB-EN,London,",
		"172.224.224.32/27,GB,GB-EN,London,",
		"172.224.224.8/29,GB,GB-EN,London,",
		"104.28.28.76",
		"104.28.28.77",
		`"104.28.28.78/31",4`,
		"",
		"2a02:26f7:b3c0:4000::/64,DE,DE-BE,Berlin,",
		"2a02:26f7:b3c0:4001::/64,DE,DE-BE,Berlin,",
		"172.225.0.1/16,US,US-CA,Los Angeles,",
	}, "\n")
	ps, err := CompactCSV(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.String())
	}
	want := []string{"104.28.28.76/30", "172.224.224.0/26", "172.225.0.0/16", "2a02:26f7:b3c0:4000::/63"}
	if !slices.Equal(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, err := CompactCSV(strings.NewReader("172.224.224.0/27,GB\nLondon,GB\n")); err == nil {
		t.Error("a row that is no range accepted")
	}
}
