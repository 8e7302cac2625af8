package postgres

import (
	"io/fs"
	"regexp"
	"strings"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/classify"
)

// The batch's read of honeypot hits and gateway pixel fetches repeats the
// predicate of the index events_marks word for word (else the planner
// walks every event of the copy instead), and names the reasons package
// classify gives those hits.
func TestHistoryMarksIsTheIndexPredicate(t *testing.T) {
	files, err := fs.Glob(migrationFiles, "migrations/*_history_indexes.sql")
	if err != nil || len(files) != 1 {
		t.Fatalf("migration history_indexes: %v %v", files, err)
	}
	b, err := migrationFiles.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	space := regexp.MustCompile(`\s+`)
	norm := func(s string) string { return strings.TrimSpace(space.ReplaceAllString(s, " ")) }
	m := regexp.MustCompile(`(?s)CREATE INDEX events_marks ON events \(message, recipient, at_ns\)\s+WHERE (.*?);`).FindSubmatch(b)
	if m == nil {
		t.Fatalf("no index events_marks in %s", files[0])
	}
	index := norm(string(m[1]))
	query := norm(strings.ReplaceAll(historyMarks, "e.", ""))
	if index != query {
		t.Errorf("historyMarks differs from the index's predicate:\nquery: %s\nindex: %s", query, index)
	}
	for _, r := range []string{"'" + classify.ReasonHoneypot + "'", `"` + classify.ReasonGatewayRange, `"` + classify.ReasonGatewayNetwork} {
		if !strings.Contains(historyMarks, r) {
			t.Errorf("historyMarks does not name %s", r)
		}
	}
}
