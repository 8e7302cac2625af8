package classify

import (
	"encoding/binary"
	"net/netip"
	"slices"

	"go4.org/netipx"
)

// rangeSet is a set of IP ranges in a form the garbage collector never
// reads: sorted, merged address ranges as plain integers, searched in
// O(log n). netipx.IPSet (which builds and merges the ranges) keeps each
// range as two netip.Addr, and every netip.Addr holds a pointer, so the
// shipped tables (about 14,000 ranges) were 28,000 pointers that every
// garbage collection had to mark; on the hit path, which allocates a few
// kilobytes a request, that was a tenth of a hit's CPU time.
type rangeSet struct {
	v4 []range4
	v6 []range6
}

// range4 is an IPv4 range, first and last address included.
type range4 struct{ first, last uint32 }

// range6 is an IPv6 range, first and last address included, each as its
// high and low 64 bits.
type range6 struct{ first, last [2]uint64 }

// newRangeSet flattens s, whose ranges are sorted and do not overlap.
func newRangeSet(s *netipx.IPSet) *rangeSet {
	var rs rangeSet
	for _, r := range s.Ranges() {
		from, to := r.From(), r.To()
		if from.Is4() {
			rs.v4 = append(rs.v4, range4{u32(from), u32(to)})
		} else {
			rs.v6 = append(rs.v6, range6{u128(from), u128(to)})
		}
	}
	rs.v4, rs.v6 = slices.Clip(rs.v4), slices.Clip(rs.v6)
	return &rs
}

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func u128(a netip.Addr) [2]uint64 {
	b := a.As16()
	return [2]uint64{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}
}

func less128(a, b [2]uint64) bool { return a[0] < b[0] || a[0] == b[0] && a[1] < b[1] }

// Contains reports whether a, unmapped, is in the set; false for the zero
// Addr.
func (s *rangeSet) Contains(a netip.Addr) bool {
	a = a.Unmap()
	switch {
	case a.Is4():
		x := u32(a)
		// The first range whose last address is not below x.
		i, _ := slices.BinarySearchFunc(s.v4, x, func(r range4, x uint32) int {
			if r.last < x {
				return -1
			}
			return 1
		})
		return i < len(s.v4) && s.v4[i].first <= x
	case a.Is6():
		x := u128(a)
		i, _ := slices.BinarySearchFunc(s.v6, x, func(r range6, x [2]uint64) int {
			if less128(r.last, x) {
				return -1
			}
			return 1
		})
		return i < len(s.v6) && !less128(x, s.v6[i].first)
	}
	return false
}
