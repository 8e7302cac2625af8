package rewrite

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/draw"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/emersion/go-message"
	"golang.org/x/net/html"

	"github.com/trackrelay/trackrelay/internal/rawheader"
)

// chromiumPath is Debian's chromium (apt-get install chromium).
const chromiumPath = "/usr/bin/chromium"

// Rendering parameters of the browser test. The viewport is that of a
// desktop mail client's reading pane; screenshots cover the whole page.
const (
	browserWidth     = 800
	mobileWidth      = 375 // templates are also compared in a phone's width (their media queries)
	browserHeight    = 600
	browserMaxHeight = 16384 // taller pages are compared over their first 16384 px
	browserWorkers   = 3     // pages rendered at once
)

// TestBrowserNoVisibleChange proves that instrumenting a message changes
// nothing a reader can see: for every corpus message the rewriter changes,
// each text/html part it changed is rendered before and after in headless
// chromium, and the two full-page screenshots must be identical pixel for
// pixel, with the honeypot link (Options.Honeypot) on. The open pixel is
// served by a local HTTP server as a real 1x1 transparent GIF, and the
// test checks that the browser loaded it. Remote
// images (unreachable here) are pointed, identically in both documents, at a
// local placeholder image, so that layouts with images are compared too;
// every other remote host fails to resolve at once.
func TestBrowserNoVisibleChange(t *testing.T) {
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Skipf("%s not installed (apt-get install chromium): rendering comparison skipped", chromiumPath)
	}
	srv := newRenderServer()
	defer srv.Close()

	// Collect the changed HTML parts.
	var cases []*renderCase
	honeypots := 0 // changed parts, each with the honeypot link: it must change nothing either
	templates := map[string]int{}
	for _, f := range corpusFiles(t) {
		name := filepath.Base(f)
		in, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(name, "template--") {
			templates[name] += 0
		}
		id := fmt.Sprintf("m%03d", len(srv.names))
		srv.names = append(srv.names, name)
		var out bytes.Buffer
		res, err := Message(&out, bytes.NewReader(in), Options{Opens: true, Clicks: true, Minter: browserMinter{testURLs: testURLs{srv.URL}, id: id},
			Honeypot: srv.URL + "/c/" + id + "/honeypot"})
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if !res.Changed {
			continue
		}
		before, err1 := htmlParts(in)
		after, err2 := htmlParts(out.Bytes())
		if err1 != nil || err2 != nil {
			before, err1 = htmlParts(repairHeader(in))
			after, err2 = htmlParts(repairHeader(out.Bytes()))
		}
		if err1 != nil || err2 != nil || len(before) != len(after) {
			// The corpus property test covers messages go-message cannot read.
			t.Logf("%s: not compared (go-message: %v / %v)", name, err1, err2)
			continue
		}
		for i := range before {
			if bytes.Equal(before[i].body, after[i].body) {
				continue
			}
			if !bytes.Contains(after[i].body, []byte("/c/"+id+"/honeypot")) {
				t.Errorf("%s part %d: no honeypot link", name, i)
			}
			honeypots++
			c := &renderCase{name: name, part: i, pixelID: id, width: browserWidth}
			c.orig = srv.add(fmt.Sprintf("%s-%d-orig", id, i), after[i].charset, srv.localImages(before[i].body))
			c.edited = srv.add(fmt.Sprintf("%s-%d-edited", id, i), after[i].charset, srv.localImages(after[i].body))
			cases = append(cases, c)
			if _, ok := templates[name]; ok {
				templates[name]++
				m := *c
				m.width = mobileWidth
				cases = append(cases, &m)
			}
			if name == controlTemplate {
				// The control: the same pixel without its style, as a naive
				// tracker inserts it. The comparison must see it.
				naive := bytes.Replace(after[i].body, []byte(` style="`+pixelStyle+`"`), nil, 1)
				m := *c
				m.control = true
				m.edited = srv.add(fmt.Sprintf("%s-%d-control", id, i), after[i].charset, srv.localImages(naive))
				cases = append(cases, &m)
				// The honeypot link as a naive tracker would add it: unstyled, with
				// text. The comparison must see it too.
				visible := bytes.Replace(after[i].body, []byte(` style="`+honeypotStyle+`"></a>`), []byte(`>.</a>`), 1)
				hc := *c
				hc.control = true
				hc.edited = srv.add(fmt.Sprintf("%s-%d-control-honeypot", id, i), after[i].charset, srv.localImages(visible))
				cases = append(cases, &hc)
			}
		}
	}
	for name, n := range templates {
		if n == 0 {
			t.Errorf("%s: no changed HTML part to compare", name)
		}
	}
	if len(cases) == 0 {
		t.Fatal("nothing to compare")
	}
	if honeypots == 0 {
		t.Fatal("no honeypot link inserted: the comparison would not cover it")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var protoErrs protocolErrors
	br, stop, err := startBrowser(ctx, t.TempDir(), protoErrs.add)
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	defer stop()

	start := time.Now()
	work := make(chan *renderCase)
	var wg sync.WaitGroup
	for range browserWorkers {
		wg.Go(func() {
			// A tab of its own, opened by the first run and reused for
			// every page: a tab per page starts a renderer process for
			// each and triples the test's time.
			tab, closeTab := chromedp.NewContext(br)
			defer closeTab()
			err := chromedp.Do(tab)
			for c := range work {
				if err != nil {
					c.err = fmt.Errorf("opening a tab: %w", err)
					continue
				}
				c.run(tab, srv)
			}
		})
	}
	for _, c := range cases {
		work <- c
	}
	close(work)
	wg.Wait()
	for _, e := range protoErrs.list() {
		t.Errorf("chromium: %s", e)
	}

	identical, controls := 0, 0
	for _, c := range cases {
		switch {
		case c.control:
			controls++
			if c.err == nil && c.diff == "" {
				t.Errorf("control %s part %d: a naive pixel or honeypot link rendered identically: the comparison sees nothing", c.name, c.part)
			} else {
				t.Logf("control %s part %d (unstyled pixel, or honeypot link with text): %v%s", c.name, c.part, c.err, c.diff)
			}
		case c.err != nil:
			t.Errorf("%s part %d: %v", c.name, c.part, c.err)
		case c.diff != "":
			t.Errorf("%s part %d: screenshots differ: %s", c.name, c.part, c.diff)
		default:
			identical++
			t.Logf("%s part %d: identical at width %d, %dx%d px, pixel loaded (%s)", c.name, c.part, c.width, c.w, c.h, c.took.Round(time.Millisecond))
		}
	}
	t.Logf("browser: %d renderings of changed HTML parts (corpus messages, and the %d templates also at width %d) compared in %s: %d identical, %d different; %d control(s) detected",
		len(cases)-controls, len(templates), mobileWidth, time.Since(start).Round(time.Millisecond), identical, len(cases)-controls-identical, controls)
}

