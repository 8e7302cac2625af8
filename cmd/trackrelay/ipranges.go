package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
)

// cmdIPRanges runs "ipranges build": it compacts a downloaded list of IP
// ranges (Apple's egress-ip-ranges.csv, or a mirror's copy) into a range
// file as tracker/classify/ipranges/ holds them and tracking.ip_lists_dir
// loads: a header naming the source, then one merged prefix per line.
func cmdIPRanges(args []string, now time.Time, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "build" {
		fmt.Fprintln(stderr, "usage: trackrelay ipranges build -in CSV -out FILE [-source TEXT]")
		return 2
	}
	fs := flag.NewFlagSet("ipranges build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("in", "", "the downloaded list: CSV, the range (prefix or address) in the first column")
	out := fs.String("out", "", "the range file to write")
	source := fs.String("source", "", "where the list came from, for the file's header (a URL, a mirror and its commit)")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *in == "" || *out == "" {
		fmt.Fprintln(stderr, "trackrelay ipranges build: -in CSV and -out FILE are required")
		return 2
	}
	f, err := os.Open(*in)
	if err != nil {
		fmt.Fprintln(stderr, "trackrelay ipranges build:", err)
		return 1
	}
	defer f.Close()
	ps, err := classify.CompactCSV(f)
	if err != nil {
		fmt.Fprintf(stderr, "trackrelay ipranges build: %s: %v\n", *in, err)
		return 1
	}
	if len(ps) == 0 {
		fmt.Fprintf(stderr, "trackrelay ipranges build: %s holds no ranges\n", *in)
		return 1
	}
	v4 := 0
	for _, p := range ps {
		if p.Addr().Is4() {
			v4++
		}
	}
	// Written beside the target and renamed, so that a server starting
	// meanwhile never reads half a file.
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".ipranges-*")
	if err != nil {
		fmt.Fprintln(stderr, "trackrelay ipranges build:", err)
		return 1
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	for _, line := range strings.Split(strings.TrimSpace(*source), "\n") {
		if line = strings.TrimSpace(line); line != "" {
			fmt.Fprintln(w, "#", line)
		}
	}
	fmt.Fprintf(w, "# Built by trackrelay ipranges build from %s on %s: %d prefixes (%d IPv4, %d IPv6),\n",
		filepath.Base(*in), now.UTC().Format("2006-01-02"), len(ps), v4, len(ps)-v4)
	fmt.Fprintln(w, "# adjacent and contained ranges merged.")
	fmt.Fprintln(w, "#")
	fmt.Fprintln(w, "# One CIDR prefix per line; '#' starts a comment.")
	for _, p := range ps {
		fmt.Fprintln(w, p)
	}
	if err := w.Flush(); err != nil {
		tmp.Close()
		fmt.Fprintln(stderr, "trackrelay ipranges build:", err)
		return 1
	}
	if err := tmp.Close(); err != nil {
		fmt.Fprintln(stderr, "trackrelay ipranges build:", err)
		return 1
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		fmt.Fprintln(stderr, "trackrelay ipranges build:", err)
		return 1
	}
	if err := os.Rename(tmp.Name(), *out); err != nil {
		fmt.Fprintln(stderr, "trackrelay ipranges build:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: %d prefixes (%d IPv4, %d IPv6)\n", *out, len(ps), v4, len(ps)-v4)
	return 0
}
