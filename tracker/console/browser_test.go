package console

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/trackrelay/trackrelay/tracker/store"
)

// chromiumPath is Debian's chromium (apt-get install chromium).
const chromiumPath = "/usr/bin/chromium"

// axeDirEnv names the directory npm installed axe-core into (.ci/run:
// npm install --prefix DIR axe-core@VERSION); the accessibility test reads
// DIR/node_modules/axe-core/axe.min.js.
const axeDirEnv = "TRACKRELAY_AXE_DIR"

// requireBrowserEnv, when set (CI sets it), makes a missing chromium or
// axe-core fail the browser tests instead of skipping them, so that CI
// cannot pass without having run them.
const requireBrowserEnv = "TRACKRELAY_REQUIRE_BROWSER"

var update = flag.Bool("update", false, "rewrite testdata/message.png from the browser's rendering")

// skipOrFail skips the test on a developer's machine that lacks a tool,
// and fails it where the browser tests are required.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv(requireBrowserEnv) != "" {
		t.Fatalf(format+" ("+requireBrowserEnv+" is set: the browser tests must run)", args...)
	}
	t.Skipf(format, args...)
}

// Screenshot comparison: a pixel differs when a channel differs by more
// than shotChannelTolerance; at most shotPixelTolerance of the pixels may
// differ (anti-aliasing of a chromium update), and the sizes must match.
const (
	shotWidth            = 1024
	shotChannelTolerance = 40
	shotPixelTolerance   = 0.005
)

// hostile is markup in every field a stranger controls.
const hostile = `<script>document.title="pwned"</script>"><img src=x onerror=alert(1)>`

// browserConsole is a console with the fixture and a hostile message,
// and a headless chromium to look at it.
func browserConsole(t *testing.T) (*testConsole, context.Context) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		skipOrFail(t, "%s not installed (apt-get install chromium): browser test skipped", chromiumPath)
	}
	tc := newTestConsole(t, nil)
	tc.store.put(store.Message{ID: "EVIL1", Account: "alice", From: "x@example.com", Subject: hostile, AcceptedAt: t0.Add(time.Hour),
		Recipients: []store.Recipient{{Address: "y@example.net", Tracked: true}}}, nil, nil,
		store.Event{Type: store.EventOpen, At: t0.Add(2 * time.Hour), Link: -1, IP: "198.51.100.1", UserAgent: hostile, Client: "Unknown", Class: "human", Reasons: []string{"no-machine-signals"}})
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-device-scale-factor", "1"),
		chromedp.Flag("font-render-hinting", "none"),
		chromedp.UserDataDir(filepath.Join(t.TempDir(), "profile")),
		chromedp.WindowSize(shotWidth, 800),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	bctx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(t.Logf))
	t.Cleanup(func() { cancelBrowser(); cancelAlloc() })
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return tc, bctx
}

// run runs steps, failing the test on error.
func run(t *testing.T, ctx context.Context, steps ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	if err := chromedp.Do(ctx, steps...); err != nil {
		t.Fatal(err)
	}
}

