package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/smtp"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/trackrelay/trackrelay/tracker/store/postgres"
	"github.com/trackrelay/trackrelay/tracker/store/postgres/pgtest"
)

const fleetAPIKey = "fleet-test-api-key-0123456789"

// fleetNode is one node's addresses and config file.
type fleetNode struct {
	dir, config             string
	smtp, http, metricsAddr string
}

// newFleetNode writes the config of a node on dsn in dir: its own
// data_dir, the shared database, the account alice (any loopback client,
// API key fleetAPIKey), upstream up ("": capture mode).
func newFleetNode(t *testing.T, dir, dsn, up string) *fleetNode {
	t.Helper()
	n := &fleetNode{dir: dir, config: filepath.Join(dir, "trackrelay.yaml"),
		smtp: freeAddr(t), http: freeAddr(t), metricsAddr: freeAddr(t)}
	dsnFile := filepath.Join(dir, "postgres.dsn")
	if err := os.WriteFile(dsnFile, []byte(dsn+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(fleetAPIKey))
	upstream := ""
	if up != "" {
		upstream = fmt.Sprintf("upstream: {address: %q, tls: none, command_timeout: 1m}\n", up)
	}
	cfg := fmt.Sprintf(`data_dir: %s
smtp: {listen: %q, hostname: relay.test}
%shttp: {listen: %q}
metrics: {listen: %q}
store: {postgres: {dsn_file: %s, max_connections: 8}}
tracking: {base_url: "http://t.test"}
delivery: {retry_initial: 100ms, retry_max: 200ms, shutdown_grace: 1s}
log: {level: warn}
accounts:
  - {name: alice, networks: [127.0.0.0/8], api_key_sha256: %s}
`, filepath.Join(dir, "data"), n.smtp, upstream, n.http, n.metricsAddr, dsnFile, hex.EncodeToString(sum[:]))
	if err := os.WriteFile(n.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// serveInProcess runs the node's serve until the test ends.
func (n *fleetNode) serveInProcess(t *testing.T) {
	t.Helper()
	cfg, err := loadConfig(n.config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	lw := &lockedWriter{w: &logs}
	go func() { done <- serve(ctx, cfg, false, io.Discard, lw) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			lw.mu.Lock() // attempts past the shutdown grace may still log
			t.Logf("node %s log:\n%s", n.dir, logs.String())
			lw.mu.Unlock()
		}
	})
	waitListening(t, n.smtp)
	waitListening(t, n.http)
}

// api gets message ref from the node's API: status and body.
func (n *fleetNode) api(t *testing.T, ref string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+n.http+"/api/v1/messages/"+ref, nil)
	req.Header.Set("Authorization", "Bearer "+fleetAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// metric reads one sample of the node's /metrics, 0 when absent.
func (n *fleetNode) metric(t *testing.T, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + n.metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`).FindSubmatch(b)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// fleetMessage is message i, with a Message-ID the test looks it up by,
// tracked in mode track.
func fleetMessage(i int, track string) (msgID string, body []byte) {
	msgID = fmt.Sprintf("fleet-%d@app.test", i)
	return msgID, []byte(fmt.Sprintf("From: alice@example.com\r\nTo: bob@example.net, carol@example.net\r\n"+
		"Message-ID: <%s>\r\nSubject: quote %d\r\nX-Track: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"+
		"<html><body><p>See <a href=\"https://example.com/q/%d\">the quote</a>.</p></body></html>\r\n", msgID, i, track, i))
}

// sendFleet sends message i through the node, tracked in mode track, and
// returns its Message-ID and how long the transaction took.
func sendFleet(t *testing.T, addr string, i int, track string) (string, time.Duration) {
	msgID, body := fleetMessage(i, track)
	start := time.Now()
	if err := smtp.SendMail(addr, nil, "alice@example.com", []string{"bob@example.net", "carol@example.net"}, body); err != nil {
		t.Errorf("message %d: %v", i, err)
	}
	return msgID, time.Since(start)
}

// silentUpstream accepts connections and never answers: a copy's attempt
// hangs, so its delivery status stays queued while the test reads it.
func silentUpstream(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// Two nodes on one database: as soon as a message's 250 was sent through
// node A, node B's API finds it and answers exactly as node A's does.
// Sessions that end together share the commits of their records.
func TestFleet_anyNodeAnswersAfter250(t *testing.T) {
	// The bound of the wait is relay's test (TestAccept_reportWaitBounded);
	// here a loaded machine (the race detector, other packages' tests) must
	// not turn a slow commit into a 250 before its record.
	defer func(w time.Duration) { postgresReportWait = w }(postgresReportWait)
	postgresReportWait = time.Minute
	_, dsn := pgtest.Own(t)
	up := silentUpstream(t)
	a := newFleetNode(t, t.TempDir(), dsn, up)
	b := newFleetNode(t, t.TempDir(), dsn, up)
	a.serveInProcess(t)
	b.serveInProcess(t)

	// Untracked and never delivered (the upstream is silent): nothing
	// changes the message after its 250, so both nodes must give the same
	// bytes.
	const messages = 24
	type read struct {
		code  int
		fromB []byte
	}
	reads := make([]read, messages)
	var wg sync.WaitGroup
	for i := range messages {
		wg.Go(func() {
			msgID, _ := sendFleet(t, a.smtp, i, "none")
			reads[i].code, reads[i].fromB = b.api(t, msgID)
		})
	}
	wg.Wait()
	for i, r := range reads {
		if r.code != http.StatusOK {
			t.Errorf("message %d: node B answered %d right after the 250: %s", i, r.code, r.fromB)
			continue
		}
		msgID, _ := fleetMessage(i, "none")
		code, fromA := a.api(t, msgID)
		if code != http.StatusOK || !bytes.Equal(fromA, r.fromB) {
			t.Errorf("message %d: node A answered %d\n%s\nnode B\n%s", i, code, fromA, r.fromB)
		}
	}
	var v struct {
		Recipients []struct {
			Delivery struct{ Status string } `json:"delivery"`
		} `json:"recipients"`
	}
	if err := json.Unmarshal(reads[0].fromB, &v); err != nil || len(v.Recipients) != 2 || v.Recipients[0].Delivery.Status != "queued" {
		t.Errorf("node B's view of a message: %s (%v)", reads[0].fromB, err)
	}
	if n := a.metric(t, `trackrelay_ledger_report_waits_total{result="committed"}`); n != messages {
		t.Errorf("%v of %d records committed before their 250", n, messages)
	}
	commits := a.metric(t, "trackrelay_store_record_batch_size_count")
	records := a.metric(t, "trackrelay_store_record_batch_size_sum")
	t.Logf("%d messages: %v records in %v commits", messages, records, commits)
	if commits == 0 || commits >= records {
		t.Errorf("%v commits for %v records of %d concurrent sessions: none shared", commits, records, messages)
	}
}

// waitDelivered waits until the shared database shows every message of
// msgIDs with both copies delivered, read through a store of its own (a
// node that took no part).
func waitDelivered(t *testing.T, dsn string, msgIDs []string) {
	t.Helper()
	st, err := postgres.Open(context.Background(), dsn, postgres.Options{MaxConnections: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var last string
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		missing := 0
		for _, id := range msgIDs {
			v, err := st.Lookup(context.Background(), "alice", id)
			if err != nil || len(v.Recipients) != 2 || v.Recipients[0].Delivery.Status != "delivered" ||
				v.Recipients[1].Delivery.Status != "delivered" || len(v.Links) != 1 {
				missing++
				last = fmt.Sprintf("%s: %+v, %v", id, v, err)
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages not in the database as delivered; last: %s", missing, len(msgIDs), last)
		}
	}
}

// outboxCount is the number of copies in a capture-mode node's outbox.
func outboxCount(n *fleetNode) int {
	files, _ := filepath.Glob(filepath.Join(n.dir, "data", "outbox", "*.eml"))
	return len(files)
}

// While PostgreSQL is down, mail is still accepted (the 250 does not wait
// for the database) and delivered; once it is back, every record and
// delivery status reaches it.
func TestFleet_databaseOutage(t *testing.T) {
	c, dsn := pgtest.Own(t)
	a := newFleetNode(t, t.TempDir(), dsn, "")
	a.serveInProcess(t)
	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	const messages = 10
	var ids []string
	for i := range messages {
		id, took := sendFleet(t, a.smtp, i, "all")
		t.Logf("message %d accepted in %v with the database down", i, took)
		ids = append(ids, id)
	}
	for deadline := time.Now().Add(30 * time.Second); outboxCount(a) < 2*messages; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d copies delivered with the database down", outboxCount(a), 2*messages)
		}
	}
	if n := a.metric(t, `trackrelay_ledger_report_waits_total{result="committed"}`); n != 0 {
		t.Errorf("%v records committed with the database down", n)
	}
	if n := a.metric(t, "trackrelay_ledger_owed_reports"); n == 0 {
		t.Error("no reports owed with the database down")
	}
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	waitDelivered(t, dsn, ids)
	for deadline := time.Now().Add(30 * time.Second); a.metric(t, "trackrelay_ledger_owed_reports") != 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("reports still owed once the database has them all")
		}
	}
}

// A node killed with SIGKILL while its reports wait for the database (it
// is down) gives them once restarted: nothing is lost.
func TestFleet_kill9WhileRecordsWait(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills the binary")
	}
	c, dsn := pgtest.Own(t)
	dir := t.TempDir()
	bin := filepath.Join(dir, "trackrelay")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	n := newFleetNode(t, dir, dsn, "")
	var buf bytes.Buffer
	lw := &lockedWriter{w: &buf}
	logs := func() string {
		lw.mu.Lock()
		defer lw.mu.Unlock()
		return buf.String()
	}
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve", "-config", n.config)
		cmd.Stdout, cmd.Stderr = lw, lw
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitListening(t, n.smtp)
		return cmd
	}
	node := start()
	defer func() { node.Process.Kill(); node.Wait() }()
	if err := c.StopServer(); err != nil {
		t.Fatal(err)
	}
	const messages = 6
	var ids []string
	for i := range messages {
		id, _ := sendFleet(t, n.smtp, i, "all")
		ids = append(ids, id)
	}
	for deadline := time.Now().Add(30 * time.Second); outboxCount(n) < 2*messages; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d copies delivered with the database down:\n%s", outboxCount(n), 2*messages, logs())
		}
	}
	if owed := n.metric(t, "trackrelay_ledger_owed_reports"); owed == 0 {
		t.Fatal("no reports owed with the database down")
	}
	if err := node.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	node.Wait()
	if err := c.StartServer(); err != nil {
		t.Fatal(err)
	}
	node = start()
	defer func() {
		if t.Failed() {
			t.Logf("node log:\n%s", logs())
		}
	}()
	waitDelivered(t, dsn, ids)
}
