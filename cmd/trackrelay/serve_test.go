package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// A listener that cannot be opened after delivery started makes serve
// return its error with delivery shut down: no worker of the deliverer
// is left running over the spool serve closes.
func TestServe_listenFailureShutsDeliveryDown(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "trackrelay.yaml")
	cfgText := fmt.Sprintf(`data_dir: %s
smtp: {listen: %q}
http: {listen: %q}
metrics: {listen: ""}
accounts:
  - {name: app, networks: [127.0.0.0/8]}
`, filepath.Join(dir, "data"), freeAddr(t), busy.Addr().String())
	if err := os.WriteFile(cfgPath, []byte(cfgText), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	err = serve(context.Background(), cfg, false, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "http.listen") {
		t.Fatalf("serve with its http port taken: %v; want the http.listen error", err)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		buf := make([]byte, 1<<20)
		stacks := string(buf[:runtime.Stack(buf, true)])
		if !strings.Contains(stacks, "relay.(*Deliverer)") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivery still running after serve returned:\n%s", stacks)
		}
	}
}