// controlTemplate is the corpus message on which the test checks that it
// does see a visible change.
const controlTemplate = "template--postmark-welcome.eml"

// browserMinter mints URLs on the local render server: the pixel of message
// id is /o/<id>.gif, so the server can tell which pixels were loaded.
type browserMinter struct {
	testURLs
	id string
}

func (m browserMinter) OpenURL() string { return m.base + "/o/" + m.id + ".gif" }
func (m browserMinter) ClickURL(i int, dest string) string {
	return fmt.Sprintf("%s/c/%s/%d", m.base, m.id, i)
}

// htmlPart is a decoded text/html leaf (transfer encoding removed, charset
// not converted) and its charset.
type htmlPart struct {
	body    []byte
	charset string
}

// htmlParts returns the text/html leaves of msg that are not attachments, as
// go-message reads them.
func htmlParts(msg []byte) ([]htmlPart, error) {
	e, err := message.Read(bytes.NewReader(msg))
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		return nil, err
	}
	var out []htmlPart
	err = e.Walk(func(_ []int, p *message.Entity, err error) error {
		if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
			return err
		}
		mt, params, _ := p.Header.ContentType()
		disp, _, _ := p.Header.ContentDisposition()
		if p.MultipartReader() != nil || mt != "text/html" || disp == "attachment" {
			return nil
		}
		body := p.Body
		if message.IsUnknownEncoding(err) {
			// As mail clients do, and the rewriter: "quoted-printable;" is quoted-printable.
			h := p.Header.Copy()
			enc, _, _ := strings.Cut(h.Get("Content-Transfer-Encoding"), ";")
			h.Set("Content-Transfer-Encoding", strings.TrimSpace(enc))
			if e, err := message.New(h, body); err == nil || message.IsUnknownCharset(err) {
				body = e.Body
			}
		}
		b, err := io.ReadAll(body)
		if err != nil {
			return err
		}
		out = append(out, htmlPart{body: b, charset: params["charset"]})
		return nil
	})
	return out, err
}

// repairHeader ends the top header block with an empty line where it breaks
// off, which is where the rewriter and mail clients take the body to start,
// so that go-message can read a message whose header lacks that line. It is
// applied to the original and the rewritten message alike.
func repairHeader(msg []byte) []byte {
	h, rest, err := rawheader.Read(rawheader.Lines(bufio.NewReader(bytes.NewReader(msg))), len(msg)+1)
	if err != nil || rest == nil {
		return msg
	}
	out := append([]byte(nil), msg[:len(h.Raw)]...)
	out = append(out, "\r\n"...)
	return append(out, msg[len(h.Raw):]...)
}

