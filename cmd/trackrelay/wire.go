package main

import (
	"context"
	"errors"
	"sync/atomic"

	"github.com/trackrelay/trackrelay/relay"
	"github.com/trackrelay/trackrelay/rewrite"
	"github.com/trackrelay/trackrelay/tracker/store"
	"github.com/trackrelay/trackrelay/tracker/token"
)

// storeLedger lets the relay report to the tracking store: the relay
// defines the interface, the tracker implements the storage, and this is
// the only place that knows both.
type storeLedger struct{ store store.Store }

// Accepted puts the message, and its links if given, in two concurrent
// writes: the store's collector commits them together, with one wait.
func (l storeLedger) Accepted(ctx context.Context, env *relay.Envelope, links []string) error {
	m := trackerMessage(env)
	if links == nil {
		return l.store.PutMessage(ctx, m)
	}
	linked := make(chan error, 1)
	go func() { linked <- l.store.SetLinks(ctx, env.ID, links) }()
	err := l.store.PutMessage(ctx, m)
	return errors.Join(err, <-linked)
}

func (l storeLedger) Links(ctx context.Context, queueID string, links []string) error {
	return l.store.SetLinks(ctx, queueID, links)
}

func (l storeLedger) Delivery(ctx context.Context, queueID string, rcpt int, r relay.Recipient) error {
	return l.store.SetDelivery(ctx, queueID, rcpt, store.Delivery{
		Status:       r.Status,
		Attempts:     r.Attempts,
		LastResponse: r.LastResponse,
		UpdatedAt:    r.UpdatedAt,
	})
}

// trackerMessage is what the tracker keeps of an accepted message.
func trackerMessage(env *relay.Envelope) store.Message {
	m := store.Message{
		ID:         env.ID,
		MessageID:  env.MessageID,
		Account:    env.Account,
		From:       env.From,
		Subject:    env.Subject,
		SubmitIP:   env.SubmitIP,
		AcceptedAt: env.AcceptedAt,
		Mode:       env.Mode,
	}
	for _, r := range env.Recipients {
		m.Recipients = append(m.Recipients, store.Recipient{Address: r.Address, Tracked: r.Tracked})
	}
	return m
}

// pendingMessages lets the API answer for a message accepted but not yet
// in the tracker's store (the relay reports it moments after its 250).
func pendingMessages(d *relay.Deliverer) func(account, ref string) (*store.Message, bool) {
	return func(account, ref string) (*store.Message, bool) {
		env, ok := d.Pending(account, ref)
		if !ok {
			return nil, false
		}
		m := trackerMessage(env)
		return &m, true
	}
}

// The tracker's minter mints honeypot links (tracking.honeypot).
var _ relay.HoneypotMinter = (*token.Minter)(nil)

// keyMinters mints each copy's tracking URLs with the tracker's keys.
type keyMinters struct {
	keys    *atomic.Pointer[token.Keyring] // a reload swaps the keys
	baseURL string
}

func (m keyMinters) Minter(queueID string, rcpt int) rewrite.Minter {
	return m.keys.Load().Minter(m.baseURL, queueID, rcpt)
}
