package classify

import (
	"net/http"
	"net/netip"
	"runtime"
	"testing"
	"time"
)

// BenchmarkClassify classifies hits that reach every range table (iCloud
// Private Relay's 13,745 prefixes among them), as loaded from the shipped
// lists, and reports the tables' heap size (tables-B).
func BenchmarkClassify(b *testing.B) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	t, err := LoadTables(nil)
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	Use(t)
	b.Cleanup(func() { Use(shipped()) })
	delivered := time.Date(2026, 8, 20, 9, 0, 0, 0, time.UTC)
	var hits []Hit
	for _, h := range []struct {
		click  bool
		ip, ua string
	}{
		{false, "104.28.28.10", uaMPP},
		{false, "2606:54c0::1234", uaMPP},
		{false, "104.28.28.10", uaSafari},
		{true, "40.107.212.33", uaEdge},
		{true, "67.231.153.30", uaChrome},
		{false, "66.249.84.17", uaGmailProxy},
		{false, "66.249.84.17", GmailPrefetchUA},
		{false, "203.0.113.9", uaAppleMail},
		{true, "2001:db8::7", uaFirefox},
		{false, "17.58.101.4", uaMPP},
	} {
		hits = append(hits, Hit{Click: h.click, Method: http.MethodGet, IP: netip.MustParseAddr(h.ip), Header: http.Header{},
			UserAgent: h.ua, At: delivered.Add(time.Hour), SubmitIP: "192.0.2.10", DeliveredAt: delivered, ScannerWindow: 10 * time.Second})
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		Classify(hits[i%len(hits)])
	}
	b.ReportMetric(float64(after.HeapAlloc)-float64(before.HeapAlloc), "tables-B")
	runtime.KeepAlive(t)
}
