package bolt

// Real user agents, and where their shape is documented:
//   - Gmail's proxy: "... (via ggpht.com GoogleImageProxy)", as Google's
//     proxy announces itself (https://support.google.com/a/answer/3299041
//     describes the proxy; the string is the one logged by every sender).
//   - Yahoo's proxy: the user agent names its own help page,
//     https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html.
//   - Apple Mail (macOS, iOS): WebKit's user agent without the "Version/"
//     and "Safari/" tokens that only Safari adds (WebKit's
//     Source/WebCore/platform/cocoa/UserAgentCocoa.mm builds both).
//   - Outlook for Windows: "Microsoft Office/16.0 (...; Microsoft Outlook
//     16.0.x; Pro)" and, rendering with Word, the MSIE 7 compatible agent
//     with "ms-office; MSOffice 16".
//   - Browsers: the formats of https://www.chromium.org/updates/ua-reduction/
//     (Chrome, Edge "Edg/", Samsung "SamsungBrowser/") and MDN's
//     https://developer.mozilla.org/docs/Web/HTTP/Headers/User-Agent/Firefox.
//   - Headless Chrome: "HeadlessChrome/" replaces "Chrome/" (Chromium's
//     headless mode); link scanners that render pages use it.
//   - curl: "curl/VERSION" (curl's --user-agent default).
//
// Scanners such as Microsoft Defender Safe Links, Mimecast and Proofpoint
// mostly fetch with ordinary browser agents; what gives them away is timing
// (seconds after delivery), bursts over every link and HEAD requests, which
// the cases below and TestReclassifiedBurst cover.
const (
	uaAppleMail       = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"
	uaIOSMail         = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148"
	uaGmailProxy      = "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
	uaYahooProxy      = "YahooMailProxy; https://help.yahoo.com/kb/yahoo-mail-proxy-SLN28749.html"
	uaOutlookDesktop  = "Microsoft Office/16.0 (Windows NT 10.0; Microsoft Outlook 16.0.17328; Pro)"
	uaOutlookWord     = "Mozilla/4.0 (compatible; MSIE 7.0; Windows NT 10.0; WOW64; Trident/7.0; .NET4.0C; .NET4.0E; Microsoft Outlook 16.0.5422; ms-office; MSOffice 16)"
	uaChrome          = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
	uaEdge            = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36 Edg/124.0.2478.51"
	uaFirefox         = "Mozilla/5.0 (X11; Linux x86_64; rv:125.0) Gecko/20100101 Firefox/125.0"
	uaSafari          = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Safari/605.1.15"
	uaThunderbird     = "Mozilla/5.0 (X11; Linux x86_64; rv:115.0) Gecko/20100101 Thunderbird/115.10.1"
	uaHeadless        = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) HeadlessChrome/120.0.0.0 Safari/537.36"
	uaCurl            = "curl/8.5.0"
	uaBarracuda       = "Mozilla/5.0 (compatible; Barracuda Sentinel (EE))"
	uaAndroidChrome   = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.6367.82 Mobile Safari/537.36"
	uaOutlookIOS      = "Outlook-iOS/723.4027091.prod.iphone (4.2419.0)"
	uaSamsungInternet = "Mozilla/5.0 (Linux; Android 13; SM-S911B) AppleWebKit/537.36 (KHTML, like Gecko) SamsungBrowser/24.0 Chrome/117.0.0.0 Mobile Safari/537.36"
)
