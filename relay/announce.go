package relay

import (
	"context"
	"log/slog"
	"time"

	"github.com/trackrelay/trackrelay/internal/guard"
	"github.com/trackrelay/trackrelay/internal/msgid"
)

func pendingKey(account, messageID string) string {
	// Normalised as the tracking store does, so that both find a message
	// by the same references.
	return account + "\x00" + msgid.Normalize(messageID)
}

// addPending and dropPending must be called with d.mu held.
func (d *Deliverer) addPending(env *Envelope) {
	d.pending[env.ID] = env
	if env.MessageID != "" {
		d.pendingByMID[pendingKey(env.Account, env.MessageID)] = env.ID
	}
}

func (d *Deliverer) dropPending(id string) {
	env := d.pending[id]
	if env == nil {
		return
	}
	delete(d.pending, id)
	if k := pendingKey(env.Account, env.MessageID); d.pendingByMID[k] == id {
		delete(d.pendingByMID, k)
	}
}

// Pending returns a message of account accepted but not yet in the ledger
// (the ledger hears of it moments after the 250), by queue id or by
// Message-ID with or without <>. The API answers for such a message from
// it, so that the app finds a message as soon as it has the queue id and
// the SMTP path never waits for the ledger. The envelope is shared: the
// caller must not change it.
func (d *Deliverer) Pending(account, ref string) (*Envelope, bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	env := d.pending[ref]
	if env == nil {
		env = d.pending[d.pendingByMID[pendingKey(account, ref)]]
	}
	if env == nil || env.Account != account {
		return nil, false
	}
	return env, true
}

// announceDelayDefault is how long a new message waits for a worker to
// announce it (with its links, in the same commit) before an announcer
// does.
const announceDelayDefault = 100 * time.Millisecond

// announcement is a new message for the announcer, due at due.
type announcement struct {
	env *Envelope
	due time.Time
}

// announcers is how many announcements may wait for their commit at
// once: they share it, so a backlog is announced at thousands a second.
const announcers = 64

// announcer reports the messages whose first attempt has not started
// announceDelay after they were queued (a backlog, a copy deferred at
// load), so that the app sees every accepted message soon.
func (d *Deliverer) announcer() {
	defer d.wg.Done()
	busy := make(chan struct{}, announcers)
	for {
		select {
		case a := <-d.announceQ:
			if wait := time.Until(a.due); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-d.stopWork:
					t.Stop()
					return
				}
			}
			select {
			case busy <- struct{}{}:
			case <-d.stopWork:
				return
			}
			d.wg.Add(1)
			go func() {
				defer d.wg.Done()
				defer func() { <-busy }()
				// A message whose report panics is held, all of it: its
				// copies wait for the operator.
				defer guard.Recover(guard.Announce, d.log, func(*guard.Panic) {
					d.hold(a.env.ID, nil, guard.Announce, d.log.With("queue_id", a.env.ID))
				})
				d.announce(a.env, nil)
			}()
		case <-d.stopWork:
			return
		}
	}
}

// announce writes the ledger record of a newly accepted message (or of one
// loaded after a restart), once, with links when they are known: the
// worker that first delivers the message does it, or the announcer if no
// worker has after announceDelay. If one is writing it already, announce
// waits for that write and tries itself only if it failed. It reports
// whether it wrote links too.
func (d *Deliverer) announce(env *Envelope, links []string) bool {
	for {
		d.mu.Lock()
		if d.pending[env.ID] == nil {
			d.mu.Unlock()
			return false
		}
		if busy, ok := d.announcing[env.ID]; ok {
			d.mu.Unlock()
			<-busy
			continue
		}
		busy := make(chan struct{})
		d.announcing[env.ID] = busy
		d.mu.Unlock()

		err := d.writeAccepted(env, links, busy)
		if err != nil {
			d.metrics.ledgerErrors.Inc()
			d.log.Error("ledger: recording accepted message failed", "queue_id", env.ID, "err", err)
			return false
		}
		return links != nil
	}
}

// writeAccepted writes the ledger record of env and then ends the
// announcement busy, also when the write panics: a waiter on busy must
// never wait forever.
func (d *Deliverer) writeAccepted(env *Envelope, links []string, busy chan struct{}) (err error) {
	written := false
	defer func() {
		d.mu.Lock()
		delete(d.announcing, env.ID)
		if written {
			d.dropPending(env.ID)
			if links != nil {
				d.linked[env.ID] = true
			}
		}
		d.mu.Unlock()
		close(busy)
	}()
	guard.Check(guard.Announce, env.ID)
	err = d.ledger.Accepted(context.Background(), env, links)
	written = err == nil
	return err
}

// report makes sure the ledger knows the message, and its links when the
// copy has tracked ones, before the copy goes out: a click must find its
// link. The first copy's worker usually reports both, in one commit.
func (d *Deliverer) report(env *Envelope, links []string, log *slog.Logger) {
	if d.announce(env, links) || links == nil {
		return
	}
	d.mu.Lock()
	linked := d.linked[env.ID]
	d.mu.Unlock()
	if linked {
		return // every copy has the same links: the ledger needs them once
	}
	if err := d.ledger.Links(context.Background(), env.ID, links); err != nil {
		d.metrics.ledgerErrors.Inc()
		log.Error("ledger: recording links failed", "err", err)
		return
	}
	d.mu.Lock()
	d.linked[env.ID] = true
	d.mu.Unlock()
}