func value[T any](t *testing.T, ctx context.Context, a chromedp.Action[T]) T {
	t.Helper()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// clickAndLoad clicks sel and waits for the page it leads to, returning
// its HTTP status.
func clickAndLoad(t *testing.T, ctx context.Context, sel string) int64 {
	t.Helper()
	resp, err := chromedp.RunResponse(ctx, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
	if err != nil {
		t.Fatalf("click %s: %v", sel, err)
	}
	return resp.Status
}

func path(t *testing.T, ctx context.Context) string {
	t.Helper()
	loc := value(t, ctx, chromedp.Location())
	i := strings.Index(loc, "/ui")
	if i < 0 {
		t.Fatalf("location %s", loc)
	}
	return loc[i:]
}

// TestBrowserFlow drives chromium through the console as a person does:
// sent to the login, logs in, finds the message in the list, opens it,
// erases another with the form's CSRF token (and cannot without it),
// cannot see another account's message, and logs out.
func TestBrowserFlow(t *testing.T) {
	tc, ctx := browserConsole(t)
	base := tc.srv.URL
	run(t, ctx, chromedp.Navigate(base+"/ui/overview"))
	if p := path(t, ctx); p != "/ui/login" {
		t.Fatalf("without a session: at %s, want /ui/login", p)
	}
	run(t, ctx, chromedp.SendKeys(chromedp.ID("account"), "alice"), chromedp.SendKeys(chromedp.ID("secret"), aliceKey))
	if code := clickAndLoad(t, ctx, "main button[type=submit]"); code != http.StatusOK {
		t.Fatalf("login: %d", code)
	}
	if p := path(t, ctx); p != "/ui/" {
		t.Fatalf("after login: at %s, want /ui/", p)
	}
	list := value(t, ctx, chromedp.Text(chromedp.CSS("main")))
	for _, want := range []string{"Your quote for the kitchen", "Opened by 1 of 2", "Invoice 7", "Not delivered (bounced)"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	clickAndLoad(t, ctx, `a[href="/ui/messages/Q1QUOTE"]`)
	if h1 := value(t, ctx, chromedp.Text(chromedp.CSS("h1"))); h1 != "Your quote for the kitchen" {
		t.Errorf("message page h1 %q", h1)
	}
	if n := value(t, ctx, chromedp.Evaluate[int]("document.querySelectorAll('.chart svg rect').length")); n != 3 {
		t.Errorf("%d bars in the chart, want 3", n)
	}

	// Another account's message.
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(base+"/ui/messages/B1SECRET"))
	if err != nil || resp.Status != http.StatusNotFound {
		t.Fatalf("bob's message: %v %v, want 404", resp, err)
	}

	// Erase without the CSRF token: refused; with it: erased.
	run(t, ctx, chromedp.Navigate(base+"/ui/messages/Q2INVOICE"))
	run(t, ctx, chromedp.RemoveAttribute(chromedp.CSS(`form[action$="/erase"] input[name=csrf]`), "value"))
	if code := clickAndLoad(t, ctx, "button.danger"); code != http.StatusForbidden || !tc.store.has("Q2INVOICE") {
		t.Fatalf("erase without the token: %d, want 403 and nothing erased", code)
	}
	run(t, ctx, chromedp.Navigate(base+"/ui/messages/Q2INVOICE"))
	if code := clickAndLoad(t, ctx, "button.danger"); code != http.StatusOK || tc.store.has("Q2INVOICE") {
		t.Fatalf("erase: %d, erased %v", code, !tc.store.has("Q2INVOICE"))
	}
	if p := path(t, ctx); p != "/ui/?erased=1" {
		t.Errorf("after erase: at %s", p)
	}
	if s := value(t, ctx, chromedp.Text(chromedp.CSS(".notice"))); !strings.Contains(s, "erased") {
		t.Errorf("notice %q", s)
	}

	clickAndLoad(t, ctx, ".logout button")
	if p := path(t, ctx); p != "/ui/login" {
		t.Errorf("after logout: at %s", p)
	}
	run(t, ctx, chromedp.Navigate(base+"/ui/messages/Q1QUOTE"))
	if p := path(t, ctx); p != "/ui/login" {
		t.Errorf("after logout, a message page: at %s, want /ui/login", p)
	}
}

// loginBrowser logs the browser in as alice.
func loginBrowser(t *testing.T, ctx context.Context, base string) {
	t.Helper()
	run(t, ctx, chromedp.Navigate(base+"/ui/login"), chromedp.SendKeys(chromedp.ID("account"), "alice"),
		chromedp.SendKeys(chromedp.ID("secret"), alicePassword))
	clickAndLoad(t, ctx, "main button[type=submit]")
}

// TestBrowserHostileText: a subject and a user agent made of markup are
// text in the page: no element is made of them, no script runs, and the
// text reads as it was sent.
func TestBrowserHostileText(t *testing.T) {
	tc, ctx := browserConsole(t)
	loginBrowser(t, ctx, tc.srv.URL)
	for _, p := range []string{"/ui/", "/ui/messages/EVIL1", "/ui/?q=%3Cscript"} {
		run(t, ctx, chromedp.Navigate(tc.srv.URL+p))
		if n := value(t, ctx, chromedp.Evaluate[int]("document.querySelectorAll('img, script, [onerror]').length")); n != 0 {
			t.Errorf("%s: %d elements made of the data", p, n)
		}
		if title := value(t, ctx, chromedp.Title()); title == "pwned" {
			t.Errorf("%s: a script ran", p)
		}
	}
	run(t, ctx, chromedp.Navigate(tc.srv.URL+"/ui/messages/EVIL1"))
	if h1 := value(t, ctx, chromedp.Text(chromedp.CSS("h1"))); h1 != hostile {
		t.Errorf("subject shows as %q, want the text %q", h1, hostile)
	}
	if ua := value(t, ctx, chromedp.Text(chromedp.CSS(".ua"))); ua != hostile {
		t.Errorf("user agent shows as %q", ua)
	}
}

// consolePages are the pages of a session that the layout and
// accessibility test looks at, besides the login.
var consolePages = []string{"/ui/", "/ui/messages/Q1QUOTE", "/ui/overview", "/ui/messages/NOSUCH"}

// TestBrowserAccessibility: at a phone's width (375 px) and a desktop's
// (1280 px), no page scrolls sideways, and axe-core finds no serious or
// critical violation on any page.
func TestBrowserAccessibility(t *testing.T) {
	tc, ctx := browserConsole(t)
	var axe []byte
	if dir := os.Getenv(axeDirEnv); dir != "" {
		var err error
		if axe, err = os.ReadFile(filepath.Join(dir, "node_modules", "axe-core", "axe.min.js")); err != nil {
			t.Fatalf("%s=%s: %v", axeDirEnv, dir, err)
		}
	}
	check := func(p string, width int64) {
		t.Helper()
		var opts []chromedp.EmulateViewportOption
		if width < 600 {
			opts = append(opts, chromedp.EmulateMobile)
		}
		run(t, ctx, chromedp.EmulateViewport(width, 800, opts...), chromedp.Navigate(tc.srv.URL+p))
		sw := value(t, ctx, chromedp.Evaluate[int]("document.documentElement.scrollWidth"))
		if sw > int(width) {
			t.Errorf("%s at %d px: the page is %d px wide (scrolls sideways)", p, width, sw)
		}
		// A chart's labels are inside it, not cut by its edge.
		if out := value(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll(".chart svg")].flatMap(svg => {
			const s = svg.getBoundingClientRect();
			return [...svg.querySelectorAll("text")].filter(t => { const b = t.getBoundingClientRect();
				return b.top < s.top || b.bottom > s.bottom || b.left < s.left || b.right > s.right; }).map(t => t.textContent); })`)); len(out) > 0 {
			t.Errorf("%s at %d px: chart labels cut by the chart's edge: %q", p, width, out)
		}
		// A table's header words are not broken over two lines.
		if broken := value(t, ctx, chromedp.Evaluate[[]string](`[...document.querySelectorAll("th")].filter(th => {
			const r = document.createRange(); r.selectNodeContents(th); return r.getClientRects().length > 1; }).map(th => th.textContent)`)); len(broken) > 0 {
			t.Errorf("%s at %d px: table headers over two lines: %q", p, width, broken)
		}
		if axe == nil {
			return
		}
		run(t, ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Evaluate[chromedp.Void](string(axe))(ctx, tg)
			return err
		}))
		res := value(t, ctx, chromedp.Evaluate[string](`axe.run(document, {resultTypes: ["violations"]}).then(r => JSON.stringify(
			r.violations.filter(v => v.impact === "serious" || v.impact === "critical").map(v => ({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(" "))}))))`,
			chromedp.EvalAwaitPromise))
		var violations []map[string]any
		if err := json.Unmarshal([]byte(res), &violations); err != nil {
			t.Fatal(err)
		}
		for _, v := range violations {
			t.Errorf("%s at %d px: axe %v (%v): %v on %v", p, width, v["id"], v["impact"], v["help"], v["nodes"])
		}
	}
	widths := []int64{375, 1280}
	for _, w := range widths {
		check("/ui/login", w) // before the session: with one, it leads to the list
	}
	loginBrowser(t, ctx, tc.srv.URL)
	for _, p := range consolePages {
		for _, w := range widths {
			check(p, w)
		}
	}
	if axe == nil {
		skipOrFail(t, "%s is not set: the layout was checked, axe-core was not run (npm install --prefix DIR axe-core, then %s=DIR)", axeDirEnv, axeDirEnv)
	}
}

// TestBrowserScreenshot renders the message page on fixed data and
// compares it with testdata/message.png (go test -run
// TestBrowserScreenshot -update rewrites it).
func TestBrowserScreenshot(t *testing.T) {
	tc, ctx := browserConsole(t)
	loginBrowser(t, ctx, tc.srv.URL)
	run(t, ctx, chromedp.EmulateViewport(shotWidth, 800), chromedp.Navigate(tc.srv.URL+"/ui/messages/Q1QUOTE"))
	requireFonts(t, ctx, "DejaVu Sans", "DejaVu Sans Mono")
	shot, err := chromedp.Run(ctx, func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		lm, err := cdp.Call(ctx, tg, cdppage.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		res, err := cdp.Call(ctx, tg, cdppage.CaptureScreenshot, cdppage.CaptureScreenshotParams{
			Format:                cdppage.CaptureScreenshotFormatPng,
			CaptureBeyondViewport: new(true),
			FromSurface:           new(true),
			Clip:                  &cdppage.Viewport{Width: shotWidth, Height: float64(int(lm.CSSContentSize.Height + 0.5)), Scale: 1},
		})
		if err != nil {
			return nil, err
		}
		return res.Data, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "message.png")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, shot, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", golden)
		return
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (go test -run TestBrowserScreenshot -update makes it)", err)
	}
	if msg := compareImages(decodePNG(t, want), decodePNG(t, shot)); msg != "" {
		out := filepath.Join(t.TempDir(), "message.png")
		os.WriteFile(out, shot, 0o644)
		t.Errorf("the message page differs from %s: %s (rendering saved as %s)", golden, msg, out)
	}
}

// requireFonts fails the test when the browser lacks one of the fonts the
// stylesheet names: it would fall back to another font, and the
// screenshot would differ everywhere for a reason the comparison cannot
// tell. A font is there when text in it is as wide whichever generic
// family follows it.
func requireFonts(t *testing.T, ctx context.Context, fonts ...string) {
	t.Helper()
	for _, f := range fonts {
		name, _ := json.Marshal(f)
		js := fmt.Sprintf(`(() => { const c = document.createElement("canvas").getContext("2d"), f = %s;
			const w = fb => { c.font = "40px '" + f + "', " + fb; return c.measureText("Wg1il. Mo").width; };
			return w("serif") === w("monospace"); })()`, name)
		if !value(t, ctx, chromedp.Evaluate[bool](js)) {
			t.Fatalf("the browser has no font %q, which the stylesheet names (apt-get install fonts-dejavu-core)", f)
		}
	}
}

func decodePNG(t *testing.T, b []byte) *image.RGBA {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	return rgba
}

// compareImages returns "" when got matches want within the tolerance,
// else what differs.
func compareImages(want, got *image.RGBA) string {
	if want.Bounds() != got.Bounds() {
		return fmt.Sprintf("size %v, want %v", got.Bounds().Size(), want.Bounds().Size())
	}
	differ := 0
	for i := 0; i < len(want.Pix); i += 4 {
		for c := range 3 {
			d := int(want.Pix[i+c]) - int(got.Pix[i+c])
			if d > shotChannelTolerance || d < -shotChannelTolerance {
				differ++
				break
			}
		}
	}
	total := len(want.Pix) / 4
	if float64(differ) > shotPixelTolerance*float64(total) {
		return fmt.Sprintf("%d of %d pixels differ (%.2f%%; at most %.2f%% may)", differ, total, 100*float64(differ)/float64(total), 100*shotPixelTolerance)
	}
	return ""
}
