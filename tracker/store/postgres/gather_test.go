package postgres

import (
	"slices"
	"testing"
)

// gather takes what waits, up to its limit, the values keep accepts, and
// stops at an empty or closed channel.
func TestGather(t *testing.T) {
	ch := make(chan int, 10)
	for i := 2; i <= 6; i++ {
		ch <- i
	}
	if got := gather(1, ch, 3, nil); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("limit 3: %v", got)
	}
	odd := func(v int) bool { return v%2 == 1 }
	if got := gather(4, ch, 2, odd); !slices.Equal(got, []int{5}) || len(ch) != 0 {
		t.Errorf("odd ones, limit 2: %v, %d left", got, len(ch))
	}
	if got := gather(7, ch, 10, nil); !slices.Equal(got, []int{7}) {
		t.Errorf("empty channel: %v", got)
	}
	ch <- 8
	close(ch)
	if got := gather(7, ch, 10, nil); !slices.Equal(got, []int{7, 8}) {
		t.Errorf("closed channel: %v", got)
	}
	if got := gather(2, ch, 10, odd); len(got) != 0 {
		t.Errorf("first refused, nothing waiting: %v", got)
	}
}
