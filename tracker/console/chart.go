package console

import (
	"fmt"
	"strconv"
	"time"
)

// chart is a bar chart drawn by the template as inline SVG: no script, no
// image request, readable by screen readers through its title and the
// numbers printed next to it.
type chart struct {
	Title  string // what a screen reader says
	Width  int    // of the viewBox
	Height int
	Bars   []bar
	Labels []label
	Series []series // the legend
	Empty  bool     // nothing to draw
}

type bar struct {
	X, Y, W, H float64
	Class      string // the series' CSS class
	Title      string // shown on hover, read by screen readers
}

type label struct {
	X, Y   float64
	Anchor string // start | middle | end
	Text   string
}

type series struct {
	Name  string
	Class string
}

// Chart geometry, in viewBox units (the SVG scales to its box).
const (
	chartWidth  = 600
	chartHeight = 180
	chartTop    = 28 // room above the tallest bar for the peak's label, at a phone's 20px too
	chartBottom = 22 // room for the time labels
	chartLeft   = 4
)

// bucket is one column of a chart: counts per series.
type bucket struct {
	start  time.Time
	counts []int
}

// barChart lays out buckets as groups of bars, one bar per series.
func barChart(title string, ss []series, buckets []bucket, labelFormat string) chart {
	c := chart{Title: title, Width: chartWidth, Height: chartHeight, Series: ss}
	peak := 0
	for _, b := range buckets {
		for _, n := range b.counts {
			peak = max(peak, n)
		}
	}
	if len(buckets) == 0 || peak == 0 {
		c.Empty = true
		return c
	}
	plotH := float64(chartHeight - chartTop - chartBottom)
	slot := float64(chartWidth-2*chartLeft) / float64(len(buckets))
	barW := slot * 0.8 / float64(len(ss))
	for i, b := range buckets {
		x0 := chartLeft + float64(i)*slot + slot*0.1
		for j, n := range b.counts {
			if n == 0 {
				continue
			}
			h := plotH * float64(n) / float64(peak)
			c.Bars = append(c.Bars, bar{X: round1(x0 + float64(j)*barW), Y: round1(chartTop + plotH - h), W: round1(barW), H: round1(h),
				Class: ss[j].Class, Title: fmt.Sprintf("%s: %d %s", b.start.UTC().Format(labelFormat), n, ss[j].Name)})
		}
	}
	// Time labels at both ends and in the middle: more would overlap on
	// a phone.
	base := float64(chartHeight - 6)
	c.Labels = append(c.Labels, label{X: chartLeft, Y: base, Anchor: "start", Text: buckets[0].start.UTC().Format(labelFormat)})
	if len(buckets) > 2 {
		m := len(buckets) / 2
		c.Labels = append(c.Labels, label{X: round1(chartLeft + (float64(m)+0.5)*slot), Y: base, Anchor: "middle", Text: buckets[m].start.UTC().Format(labelFormat)})
	}
	if len(buckets) > 1 {
		c.Labels = append(c.Labels, label{X: chartWidth - chartLeft, Y: base, Anchor: "end", Text: buckets[len(buckets)-1].start.UTC().Format(labelFormat)})
	}
	c.Labels = append(c.Labels, label{X: chartLeft, Y: chartTop - 7, Anchor: "start", Text: "peak " + strconv.Itoa(peak)})
	return c
}

func round1(f float64) float64 {
	return float64(int(f*10+0.5)) / 10
}

// bucketSizes are the column widths a timeline chart may use, smallest
// first: the first that fits the span in maxBuckets columns is taken.
var bucketSizes = []time.Duration{
	time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour,
	2 * 24 * time.Hour, 7 * 24 * time.Hour, 14 * 24 * time.Hour, 30 * 24 * time.Hour, 91 * 24 * time.Hour,
}

const maxBuckets = 24

// timeBuckets returns the columns from start to end (inclusive) and the
// column width.
func timeBuckets(start, end time.Time, nseries int) ([]bucket, time.Duration) {
	size := bucketSizes[len(bucketSizes)-1]
	for _, s := range bucketSizes {
		if end.Sub(start) < s*maxBuckets {
			size = s
			break
		}
	}
	first := start.UTC().Truncate(size)
	n := int(end.Sub(first)/size) + 1
	n = min(max(n, 1), maxBuckets+1)
	out := make([]bucket, n)
	for i := range out {
		out[i] = bucket{start: first.Add(time.Duration(i) * size), counts: make([]int, nseries)}
	}
	return out, size
}

// labelFormatFor is the time format of columns of width size.
func labelFormatFor(size time.Duration) string {
	if size < 24*time.Hour {
		return "2 Jan 15:04"
	}
	return "2 Jan 2006"
}
