package bolt

import (
	"testing"

	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/store/storetest"
)

// The bbolt backend passes the store conformance suite.
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T, o storetest.Options) store.Store {
		return testStore(t, Options{MaxEventsPerRecipient: o.MaxEventsPerRecipient, WebhookAccounts: o.WebhookAccounts})
	})
}
