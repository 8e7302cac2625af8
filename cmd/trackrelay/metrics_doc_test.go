package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
)

// metricsDoc is the reference table of every exported metric.
var metricsDoc = filepath.Join("..", "..", "docs", "metrics.md")

// docMetric is one row of the table in docs/metrics.md.
type docMetric struct {
	line   int
	labels map[string]bool
}

var (
	backticked = regexp.MustCompile("`([^`]+)`")
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseMetricsTable reads the table whose header starts with "| metric |":
// the first cell of a row is the metric name in backticks (or a family such
// as `go_*`), the third its labels, each name in backticks (their values,
// if given, are plain text).
func parseMetricsTable(text string) (map[string]docMetric, error) {
	rows := map[string]docMetric{}
	in := false
	for i, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "| metric |") {
			in = true
			continue
		}
		if !in {
			continue
		}
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		if strings.HasPrefix(line, "|---") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		if len(cells) != 4 {
			return nil, fmt.Errorf("line %d: %d cells, want 4 (metric, type, labels, meaning)", i+1, len(cells))
		}
		name := backticked.FindStringSubmatch(cells[0])
		if name == nil {
			return nil, fmt.Errorf("line %d: no metric name in backticks", i+1)
		}
		if _, dup := rows[name[1]]; dup {
			return nil, fmt.Errorf("line %d: %s documented twice", i+1, name[1])
		}
		labels := map[string]bool{}
		for _, m := range backticked.FindAllStringSubmatch(cells[2], -1) {
			if !labelName.MatchString(m[1]) {
				return nil, fmt.Errorf("line %d: %q is not a label name", i+1, m[1])
			}
			labels[m[1]] = true
		}
		rows[name[1]] = docMetric{line: i + 1, labels: labels}
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("no table with a header starting with %q", "| metric |")
	}
	return rows, nil
}

// undocumented compares the exported metrics with the documented ones and
// returns every difference. A documented family "prefix_*" covers the
// exported metrics of that prefix (the Go and process collectors, whose
// set depends on the Go version and the platform), labels unchecked.
func undocumented(exported map[string]map[string]bool, doc map[string]docMetric) []string {
	var problems []string
	covered := map[string]bool{}
	for name, labels := range exported {
		d, ok := doc[name]
		if !ok {
			for fam := range doc {
				if prefix, isFam := strings.CutSuffix(fam, "*"); isFam && strings.HasPrefix(name, prefix) {
					covered[fam] = true
					ok = true
				}
			}
			if !ok {
				problems = append(problems, fmt.Sprintf("%s is exported but not in the table", name))
			}
			continue
		}
		covered[name] = true
		if got, want := sortedKeys(d.labels), sortedKeys(labels); !slices.Equal(got, want) {
			problems = append(problems, fmt.Sprintf("%s (line %d): documented labels %q, exported %q", name, d.line, got, want))
		}
	}
	for name, d := range doc {
		if !covered[name] {
			problems = append(problems, fmt.Sprintf("%s (line %d) is documented but not exported", name, d.line))
		}
	}
	sort.Strings(problems)
	return problems
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// docs/metrics.md's table names every metric serve exports, with its
// labels, and nothing else.
func TestMetricsDocumented(t *testing.T) {
	b, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := parseMetricsTable(string(b))
	if err != nil {
		t.Fatalf("%s: %v", metricsDoc, err)
	}
	for _, p := range undocumented(exportedMetrics(t), doc) {
		t.Errorf("%s: %s", metricsDoc, p)
	}
}

// The comparison catches a missing row, a row for a metric that does not
// exist, and a wrong label set.
func TestMetricsDocumentedCatchesMistakes(t *testing.T) {
	b, err := os.ReadFile(metricsDoc)
	if err != nil {
		t.Fatal(err)
	}
	text := string(b)
	exported := exportedMetrics(t)
	for _, tc := range []struct {
		name, old, new, want string
	}{
		{"row removed", "| `trackrelay_smtp_sessions_total` | counter | | SMTP sessions started |\n", "",
			"trackrelay_smtp_sessions_total is exported but not in the table"},
		{"unknown metric", "| `trackrelay_smtp_sessions_total` |", "| `trackrelay_smtp_session_total` |",
			"trackrelay_smtp_session_total (line"},
		{"label missing", "`state`: queued, deferred, sending, held", "queued, deferred, sending, held",
			"trackrelay_queue_recipients (line"},
		{"label extra", "| `trackrelay_rewrite_duration_seconds` | histogram | |", "| `trackrelay_rewrite_duration_seconds` | histogram | `outcome` |",
			"trackrelay_rewrite_duration_seconds (line"},
		{"family renamed", "| `process_*` |", "| `processes` |", "process_cpu_seconds_total is exported but not in the table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(text, tc.old) {
				t.Fatalf("%s no longer contains %q", metricsDoc, tc.old)
			}
			broken := strings.Replace(text, tc.old, tc.new, 1)
			doc, err := parseMetricsTable(broken)
			if err != nil {
				t.Fatalf("the changed table no longer parses: %v", err)
			}
			problems := undocumented(exported, doc)
			for _, p := range problems {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("no problem mentioning %q; got %q", tc.want, problems)
		})
	}
}
