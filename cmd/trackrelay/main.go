// Command trackrelay is an SMTP relay for open and click tracking: the app
// sends through it, it instruments each recipient's copy, delivers it
// upstream, records the hits and answers the app over a JSON API.
//
//	trackrelay serve [-config FILE]
//	trackrelay check-config -config FILE
//	trackrelay hash-password < password
//	trackrelay queue [-config FILE] list|show|retry|delete
//	trackrelay dkim-keygen -domain D -selector S [-type rsa|ed25519] [-bits N] [-out FILE]
//	trackrelay ipranges build -in CSV -out FILE [-source TEXT]
//	trackrelay migrate-store -config FILE [-batch N] [-progress D]
//	trackrelay version
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage: trackrelay <command> [flags]

commands:
  serve [-config FILE]         run the relay (embedded defaults without -config)
  check-config -config FILE    validate a config file; exit 0 when valid
  hash-password                read a password on stdin, print its bcrypt hash
  queue [-config FILE] CMD     list, show, retry or delete queued messages
  dkim-keygen -domain D -selector S [-type rsa|ed25519] [-bits 2048] [-out FILE]
                               write a DKIM private key, print its DNS TXT record
  ipranges build -in CSV -out FILE [-source TEXT]
                               compact a downloaded IP range list (e.g. Apple's
                               egress-ip-ranges.csv) for tracking.ip_lists_dir
  migrate-store -config FILE [-batch 500] [-progress 5s]
                               copy data_dir's bbolt store into the PostgreSQL
                               database of store.postgres (relay stopped;
                               run again to resume)
  version                      print the version
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "serve" {
		tuneGC()
	}
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// serveGCPercent is the garbage collector's target for the server, unless
// GOGC says otherwise. The server's live heap is small (a few MB) but every
// hit and every message allocates, so at Go's default of 100 the collector
// runs dozens of times a second under load and each run scans the stacks of
// every connection's goroutines: under load, a tenth to a fifth of a
// recording tracking server's CPU. At 400 the heap may grow to five times the live data before a
// collection, a few tens of MB. GOMEMLIMIT, when set, still caps it.
const serveGCPercent = 400

func tuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(serveGCPercent)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return cmdServe(args[1:], stdout, stderr)
	case "check-config":
		return cmdCheckConfig(args[1:], stdout, stderr)
	case "queue":
		return cmdQueue(args[1:], stdout, stderr)
	case "hash-password":
		return cmdHashPassword(stdin, stdout, stderr)
	case "dkim-keygen":
		return cmdDKIMKeygen(args[1:], stdout, stderr)
	case "migrate-store":
		return cmdMigrateStore(args[1:], stdout, stderr)
	case "ipranges":
		return cmdIPRanges(args[1:], time.Now(), stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "trackrelay", version)
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "trackrelay: unknown command %q\n%s", args[0], usage)
	return 2
}

func cmdCheckConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "config file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "trackrelay check-config: -config FILE is required")
		return 2
	}
	if _, err := loadConfig(*path); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *path)
	return 0
}

// cmdHashPassword reads one line, the password without its line ending.
func cmdHashPassword(stdin io.Reader, stdout, stderr io.Writer) int {
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		fmt.Fprintln(stderr, "trackrelay hash-password:", err)
		return 1
	}
	pass := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
	if pass == "" {
		fmt.Fprintln(stderr, "trackrelay hash-password: empty password on stdin")
		return 1
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(pass), 12)
	if err != nil {
		fmt.Fprintln(stderr, "trackrelay hash-password:", err)
		return 1
	}
	fmt.Fprintln(stdout, string(hash))
	return 0
}
