package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"gopkg.in/yaml.v3"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/tracker"
	"github.com/trackrelay/trackrelay/tracker/webhook"
)

// exportedMetrics returns the names of the metrics serve exports with their
// label names: the collectors serve registers, described.
func exportedMetrics(t *testing.T) map[string]map[string]bool {
	t.Helper()
	rec := &descRecorder{}
	rec.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), guard.Panics)
	tracker.NewMetrics(rec)
	webhook.NewMetrics(rec)
	relay.NewMetrics(rec)

	ch := make(chan *prometheus.Desc)
	go func() {
		for _, c := range rec.cs {
			c.Describe(ch)
		}
		close(ch)
	}()
	nameRe := regexp.MustCompile(`fqName: "([^"]+)"`)
	labelsRe := regexp.MustCompile(`variableLabels: \{([^}]*)\}`)
	out := map[string]map[string]bool{}
	for d := range ch {
		s := d.String()
		m := nameRe.FindStringSubmatch(s)
		if m == nil {
			t.Fatalf("cannot read the name of %s", s)
		}
		labels := map[string]bool{}
		if l := labelsRe.FindStringSubmatch(s); l != nil && l[1] != "" {
			for _, name := range strings.Split(l[1], ",") {
				labels[strings.TrimSuffix(strings.TrimPrefix(name, "c("), ")")] = true
			}
		}
		out[m[1]] = labels
	}
	if len(out) < 20 {
		t.Fatalf("only %d metrics described", len(out))
	}
	return out
}

// descRecorder is a Registerer that keeps what is registered on it.
type descRecorder struct{ cs []prometheus.Collector }

func (r *descRecorder) Register(c prometheus.Collector) error { r.cs = append(r.cs, c); return nil }
func (r *descRecorder) MustRegister(cs ...prometheus.Collector) {
	r.cs = append(r.cs, cs...)
}
func (r *descRecorder) Unregister(prometheus.Collector) bool { return false }

var (
	// A metric name of ours or of the Go and process collectors, with its
	// selector if it has one.
	selectorRe = regexp.MustCompile(`\b((?:trackrelay|go|process)_[a-zA-Z0-9_]+|up)\b(\{[^}]*\})?`)
	matcherRe  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)`)
)

// checkExpr returns the number of metric references in a PromQL expression
// and a problem for every name that serve does not export and every label
// matcher on a label the metric lacks.
func checkExpr(where, expr string, metrics map[string]map[string]bool) (n int, problems []string) {
	for _, m := range selectorRe.FindAllStringSubmatch(expr, -1) {
		name, sel := m[1], m[2]
		if name == "up" {
			continue
		}
		n++
		labels, ok := metrics[name]
		extra := map[string]bool{"job": true, "instance": true}
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				base := strings.TrimSuffix(name, suffix)
				if base != name && !strings.HasSuffix(base, "_total") {
					labels, ok = metrics[base]
					if suffix == "_bucket" {
						extra["le"] = true
					}
					break
				}
			}
		}
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: %s is not a metric trackrelay exports (in %q)", where, name, expr))
			continue
		}
		for _, lm := range matcherRe.FindAllStringSubmatch(sel, -1) {
			if l := lm[1]; !labels[l] && !extra[l] {
				problems = append(problems, fmt.Sprintf("%s: %s has no label %q (in %q)", where, name, l, expr))
			}
		}
	}
	return n, problems
}

// check reports the problems of checkExpr as test errors.
func check(t *testing.T, where, expr string, metrics map[string]map[string]bool) int {
	t.Helper()
	n, problems := checkExpr(where, expr, metrics)
	for _, p := range problems {
		t.Error(p)
	}
	return n
}

// The alert rules, their tests and the Grafana dashboard in configs/ only
// use metric names and labels that the binary exports.
func TestConfigsUseExportedMetrics(t *testing.T) {
	metrics := exportedMetrics(t)
	dir := filepath.Join("..", "..", "configs")

	// Alert rules.
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, filepath.Join(dir, "alerts.yml"), &rules)
	refs := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Expr == "" {
				t.Errorf("alerts.yml: %s has no expr", r.Alert)
			}
			refs += check(t, "alerts.yml "+r.Alert, r.Expr, metrics)
		}
	}
	if refs < 10 {
		t.Errorf("alerts.yml: only %d metric references found", refs)
	}

	// The series the alert tests feed in.
	var tests struct {
		Tests []struct {
			InputSeries []struct {
				Series string `yaml:"series"`
			} `yaml:"input_series"`
		} `yaml:"tests"`
	}
	readYAML(t, filepath.Join(dir, "alerts_test.yml"), &tests)
	for _, tc := range tests.Tests {
		for _, s := range tc.InputSeries {
			check(t, "alerts_test.yml", s.Series, metrics)
		}
	}

	// Dashboard: every "expr" and templating query.
	b, err := os.ReadFile(filepath.Join(dir, "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	var exprs []string
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
					exprs = append(exprs, s)
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	sort.Strings(exprs)
	refs = 0
	for _, e := range exprs {
		if c := check(t, "grafana-dashboard.json", e, metrics); c == 0 && !strings.Contains(e, "up{") {
			t.Errorf("grafana-dashboard.json: no metric in %q", e)
		} else {
			refs += c
		}
	}
	if len(exprs) < 20 || refs < 20 {
		t.Errorf("grafana-dashboard.json: %d expressions, %d metric references", len(exprs), refs)
	}
}

// The checker itself catches a misspelt metric and an unknown label.
func TestCheckExprCatchesMistakes(t *testing.T) {
	metrics := exportedMetrics(t)
	for _, bad := range []string{
		`rate(trackrelay_smtp_message_total[5m])`,
		`trackrelay_queue_recipients{status="queued"}`,
		`rate(trackrelay_delivery_attempts_total_bucket[5m])`,
	} {
		if _, problems := checkExpr("test", bad, metrics); len(problems) == 0 {
			t.Errorf("checkExpr accepted %q", bad)
		}
	}
	ok := `histogram_quantile(0.9, sum by (le) (rate(trackrelay_store_commit_duration_seconds_bucket{job="x", le="1"}[5m])))`
	if n, problems := checkExpr("test", ok, metrics); n != 1 || len(problems) != 0 {
		t.Errorf("checkExpr found %d references in %q, want 1; problems %q", n, ok, problems)
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}
