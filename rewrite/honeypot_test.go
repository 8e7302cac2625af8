package rewrite

import (
	"strings"
	"testing"

	"golang.org/x/net/html"
)

// With Options.Honeypot and clicks tracked, a part gets exactly one link
// to the honeypot URL right after <body> (with the pixel), with no text,
// hidden from screen readers, out of the tab order and of no size; it is
// not one of the message's links, whose indexes stay as they were. Without
// clicks, or with nothing else to instrument, nothing is added.
func TestHoneypot(t *testing.T) {
	const hp = testBase + "/c/HONEYPOT"
	body := `<html><body class="b"><p>Hi</p><a href="https://x.example/1">1</a> <a href="https://x.example/2">2</a></body></html>`
	m := newRecMinter()
	out, res := rewrite(t, htmlMessage("", body), Options{Opens: true, Clicks: true, Minter: m, Honeypot: hp})
	hs := htmlOf(t, out)
	if len(hs) != 1 {
		t.Fatalf("%d html parts", len(hs))
	}
	doc := hs[0]
	if len(res.Links) != 2 || res.Links[0] != "https://x.example/1" || res.Pixels != 1 {
		t.Fatalf("result %+v", res)
	}
	if n := strings.Count(doc, hp); n != 1 {
		t.Fatalf("%d honeypot links in\n%s", n, doc)
	}
	if !strings.HasPrefix(doc[strings.Index(doc, `<body class="b">`)+len(`<body class="b">`):], `<img src="`+testBase+`/o/OPENTOKEN.gif"`) {
		t.Errorf("pixel not right after <body>:\n%s", doc)
	}
	root, err := html.Parse(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	var links []*html.Node
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode && n.Data == "a" {
			links = append(links, n)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(root)
	if len(links) != 3 {
		t.Fatalf("%d links", len(links))
	}
	a := links[0] // first in the body, before any of the message's
	attrs := map[string]string{}
	for _, at := range a.Attr {
		attrs[at.Key] = at.Val
	}
	if attrs["href"] != hp || attrs["aria-hidden"] != "true" || attrs["tabindex"] != "-1" || attrs["style"] != honeypotStyle || len(attrs) != 4 {
		t.Errorf("honeypot attributes %v", attrs)
	}
	if a.FirstChild != nil {
		t.Errorf("honeypot has content")
	}
	for _, want := range []string{"width:0", "height:0", "position:absolute", "opacity:0", "pointer-events:none"} {
		if !strings.Contains(honeypotStyle, want) {
			t.Errorf("style lacks %s", want)
		}
	}

	for name, opts := range map[string]Options{
		"opens only":    {Opens: true, Minter: m, Honeypot: hp},
		"no honeypot":   {Opens: true, Clicks: true, Minter: m},
		"opens off too": {Clicks: true, Minter: m, Honeypot: hp},
	} {
		out, _ := rewrite(t, htmlMessage("", body), opts)
		if want := name == "opens off too"; strings.Count(out, hp) != map[bool]int{true: 1}[want] {
			t.Errorf("%s: %d honeypot links", name, strings.Count(out, hp))
		}
	}
	_, res = rewrite(t, htmlMessage("", "<p>no links</p>"), Options{Clicks: true, Minter: m, Honeypot: hp})
	if res.Changed || res.Skipped != SkipNothingToDo {
		t.Errorf("honeypot alone: %+v", res)
	}
}
