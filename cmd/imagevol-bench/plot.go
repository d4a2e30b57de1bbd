package main

import (
	"cmp"
	"errors"
	"fmt"
	"image/color"
	"math"
	"os"
	"slices"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

// The plots' colours: what imagevol measured, its floor, and the target.
func colMeasured() color.Color { return color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff} }
func colFloor() color.Color    { return color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff} }
func colTarget() color.Color   { return color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff} }

// plotHitLatency draws the distribution (CDF) of the cache-hit latencies beside that of the
// go-ceph clone+resize floor, with the 200 ms target.
func plotHitLatency(path string, r *Result) error {
	hits, floor := r.Details.HitLatenciesMs, r.Details.FloorLatenciesMs
	if len(hits) == 0 {
		return errors.New("no hit latencies")
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Cache-hit provision latency (%d hits, %d GiB volumes)", len(hits), r.Meta.Sizes.HitVolumeGiB)
	p.X.Label.Text = "milliseconds"
	p.Y.Label.Text = "percent of provisions at or below"
	p.Y.Min, p.Y.Max = 0, 100
	p.Legend.Top = false
	p.Legend.Left = false
	p.Add(plotter.NewGrid())
	if err := addLine(p, cdf(hits), colMeasured(), nil, fmt.Sprintf("gateway 202 → available (p50 %.0f ms)", percentile(hits, 50))); err != nil {
		return err
	}
	xmax := slices.Max(hits)
	if len(floor) > 0 {
		if err := addLine(p, cdf(floor), colFloor(), nil, fmt.Sprintf("floor: go-ceph clone + resize (p50 %.0f ms)", percentile(floor, 50))); err != nil {
			return err
		}
		xmax = max(xmax, slices.Max(floor))
	}
	if err := addLine(p, plotter.XYs{{X: 200, Y: 0}, {X: 200, Y: 100}}, colTarget(), []vg.Length{vg.Points(4), vg.Points(3)}, "target p50 ≤ 200 ms"); err != nil {
		return err
	}
	p.X.Min = 0
	p.X.Max = max(xmax, 200) * 1.05
	p.X.Tick.Marker = niceTicks{}
	return p.Save(8*vg.Inch, 5*vg.Inch, path)
}

// cdf is the empirical distribution of xs as points (value, percent ≤ value).
func cdf(xs []float64) plotter.XYs {
	s := slices.Clone(xs)
	slices.Sort(s)
	pts := make(plotter.XYs, 0, len(s)+1)
	pts = append(pts, plotter.XY{X: s[0], Y: 0})
	for i, x := range s {
		pts = append(pts, plotter.XY{X: x, Y: 100 * float64(i+1) / float64(len(s))})
	}
	return pts
}

// plotMissBySize draws two panels: miss seconds by image size beside the time the raw floor rate
// allows, and the worker's peak RSS by size with the 200 MiB target.
func plotMissBySize(path string, r *Result) error {
	var secs, rss, floor plotter.XYs
	for _, k := range r.Meta.Sizes.MissBySize {
		x := float64(parseSize(k)) / float64(gib)
		if s, ok := r.MissSBySize[k]; ok {
			secs = append(secs, plotter.XY{X: x, Y: s})
		}
		if v, ok := r.WorkerRSSBySizeMiB[k]; ok {
			rss = append(rss, plotter.XY{X: x, Y: v})
		}
		if r.MissRawFloorMiBs != nil && *r.MissRawFloorMiBs > 0 {
			floor = append(floor, plotter.XY{X: x, Y: x * 1024 / *r.MissRawFloorMiBs})
		}
	}
	if len(secs) == 0 {
		return errors.New("no miss times")
	}
	xmax := float64(parseSize(r.Meta.Sizes.MissBySize[len(r.Meta.Sizes.MissBySize)-1])) / float64(gib) * 1.05
	ticks := make([]plot.Tick, 0, len(r.Meta.Sizes.MissBySize))
	for _, k := range r.Meta.Sizes.MissBySize {
		ticks = append(ticks, plot.Tick{Value: float64(parseSize(k)) / float64(gib), Label: k})
	}

	left := plot.New()
	left.Title.Text = "Raw image provisioned on a cache miss"
	left.X.Label.Text = "image size"
	left.Y.Label.Text = "seconds, request → available"
	left.X.Tick.Marker = plot.ConstantTicks(ticks)
	left.X.Min, left.X.Max, left.Y.Min = 0, xmax, 0
	left.Legend.Top = true
	left.Legend.Left = true
	left.Legend.XOffs, left.Legend.YOffs = vg.Points(8), -vg.Points(4)
	left.Add(plotter.NewGrid())
	// Room above the highest point for the legend.
	left.Y.Max = slices.MaxFunc(secs, func(a, b plotter.XY) int { return cmp.Compare(a.Y, b.Y) }).Y * 1.3
	if len(floor) > 0 {
		left.Y.Max = max(left.Y.Max, floor[len(floor)-1].Y*1.3)
	}
	if err := addLinePoints(left, secs, colMeasured(), "imagevol miss"); err != nil {
		return err
	}
	if len(floor) > 0 {
		if err := addLine(left, append(plotter.XYs{{X: 0, Y: 0}}, floor...), colFloor(), []vg.Length{vg.Points(4), vg.Points(3)},
			fmt.Sprintf("size at the raw floor rate (%.0f MiB/s)", *r.MissRawFloorMiBs)); err != nil {
			return err
		}
	}

	right := plot.New()
	right.Title.Text = "Worker peak RSS during the miss"
	right.X.Label.Text = "image size"
	right.Y.Label.Text = "MiB (VmHWM)"
	right.X.Tick.Marker = plot.ConstantTicks(ticks)
	right.X.Min, right.X.Max, right.Y.Min = 0, xmax, 0
	right.Y.Max = 220
	right.Y.Tick.Marker = niceTicks{}
	left.Y.Tick.Marker = niceTicks{}
	right.Legend.Top = false
	right.Legend.Left = true
	right.Legend.XOffs, right.Legend.YOffs = vg.Points(8), vg.Points(4)
	right.Add(plotter.NewGrid())
	if len(rss) > 0 {
		right.Y.Max = max(220, slices.MaxFunc(rss, func(a, b plotter.XY) int { return cmp.Compare(a.Y, b.Y) }).Y*1.2)
		if err := addLinePoints(right, rss, colMeasured(), "worker "+r.Meta.Host); err != nil {
			return err
		}
	}
	if err := addLine(right, plotter.XYs{{X: 0, Y: 200}, {X: xmax, Y: 200}}, colTarget(), []vg.Length{vg.Points(4), vg.Points(3)}, "target ≤ 200 MiB"); err != nil {
		return err
	}

	const w, h = 12 * vg.Inch, 5 * vg.Inch
	img := vgimg.New(w, h)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: 2, PadX: vg.Inch / 2, PadTop: vg.Inch / 8, PadBottom: vg.Inch / 8, PadLeft: vg.Inch / 8, PadRight: vg.Inch / 8}
	canvases := plot.Align([][]*plot.Plot{{left, right}}, tiles, dc)
	left.Draw(canvases[0][0])
	right.Draw(canvases[0][1])
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func addLine(p *plot.Plot, pts plotter.XYs, c color.Color, dashes []vg.Length, label string) error {
	l, err := plotter.NewLine(pts)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(2)
	l.Dashes = dashes
	p.Add(l)
	p.Legend.Add(label, l)
	return nil
}

func addLinePoints(p *plot.Plot, pts plotter.XYs, c color.Color, label string) error {
	l, s, err := plotter.NewLinePoints(pts)
	if err != nil {
		return err
	}
	l.Color = c
	l.Width = vg.Points(2)
	s.Color = c
	s.Shape = draw.CircleGlyph{}
	s.Radius = vg.Points(4)
	p.Add(l, s)
	p.Legend.Add(label, l, s)
	return nil
}

// niceTicks labels an axis every 1, 2 or 5 × 10^k units, at most eight labels.
type niceTicks struct{}

// Ticks implements plot.Ticker.
func (niceTicks) Ticks(lo, hi float64) []plot.Tick {
	if hi <= lo {
		return []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', -1, 64)}}
	}
	step := math.Pow(10, math.Floor(math.Log10((hi-lo)/8)))
	for _, m := range []float64{1, 2, 5, 10} {
		if (hi-lo)/(step*m) <= 8 {
			step *= m
			break
		}
	}
	var ticks []plot.Tick
	for v := math.Ceil(lo/step) * step; v <= hi+step*1e-9; v += step {
		v = math.Round(v/step) * step
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', -1, 64)})
	}
	return ticks
}
