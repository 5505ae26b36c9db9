package report

import (
	"fmt"
	"image/color"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// ThroughputSeries are the counters plotted as samples/s per stage.
var ThroughputSeries = []string{"fleet_acked", "relay_in", "relay_uplink", "ingester_out", "vm_in", "vmagent_in", "vmagent_out"}

var palette = []color.Color{
	color.RGBA{R: 31, G: 119, B: 180, A: 255}, color.RGBA{R: 255, G: 127, B: 14, A: 255},
	color.RGBA{R: 44, G: 160, B: 44, A: 255}, color.RGBA{R: 214, G: 39, B: 40, A: 255},
	color.RGBA{R: 148, G: 103, B: 189, A: 255}, color.RGBA{R: 140, G: 86, B: 75, A: 255},
	color.RGBA{R: 227, G: 119, B: 194, A: 255}, color.RGBA{R: 127, G: 127, B: 127, A: 255},
}

// Plot draws <scenario>-throughput.png and <scenario>-backlog.png into dir
// from r's timeline and returns their file names.
func Plot(dir string, r *Report) ([]string, error) {
	if len(r.Timeline) < 2 {
		return nil, nil
	}
	var files []string
	tp := plot.New()
	tp.Title.Text = r.Scenario + ": samples/s per stage"
	tp.X.Label.Text = "seconds"
	tp.Y.Label.Text = "samples/s"
	for i, name := range ThroughputSeries {
		pts := rates(r.Timeline, name)
		if len(pts) == 0 {
			continue
		}
		if err := addLine(tp, name, pts, i); err != nil {
			return files, err
		}
	}
	addEvents(tp, r.Events)
	f := r.Scenario + "-throughput.png"
	if err := tp.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(dir, f)); err != nil {
		return files, fmt.Errorf("save %s: %w", f, err)
	}
	files = append(files, f)

	bp := plot.New()
	bp.Title.Text = r.Scenario + ": relay backlog per class and store-side disk"
	bp.X.Label.Text = "seconds"
	bp.Y.Label.Text = "MiB"
	classes := map[string]bool{}
	for _, p := range r.Timeline {
		for c := range p.Backlog {
			classes[c] = true
		}
	}
	names := make([]string, 0, len(classes))
	for c := range classes {
		names = append(names, c)
	}
	sort.Strings(names)
	i := 0
	for _, c := range names {
		pts := gauge(r.Timeline, func(p Point) (float64, bool) { v, ok := p.Backlog[c]; return v / (1 << 20), ok })
		if err := addLine(bp, "backlog "+c, pts, i); err != nil {
			return files, err
		}
		i++
	}
	for _, d := range []string{"relay", "vmagent"} {
		pts := gauge(r.Timeline, func(p Point) (float64, bool) { v, ok := p.Disk[d]; return v / (1 << 20), ok })
		if len(pts) == 0 {
			continue
		}
		if err := addLine(bp, d+" disk", pts, i); err != nil {
			return files, err
		}
		i++
	}
	addEvents(bp, r.Events)
	f = r.Scenario + "-backlog.png"
	if err := bp.Save(10*vg.Inch, 5*vg.Inch, filepath.Join(dir, f)); err != nil {
		return files, fmt.Errorf("save %s: %w", f, err)
	}
	return append(files, f), nil
}

func addLine(p *plot.Plot, name string, pts plotter.XYs, i int) error {
	if len(pts) == 0 {
		return nil
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return fmt.Errorf("plot %s: %w", name, err)
	}
	l.Color = palette[i%len(palette)]
	l.Width = vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	p.Legend.Top = true
	return nil
}

// addEvents draws a vertical grey line per event.
func addEvents(p *plot.Plot, events []Event) {
	if len(events) == 0 {
		return
	}
	p.Add(plotter.NewGrid())
	for _, e := range events {
		l, err := plotter.NewLine(plotter.XYs{{X: e.T, Y: p.Y.Min}, {X: e.T, Y: p.Y.Max}})
		if err != nil {
			continue
		}
		l.Color = color.Gray{Y: 160}
		l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		p.Add(l)
	}
}

// rateWindow smooths the plotted rates: batches are sealed every few
// seconds, so one-second rates would be all spikes.
const rateWindow = 5.0

// rates derives per-second rates of a cumulative counter over rateWindow.
func rates(tl []Point, name string) plotter.XYs {
	var pts plotter.XYs
	j := 0
	for i := 1; i < len(tl); i++ {
		for j < i-1 && tl[i].T-tl[j+1].T >= rateWindow {
			j++
		}
		a, okA := tl[j].Counters[name]
		b, okB := tl[i].Counters[name]
		dt := tl[i].T - tl[j].T
		if !okA || !okB || dt <= 0 {
			continue
		}
		pts = append(pts, plotter.XY{X: tl[i].T, Y: max(b-a, 0) / dt})
	}
	return pts
}

func gauge(tl []Point, get func(Point) (float64, bool)) plotter.XYs {
	var pts plotter.XYs
	for _, p := range tl {
		if v, ok := get(p); ok {
			pts = append(pts, plotter.XY{X: p.T, Y: v})
		}
	}
	return pts
}
