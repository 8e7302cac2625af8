package tracker

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/trackrelay/trackrelay/tracker/store/bolt"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// SetAccounts and SetKeyring take effect on the next request: a new API
// key works and a removed one stops working; after a rotation, links of
// the new key and of the previous one (still in the keyring) redirect.
func TestHandler_setAccountsAndKeyring(t *testing.T) {
	oldKeys := testKeyring(t)
	h := NewHandler(Config{BaseURL: "http://t.example",
		Accounts: []Account{{Name: "alice", APIKeySHA256: keySum(aliceKey)}}}, oldKeys, testStore(t, bolt.Options{}))
	srv := httptest.NewServer(h)
	defer srv.Close()
	get := func(path, apiKey string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
		req.Header.Set("User-Agent", uaChrome)
		if apiKey != "" {
			req.Header.Set("Authorization", "Bearer "+apiKey)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	newKeys, err := token.NewKeyring(token.Key{ID: 1, Secret: testSecret('a')}, token.Key{ID: 2, Secret: testSecret('b')})
	if err != nil {
		t.Fatal(err)
	}
	oldLink := "/c/" + oldKeys.ClickToken("Q1", 0, 0, "https://example.com/old")
	newLink := "/c/" + newKeys.ClickToken("Q2", 0, 0, "https://example.com/new")
	if code := get(newLink, ""); code != http.StatusNotFound {
		t.Fatalf("link of a key not yet in the keyring: %d", code)
	}
	if code := get("/api/v1/events", bobKey); code != http.StatusUnauthorized {
		t.Fatalf("bob before SetAccounts: %d", code)
	}

	h.SetAccounts([]Account{{Name: "bob", APIKeySHA256: keySum(bobKey)}})
	h.SetKeyring(newKeys)
	if code := get("/api/v1/events", bobKey); code != http.StatusOK {
		t.Errorf("bob after SetAccounts: %d", code)
	}
	if code := get("/api/v1/events", aliceKey); code != http.StatusUnauthorized {
		t.Errorf("alice, removed: %d", code)
	}
	for _, link := range []string{oldLink, newLink} {
		if code := get(link, ""); code != http.StatusFound {
			t.Errorf("GET %s after SetKeyring: %d", link, code)
		}
	}
}