// renderCase is one HTML part rendered before and after rewriting.
type renderCase struct {
	name, pixelID string
	part          int
	width         int    // viewport width
	orig, edited  string // URLs on the render server
	control       bool   // a deliberately visible change: must differ

	w, h int
	took time.Duration
	diff string
	err  error
}

// run renders both documents in the open tab of the chromedp context tab
// and compares the screenshots.
func (c *renderCase) run(tab context.Context, srv *renderServer) {
	t0 := time.Now()
	defer func() { c.took = time.Since(t0) }()
	a, err := screenshot(tab, c.orig, c.width)
	if err != nil {
		c.err = fmt.Errorf("original: %w", err)
		return
	}
	b, err := screenshot(tab, c.edited, c.width)
	if err != nil {
		c.err = fmt.Errorf("rewritten: %w", err)
		return
	}
	if srv.pixelHits(c.pixelID) == 0 {
		c.err = errors.New("the rewritten page did not load the open pixel")
		return
	}
	c.w, c.h = a.Bounds().Dx(), a.Bounds().Dy()
	c.diff = imageDiff(a, b)
	if c.diff != "" && !c.control {
		dir := os.TempDir()
		base := filepath.Join(dir, fmt.Sprintf("trackrelay-browser-%s-%d", strings.TrimSuffix(c.name, ".eml"), c.part))
		for suffix, img := range map[string]image.Image{"-orig.png": a, "-rewritten.png": b} {
			if f, err := os.Create(base + suffix); err == nil {
				png.Encode(f, img)
				f.Close()
			}
		}
		c.diff += " (screenshots in " + base + "-{orig,rewritten}.png)"
	}
}

// imageDiff compares two screenshots pixel for pixel and describes the
// difference, or returns "" when they are identical.
func imageDiff(a, b *image.RGBA) string {
	if a.Bounds() != b.Bounds() {
		return fmt.Sprintf("size %v became %v", a.Bounds().Size(), b.Bounds().Size())
	}
	r := a.Bounds()
	n := 0
	box := image.Rectangle{}
	for y := r.Min.Y; y < r.Max.Y; y++ {
		ra := a.Pix[a.PixOffset(r.Min.X, y):a.PixOffset(r.Max.X, y)]
		rb := b.Pix[b.PixOffset(r.Min.X, y):b.PixOffset(r.Max.X, y)]
		if bytes.Equal(ra, rb) {
			continue
		}
		for x := 0; x < r.Dx(); x++ {
			if !bytes.Equal(ra[4*x:4*x+4], rb[4*x:4*x+4]) {
				n++
				box = box.Union(image.Rect(r.Min.X+x, y, r.Min.X+x+1, y+1))
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf("%d pixels differ within %v", n, box)
}

// renderServer serves the documents, the open pixels and a placeholder for
// remote images, on 127.0.0.1.
type renderServer struct {
	*httptest.Server
	names []string // corpus file of each message id

	mu   sync.Mutex
	docs map[string]renderDoc
	hits map[string]int // pixel loads per message id
}

type renderDoc struct {
	charset string
	body    []byte
}

// transparentGIF is a 1x1 transparent GIF, as the tracker serves.
var transparentGIF = []byte("GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\x00\x00\x00!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")

func newRenderServer() *renderServer {
	s := &renderServer{docs: map[string]renderDoc{}, hits: map[string]int{}}
	placeholder := placeholderPNG()
	mux := http.NewServeMux()
	mux.HandleFunc("/doc/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		d, ok := s.docs[strings.TrimPrefix(r.URL.Path, "/doc/")]
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		ct := "text/html"
		if d.charset != "" {
			ct += "; charset=" + d.charset
		}
		w.Header().Set("Content-Type", ct)
		w.Header().Set("Cache-Control", "no-store")
		w.Write(d.body)
	})
	mux.HandleFunc("/o/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/o/"), ".gif")
		s.mu.Lock()
		s.hits[id]++
		s.mu.Unlock()
		w.Header().Set("Content-Type", "image/gif")
		w.Header().Set("Cache-Control", "no-store")
		w.Write(transparentGIF)
	})
	mux.HandleFunc("/img/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "image/png")
		w.Write(placeholder)
	})
	s.Server = httptest.NewServer(mux)
	return s
}

// add serves body at /doc/<key> and returns its URL.
func (s *renderServer) add(key, charset string, body []byte) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.docs[key] = renderDoc{charset: charset, body: body}
	return s.URL + "/doc/" + key
}

func (s *renderServer) pixelHits(id string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[id]
}

