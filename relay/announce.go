package relay

import (
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

// Accept schedules a message the server has just made durable, before its
// 250. With DeliveryConfig.ReportWait set it first gives the ledger the
// message's record and waits up to ReportWait for its commit; the write
// goes on after that, and one the ledger fails is owed. Without, the
// ledger hears of the message after the 250 (Submit).
func (d *Deliverer) Accept(env *Envelope) {
	wait := d.cfg.ReportWait
	if wait <= 0 {
		d.Submit(env, false)
		return
	}
	d.mu.Lock()
	d.addPending(env)
	d.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		// As the announcer's: a message whose report panics is held.
		defer guard.Recover(guard.Announce, d.log, func(*guard.Panic) {
			d.hold(env.ID, nil, guard.Announce, d.log.With("queue_id", env.ID))
		})
		d.announce(env, nil)
	}()
	d.Submit(env, true)
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
		d.mu.Lock()
		written := d.pending[env.ID] == nil
		d.mu.Unlock()
		if written {
			d.metrics.reportWaits.WithLabelValues(reportCommitted).Inc()
		} else {
			d.metrics.reportWaits.WithLabelValues(reportOwed).Inc()
		}
	case <-t.C:
		d.metrics.reportWaits.WithLabelValues(reportTimeout).Inc()
	}
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
// worker has after announceDelay, or the SMTP session before its 250
// (DeliveryConfig.ReportWait). If one is writing it already, announce
// waits for that write and tries itself only if it failed. A record the
// ledger fails is owed (owed.go), and so are its links. It reports whether
// it wrote or owed links too.
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

		d.writeAccepted(env, links, busy) // tell logs a failure
		return links != nil
	}
}

// writeAccepted writes the ledger record of env and then ends the
// announcement busy, also when the write panics: a waiter on busy must
// never wait forever. A record owed stays pending (the API answers from
// it) until the retrier has given it.
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
	err = d.tell(env, LedgerReport{Kind: ReportMessage, Links: links}, d.log)
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
	// Owed links are given by the retrier: the ledger needs them once.
	_ = d.tell(env, LedgerReport{Kind: ReportLinks, Links: links}, log)
	d.mu.Lock()
	d.linked[env.ID] = true
	d.mu.Unlock()
}
