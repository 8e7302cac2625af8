package relay

import (
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// BenchmarkRelay_submitAndDeliver pushes the 20 KB sample message through
// the whole relay in process: 8 concurrent SMTP sessions submit over
// loopback, the spool makes each durable, the workers instrument and
// deliver it to a go-smtp sink. It reports messages per second from the
// first submission to the last delivery.
func BenchmarkRelay_submitAndDeliver(b *testing.B) {
	msg := benchMessage(b)
	h := newHarness(b, harnessOpts{upstream: true, upConns: 8, networks: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	runRelayLoad(b, h, msg)
}

func benchMessage(b *testing.B) []byte {
	msg, err := os.ReadFile("../../shared/bench/msg-html-20k.eml")
	if err != nil {
		b.Skip("sample message not found:", err)
	}
	return msg
}

// runRelayLoad submits b.N messages (rounded up to a multiple of 8) over 8
// sessions, waits (bounded) until the sink has them all, and reports
// msgs/s. It returns the number of messages sent.
func runRelayLoad(b *testing.B, h *harness, msg []byte) int {
	b.SetBytes(int64(len(msg)))
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	per := b.N/8 + 1
	for range 8 {
		wg.Go(func() {
			c, err := smtp.Dial(h.addr)
			if err != nil {
				b.Error(err)
				return
			}
			defer c.Close()
			for range per {
				if _, err := sendOn(c, "sender@bench.test", []string{"rcpt@example.net"}, string(msg)); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	total := per * 8
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if len(h.sink.messages()) >= total {
			break
		}
	}
	b.ReportMetric(float64(total)/time.Since(start).Seconds(), "msgs/s")
	return total
}
