package tracker

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/webhook"
)

// receiver is a webhook endpoint on loopback that refuses the first fail
// requests, then records what it gets.
type receiver struct {
	mu     sync.Mutex
	fail   int
	tries  int
	secret []byte
	got    map[string]store.FeedEntry
	seq    []store.FeedEntry // what it got, in order
	errs   []string
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.tries++
	if rc.tries <= rc.fail {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	sig := r.Header.Get(webhook.SignatureHeader)
	ts, mac, ok := strings.Cut(sig, ",v1=")
	ts, ok2 := strings.CutPrefix(ts, "t=")
	m := hmac.New(sha256.New, rc.secret)
	m.Write([]byte(ts + "." + string(body)))
	if !ok || !ok2 || !hmac.Equal([]byte(mac), []byte(hex.EncodeToString(m.Sum(nil)))) {
		rc.errs = append(rc.errs, "bad signature "+sig)
	}
	var fe store.FeedEntry
	if err := json.Unmarshal(body, &fe); err != nil || fe.ID == "" {
		rc.errs = append(rc.errs, "bad body "+string(body))
	}
	if r.Header.Get("Trackrelay-Event-Id") != fe.ID {
		rc.errs = append(rc.errs, "event id header")
	}
	rc.got[fe.ID] = fe
	rc.seq = append(rc.seq, fe)
	w.WriteHeader(http.StatusNoContent)
}

// outboxLen counts the entries waiting in s's webhook outbox.
func outboxLen(t testing.TB, s *bolt.Store) int {
	t.Helper()
	items, err := s.OutboxDue(time.Now().Add(100*365*24*time.Hour), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	return len(items)
}
