package rewrite

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/chromedp/cdproto/accessibility"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/chromedp"
)

// The honeypot link is silent to screen readers and out of the keyboard's
// reach: in chromium's accessibility tree, the only link a page holds
// besides it is the page's own, and the first Tab goes to that one.
func TestBrowserHoneypotSilent(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s not installed (apt-get install chromium): accessibility check skipped", chromiumPath)
	}
	srv := newRenderServer()
	defer srv.Close()
	const own = "https://example.com/quote"
	doc := appendHoneypot([]byte(`<!DOCTYPE html><html><body>`), srv.URL+"/c/honeypot")
	doc = append(doc, `<p>Hello, see <a href="`+own+`">the quote</a>.</p></body></html>`...)
	u := srv.add("honeypot", "utf-8", doc)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	br, stop, err := startBrowser(ctx, t.TempDir(), t.Errorf)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	defer stop()
	tab, closeTab := chromedp.NewContext(br)
	defer closeTab()
	if err := chromedp.Do(tab, chromedp.Navigate(u)); err != nil {
		t.Fatal(err)
	}
	tree, err := chromedp.Run(tab, func(ctx context.Context, tg *chromedp.Target) (accessibility.GetFullAXTreeResult, error) {
		return cdp.Call(ctx, tg, accessibility.GetFullAXTree, accessibility.GetFullAXTreeParams{})
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := chromedp.Do(tab, chromedp.KeyEvent("\t")); err != nil {
		t.Fatal(err)
	}
	focused, err := chromedp.Run(tab, chromedp.Evaluate[string](`document.activeElement ? (document.activeElement.getAttribute("href") || "") : ""`))
	if err != nil {
		t.Fatal(err)
	}
	nodes := tree.Nodes
	var links []string
	for _, n := range nodes {
		if !n.Ignored && n.Role != nil && string(n.Role.Value) == `"link"` {
			name := ""
			if n.Name != nil {
				name = string(n.Name.Value)
			}
			links = append(links, name)
		}
	}
	if len(links) != 1 || links[0] != `"the quote"` {
		t.Errorf("links in the accessibility tree: %q, want only the page's own", links)
	}
	if focused != own {
		t.Errorf("the first Tab focused %q, want %q", focused, own)
	}
}