// localImages returns doc with the http(s) src and background attributes
// that are not on the render server pointed at its placeholder image. It is
// applied identically to the original and the rewritten document.
func (s *renderServer) localImages(doc []byte) []byte {
	var out []byte
	z := html.NewTokenizer(bytes.NewReader(doc))
	off, prev := 0, 0
	var attrs []tagAttr
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		start := off
		off += len(z.Raw())
		if tt != html.StartTagToken && tt != html.SelfClosingTagToken {
			continue
		}
		raw := doc[start:off]
		attrs = scanAttrs(raw, attrs[:0])
		for _, a := range attrs {
			if !a.is("src") && !a.is("background") {
				continue
			}
			v := strings.TrimSpace(unescapeAttr(string(a.val)))
			if !hasPrefixFold(v, "http://") && !hasPrefixFold(v, "https://") || strings.HasPrefix(v, s.URL) {
				continue
			}
			out = append(out, doc[prev:start+a.spanStart]...)
			out = append(out, `"`+s.URL+`/img/placeholder.png"`...)
			prev = start + a.spanEnd
		}
	}
	return append(out, doc[prev:]...)
}

// placeholderPNG is a 160x90 gradient: content shifted by one pixel over it
// would show.
func placeholderPNG() []byte {
	img := image.NewNRGBA(image.Rect(0, 0, 160, 90))
	for y := range 90 {
		for x := range 160 {
			img.SetNRGBA(x, y, color.NRGBA{R: uint8(x), G: uint8(y * 2), B: uint8(255 - x), A: 255})
		}
	}
	var b bytes.Buffer
	png.Encode(&b, img)
	return b.Bytes()
}

// protocolErrors collects the errors chromedp meets outside an action, such
// as a message from the browser it cannot decode; the test fails on them.
type protocolErrors struct {
	mu   sync.Mutex
	errs []string
}

func (p *protocolErrors) add(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.errs = append(p.errs, fmt.Sprintf(format, args...))
}

func (p *protocolErrors) list() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.errs)
}

// startBrowser starts one headless chromium for the whole test, under ctx,
// with a fresh profile in dir. chromedp drives it over
// --remote-debugging-pipe, so no port is opened. Every host but the render
// server fails to resolve at once. Errors outside an action go to errorf.
// The returned func stops the browser and waits for it to exit.
func startBrowser(ctx context.Context, dir string, errorf func(string, ...any)) (context.Context, context.CancelFunc, error) {
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.NoFirstRun,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.Flag("mute-audio", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("force-device-scale-factor", "1"),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.WindowSize(browserWidth, browserHeight),
		chromedp.Flag("host-resolver-rules", "MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"),
	)
	browserCtx, cancelBrowser := chromedp.NewContext(allocCtx, chromedp.WithErrorf(errorf))
	stop := func() { cancelBrowser(); cancelAlloc() }
	// The first run starts the browser and ties its life to ctx.
	if err := chromedp.Do(browserCtx); err != nil {
		stop()
		return nil, nil, err
	}
	return browserCtx, stop, nil
}

// screenshot loads url in the open tab of tab, with scripts off as in mail
// clients and the viewport width at device scale factor 1, waits for its load
// event (which includes its images) and returns a screenshot of the whole
// page, at most browserMaxHeight px tall.
func screenshot(tab context.Context, url string, width int) (*image.RGBA, error) {
	ctx, cancel := context.WithTimeout(tab, time.Minute)
	defer cancel()
	var viewport []chromedp.EmulateViewportOption
	if width < browserWidth {
		viewport = append(viewport, chromedp.EmulateMobile)
	}
	if err := chromedp.Do(ctx,
		chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := cdp.Call(ctx, t, emulation.SetScriptExecutionDisabled, emulation.SetScriptExecutionDisabledParams{Value: true})
			return err
		}),
		chromedp.EmulateViewport(int64(width), browserHeight, viewport...),
		chromedp.Navigate(url),
	); err != nil {
		return nil, err
	}
	shot, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]byte, error) {
		lm, err := cdp.Call(ctx, t, page.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		if lm.CSSContentSize == nil {
			return nil, errors.New("Page.getLayoutMetrics: no content size")
		}
		w := max(width, int(lm.CSSContentSize.Width+0.5))
		h := min(browserMaxHeight, max(browserHeight, int(lm.CSSContentSize.Height+0.5)))
		res, err := cdp.Call(ctx, t, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format:                page.CaptureScreenshotFormatPng,
			CaptureBeyondViewport: new(true),
			FromSurface:           new(true),
			Clip:                  &page.Viewport{Width: float64(w), Height: float64(h), Scale: 1},
		})
		if err != nil {
			return nil, err
		}
		return res.Data, nil
	})
	if err != nil {
		return nil, err
	}
	img, err := png.Decode(bytes.NewReader(shot))
	if err != nil {
		return nil, err
	}
	if rgba, ok := img.(*image.RGBA); ok {
		return rgba, nil
	}
	rgba := image.NewRGBA(img.Bounds())
	draw.Draw(rgba, rgba.Bounds(), img, img.Bounds().Min, draw.Src)
	return rgba, nil
}
