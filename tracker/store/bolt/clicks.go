package bolt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"slices"
	"time"

	"github.com/trackrelay/trackrelay/tracker/classify"
	"github.com/trackrelay/trackrelay/tracker/store"
)

// The burst rule (classify.Burst) judges a click with the copy's other clicks
// within classify.BurstWindow of it. Store supplies them from the clicks bucket,
// an index of each copy's clicks kept in detail by time, and from the
// copy's record for clicks past MaxEventsPerRecipient, so that judging a
// click reads only the clicks of its window: at most MaxEventsPerRecipient
// from the index and maxOverCapClicks from the record.
//
//	clicks  queue id NUL uint32 recipient, uint64 time, uint64 event sequence -> varint link, burst byte
//
// The time is unix nanoseconds with the sign bit flipped, so keys sort by
// time; the event sequence ends the key like the events bucket's, so
// retention sweeps both with the same cut.

// Clicks past MaxEventsPerRecipient only add to counters, but a burst among
// them still keeps them out of the counts. The copy's record keeps those
// within overCapSpan of the newest (so that hits answered late, in another
// order, still meet their window), at most maxOverCapClicks of them, so
// that a flood of clicks keeps the record small.
const (
	overCapSpan      = time.Minute
	maxOverCapClicks = 64
)

// overCapClick is a click of a copy past MaxEventsPerRecipient, in the
// copy's record.
type overCapClick struct {
	Link  int    `json:"l"`
	At    int64  `json:"a"` // unix ns
	Class string `json:"c"`
	Burst bool   `json:"b,omitempty"`
}

// windowClick is a click of a copy's history, and where it is kept.
type windowClick struct {
	classify.Click
	key   []byte // in the clicks bucket; nil: rs.OverCap[over]
	seq   uint64 // its event
	over  int
	burst bool // already part of a burst
}

func clickTime(at time.Time) uint64 { return uint64(at.UnixNano()) ^ 1<<63 }

// clickKey is the key of a click in the clicks bucket; rkey is its copy's
// key (deliveryKey).
func clickKey(rkey []byte, at time.Time, seq uint64) []byte {
	k := make([]byte, 0, len(rkey)+16)
	k = append(k, rkey...)
	k = binary.BigEndian.AppendUint64(k, clickTime(at))
	return binary.BigEndian.AppendUint64(k, seq)
}

func clickValue(link int, burst bool) []byte {
	v := binary.AppendVarint(make([]byte, 0, binary.MaxVarintLen64+1), int64(link))
	if burst {
		return append(v, 1)
	}
	return append(v, 0)
}

var errClickValue = errors.New("tracker: malformed click index entry")

func parseClick(rkey, k, v []byte) (windowClick, error) {
	link, n := binary.Varint(v)
	if n <= 0 || len(v) != n+1 || len(k) != len(rkey)+16 {
		return windowClick{}, errClickValue
	}
	ns := int64(binary.BigEndian.Uint64(k[len(rkey):]) ^ 1<<63)
	return windowClick{
		Click: classify.Click{Link: int(link), At: time.Unix(0, ns)},
		key:   bytes.Clone(k),
		seq:   keySeq(k),
		burst: v[n] == 1,
	}, nil
}

// clickWindow returns the clicks of copy rkey (state rs) within
// classify.BurstWindow of at, in time order, those past the cap last.
func (c *commitTx) clickWindow(rkey []byte, rs *storedRcpt, at time.Time) ([]windowClick, error) {
	var out []windowClick
	last := clickTime(at.Add(classify.BurstWindow))
	cur := c.tx.Bucket(bucketClicks).Cursor()
	for k, v := cur.Seek(clickKey(rkey, at.Add(-classify.BurstWindow), 0)); k != nil && bytes.HasPrefix(k, rkey); k, v = cur.Next() {
		if len(k) != len(rkey)+16 {
			return nil, errClickValue
		}
		if binary.BigEndian.Uint64(k[len(rkey):]) > last {
			break
		}
		w, err := parseClick(rkey, k, v)
		if err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	from, to := at.Add(-classify.BurstWindow).UnixNano(), at.Add(classify.BurstWindow).UnixNano()
	for i, oc := range rs.OverCap {
		if oc.At >= from && oc.At <= to {
			out = append(out, windowClick{Click: classify.Click{Link: oc.Link, At: time.Unix(0, oc.At)}, over: i, burst: oc.Burst})
		}
	}
	return out, nil
}

// keepClick adds the click e of copy rkey to its history: in the clicks
// bucket when its event is kept (seq), else in rs.OverCap.
func (c *commitTx) keepClick(rkey []byte, rs *storedRcpt, e *store.Event, seq uint64, kept bool) error {
	burst := e.Class == classify.Scanner && slices.Contains(e.Reasons, classify.ReasonClickBurst)
	if kept {
		return c.tx.Bucket(bucketClicks).Put(clickKey(rkey, e.At, seq), clickValue(e.Link, burst))
	}
	oc := overCapClick{Link: e.Link, At: e.At.UnixNano(), Class: e.Class, Burst: burst}
	i, _ := slices.BinarySearchFunc(rs.OverCap, oc.At, func(x overCapClick, at int64) int {
		if x.At <= at {
			return -1 // after its equals: in order of arrival
		}
		return 1
	})
	rs.OverCap = slices.Insert(rs.OverCap, i, oc)
	oldest := rs.OverCap[len(rs.OverCap)-1].At - overCapSpan.Nanoseconds()
	drop := max(len(rs.OverCap)-maxOverCapClicks, 0)
	for drop < len(rs.OverCap) && rs.OverCap[drop].At < oldest {
		drop++
	}
	rs.OverCap = slices.Delete(rs.OverCap, 0, drop)
	return nil
}
