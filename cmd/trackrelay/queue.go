package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/trackrelay/trackrelay/internal/delivery"
)

const queueUsage = `usage: trackrelay queue [-config FILE] <command>

commands (talk to the running server through <data_dir>/admin.sock):
  list                 every queued message and the state of its copies
  show ID              one message's record, as JSON
  retry ID | --all     retry the pending copies now, and release the held
                       ones (held after an internal error of the relay)
  delete [-bounce] ID  take a message out of the queue: dropped silently,
                       or with -bounce reported failed to its sender
`

// adminSocket is where the running server listens for queue commands.
func adminSocket(dataDir string) string { return filepath.Join(dataDir, "admin.sock") }

func cmdQueue(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("queue", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, queueUsage) }
	path := fs.String("config", "", "config file of the running server (default: embedded defaults)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg := defaultConfig()
	if *path != "" {
		c, err := loadConfig(*path)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
		cfg = c
	}
	sock := adminSocket(cfg.DataDir)
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		}},
	}
	call := func(method, p string) (int, []byte, error) {
		req, _ := http.NewRequest(method, "http://admin"+p, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, fmt.Errorf("cannot reach the server at %s (is trackrelay serve running with this config?): %w", sock, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}
	rest := fs.Args()
	if len(rest) == 0 {
		fmt.Fprint(stderr, queueUsage)
		return 2
	}
	var code int
	var body []byte
	var err error
	switch rest[0] {
	case "list":
		code, body, err = call("GET", "/queue")
		if err == nil && code == 200 {
			return printQueue(body, stdout, stderr)
		}
	case "show":
		if len(rest) != 2 {
			fmt.Fprint(stderr, queueUsage)
			return 2
		}
		code, body, err = call("GET", "/queue/"+url.PathEscape(rest[1]))
	case "retry":
		if len(rest) != 2 {
			fmt.Fprint(stderr, queueUsage)
			return 2
		}
		if rest[1] == "--all" || rest[1] == "-all" {
			code, body, err = call("POST", "/queue/retry")
		} else {
			code, body, err = call("POST", "/queue/"+url.PathEscape(rest[1])+"/retry")
		}
	case "delete":
		dfs := flag.NewFlagSet("delete", flag.ContinueOnError)
		dfs.SetOutput(stderr)
		bounce := dfs.Bool("bounce", false, "report the undelivered copies failed to the sender")
		if err := dfs.Parse(rest[1:]); err != nil || dfs.NArg() != 1 {
			fmt.Fprint(stderr, queueUsage)
			return 2
		}
		code, body, err = call("POST", "/queue/"+url.PathEscape(dfs.Arg(0))+"/delete?bounce="+fmt.Sprint(*bounce))
	default:
		fmt.Fprintf(stderr, "trackrelay queue: unknown command %q\n%s", rest[0], queueUsage)
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "trackrelay queue:", err)
		return 1
	}
	if code != 200 {
		fmt.Fprintf(stderr, "trackrelay queue: %s", body)
		return 1
	}
	stdout.Write(body)
	return 0
}

type queueEntry struct {
	ID         string    `json:"id"`
	From       string    `json:"from"`
	AcceptedAt time.Time `json:"accepted_at"`
	Size       int64     `json:"size"`
	Recipients []struct {
		Address      string          `json:"address"`
		Status       delivery.Status `json:"status"`
		Attempts     int             `json:"attempts"`
		NextAttempt  time.Time       `json:"next_attempt"`
		LastResponse string          `json:"last_response"`
	} `json:"recipients"`
}

func printQueue(body []byte, stdout, stderr io.Writer) int {
	var list []queueEntry
	if err := json.Unmarshal(body, &list); err != nil {
		fmt.Fprintln(stderr, "trackrelay queue:", err)
		return 1
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tACCEPTED\tSIZE\tFROM\tRECIPIENT\tSTATUS\tATTEMPTS\tNEXT\tLAST RESPONSE")
	held := 0
	for _, e := range list {
		for _, r := range e.Recipients {
			next := "-"
			switch r.Status {
			case delivery.Deferred, delivery.Queued:
				next = time.Until(r.NextAttempt).Round(time.Second).String()
				if r.NextAttempt.Before(time.Now()) {
					next = "now"
				}
			case delivery.Held:
				next = "on retry"
				held++
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t<%s>\t%s\t%s\t%d\t%s\t%s\n", e.ID, e.AcceptedAt.Local().Format(time.DateTime),
				e.Size, e.From, r.Address, r.Status, r.Attempts, next, truncate(r.LastResponse, 60))
		}
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d message(s) in the queue\n", len(list))
	if held > 0 {
		fmt.Fprintf(stdout, "%d copy(ies) held after an internal error of the relay (see its log): not retried until `trackrelay queue retry ID` (or --all) releases them\n", held)
	}
	return 0
}

func truncate(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-1] + "…"
	}
	return s
}
